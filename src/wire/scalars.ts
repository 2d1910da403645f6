/**
 * Field readers and writers used by the generated codec (generated/frame.ts),
 * on top of protobufjs's Reader and Writer. They add what the protocol needs
 * and protobufjs leaves out: uint64 as an exact JS number (refused above
 * 2^53-1 instead of becoming a Long), range checks on encode instead of silent
 * truncation, bytes copied out of the input, strict UTF-8, and reads bounded by
 * the enclosing message's length.
 */
import { util } from "protobufjs/minimal.js";
import type { Reader, Writer } from "protobufjs/minimal.js";
import { WireError } from "./errors.ts";

const utf8 = util.utf8;

/** Protobuf wire types. */
export const WireType = { VARINT: 0, I64: 1, LEN: 2, SGROUP: 3, EGROUP: 4, I32: 5 } as const;

// ---------------------------------------------------------------- encoding

/** uint64 from a JS number: a non-negative safe integer, else WireError. */
export function writeU64(w: Writer, v: number, field: string): void {
  if (v >= 0 && v <= 0xffff_ffff && Number.isInteger(v)) {
    w.uint32(v); // same varint bytes as uint64 below 2^32, without a LongBits allocation
  } else if (Number.isSafeInteger(v) && v >= 0) {
    w.uint64(v);
  } else {
    throw new WireError(`${field} must be an integer from 0 to 2^53-1, got ${String(v)}.`);
  }
}

export function writeU32(w: Writer, v: number, field: string): void {
  if (!(v >= 0 && v <= 0xffff_ffff && Number.isInteger(v))) {
    throw new WireError(`${field} must be an integer from 0 to 2^32-1, got ${String(v)}.`);
  }
  w.uint32(v);
}

/** An enum value (int32 on the wire; negative values take 10 bytes, as protobuf specifies). */
export function writeEnum(w: Writer, v: number, field: string): void {
  if (!(v >= -0x8000_0000 && v <= 0x7fff_ffff && Number.isInteger(v))) {
    throw new WireError(`${field} must be a 32-bit integer, got ${String(v)}.`);
  }
  w.int32(v);
}

interface MaybeWellFormed {
  isWellFormed(): boolean;
}

export function writeString(w: Writer, v: string, field: string): void {
  if (typeof v !== "string") throw new WireError(`${field} must be a string, got ${typeof v}.`);
  // A lone surrogate would be written as bytes that are not UTF-8, which every
  // conforming protobuf decoder (ours included) refuses.
  if (!(v as string & MaybeWellFormed).isWellFormed()) {
    throw new WireError(`${field} is not well-formed Unicode (it holds a lone surrogate).`);
  }
  w.string(v);
}

export function writeBytes(w: Writer, v: Uint8Array, field: string): void {
  // protobufjs would take a string as base64; refuse anything but bytes.
  if (!(v instanceof Uint8Array)) throw new WireError(`${field} must be a Uint8Array.`);
  w.bytes(v);
}

// ---------------------------------------------------------------- decoding

function truncated(r: Reader, what: string): WireError {
  return new WireError(`Frame is truncated: ${what} runs past the end of its message at offset ${r.pos}.`);
}

/** uint64 as an exact number; above Number.MAX_SAFE_INTEGER is a WireError. */
export function readU64(r: Reader, field: string): number {
  const buf = r.buf;
  const len = r.len;
  let pos = r.pos;
  if (pos >= len) throw truncated(r, field);
  let b = buf[pos++] as number;
  if (b < 0x80) {
    r.pos = pos;
    return b;
  }
  // Each term is exact; a sum above 2^53-1 rounds to a value still above it,
  // so the check below is exact too.
  let value = b & 0x7f;
  let scale = 0x80;
  for (let i = 1; i < 10; i++) {
    if (pos >= len) {
      r.pos = pos;
      throw truncated(r, field);
    }
    b = buf[pos++] as number;
    value += (b & 0x7f) * scale;
    if (b < 0x80) {
      r.pos = pos;
      if (value > Number.MAX_SAFE_INTEGER) {
        throw new WireError(`${field} is above 2^53-1 (${Number.MAX_SAFE_INTEGER}), which this decoder does not accept.`);
      }
      return value;
    }
    scale *= 0x80;
  }
  r.pos = pos;
  throw new WireError(`${field} is a varint longer than 10 bytes.`);
}

export function readU32(r: Reader, field: string): number {
  if (r.pos >= r.len) throw truncated(r, field);
  return r.uint32();
}

export function readEnum(r: Reader, field: string): number {
  if (r.pos >= r.len) throw truncated(r, field);
  return r.int32();
}

export function readBool(r: Reader, field: string): boolean {
  if (r.pos >= r.len) throw truncated(r, field);
  return r.bool();
}

/** Reads a length prefix and checks that many bytes remain; returns the end offset. */
function lengthDelimited(r: Reader, field: string): number {
  if (r.pos >= r.len) throw truncated(r, field);
  const n = r.size();
  const end = r.pos + n;
  if (end > r.len) throw truncated(r, field);
  return end;
}

/** Strict UTF-8 (proto3 requires it of string fields). */
export function readString(r: Reader, field: string): string {
  const end = lengthDelimited(r, field);
  const start = r.pos;
  r.pos = end;
  try {
    return utf8.readStrict(r.buf, start, end);
  } catch (cause) {
    throw new WireError(`${field} is not valid UTF-8.`, { cause });
  }
}

/** A copy: the result never aliases the input buffer. */
export function readBytes(r: Reader, field: string): Uint8Array {
  const end = lengthDelimited(r, field);
  const start = r.pos;
  r.pos = end;
  // The input is a plain Uint8Array (decodeFrame unwraps Buffers), so slice copies.
  return r.buf.slice(start, end);
}

/**
 * Enters an embedded message or packed field: reads its length and limits the
 * reader to it. Returns the outer limit, to hand to leaveMessage.
 */
export function enterMessage(r: Reader, field: string): number {
  const end = lengthDelimited(r, field);
  const outer = r.len;
  r.len = end;
  return outer;
}

export function leaveMessage(r: Reader, outer: number): void {
  r.len = outer;
}

/** Skips a field this version does not know (forward compatibility). */
export function skipField(r: Reader, tag: number): void {
  const wireType = tag & 7;
  const field = tag >>> 3;
  if (field === 0) throw new WireError(`Frame holds a field number 0 at offset ${r.pos}, which protobuf forbids.`);
  if (wireType === WireType.EGROUP || wireType > WireType.I32) {
    throw new WireError(`Frame holds field ${field} with invalid wire type ${wireType}.`);
  }
  r.skipType(wireType, 0, field);
}

/** A known field arrived with a wire type its declared type never has. */
export function wrongWireType(field: string, tag: number, expected: number): WireError {
  return new WireError(`${field} arrived with wire type ${tag & 7}, expected ${expected}.`);
}

/** Varint length in bytes of a non-negative safe integer. */
export function varintSize(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x20_0000) return 3;
  if (v < 0x1000_0000) return 4;
  let n = 5;
  for (let x = Math.floor(v / 0x8_0000_0000); x > 0; x = Math.floor(x / 0x80)) n++;
  return n;
}
