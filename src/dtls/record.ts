import { ByteReader } from "../util/bytes.ts";
import { ContentType, MAX_PLAINTEXT, RECORD_HEADER_LENGTH } from "./constants.ts";

/**
 * One record as it came off the wire; `header` and `body` are views into the
 * datagram. A tls12_cid record (RFC 9146 4) has its CID between the sequence
 * number and the length:
 *
 *   type(1)=25 | version(2) | epoch(2) | sequence_number(6) | cid(cid_length) | length(2) | enc_content
 *
 * The record does not say how long its CID is: the receiver knows (it chose
 * it), so parseRecords is told.
 */
export interface RawRecord {
  readonly type: number;
  readonly version: number;
  readonly epoch: number;
  readonly seq: number;
  readonly header: Uint8Array;
  readonly body: Uint8Array;
  /** tls12_cid records: the CID (a view into the header); undefined for the others. */
  readonly cid?: Uint8Array | undefined;
}

/** Largest record body we accept: plaintext + expansion allowance (RFC 6347 4.1 / 5246 6.2.3). */
export const MAX_RECORD_BODY = MAX_PLAINTEXT + 2048;

/**
 * Splits a datagram into records. A malformed record (bad length, truncated,
 * oversized) ends parsing: the rest of the datagram is dropped, the records
 * before it are kept (RFC 6347 4.1.2.7 allows discarding just that much).
 * `cidLength` is the length of the CID our peer puts in tls12_cid records
 * (ours); undefined when none was negotiated: such a record then cannot be
 * parsed and ends the datagram like any malformed one.
 */
export function parseRecords(datagram: Uint8Array, cidLength?: number): RawRecord[] {
  const out: RawRecord[] = [];
  let off = 0;
  while (datagram.length - off >= RECORD_HEADER_LENGTH) {
    const r = new ByteReader(datagram, off);
    const type = r.u8();
    const version = r.u16();
    const epoch = r.u16();
    const seq = r.u48();
    let cid: Uint8Array | undefined;
    let headerLength = RECORD_HEADER_LENGTH;
    if (type === ContentType.tls12_cid) {
      if (cidLength === undefined || cidLength === 0 || r.remaining() < cidLength + 2) break;
      cid = r.bytes(cidLength, "connection id");
      headerLength += cidLength;
    }
    const length = r.u16();
    if (length > MAX_RECORD_BODY || length > r.remaining()) break;
    if ((version & 0xff00) !== 0xfe00) break; // not DTLS at all
    const header = datagram.subarray(off, off + headerLength);
    const body = datagram.subarray(off + headerLength, off + headerLength + length);
    out.push(cid === undefined ? { type, version, epoch, seq, header, body } : { type, version, epoch, seq, header, body, cid });
    off += headerLength + length;
  }
  return out;
}

/**
 * The content and real type of a DTLSInnerPlaintext (RFC 9146 4):
 *
 *   struct { opaque content[length]; ContentType real_type; uint8 zeros[length_of_padding]; }
 *
 * The padding zeros are stripped from the end; the last non-zero byte is the
 * real type. No non-zero byte at all (a missing type), or a type of 0, is a
 * decode failure: undefined (the caller drops the record).
 */
export function splitInnerPlaintext(inner: Uint8Array): { readonly type: number; readonly content: Uint8Array } | undefined {
  let end = inner.length;
  while (end > 0 && inner[end - 1] === 0) end--;
  if (end === 0) return undefined;
  return { type: inner[end - 1] as number, content: inner.subarray(0, end - 1) };
}

/** The header of a tls12_cid record (RFC 9146 4): 13 bytes plus the CID, written at `at`. */
export function writeCidRecordHeader(out: Uint8Array, at: number, version: number, epoch: number, seq: number, cid: string, length: number): void {
  writeRecordHeader(out, at, ContentType.tls12_cid, version, epoch, seq, 0);
  for (let i = 0; i < cid.length; i++) out[at + 11 + i] = cid.charCodeAt(i);
  out[at + 11 + cid.length] = length >>> 8;
  out[at + 12 + cid.length] = length & 0xff;
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
