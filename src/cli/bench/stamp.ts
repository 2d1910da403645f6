/**
 * Bench payloads carry the publisher's clock: the payload starts with the
 * publish time (`benchNow()`, ms with three decimals) in ASCII, then a space,
 * then filler up to the payload size. A device reads it back to measure
 * publish-to-receipt latency without any message-id bookkeeping.
 */

/** The smallest payload that holds a time stamp and its separator. */
export const MIN_STAMPED_PAYLOAD = 24;

/** A payload of exactly `size` ASCII bytes starting with the time stamp `at`. */
export function stampedPayload(at: number, size: number): string {
  const head = `${at.toFixed(3)} `;
  if (head.length >= size) return head.slice(0, size);
  return head + FILLER.slice(0, size - head.length);
}

/** The time stamp at the start of a payload; NaN when there is none. */
export function readStamp(payload: Uint8Array): number {
  let text = "";
  const n = Math.min(payload.byteLength, 32);
  for (let i = 0; i < n; i++) {
    const c = payload[i] as number;
    if (c === 0x20) return text === "" ? NaN : Number(text);
    if ((c < 0x30 || c > 0x39) && c !== 0x2e) return NaN;
    text += String.fromCharCode(c);
  }
  return NaN;
}

const FILLER = "x".repeat(1 << 16);
