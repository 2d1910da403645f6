/**
 * What a datagram from a peer without a session is, read from fixed offsets
 * of its first record only: no parsing, no allocation, no crypto. The server
 * uses it to drop a flood of ClientHellos at the cost of a few byte reads, and
 * to tell a first ClientHello (answered with a HelloVerifyRequest, rate
 * limited) from one that carries a cookie (checked by the core).
 */
import { ContentType, HandshakeType, RECORD_HEADER_LENGTH } from "./constants.ts";

export type StrangerDatagram =
  /** a whole ClientHello without a cookie in the first record: it would get a HelloVerifyRequest */
  | "hello"
  /** a whole ClientHello with a cookie: the core checks the cookie */
  | "hello_with_cookie"
  /** anything else: a peer without a session has nothing else to say */
  | "other";

/** handshake header: type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3) */
const HS = RECORD_HEADER_LENGTH;
/** ClientHello body: client_version(2) random(32) session_id<0..32> cookie<0..255> ... */
const SESSION_ID_LENGTH_AT = HS + 12 + 2 + 32;

function u24(d: Uint8Array, at: number): number {
  return ((d[at] as number) << 16) | ((d[at + 1] as number) << 8) | (d[at + 2] as number);
}

export function classifyStranger(d: Uint8Array): StrangerDatagram {
  if (d.length <= SESSION_ID_LENGTH_AT + 1) return "other";
  if (d[0] !== ContentType.handshake || d[1] !== 0xfe || d[3] !== 0 || d[4] !== 0) return "other";
  if (d[HS] !== HandshakeType.client_hello) return "other";
  const recordLength = ((d[11] as number) << 8) | (d[12] as number);
  const length = u24(d, HS + 1);
  // a first ClientHello must be whole in one record (the server keeps no state to reassemble it)
  if (u24(d, HS + 6) !== 0 || u24(d, HS + 9) !== length || length + 12 > recordLength || RECORD_HEADER_LENGTH + recordLength > d.length) {
    return "other";
  }
  const cookieLengthAt = SESSION_ID_LENGTH_AT + 1 + (d[SESSION_ID_LENGTH_AT] as number);
  if (cookieLengthAt >= HS + 12 + length) return "other";
  return d[cookieLengthAt] === 0 ? "hello" : "hello_with_cookie";
}

/** Whether a datagram the server sends is a HelloVerifyRequest (a stateless reply, never coalesced). */
export function isHelloVerifyRequest(d: Uint8Array): boolean {
  return d.length > HS && d[0] === ContentType.handshake && d[3] === 0 && d[4] === 0 && d[HS] === HandshakeType.hello_verify_request;
}
