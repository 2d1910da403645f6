/**
 * The worked example of docs/protocol.md: one signed Push. The doc's hex is
 * checked against these values by protocol-doc.test.ts; annotatePush() prints
 * the annotated listing the doc shows (kept here so it can be regenerated).
 */
import { createPrivateKey, sign } from "node:crypto";
import { Reader } from "protobufjs/minimal.js";
import { encodeFrame } from "../../src/wire/index.ts";
import type { Push } from "../../src/wire/index.ts";

/** The Ed25519 example key of RFC 8037, Appendix A.1 (a published test key, never a real one). */
export const EXAMPLE_JWK = {
  kty: "OKP",
  crv: "Ed25519",
  kid: "k1",
  x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
  d: "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
} as const;

export const EXAMPLE_HEADER = '{"alg":"EdDSA","kid":"k1"}';

/** The Push fields before signing (signature empty). */
export const EXAMPLE_PUSH: Push = {
  seq: 42,
  messageId: "m-7f3a",
  topic: "sensors/temp",
  device: "",
  payload: new TextEncoder().encode('{"c":21.5}'),
  contentType: "application/json",
  createdAt: 1_760_000_000_000,
  expiresAt: 1_760_086_400_000,
  priority: 5,
  collapseKey: "",
  publisher: "svc-weather",
  signature: "",
  expired: false,
};

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

function lengthPrefixed(bytes: Uint8Array): Uint8Array[] {
  return [u32(bytes.length), bytes];
}

/** The signed content, written from the definition in docs/protocol.md (independently of src/auth). */
export function signedContent(p: Push): Uint8Array {
  const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
  const parts = [
    ...lengthPrefixed(utf8("dtlspush-content-v1")),
    ...lengthPrefixed(utf8(p.messageId)),
    ...lengthPrefixed(utf8(p.topic)),
    ...lengthPrefixed(utf8(p.device)),
    ...lengthPrefixed(utf8(p.contentType)),
    ...lengthPrefixed(utf8(p.publisher)),
    ...lengthPrefixed(utf8(p.collapseKey)),
    ...lengthPrefixed(p.payload),
    u64(p.createdAt),
    u64(p.expiresAt),
    u32(p.priority),
  ];
  return Buffer.concat(parts);
}

const b64url = (b: Uint8Array | string): string => Buffer.from(b).toString("base64url");

/** Detached compact JWS over the signed content: BASE64URL(header) ".." BASE64URL(signature). */
export function exampleSignature(p: Push = EXAMPLE_PUSH): string {
  const header = b64url(EXAMPLE_HEADER);
  const input = Buffer.from(`${header}.${b64url(signedContent(p))}`, "ascii");
  const key = createPrivateKey({ key: { ...EXAMPLE_JWK }, format: "jwk" });
  return `${header}..${b64url(sign(null, input, key))}`;
}

export function signedExamplePush(): Push {
  return { ...EXAMPLE_PUSH, signature: exampleSignature() };
}

const NAMES: Record<number, [string, string]> = {
  1: ["seq", "varint"],
  2: ["message_id", "LEN"],
  3: ["topic", "LEN"],
  4: ["device", "LEN"],
  5: ["payload", "LEN"],
  6: ["content_type", "LEN"],
  7: ["created_at", "varint"],
  8: ["expires_at", "varint"],
  9: ["priority", "varint"],
  10: ["collapse_key", "LEN"],
  11: ["publisher", "LEN"],
  12: ["signature", "LEN"],
  13: ["expired", "varint"],
};

/** Text for a listing: in single quotes, cut after 40 characters. */
const quote = (text: string): string => (text.length > 40 ? `'${text.slice(0, 40)}…'` : `'${text}'`);

const hexBytes = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");

/** The annotated hex listing of the example Push frame, as docs/protocol.md shows it. */
export function annotatePush(): string {
  const frame = encodeFrame({ kind: "push", push: signedExamplePush() });
  const r = new Reader(frame);
  const lines: string[] = [];
  const col = 49; // 16 bytes of hex and a gap
  const line = (bytes: Uint8Array, note: string): void => {
    lines.push(note === "" ? hexBytes(bytes) : `${hexBytes(bytes).padEnd(col)}${note}`.trimEnd());
  };
  const take = (from: number): Uint8Array => frame.subarray(from, r.pos);
  let at = r.pos;
  r.tag();
  const pushLength = r.uint32();
  line(take(at), `Frame field 3 (push), LEN, ${pushLength} bytes follow`);
  while (r.pos < r.len) {
    at = r.pos;
    const tag = r.tag();
    const [name, wire] = NAMES[tag >>> 3] as [string, string];
    if (wire === "varint") {
      const v = r.uint64();
      line(take(at), `${name} (${tag >>> 3}, varint) = ${v.toString()}`);
      continue;
    }
    const n = r.uint32();
    line(take(at), `${name} (${tag >>> 3}, LEN) ${n} bytes:`);
    const value = frame.subarray(r.pos, r.pos + n);
    r.pos += n;
    const text = new TextDecoder().decode(value);
    for (let i = 0; i < value.length; i += 16) line(value.subarray(i, i + 16), i === 0 ? quote(text) : "");
  }
  return lines.join("\n");
}

/** The signed content of the example, one part per line, as docs/protocol.md shows it. */
export function annotateSignedContent(p: Push = EXAMPLE_PUSH): string {
  const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
  const lines: string[] = [];
  const part = (bytes: Uint8Array, note: string): void => {
    for (let i = 0; i < Math.max(bytes.length, 1); i += 16) {
      const chunk = bytes.subarray(i, i + 16);
      lines.push(i === 0 ? `${hexBytes(chunk).padEnd(49)}${note}`.trimEnd() : hexBytes(chunk));
    }
  };
  const str = (label: string, v: Uint8Array, text: string): void => {
    part(u32(v.length), `${label}: length ${v.length}`);
    if (v.length > 0) part(v, text);
  };
  str("label", utf8("dtlspush-content-v1"), quote("dtlspush-content-v1"));
  str("message_id", utf8(p.messageId), quote(p.messageId));
  str("topic", utf8(p.topic), quote(p.topic));
  str("device", utf8(p.device), quote(p.device));
  str("content_type", utf8(p.contentType), quote(p.contentType));
  str("publisher", utf8(p.publisher), quote(p.publisher));
  str("collapse_key", utf8(p.collapseKey), quote(p.collapseKey));
  str("payload", p.payload, quote(new TextDecoder().decode(p.payload)));
  part(u64(p.createdAt), `created_at = ${p.createdAt}`);
  part(u64(p.expiresAt), `expires_at = ${p.expiresAt}`);
  part(u32(p.priority), `priority = ${p.priority}`);
  return lines.join("\n");
}
