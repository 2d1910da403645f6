/**
 * Handshake message framing (RFC 6347 4.2.2): the 12-byte header with
 * message_seq and fragment offset/length, fragments parsed from a record and
 * written for one, and a whole message encoded as the transcript hashes it.
 */
import { ByteReader } from "../util/bytes.ts";
import { DecodeError } from "../util/errors.ts";
import { HANDSHAKE_HEADER_LENGTH } from "./constants.ts";

/** One handshake fragment (RFC 6347 4.2.2); `body` is a view into the record. */
export interface HandshakeFragment {
  readonly msgType: number;
  readonly length: number;
  readonly messageSeq: number;
  readonly fragmentOffset: number;
  readonly fragmentLength: number;
  readonly body: Uint8Array;
}

/** Largest handshake message we reassemble (PSK messages are tiny; certificates in later suites are not). */
export const MAX_HANDSHAKE_MESSAGE = 0x10000;

/** Every fragment in a handshake record; throws DecodeError on malformed input. */
export function parseHandshakeFragments(recordBody: Uint8Array): HandshakeFragment[] {
  const r = new ByteReader(recordBody);
  const out: HandshakeFragment[] = [];
  while (r.remaining() > 0) {
    const msgType = r.u8("handshake type");
    const length = r.u24("handshake length");
    const messageSeq = r.u16("message_seq");
    const fragmentOffset = r.u24("fragment_offset");
    const fragmentLength = r.u24("fragment_length");
    if (fragmentOffset + fragmentLength > length) {
      throw new DecodeError(`fragment ${fragmentOffset}+${fragmentLength} beyond message length ${length}`);
    }
    if (length > MAX_HANDSHAKE_MESSAGE) throw new DecodeError(`handshake message of ${length} bytes is too large`);
    const body = r.bytes(fragmentLength, "handshake fragment");
    out.push({ msgType, length, messageSeq, fragmentOffset, fragmentLength, body });
  }
  return out;
}

function writeHeader(out: Uint8Array, msgType: number, length: number, messageSeq: number, offset: number, fragLength: number): void {
  out[0] = msgType;
  out[1] = length >>> 16;
  out[2] = (length >>> 8) & 0xff;
  out[3] = length & 0xff;
  out[4] = messageSeq >>> 8;
  out[5] = messageSeq & 0xff;
  out[6] = offset >>> 16;
  out[7] = (offset >>> 8) & 0xff;
  out[8] = offset & 0xff;
  out[9] = fragLength >>> 16;
  out[10] = (fragLength >>> 8) & 0xff;
  out[11] = fragLength & 0xff;
}

/** The whole message with an unfragmented header: the form the transcript hashes. */
export function encodeHandshake(msgType: number, messageSeq: number, body: Uint8Array): Uint8Array {
  return encodeFragment(msgType, messageSeq, body, 0, body.length);
}

export function encodeFragment(msgType: number, messageSeq: number, body: Uint8Array, offset: number, fragLength: number): Uint8Array {
  const out = new Uint8Array(HANDSHAKE_HEADER_LENGTH + fragLength);
  writeHeader(out, msgType, body.length, messageSeq, offset, fragLength);
  out.set(body.subarray(offset, offset + fragLength), HANDSHAKE_HEADER_LENGTH);
  return out;
}
