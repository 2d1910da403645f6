import { createCipheriv } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ContentType, MAX_PLAINTEXT, RECORD_HEADER_LENGTH } from "../../src/dtls/constants.ts";
import { parseRecords, type RawRecord } from "../../src/dtls/record.ts";
import { RecordProtection } from "../../src/dtls/record-protection.ts";
import { REPLAY_WINDOW, ReplayWindow } from "../../src/dtls/replay-window.ts";
import { SUITE_NAMES, suiteByName, type CipherSuite } from "../../src/dtls/suites.ts";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const seqBytes = (n: number, start = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
const u16be = (v: number): string => v.toString(16).padStart(4, "0");
const u48be = (v: number): string => v.toString(16).padStart(12, "0");

function only(datagram: Uint8Array): RawRecord {
  const recs = parseRecords(datagram);
  expect(recs.length).toBe(1);
  return recs[0] as RawRecord;
}

/** Independent AEAD record sealing with node:crypto, per RFC 5288/6655 (explicit nonce) and RFC 7905 (XOR nonce). */
function referenceBody(
  suite: CipherSuite,
  key: Uint8Array,
  iv: Uint8Array,
  type: number,
  version: number,
  epoch: number,
  seq: number,
  pt: Uint8Array,
): string {
  const seqNum = Buffer.from(u16be(epoch) + u48be(seq), "hex"); // 8 bytes
  const aad = Buffer.concat([seqNum, Buffer.from([type, version >> 8, version & 0xff, pt.length >> 8, pt.length & 0xff])]);
  let nonce: Buffer;
  let explicit = "";
  if (suite.recordIvLength === 0) {
    nonce = Buffer.from(iv);
    for (let i = 0; i < 8; i++) nonce[4 + i] = (nonce[4 + i] as number) ^ (seqNum[i] as number);
  } else {
    nonce = Buffer.concat([iv, seqNum]);
    explicit = hex(seqNum);
  }
  let ct: Buffer;
  let tag: Buffer;
  switch (suite.aead) {
    case "aes-128-gcm":
    case "aes-256-gcm": {
      const c = createCipheriv(suite.aead, key, nonce);
      c.setAAD(aad);
      ct = Buffer.concat([c.update(pt), c.final()]);
      tag = c.getAuthTag();
      break;
    }
    case "chacha20-poly1305": {
      const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
      c.setAAD(aad, { plaintextLength: pt.length });
      ct = Buffer.concat([c.update(pt), c.final()]);
      tag = c.getAuthTag();
      break;
    }
    case "aes-128-ccm":
    case "aes-128-ccm8": {
      const c = createCipheriv("aes-128-ccm", key, nonce, { authTagLength: suite.tagLength });
      c.setAAD(aad, { plaintextLength: pt.length });
      ct = Buffer.concat([c.update(pt), c.final()]);
      tag = c.getAuthTag();
      break;
    }
  }
  return explicit + hex(ct) + hex(tag);
}

describe("suites", () => {
  it("SUITE_NAMES lists the PSK, ECDHE_PSK and certificate AEAD suites with the right record parameters", () => {
    const params = SUITE_NAMES.map((n) => {
      const s = suiteByName(n);
      return [n, s.id, s.aead, s.recordIvLength, s.tagLength];
    });
    expect(params).toEqual([
      ["TLS_PSK_WITH_AES_128_CCM_8", 0xc0a8, "aes-128-ccm8", 8, 8],
      ["TLS_PSK_WITH_AES_128_GCM_SHA256", 0x00a8, "aes-128-gcm", 8, 16],
      ["TLS_PSK_WITH_AES_256_GCM_SHA384", 0x00a9, "aes-256-gcm", 8, 16],
      ["TLS_PSK_WITH_CHACHA20_POLY1305_SHA256", 0xccab, "chacha20-poly1305", 0, 16],
      ["TLS_PSK_WITH_AES_128_CCM", 0xc0a4, "aes-128-ccm", 8, 16],
      ["TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256", 0xd001, "aes-128-gcm", 8, 16],
      ["TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", 0xccac, "chacha20-poly1305", 0, 16],
      ["TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384", 0xd002, "aes-256-gcm", 8, 16],
      ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xc02b, "aes-128-gcm", 8, 16],
      ["TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", 0xc0ae, "aes-128-ccm8", 8, 8],
      ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca9, "chacha20-poly1305", 0, 16],
      ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xc02c, "aes-256-gcm", 8, 16],
      ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xc02f, "aes-128-gcm", 8, 16],
      ["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca8, "chacha20-poly1305", 0, 16],
      ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xc030, "aes-256-gcm", 8, 16],
    ]);
  });
});

describe("RecordProtection", () => {
  for (const name of SUITE_NAMES) {
    describe(name, () => {
      const suite = suiteByName(name);
      const key = seqBytes(suite.keyLength, 0x20);
      const iv = seqBytes(suite.fixedIvLength, 0xc0);
      const sender = new RecordProtection(suite, key, iv);
      const receiver = new RecordProtection(suite, key, iv);
      const pt = new TextEncoder().encode("push: temperature=21.5");

      it("overhead is explicit nonce + tag", () => {
        expect(sender.overhead).toBe(suite.recordIvLength + suite.tagLength);
        expect(sender.overhead).toBe(name.includes("CHACHA20") ? 16 : name.endsWith("CCM_8") ? 16 : 24);
      });

      it("seal writes the header and the body the RFC construction gives, byte for byte", () => {
        for (const [epoch, seq] of [
          [1, 0],
          [1, 5],
          [2, 0xffff_ffff],
          [3, 0x1_0000_0000],
          [0xffff, 2 ** 48 - 1],
        ] as const) {
          const rec = sender.seal(ContentType.application_data, 0xfefd, epoch, seq, pt);
          const bodyLen = suite.recordIvLength + pt.length + suite.tagLength;
          expect(rec.length).toBe(RECORD_HEADER_LENGTH + bodyLen);
          expect(hex(rec.subarray(0, RECORD_HEADER_LENGTH))).toBe("17" + "fefd" + u16be(epoch) + u48be(seq) + u16be(bodyLen));
          expect(hex(rec.subarray(RECORD_HEADER_LENGTH))).toBe(referenceBody(suite, key, iv, 23, 0xfefd, epoch, seq, pt));
        }
      });

      it(
        suite.recordIvLength === 8
          ? "the 8 explicit nonce bytes at the start of the body are epoch || seq"
          : "carries no explicit nonce: body is ciphertext || tag only",
        () => {
          const rec = sender.seal(ContentType.handshake, 0xfefd, 0x0102, 0x0304_0506_0708, pt);
          const body = only(rec).body;
          if (suite.recordIvLength === 8) {
            expect(hex(body.subarray(0, 8))).toBe("0102" + "030405060708");
            expect(body.length).toBe(8 + pt.length + suite.tagLength);
          } else {
            expect(body.length).toBe(pt.length + 16);
            // the ciphertext does not start with the sequence number
            expect(hex(body.subarray(0, 8))).not.toBe("0102030405060708");
          }
        },
      );

      it("open round-trips for plaintext sizes 0, 1, 255, 256 and MAX_PLAINTEXT", () => {
        for (const n of [0, 1, 255, 256, MAX_PLAINTEXT]) {
          const p = seqBytes(n, n);
          const rec = only(sender.seal(ContentType.application_data, 0xfefd, 1, n, p));
          const got = receiver.open(rec);
          expect(got).not.toBeNull();
          expect(hex(got as Uint8Array)).toBe(hex(p));
        }
      });

      it("records sealed earlier still open after later seals/opens (no shared nonce/AAD state leaks)", () => {
        const a = sender.seal(ContentType.application_data, 0xfefd, 1, 10, seqBytes(7, 1));
        const b = sender.seal(ContentType.application_data, 0xfefd, 1, 11, seqBytes(9, 2));
        expect(hex(receiver.open(only(b)) ?? new Uint8Array([0xde]))).toBe(hex(seqBytes(9, 2)));
        expect(hex(receiver.open(only(a)) ?? new Uint8Array([0xde]))).toBe(hex(seqBytes(7, 1)));
        expect(hex(receiver.open(only(b)) ?? new Uint8Array([0xde]))).toBe(hex(seqBytes(9, 2)));
      });

      it("the iv passed to the constructor is copied", () => {
        const ivCopy = new Uint8Array(iv);
        const p = new RecordProtection(suite, key, ivCopy);
        const rec = p.seal(ContentType.application_data, 0xfefd, 1, 1, pt);
        ivCopy.fill(0);
        expect(hex(p.seal(ContentType.application_data, 0xfefd, 1, 1, pt))).toBe(hex(rec));
      });

      it("open fails when any header field bound into the AAD/nonce changes", () => {
        const rec = sender.seal(ContentType.application_data, 0xfefd, 1, 0x1_0000_0007, pt);
        expect(receiver.open(only(rec))).not.toBeNull();
        // header: [0] type, [1..2] version, [3..4] epoch, [5..10] seq, [11..12] length
        const edits: [string, (r: Uint8Array) => void][] = [
          ["type", (r) => (r[0] = ContentType.handshake)],
          ["version (DTLS 1.0)", (r) => (r[2] = 0xff)],
          ["epoch low byte", (r) => (r[4] = 2)],
          ["epoch high byte", (r) => (r[3] = 1)],
          ["seq high byte", (r) => (r[5] = 1)],
          ["seq bit 32", (r) => (r[6] = 0)],
          ["seq low byte", (r) => (r[10] = (r[10] as number) ^ 1)],
        ];
        for (const [what, edit] of edits) {
          const bad = new Uint8Array(rec);
          edit(bad);
          expect(hex(bad.subarray(RECORD_HEADER_LENGTH))).toBe(hex(rec.subarray(RECORD_HEADER_LENGTH)));
          expect(receiver.open(only(bad)), what).toBeNull();
        }
      });

      it("open fails on any single bit flip in the body (explicit nonce, ciphertext, tag)", () => {
        const rec = sender.seal(ContentType.application_data, 0xfefd, 1, 42, seqBytes(20));
        for (let bit = RECORD_HEADER_LENGTH * 8; bit < rec.length * 8; bit++) {
          const bad = new Uint8Array(rec);
          bad[bit >>> 3] = (bad[bit >>> 3] as number) ^ (1 << (bit & 7));
          expect(receiver.open(only(bad)), `bit ${bit}`).toBeNull();
        }
      });

      it("open returns null for bodies shorter than the overhead and for truncated/extended bodies", () => {
        const rec = only(sender.seal(ContentType.application_data, 0xfefd, 1, 42, pt));
        for (let n = 0; n < sender.overhead; n++) {
          expect(receiver.open({ ...rec, body: new Uint8Array(n) })).toBeNull();
          expect(receiver.open({ ...rec, body: rec.body.subarray(0, n) })).toBeNull();
        }
        expect(receiver.open({ ...rec, body: rec.body.subarray(0, rec.body.length - 1) })).toBeNull();
        const longer = new Uint8Array(rec.body.length + 1);
        longer.set(rec.body);
        expect(receiver.open({ ...rec, body: longer })).toBeNull();
      });

      it("open fails with another key or another iv", () => {
        const rec = only(sender.seal(ContentType.application_data, 0xfefd, 1, 1, pt));
        const k2 = new Uint8Array(key);
        k2[0] = (k2[0] as number) ^ 1;
        expect(new RecordProtection(suite, k2, iv).open(rec)).toBeNull();
        const iv2 = new Uint8Array(iv);
        iv2[0] = (iv2[0] as number) ^ 1;
        expect(new RecordProtection(suite, key, iv2).open(rec)).toBeNull();
      });
    });
  }

  it("distinct epochs/seqs give distinct ciphertexts for the same plaintext (nonce is not reused)", () => {
    for (const name of SUITE_NAMES) {
      const suite = suiteByName(name);
      const p = new RecordProtection(suite, seqBytes(suite.keyLength), seqBytes(suite.fixedIvLength));
      const bodies = new Set<string>();
      for (const [e, s] of [
        [1, 0],
        [1, 1],
        [2, 0],
        [1, 0x1_0000_0000],
        [1, 0x100],
      ] as const) {
        const rec = p.seal(23, 0xfefd, e, s, new Uint8Array(16));
        bodies.add(hex(rec.subarray(RECORD_HEADER_LENGTH + suite.recordIvLength)));
      }
      expect(bodies.size, name).toBe(5);
    }
  });
});

describe("ReplayWindow", () => {
  it("window size is 128", () => {
    expect(REPLAY_WINDOW).toBe(128);
  });

  it("starts empty: every seq is new, highest is -1", () => {
    const w = new ReplayWindow();
    expect(w.highest).toBe(-1);
    for (const s of [0, 1, 127, 128, 1000, 2 ** 48 - 1]) expect(w.check(s)).toBe(true);
  });

  it("check does not change state; accept marks seen and moves highest", () => {
    const w = new ReplayWindow();
    expect(w.check(5)).toBe(true);
    expect(w.check(5)).toBe(true);
    expect(w.highest).toBe(-1);
    w.accept(5);
    expect(w.highest).toBe(5);
    expect(w.check(5)).toBe(false);
    for (const s of [0, 1, 2, 3, 4, 6, 7]) expect(w.check(s), `seq ${s}`).toBe(true);
    w.accept(3);
    expect(w.highest).toBe(5);
    expect(w.check(3)).toBe(false);
    expect(w.check(4)).toBe(true);
  });

  it("keeps exactly the 128 sequence numbers highest-127..highest", () => {
    const w = new ReplayWindow();
    w.accept(1000);
    expect(w.check(1000 - 127)).toBe(true); // oldest in the window, unseen
    expect(w.check(1000 - 128)).toBe(false); // just outside: too old
    expect(w.check(0)).toBe(false);
    w.accept(1000 - 127);
    expect(w.check(1000 - 127)).toBe(false);
    // advancing by one pushes 873 out and brings nothing else in
    w.accept(1001);
    expect(w.check(1001 - 128)).toBe(false);
    expect(w.check(1001 - 127)).toBe(true);
  });

  it("accepting every seq in order rejects all replays inside the window", () => {
    const w = new ReplayWindow();
    for (let s = 0; s < 1000; s++) {
      expect(w.check(s)).toBe(true);
      w.accept(s);
      expect(w.check(s)).toBe(false);
      if (s > 0) expect(w.check(s - 1)).toBe(false);
      if (s >= 127) expect(w.check(s - 127)).toBe(false);
    }
    expect(w.highest).toBe(999);
  });

  it("an advance of 127 clears exactly the slots that left the window", () => {
    const w = new ReplayWindow();
    for (let s = 0; s <= 127; s++) w.accept(s);
    w.accept(127 + 127); // window is now 127..254
    expect(w.check(126)).toBe(false); // fell out
    expect(w.check(127)).toBe(false); // still inside and seen
    for (let s = 128; s < 254; s++) expect(w.check(s), `seq ${s}`).toBe(true); // slots reused from 0..125: cleared
    expect(w.check(254)).toBe(false);
  });

  it("far-ahead jumps (>= 128) reset the window", () => {
    const w = new ReplayWindow();
    for (let s = 0; s <= 127; s++) w.accept(s);
    w.accept(255); // advance of exactly 128
    for (let s = 128; s < 255; s++) expect(w.check(s), `seq ${s}`).toBe(true);
    expect(w.check(127)).toBe(false);
    expect(w.check(255)).toBe(false);
    w.accept(1_000_000_000_000); // huge jump
    expect(w.highest).toBe(1_000_000_000_000);
    expect(w.check(255)).toBe(false);
    expect(w.check(1_000_000_000_000 - 1)).toBe(true);
    expect(w.check(1_000_000_000_000 - 127)).toBe(true);
    expect(w.check(1_000_000_000_000 - 128)).toBe(false);
  });

  it("works at the top of the 48-bit sequence space", () => {
    const w = new ReplayWindow();
    const top = 2 ** 48 - 1;
    w.accept(top - 200);
    w.accept(top - 1);
    w.accept(top);
    expect(w.highest).toBe(top);
    expect(w.check(top)).toBe(false);
    expect(w.check(top - 1)).toBe(false);
    expect(w.check(top - 2)).toBe(true);
    expect(w.check(top - 127)).toBe(true);
    expect(w.check(top - 128)).toBe(false);
    expect(w.check(top - 200)).toBe(false);
  });

  it("matches a naive Set-based model (property)", () => {
    type Op = { kind: "rel"; delta: number; authentic: boolean } | { kind: "abs"; seq: number; authentic: boolean };
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 8, arbitrary: fc.record({ kind: fc.constant("rel" as const), delta: fc.integer({ min: -200, max: 200 }), authentic: fc.boolean() }) },
      {
        weight: 1,
        arbitrary: fc.record({
          kind: fc.constant("abs" as const),
          seq: fc.bigInt({ min: 0n, max: 2n ** 48n - 1n }).map(Number),
          authentic: fc.boolean(),
        }),
      },
    );
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 120 }), (ops) => {
        const w = new ReplayWindow();
        const seen = new Set<number>();
        let max = -1;
        const modelCheck = (s: number): boolean => (s > max ? true : s <= max - REPLAY_WINDOW ? false : !seen.has(s));
        for (const o of ops) {
          const seq = o.kind === "abs" ? o.seq : Math.max(0, max + o.delta);
          const fresh = w.check(seq);
          expect(fresh).toBe(modelCheck(seq));
          // the connection accepts only records that passed check and authenticated
          if (fresh && o.authentic) {
            w.accept(seq);
            seen.add(seq);
            max = Math.max(max, seq);
          }
          expect(w.highest).toBe(max);
          // sweep the whole window and a little around it
          const lo = Math.max(0, max - REPLAY_WINDOW - 2);
          const got: boolean[] = [];
          const want: boolean[] = [];
          for (let s = lo; s <= max + 2; s++) {
            got.push(w.check(s));
            want.push(modelCheck(s));
          }
          expect(got).toEqual(want);
        }
      }),
      { seed: 42, numRuns: 200 },
    );
  });
});
