/**
 * Record protection of one direction of epoch 1: AEAD seal and open with the
 * DTLS nonce and additional data (RFC 5246 6.2.3.3 / RFC 6347 4.1.2.1), for
 * plain records and for tls12_cid records (RFC 9146 5.3's additional data and
 * the DTLSInnerPlaintext).
 */
import { defaultCrypto, type AeadCiphers, type AeadKey } from "../crypto/index.ts";
import { ContentType, RECORD_HEADER_LENGTH } from "./constants.ts";
import type { RawRecord } from "./record.ts";
import { writeCidRecordHeader, writeRecordHeader, writeSeq48 } from "./record.ts";
import type { CipherSuite } from "./suites.ts";

// One nonce and one AAD buffer for every RecordProtection of the process, not
// two per connection: seal and open fill them and hand them to node:crypto
// synchronously (which copies them), and the event loop runs one call at a
// time, so nothing else writes them in between. Buffers, not plain
// Uint8Arrays: node:crypto handles them on its fast path.
const nonce = Buffer.alloc(12);
const aad = Buffer.alloc(13);
/** The AAD of tls12_cid records: 23 bytes and a CID of up to 255 (RFC 9146 5.3). */
const cidAad = Buffer.alloc(23 + 255);

/**
 * A suite with the AEAD functions of one provider, resolved once per provider
 * and suite and shared by every session that uses them: a RecordProtection
 * holds it where it held the suite, so the provider costs no byte per session
 * and no lookup per record. The functions are called detached (as plain
 * functions, not as methods of the provider's `aead`).
 */
interface RecordCipher {
  readonly suite: CipherSuite;
  readonly seal: AeadCiphers["seal"];
  readonly open: AeadCiphers["open"];
  readonly keyBytes: AeadCiphers["keyBytes"];
}

const recordCiphers = new WeakMap<AeadCiphers, Map<CipherSuite, RecordCipher>>();

function recordCipher(suite: CipherSuite, aead: AeadCiphers): RecordCipher {
  let bySuite = recordCiphers.get(aead);
  if (bySuite === undefined) {
    bySuite = new Map();
    recordCiphers.set(aead, bySuite);
  }
  let cipher = bySuite.get(suite);
  if (cipher === undefined) {
    cipher = Object.freeze({ suite, seal: aead.seal, open: aead.open, keyBytes: aead.keyBytes });
    bySuite.set(suite, cipher);
  }
  return cipher;
}

/** Big-endian 32-bit word of bytes[at..at+4) as an int32 (a small integer to V8: no heap box). */
function word(bytes: Uint8Array, at: number): number {
  return ((bytes[at] ?? 0) << 24) | ((bytes[at + 1] ?? 0) << 16) | ((bytes[at + 2] ?? 0) << 8) | (bytes[at + 3] ?? 0) | 0;
}

function putWord(out: Uint8Array, at: number, v: number): void {
  out[at] = v >>> 24;
  out[at + 1] = v >>> 16;
  out[at + 2] = v >>> 8;
  out[at + 3] = v;
}

/**
 * AEAD protection of one direction of one epoch.
 * GCM/CCM (RFC 5288, 6655): nonce = 4-byte salt || 8-byte explicit nonce, the
 * explicit part (= epoch || seq) travels at the front of the record body.
 * ChaCha20-Poly1305 (RFC 7905): nonce = 12-byte IV XOR (epoch || seq), nothing explicit.
 * AAD (RFC 5246 6.2.3.3 with the DTLS sequence): epoch||seq, type, version, plaintext length.
 *
 * Every session holds two of these, so the fixed IV is kept as three int32
 * fields (GCM/CCM use the first) rather than a byte array of its own, and the
 * key is held as it is (no AEAD object around it).
 */
export class RecordProtection {
  /** The suite and the provider's AEAD functions (shared by every session that negotiated it with that provider). */
  private readonly cipher: RecordCipher;
  private readonly key: AeadKey;
  private readonly iv0: number;
  private readonly iv1: number;
  private readonly iv2: number;

  /** `aead`: the crypto provider's AEAD ciphers, which make the key and seal and open every record. */
  constructor(suite: CipherSuite, key: Uint8Array, iv: Uint8Array, aead: AeadCiphers = defaultCrypto.aead) {
    this.cipher = recordCipher(suite, aead);
    this.key = aead.key(key);
    this.iv0 = word(iv, 0);
    this.iv1 = iv.length > 4 ? word(iv, 4) : 0;
    this.iv2 = iv.length > 8 ? word(iv, 8) : 0;
  }

  private get suite(): CipherSuite {
    return this.cipher.suite;
  }

  /** The suite's IANA number. */
  get suiteId(): number {
    return this.suite.id;
  }

  /** The key and the fixed IV as bytes (a session snapshot); `new RecordProtection(suite, key, iv, aead)` makes the same protection again. */
  exportKeys(): { readonly key: Uint8Array; readonly iv: Uint8Array } {
    const iv = new Uint8Array(12);
    putWord(iv, 0, this.iv0);
    putWord(iv, 4, this.iv1);
    putWord(iv, 8, this.iv2);
    return { key: this.cipher.keyBytes(this.key), iv: iv.subarray(0, this.suite.fixedIvLength) };
  }

  /** 8 (GCM/CCM) or 0 (ChaCha20-Poly1305, whose nonce is the IV XOR epoch||seq). */
  private get explicitLength(): number {
    return this.suite.recordIvLength;
  }

  /** Bytes a record body grows by: explicit nonce and tag. */
  get overhead(): number {
    return this.suite.recordIvLength + this.suite.tagLength;
  }

  /** The nonce for epoch||seq; `explicit` (GCM/CCM, when opening) is where the record body carries its explicit part. */
  private setNonce(epoch: number, seq: number, explicit: Uint8Array | undefined): void {
    const n = nonce;
    putWord(n, 0, this.iv0);
    const hi = Math.floor(seq / 0x1_0000_0000);
    const lo = seq >>> 0;
    if (this.explicitLength === 0) {
      putWord(n, 4, this.iv1 ^ ((epoch << 16) | hi));
      putWord(n, 8, this.iv2 ^ lo);
    } else if (explicit !== undefined) {
      for (let i = 0; i < 8; i++) n[4 + i] = explicit[i] as number;
    } else {
      putWord(n, 4, (epoch << 16) | hi);
      putWord(n, 8, lo);
    }
  }

  private static setAad(type: number, version: number, epoch: number, seq: number, length: number): void {
    const a = aad;
    a[0] = epoch >>> 8;
    a[1] = epoch & 0xff;
    writeSeq48(a, 2, seq);
    a[8] = type;
    a[9] = version >>> 8;
    a[10] = version & 0xff;
    a[11] = length >>> 8;
    a[12] = length & 0xff;
  }

  /**
   * The additional data of a tls12_cid record under an AEAD (RFC 9146 5.3):
   *
   *   seq_num_placeholder (8 bytes of 0xff) | tls12_cid (25) | cid_length (1) | tls12_cid (25) |
   *   DTLSCiphertext.version (2) | epoch (2) | sequence_number (6) | cid | length_of_DTLSInnerPlaintext (2)
   *
   * `cid` is a latin1 string or the record's bytes. Returns the AAD (a view of the shared buffer).
   */
  static cidAdditionalData(version: number, epoch: number, seq: number, cid: string | Uint8Array, innerLength: number): Buffer {
    const a = cidAad;
    a.fill(0xff, 0, 8);
    a[8] = ContentType.tls12_cid;
    a[9] = cid.length;
    a[10] = ContentType.tls12_cid;
    a[11] = version >>> 8;
    a[12] = version & 0xff;
    a[13] = epoch >>> 8;
    a[14] = epoch & 0xff;
    writeSeq48(a, 15, seq);
    const n = cid.length;
    if (typeof cid === "string") for (let i = 0; i < n; i++) a[21 + i] = cid.charCodeAt(i);
    else a.set(cid, 21);
    a[21 + n] = innerLength >>> 8;
    a[22 + n] = innerLength & 0xff;
    return a.subarray(0, 23 + n);
  }

  /**
   * A complete tls12_cid record (RFC 9146 4, 5.3): the content and its real
   * type (no padding) sealed as a DTLSInnerPlaintext, the peer's CID in the header.
   */
  sealCid(realType: number, version: number, epoch: number, seq: number, content: Uint8Array, cid: string): Uint8Array {
    const inner = new Uint8Array(content.length + 1);
    inner.set(content);
    inner[content.length] = realType;
    const headerLength = RECORD_HEADER_LENGTH + cid.length;
    const out = this.sealBody(epoch, seq, RecordProtection.cidAdditionalData(version, epoch, seq, cid, inner.length), inner, headerLength);
    writeCidRecordHeader(out, 0, version, epoch, seq, cid, out.length - headerLength);
    return out;
  }

  /** The DTLSInnerPlaintext of a tls12_cid record (see splitInnerPlaintext), or null when it does not authenticate. */
  openCid(rec: RawRecord): Uint8Array | null {
    const cid = rec.cid;
    if (cid === undefined || rec.body.length < this.overhead) return null;
    return this.openBody(rec, RecordProtection.cidAdditionalData(rec.version, rec.epoch, rec.seq, cid, rec.body.length - this.overhead));
  }

  /** A complete protected record. */
  seal(type: number, version: number, epoch: number, seq: number, plaintext: Uint8Array): Uint8Array {
    RecordProtection.setAad(type, version, epoch, seq, plaintext.length);
    const out = this.sealBody(epoch, seq, aad, plaintext, RECORD_HEADER_LENGTH);
    writeRecordHeader(out, 0, type, version, epoch, seq, out.length - RECORD_HEADER_LENGTH);
    return out;
  }

  /** The plaintext, or null when the record does not authenticate. */
  open(rec: RawRecord): Uint8Array | null {
    if (rec.body.length < this.overhead) return null;
    RecordProtection.setAad(rec.type, rec.version, rec.epoch, rec.seq, rec.body.length - this.overhead);
    return this.openBody(rec, aad);
  }

  /** Seals behind `headerLength` bytes left for the caller's header: the explicit nonce (GCM/CCM), ciphertext, tag. */
  private sealBody(epoch: number, seq: number, ad: Uint8Array, plaintext: Uint8Array, headerLength: number): Uint8Array {
    this.setNonce(epoch, seq, undefined);
    const cipher = this.cipher;
    const out = cipher.seal(cipher.suite.aead, this.key, nonce, ad, plaintext, headerLength + this.explicitLength);
    if (this.explicitLength > 0) {
      // the explicit nonce is epoch || seq, as in the header
      out[headerLength] = epoch >>> 8;
      out[headerLength + 1] = epoch;
      writeSeq48(out, headerLength + 2, seq);
    }
    return out;
  }

  private openBody(rec: RawRecord, ad: Uint8Array): Uint8Array | null {
    const body = rec.body;
    this.setNonce(rec.epoch, rec.seq, this.explicitLength > 0 ? body : undefined);
    const cipher = this.cipher;
    return cipher.open(cipher.suite.aead, this.key, nonce, ad, this.explicitLength > 0 ? body.subarray(this.explicitLength) : body);
  }
}
