import { ByteReader } from "../util/bytes.ts";
import { MAX_PLAINTEXT, RECORD_HEADER_LENGTH } from "./constants.ts";

/** One record as it came off the wire; `header` and `body` are views into the datagram. */
export interface RawRecord {
  readonly type: number;
  readonly version: number;
  readonly epoch: number;
  readonly seq: number;
  readonly header: Uint8Array;
  readonly body: Uint8Array;
}

/** Largest record body we accept: plaintext + expansion allowance (RFC 6347 4.1 / 5246 6.2.3). */
export const MAX_RECORD_BODY = MAX_PLAINTEXT + 2048;

/**
 * Splits a datagram into records. A malformed record (bad length, truncated,
 * oversized) ends parsing: the rest of the datagram is dropped, the records
 * before it are kept (RFC 6347 4.1.2.7 allows discarding just that much).
 */
export function parseRecords(datagram: Uint8Array): RawRecord[] {
  const out: RawRecord[] = [];
  let off = 0;
  while (datagram.length - off >= RECORD_HEADER_LENGTH) {
    const r = new ByteReader(datagram, off);
    const type = r.u8();
    const version = r.u16();
    const epoch = r.u16();
    const seq = r.u48();
    const length = r.u16();
    if (length > MAX_RECORD_BODY || length > r.remaining()) break;
    if ((version & 0xff00) !== 0xfe00) break; // not DTLS at all
    out.push({
      type,
      version,
      epoch,
      seq,
      header: datagram.subarray(off, off + RECORD_HEADER_LENGTH),
      body: datagram.subarray(off + RECORD_HEADER_LENGTH, off + RECORD_HEADER_LENGTH + length),
    });
    off += RECORD_HEADER_LENGTH + length;
  }
  return out;
}

/** Writes a record header into out at offset. */
export function writeRecordHeader(out: Uint8Array, at: number, type: number, version: number, epoch: number, seq: number, length: number): void {
  out[at] = type;
  out[at + 1] = version >>> 8;
  out[at + 2] = version & 0xff;
  out[at + 3] = epoch >>> 8;
  out[at + 4] = epoch & 0xff;
  writeSeq48(out, at + 5, seq);
  out[at + 11] = length >>> 8;
  out[at + 12] = length & 0xff;
}

export function writeSeq48(out: Uint8Array, at: number, seq: number): void {
  const hi = Math.floor(seq / 0x1_0000_0000);
  const lo = seq >>> 0;
  out[at] = hi >>> 8;
  out[at + 1] = hi & 0xff;
  out[at + 2] = lo >>> 24;
  out[at + 3] = (lo >>> 16) & 0xff;
  out[at + 4] = (lo >>> 8) & 0xff;
  out[at + 5] = lo & 0xff;
}

/** A plaintext (epoch 0) record. */
export function encodePlainRecord(type: number, version: number, epoch: number, seq: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(RECORD_HEADER_LENGTH + body.length);
  writeRecordHeader(out, 0, type, version, epoch, seq, body.length);
  out.set(body, RECORD_HEADER_LENGTH);
  return out;
}
