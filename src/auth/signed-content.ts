/**
 * The signed content of a publish (version 1): the bytes a content signature
 * covers. Every field is written in this order, integers unsigned big-endian,
 * "u32 length" the byte length of what follows:
 *
 *   "dtlspush-content-v1"  u32 length + ASCII (a fixed label)
 *   message_id             u32 length + UTF-8
 *   topic                  u32 length + UTF-8 ("" for a direct message)
 *   device                 u32 length + UTF-8 ("" for a topic message)
 *   content_type           u32 length + UTF-8
 *   publisher              u32 length + UTF-8
 *   collapse_key           u32 length + UTF-8
 *   payload                u32 length + bytes
 *   created_at             u64 (ms since the epoch)
 *   expires_at             u64 (ms since the epoch)
 *   priority               u32
 *
 * seq, expired and the signature itself are not signed. Strings are encoded
 * as UTF-8 the way the wire (protobuf) encodes them.
 */

export const SIGNED_CONTENT_LABEL = "dtlspush-content-v1";

/** The Push fields a content signature covers. */
export interface SignedFields {
  messageId: string;
  topic: string;
  device: string;
  contentType: string;
  publisher: string;
  collapseKey: string;
  payload: Uint8Array;
  /** ms since the epoch */
  createdAt: number;
  /** ms since the epoch */
  expiresAt: number;
  priority: number;
}

const utf8 = new TextEncoder();
const U32_MAX = 0xffff_ffff;

/** The canonical bytes of the signed content (see above). */
export function signedContent(fields: SignedFields): Uint8Array {
  const strings = [
    utf8.encode(SIGNED_CONTENT_LABEL),
    text(fields.messageId, "messageId"),
    text(fields.topic, "topic"),
    text(fields.device, "device"),
    text(fields.contentType, "contentType"),
    text(fields.publisher, "publisher"),
    text(fields.collapseKey, "collapseKey"),
  ];
  const payload = fields.payload;
  if (!(payload instanceof Uint8Array)) throw new TypeError("The payload to sign must be a Uint8Array.");
  checkUint(fields.createdAt, Number.MAX_SAFE_INTEGER, "createdAt");
  checkUint(fields.expiresAt, Number.MAX_SAFE_INTEGER, "expiresAt");
  checkUint(fields.priority, U32_MAX, "priority");
  let size = 4 + payload.length + 8 + 8 + 4;
  for (const s of strings) size += 4 + s.length;
  if (payload.length > U32_MAX) throw new RangeError("The payload is too large to sign.");

  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  const chunk = (b: Uint8Array): void => {
    view.setUint32(at, b.length);
    out.set(b, at + 4);
    at += 4 + b.length;
  };
  for (const s of strings) chunk(s);
  chunk(payload);
  writeU64(view, at, fields.createdAt);
  writeU64(view, at + 8, fields.expiresAt);
  view.setUint32(at + 16, fields.priority);
  return out;
}

function text(s: string, what: string): Uint8Array {
  // TextEncoder would encode undefined as "": a missing field must not sign as an empty one.
  if (typeof s !== "string") throw new TypeError(`${what} must be a string to be signed, not ${typeof s}.`);
  return utf8.encode(s);
}

function writeU64(view: DataView, at: number, v: number): void {
  view.setUint32(at, Math.floor(v / 0x1_0000_0000));
  view.setUint32(at + 4, v >>> 0);
}

function checkUint(v: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${what} must be an integer in 0..${max} to be signed, not ${v}.`);
}
