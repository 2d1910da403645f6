import { createAead, type Aead } from "./crypto.ts";
import { copyBytes } from "../util/bytes.ts";
import { RECORD_HEADER_LENGTH } from "./constants.ts";
import type { RawRecord } from "./record.ts";
import { writeRecordHeader, writeSeq48 } from "./record.ts";
import type { CipherSuite } from "./suites.ts";

/**
 * AEAD protection of one direction of one epoch.
 * GCM/CCM (RFC 5288, 6655): nonce = 4-byte salt || 8-byte explicit nonce, the
 * explicit part (= epoch || seq) travels at the front of the record body.
 * ChaCha20-Poly1305 (RFC 7905): nonce = 12-byte IV XOR (epoch || seq), nothing explicit.
 * AAD (RFC 5246 6.2.3.3 with the DTLS sequence): epoch||seq, type, version, plaintext length.
 */
export class RecordProtection {
  private readonly aead: Aead;
  private readonly iv: Uint8Array;
  private readonly explicitLength: number;
  private readonly xorNonce: boolean;
  // Buffers, not plain Uint8Arrays: node:crypto handles them on its fast path.
  private readonly nonce = Buffer.alloc(12);
  private readonly aad = Buffer.alloc(13);
  readonly overhead: number;

  constructor(suite: CipherSuite, key: Uint8Array, iv: Uint8Array) {
    this.aead = createAead(suite.aead, key);
    this.iv = copyBytes(iv);
    this.explicitLength = suite.recordIvLength;
    this.xorNonce = suite.recordIvLength === 0;
    this.overhead = suite.recordIvLength + suite.tagLength;
  }

  private setNonce(epoch: number, seq: number, explicit?: Uint8Array): void {
    const n = this.nonce;
    if (this.xorNonce) {
      n.set(this.iv);
      n[4] = (n[4] as number) ^ (epoch >>> 8);
      n[5] = (n[5] as number) ^ (epoch & 0xff);
      const hi = Math.floor(seq / 0x1_0000_0000);
      const lo = seq >>> 0;
      n[6] = (n[6] as number) ^ (hi >>> 8);
      n[7] = (n[7] as number) ^ (hi & 0xff);
      n[8] = (n[8] as number) ^ (lo >>> 24);
      n[9] = (n[9] as number) ^ ((lo >>> 16) & 0xff);
      n[10] = (n[10] as number) ^ ((lo >>> 8) & 0xff);
      n[11] = (n[11] as number) ^ (lo & 0xff);
    } else {
      n.set(this.iv, 0);
      if (explicit) {
        n.set(explicit, 4);
      } else {
        n[4] = epoch >>> 8;
        n[5] = epoch & 0xff;
        writeSeq48(n, 6, seq);
      }
    }
  }

  private setAad(type: number, version: number, epoch: number, seq: number, length: number): void {
    const a = this.aad;
    a[0] = epoch >>> 8;
    a[1] = epoch & 0xff;
    writeSeq48(a, 2, seq);
    a[8] = type;
    a[9] = version >>> 8;
    a[10] = version & 0xff;
    a[11] = length >>> 8;
    a[12] = length & 0xff;
  }

  /** A complete protected record. */
  seal(type: number, version: number, epoch: number, seq: number, plaintext: Uint8Array): Uint8Array {
    this.setNonce(epoch, seq);
    this.setAad(type, version, epoch, seq, plaintext.length);
    const out = this.aead.seal(this.nonce, this.aad, plaintext, RECORD_HEADER_LENGTH + this.explicitLength);
    writeRecordHeader(out, 0, type, version, epoch, seq, out.length - RECORD_HEADER_LENGTH);
    if (this.explicitLength > 0) out.set(this.nonce.subarray(4, 12), RECORD_HEADER_LENGTH);
    return out;
  }

  /** The plaintext, or null when the record does not authenticate. */
  open(rec: RawRecord): Uint8Array | null {
    const body = rec.body;
    if (body.length < this.overhead) return null;
    const explicit = this.explicitLength > 0 ? body.subarray(0, this.explicitLength) : undefined;
    this.setNonce(rec.epoch, rec.seq, explicit);
    this.setAad(rec.type, rec.version, rec.epoch, rec.seq, body.length - this.overhead);
    return this.aead.open(this.nonce, this.aad, body.subarray(this.explicitLength));
  }
}
