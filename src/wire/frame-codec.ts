/**
 * One Frame per DTLS record: encodeFrame / decodeFrame over the generated
 * codec, with every failure reported as WireError ("bad_frame").
 */
import { Reader, Writer } from "protobufjs/minimal.js";
import { WireError } from "./errors.ts";
import { encodeFrameBody, decodeFrameBody, encodePush, FrameFields } from "./generated/frame.ts";
import type { FrameBody, FrameInit, Push, PushInit, UnknownFrameBody } from "./generated/frame.ts";
import { varintSize } from "./scalars.ts";

/** A writer reused across calls (encoding is synchronous); replaced when a large frame grew it. */
let shared: Writer = Writer.create();
const KEEP_WRITER_BYTES = 64 * 1024;

function resetWriter(): Writer {
  const w = shared;
  w.pos = 0;
  if (w.states !== null) w.states.length = 0;
  return w;
}

function releaseWriter(w: Writer): void {
  if (w.buf.length > KEEP_WRITER_BYTES) shared = Writer.create();
}

function asWireError(cause: unknown, what: string): WireError {
  if (cause instanceof WireError) return cause;
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new WireError(`${what}: ${detail}.`, { cause });
}

/**
 * Encodes one Frame. Fields left out or at their proto3 default are not
 * written. A field value outside its type (a negative or fractional uint64, a
 * uint64 above 2^53-1, a lone surrogate in a string, ...) throws WireError.
 * The result owns its memory (no view of a shared buffer).
 */
export function encodeFrame(frame: FrameInit): Uint8Array {
  return encodeOwned("Frame could not be encoded", (w) => encodeFrameBody(frame, w));
}

/** What `write` writes, in memory of its own; a failure is a WireError starting with `what`. */
function encodeOwned(what: string, write: (w: Writer) => void): Uint8Array {
  const w = resetWriter();
  try {
    write(w);
  } catch (cause) {
    releaseWriter(w);
    throw asWireError(cause, what);
  }
  // An ArrayBuffer of its own costs about half of this function's time; a
  // slab shared between results would be cheaper, but callers keep frames for
  // retransmission and one live frame would pin its whole slab.
  const out = new Uint8Array(w.pos);
  out.set(w.buf.subarray(0, w.pos));
  releaseWriter(w);
  return out;
}

/**
 * Decodes one record. A Frame whose body is a field this version does not
 * know (a newer protocol) decodes to { kind: "unknown", field: n }; that is not
 * an error. Malformed or truncated bytes, a Frame without a body, a known field
 * with the wrong wire type, invalid UTF-8 in a string, or a uint64 above
 * Number.MAX_SAFE_INTEGER throw WireError ("bad_frame"). Unknown fields inside
 * known messages are skipped. Bytes fields are copies, never views of `bytes`.
 */
export function decodeFrame(bytes: Uint8Array): FrameBody | UnknownFrameBody {
  // A plain Uint8Array view, so that slicing (in readBytes) copies even when the input is a Buffer.
  const plain = Object.getPrototypeOf(bytes) === Uint8Array.prototype
    ? bytes
    : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let body: FrameBody | UnknownFrameBody | undefined;
  try {
    body = decodeFrameBody(new Reader(plain));
  } catch (cause) {
    throw asWireError(cause, "Frame is malformed");
  }
  if (body === undefined) {
    throw new WireError(
      plain.length === 0 ? "Frame is empty: it has no body." : "Frame has no body: none of its fields is a Frame body.",
    );
  }
  return body;
}

/** Largest length-prefix a payload and the Push around it are assumed to need when push.payload is absent. */
const ASSUMED_LENGTH_VARINT = 3; // lengths below 2 MiB; a DTLS record holds at most 16 KiB

/**
 * Bytes a Push adds around its payload with the given other fields, so callers
 * can check the record limit: the Frame is pushOverhead(push) + payload bytes.
 *
 * With push.payload set the result is exact:
 * encodeFrame({ kind: "push", push }).length - push.payload.length.
 * Without it, the result is an upper bound for any payload of up to 2 MiB
 * (it counts the payload's tag and 3-byte length prefixes), which is what a
 * caller needs to derive the largest payload that fits: limit - pushOverhead(fields).
 */
export function pushOverhead(push: Partial<Push>): number {
  const payload = push.payload;
  const w = resetWriter();
  let rest: number; // the Push message without its payload field
  try {
    encodePush(payload === undefined ? push : { ...push, payload: undefined }, w);
    rest = w.pos;
  } catch (cause) {
    throw asWireError(cause, "Push could not be measured");
  } finally {
    releaseWriter(w);
  }
  const frameTag = varintSize(FrameFields.push * 8 + 2);
  const payloadTag = varintSize(5 * 8 + 2); // Push.payload = 5
  if (payload === undefined) {
    return frameTag + ASSUMED_LENGTH_VARINT + rest + payloadTag + ASSUMED_LENGTH_VARINT;
  }
  const p = payload.length;
  const body = p === 0 ? rest : rest + payloadTag + varintSize(p) + p;
  return frameTag + varintSize(body) + body - p;
}

/**
 * A Push encoded once, without its seq (every field but `seq`, in field
 * order): `pushFrame` makes the Frame for any seq from it by writing only the
 * few bytes in front. A message sent to many devices, or under several seqs,
 * is encoded once. Throws WireError like encodeFrame.
 */
export function encodePushBody(push: Omit<PushInit, "seq"> & { readonly seq?: undefined }): Uint8Array {
  return encodeOwned("Push could not be encoded", (w) => encodePush(push, w));
}

const FRAME_PUSH_TAG = FrameFields.push * 8 + 2;
const PUSH_SEQ_TAG = 1 * 8 + 0; // Push.seq = 1, varint

/** Bytes of the Frame pushFrame(body, seq) makes. */
export function pushFrameSize(bodyLength: number, seq: number): number {
  const inner = 1 + varintSize(seq) + bodyLength;
  return varintSize(FRAME_PUSH_TAG) + varintSize(inner) + inner;
}

/**
 * The Frame of the Push `body` (from encodePushBody) with this seq (a positive
 * safe integer): the same bytes encodeFrame gives for the whole Push, as the
 * generated encoder writes seq first. The result owns its memory.
 */
export function pushFrame(body: Uint8Array, seq: number): Uint8Array {
  if (!Number.isSafeInteger(seq) || seq < 1) throw new WireError(`Frame could not be encoded: Push.seq must be a positive safe integer, got ${seq}.`);
  const inner = 1 + varintSize(seq) + body.length;
  const out = new Uint8Array(varintSize(FRAME_PUSH_TAG) + varintSize(inner) + inner);
  let pos = writeVarint(out, 0, FRAME_PUSH_TAG);
  pos = writeVarint(out, pos, inner);
  out[pos++] = PUSH_SEQ_TAG;
  pos = writeVarint(out, pos, seq);
  out.set(body, pos);
  return out;
}

/** Writes a varint (a safe non-negative integer) at pos; returns the position after it. */
function writeVarint(out: Uint8Array, pos: number, value: number): number {
  let v = value;
  while (v >= 0x80) {
    out[pos++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  out[pos++] = v;
  return pos;
}
