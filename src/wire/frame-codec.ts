/**
 * One Frame per DTLS record: encodeFrame / decodeFrame over the generated
 * codec (generated/dtlspush/v1/frame.ts), with the checks of checks.ts around
 * it and every failure reported as WireError ("bad_frame").
 */
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { checkFrameBytes, checkMessage, messageRule, type MessageRule } from "./checks.ts";
import { WireError } from "./errors.ts";
import { Frame, Limits, Push } from "./generated/dtlspush/v1/frame.ts";
import type { FrameBody, FrameInit, FrameKind, PushInit, UnknownFrameBody, Push as PushMessage } from "./types.ts";

const FRAME_RULE = messageRule("Frame");
const PUSH_RULE = messageRule("Push");

/** The rule of each Frame body by kind ("push" -> Push). */
const BODY_RULES: ReadonlyMap<string, MessageRule> = new Map(FRAME_RULE.list.map((f) => [f.prop, f.message as MessageRule]));

/** Frame field numbers by body kind (Frame.push = 3, ...). */
export const FrameFields: Readonly<Record<FrameKind, number>> = Object.fromEntries(FRAME_RULE.list.map((f) => [f.prop, f.number])) as Record<
  FrameKind,
  number
>;

/**
 * The reader the generated decoder gets, over bytes checkFrameBytes accepted:
 * bytes fields are copies (the runtime returns views of the input), and uint64
 * values are read straight into numbers (the runtime builds a BigInt, which
 * the generated code then converts through a string; checks.ts has refused
 * any value above 2^53-1, so the number is exact).
 */
class CheckedReader extends BinaryReader {
  private readonly input: Uint8Array;

  constructor(input: Uint8Array) {
    super(input);
    this.input = input;
  }

  override bytes(): Uint8Array {
    return new Uint8Array(super.bytes());
  }

  override uint64(): string {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10 && this.pos < this.len; i++) {
      const b = this.input[this.pos++] as number;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return String(value);
      scale *= 0x80;
    }
    throw new WireError("Frame is malformed: a uint64 the checks let through is not a varint.");
  }
}

/**
 * A writer reused across calls (encoding is synchronous): a fresh one per call
 * would grow a new buffer from 128 bytes every time. finish() copies the bytes
 * out and resets it; it is replaced after a failed encode (its fork stack may
 * be left open) and after a large frame grew its buffer.
 */
let shared = new BinaryWriter();
const KEEP_WRITER_BYTES = 64 * 1024;

/** What `write` writes into the shared writer, in memory of its own. */
function written(write: (w: BinaryWriter) => void): Uint8Array {
  let out: Uint8Array;
  try {
    write(shared);
    out = shared.finish();
  } catch (cause) {
    shared = new BinaryWriter();
    throw cause;
  }
  if (out.length > KEEP_WRITER_BYTES) shared = new BinaryWriter();
  return out;
}

function asWireError(cause: unknown, what: string): WireError {
  if (cause instanceof WireError) return cause;
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new WireError(`${what}: ${detail}.`, { cause });
}

/** The generated Frame of an encoding input, checked, with every field filled in. */
function frameOf(init: FrameInit): Frame {
  const kind = (init as { kind: unknown }).kind;
  const rule = typeof kind === "string" ? BODY_RULES.get(kind) : undefined;
  if (rule === undefined) throw new WireError(`Frame kind ${String(kind)} is not one this version knows.`);
  const body = (init as unknown as Record<string, unknown>)[kind as string];
  if (body === null || typeof body !== "object") throw new WireError(`Frame.${String(kind)} must be a message object.`);
  checkMessage(rule, body);
  return Frame.fromPartial({ body: { $case: kind, [kind as string]: body } } as Parameters<typeof Frame.fromPartial>[0]);
}

/**
 * Encodes one Frame. Fields left out or at their proto3 default are not
 * written. A field value outside its type (a negative or fractional uint64, a
 * uint64 above 2^53-1, a lone surrogate in a string, ...) throws WireError.
 * The result owns its memory (no view of a shared buffer).
 */
export function encodeFrame(frame: FrameInit): Uint8Array {
  try {
    const message = frameOf(frame);
    return written((w) => Frame.encode(message, w));
  } catch (cause) {
    throw asWireError(cause, "Frame could not be encoded");
  }
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
  let frame: Frame;
  let unknownField: number;
  try {
    unknownField = checkFrameBytes(bytes, FRAME_RULE);
    frame = Frame.decode(new CheckedReader(bytes));
  } catch (cause) {
    throw asWireError(cause, "Frame is malformed");
  }
  const body = frame.body;
  if (body === undefined) {
    if (unknownField !== 0) return { kind: "unknown", field: unknownField };
    throw new WireError(bytes.length === 0 ? "Frame is empty: it has no body." : "Frame has no body: none of its fields is a Frame body.");
  }
  if (body.$case === "welcome") {
    // Welcome.limits carries nothing when absent: all-default Limits.
    const welcome = body.welcome;
    return { kind: "welcome", welcome: { ...welcome, limits: welcome.limits ?? Limits.fromPartial({}) } };
  }
  const kind = body.$case;
  return { kind, [kind]: (body as unknown as Record<string, unknown>)[kind] } as FrameBody;
}

/** Bytes of a varint holding a non-negative safe integer. */
function varintSize(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x20_0000) return 3;
  if (v < 0x1000_0000) return 4;
  let n = 5;
  for (let x = Math.floor(v / 0x8_0000_0000); x > 0; x = Math.floor(x / 0x80)) n++;
  return n;
}

/** The Push message alone (no Frame around it), checked like encodeFrame checks it. */
function encodePushMessage(push: PushInit, what: string): Uint8Array {
  try {
    checkMessage(PUSH_RULE, push);
    const message = Push.fromPartial(push as Parameters<typeof Push.fromPartial>[0]);
    return written((w) => Push.encode(message, w));
  } catch (cause) {
    throw asWireError(cause, what);
  }
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
export function pushOverhead(push: Partial<PushMessage>): number {
  const payload = push.payload;
  // the Push message without its payload field
  const rest = encodePushMessage(payload === undefined ? push : { ...push, payload: undefined }, "Push could not be measured").length;
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
  return encodePushMessage(push, "Push could not be encoded");
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
