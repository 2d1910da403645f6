import { MAX_SEQUENCE, ProtocolVersion, RECORD_HEADER_LENGTH } from "./constants.ts";
import { DtlsError } from "./errors.ts";
import { encodePlainRecord } from "./record.ts";
import type { RecordProtection } from "./record-protection.ts";

/**
 * The sending half of the record layer: one sequence counter per epoch
 * (starting at 0, +1 per record, RFC 6347 4.1), epoch 0 in the clear, epoch 1
 * under the negotiated AEAD: as a tls12_cid record carrying the peer's CID
 * (RFC 9146) when the peer asked for a non-empty one.
 */
export class RecordWriter {
  /** The next sequence numbers of epochs 0 and 1 (two fields, not an array: one writer per session). */
  private seq0: number;
  private seq1 = 0;
  private protection: RecordProtection | undefined;
  /** Epoch used for application data and alerts: 1 once we have sent ChangeCipherSpec. */
  epoch = 0;
  /** The peer's CID (latin1) that our protected records carry; "" for none (plain records). */
  cid = "";

  constructor(firstEpoch0Seq = 0) {
    this.seq0 = firstEpoch0Seq;
  }

  install(protection: RecordProtection): void {
    this.protection = protection;
  }

  /** The epoch-1 protection, once installed (a session snapshot exports its keys). */
  get installed(): RecordProtection | undefined {
    return this.protection;
  }

  /** The sequence number the next epoch-1 record gets. */
  get nextSeq(): number {
    return this.seq1;
  }

  /** A restored session: epoch 1 under `protection`, its records numbered from `seq` on (never below a number used before). */
  restore(protection: RecordProtection, seq: number): void {
    this.protection = protection;
    this.epoch = 1;
    this.seq1 = seq;
  }

  /** Record bytes added to a payload in the given epoch. */
  overhead(epoch: number): number {
    if (epoch === 0) return RECORD_HEADER_LENGTH;
    // a tls12_cid record adds its CID to the header and the real type to the content
    return RECORD_HEADER_LENGTH + (this.protection?.overhead ?? 0) + (this.cid === "" ? 0 : this.cid.length + 1);
  }

  record(type: number, epoch: number, body: Uint8Array): Uint8Array {
    const seq = epoch === 0 ? this.seq0 : this.seq1;
    if (seq > MAX_SEQUENCE) throw new DtlsError("sequence_exhausted", `record sequence numbers of epoch ${epoch} are used up`);
    if (epoch === 0) {
      this.seq0 = seq + 1;
      return encodePlainRecord(type, ProtocolVersion.DTLS1_2, 0, seq, body);
    }
    this.seq1 = seq + 1;
    if (this.protection === undefined) throw new DtlsError("internal_error", "epoch 1 keys are not installed");
    if (this.cid !== "") return this.protection.sealCid(type, ProtocolVersion.DTLS1_2, epoch, seq, body, this.cid);
    return this.protection.seal(type, ProtocolVersion.DTLS1_2, epoch, seq, body);
  }
}

/** Packs records into as few datagrams of at most `mtu` bytes as their order allows. */
export function packDatagrams(records: readonly Uint8Array[], mtu: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let batch: Uint8Array[] = [];
  let size = 0;
  const flush = (): void => {
    if (batch.length === 1) out.push(batch[0] as Uint8Array);
    else if (batch.length > 1) out.push(Buffer.concat(batch, size));
    batch = [];
    size = 0;
  };
  for (const r of records) {
    if (size > 0 && size + r.length > mtu) flush();
    batch.push(r);
    size += r.length;
  }
  flush();
  return out;
}
