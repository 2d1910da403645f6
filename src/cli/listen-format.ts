/** How `dtlspush listen` prints a received message: one line of text, or one JSON object a line. */

/** What the printers need of a received message (the SDK's ReceivedMessage has it). */
export interface PrintableMessage {
  readonly id: string;
  readonly seq: number;
  readonly topic: string;
  readonly contentType: string;
  readonly payload: Uint8Array;
  /** ms since the epoch */
  readonly createdAt: number;
}

export const BASE64_PREFIX = "base64:";
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** The payload as text when it is valid UTF-8 (any text, newlines included); undefined otherwise. */
export function payloadText(payload: Uint8Array): string | undefined {
  try {
    return UTF8.decode(payload);
  } catch {
    return undefined;
  }
}

function base64(payload: Uint8Array): string {
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString("base64");
}

/** Line breaks and the other control characters (tab is allowed): not printed raw on a line of their own. */
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029]/;

/**
 * One output line (without the newline): the payload as UTF-8 when it is
 * valid UTF-8 without line breaks or other control characters (and does not
 * itself start with "base64:"), else `base64:` and the payload in base64.
 */
export function formatMessageLine(message: PrintableMessage): string {
  const text = payloadText(message.payload);
  if (text !== undefined && !CONTROL.test(text) && !text.startsWith(BASE64_PREFIX)) return text;
  return `${BASE64_PREFIX}${base64(message.payload)}`;
}

/**
 * One JSON object: `{id, seq, topic, contentType, payload, createdAt}` with the
 * payload as text when it is valid UTF-8; otherwise `payload` is null and
 * `payloadBase64` holds the bytes. createdAt is ISO-8601.
 */
export function formatMessageJson(message: PrintableMessage): string {
  const text = payloadText(message.payload);
  return JSON.stringify({
    id: message.id,
    seq: message.seq,
    topic: message.topic,
    contentType: message.contentType,
    payload: text ?? null,
    ...(text === undefined ? { payloadBase64: base64(message.payload) } : {}),
    createdAt: new Date(message.createdAt).toISOString(),
  });
}
