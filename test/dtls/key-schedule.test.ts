import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { defaultCrypto, hash, secretKey } from "../../src/crypto/index.ts";

const D = defaultCrypto.digest;
import { finishedVerifyData, keyBlock, masterSecret, pskPremasterSecret, Transcript } from "../../src/dtls/key-schedule.ts";
import { SUITE_NAMES, suiteByName } from "../../src/dtls/suites.ts";
import { concatBytes } from "../../src/util/bytes.ts";
import { refPrf } from "../support/prf-reference.ts";

const h = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const seqBytes = (n: number, start = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);

describe("key schedule", () => {
  it("pskPremasterSecret is uint16 N || N zeros || uint16 N || psk (RFC 4279 section 2)", () => {
    expect(hex(pskPremasterSecret(h("01020304")))).toBe("0004" + "00000000" + "0004" + "01020304");
    expect(hex(pskPremasterSecret(new Uint8Array(0)))).toBe("0000" + "0000");
    const psk = seqBytes(300, 5);
    const pms = pskPremasterSecret(psk);
    expect(pms.length).toBe(4 + 600);
    expect(hex(pms.subarray(0, 2))).toBe("012c");
    expect(pms.subarray(2, 302).every((b) => b === 0)).toBe(true);
    expect(hex(pms.subarray(302, 304))).toBe("012c");
    expect(hex(pms.subarray(304))).toBe(hex(psk));
  });

  const pms = pskPremasterSecret(h("000102030405060708090a0b0c0d0e0f"));
  const cr = seqBytes(32, 0x11);
  const sr = seqBytes(32, 0x77);

  it("masterSecret without EMS = PRF(pms, 'master secret', client_random || server_random)[0..47]", () => {
    for (const alg of ["sha256", "sha384"] as const) {
      const ms = masterSecret(D, alg, pms, cr, sr, undefined);
      expect(ms.length).toBe(48);
      expect(hex(ms)).toBe(hex(refPrf(alg, pms, "master secret", concatBytes([cr, sr]), 48)));
      // order of the randoms matters
      expect(hex(ms)).not.toBe(hex(refPrf(alg, pms, "master secret", concatBytes([sr, cr]), 48)));
    }
  });

  it("masterSecret with EMS = PRF(pms, 'extended master secret', session_hash)[0..47] (RFC 7627 section 4)", () => {
    for (const alg of ["sha256", "sha384"] as const) {
      const sessionHash = hash(alg, [h("0102"), h("0304")]);
      const ms = masterSecret(D, alg, pms, cr, sr, sessionHash);
      expect(ms.length).toBe(48);
      expect(hex(ms)).toBe(hex(refPrf(alg, pms, "extended master secret", sessionHash, 48)));
      // randoms do not enter the extended master secret
      expect(hex(masterSecret(D, alg, pms, sr, cr, sessionHash))).toBe(hex(ms));
      expect(hex(ms)).not.toBe(hex(masterSecret(D, alg, pms, cr, sr, undefined)));
    }
  });

  it("keyBlock splits PRF(master, 'key expansion', server_random || client_random) per suite", () => {
    const master = seqBytes(48, 0x30);
    const expectedLengths: Record<string, [number, number]> = {
      TLS_PSK_WITH_AES_128_CCM_8: [16, 4],
      TLS_PSK_WITH_AES_128_CCM: [16, 4],
      TLS_PSK_WITH_AES_128_GCM_SHA256: [16, 4],
      TLS_PSK_WITH_AES_256_GCM_SHA384: [32, 4],
      TLS_PSK_WITH_CHACHA20_POLY1305_SHA256: [32, 12],
      TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256: [16, 4],
      TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256: [32, 12],
      TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384: [32, 4],
      TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: [16, 4],
      TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8: [16, 4],
      TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: [32, 12],
      TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: [32, 4],
      TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: [16, 4],
      TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: [32, 12],
      TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: [32, 4],
    };
    expect([...SUITE_NAMES].sort()).toEqual(Object.keys(expectedLengths).sort());
    for (const name of SUITE_NAMES) {
      const suite = suiteByName(name);
      const [k, iv] = expectedLengths[name] as [number, number];
      expect([suite.keyLength, suite.fixedIvLength]).toEqual([k, iv]);
      const block = refPrf(suite.prfHash, master, "key expansion", concatBytes([sr, cr]), 2 * k + 2 * iv);
      const keys = keyBlock(D, suite, secretKey(master), cr, sr);
      expect(hex(keys.clientKey)).toBe(hex(block.subarray(0, k)));
      expect(hex(keys.serverKey)).toBe(hex(block.subarray(k, 2 * k)));
      expect(hex(keys.clientIv)).toBe(hex(block.subarray(2 * k, 2 * k + iv)));
      expect(hex(keys.serverIv)).toBe(hex(block.subarray(2 * k + iv)));
    }
    expect(suiteByName("TLS_PSK_WITH_AES_256_GCM_SHA384").prfHash).toBe("sha384");
  });

  it("finishedVerifyData = PRF(master, label, transcript hash)[0..11]", () => {
    const master = seqBytes(48, 0x30);
    for (const alg of ["sha256", "sha384"] as const) {
      const th = hash(alg, [h("abcdef")]);
      for (const label of ["client finished", "server finished"] as const) {
        const vd = finishedVerifyData(D, alg, secretKey(master), label, th);
        expect(vd.length).toBe(12);
        expect(hex(vd)).toBe(hex(refPrf(alg, master, label, th, 12)));
      }
    }
  });

  it("Transcript hashes the concatenation of the added messages in order", () => {
    const t = new Transcript(D);
    t.add(h("0102"));
    t.add(h("030405"));
    expect(hex(t.hash("sha256"))).toBe(createHash("sha256").update(h("0102030405")).digest("hex"));
    // taking a digest does not end the hash: it can be taken again, and adding more continues it
    expect(hex(t.hash("sha256"))).toBe(createHash("sha256").update(h("0102030405")).digest("hex"));
    t.add(h("06"));
    expect(hex(t.hash("sha256"))).toBe(createHash("sha256").update(h("010203040506")).digest("hex"));
    t.add(new Uint8Array(0));
    t.add(h("07"));
    expect(hex(t.hash("sha256"))).toBe(createHash("sha256").update(h("01020304050607")).digest("hex"));

    const t384 = new Transcript(D);
    t384.add(h("0102"));
    t384.add(h("030405"));
    expect(hex(t384.hash("sha384"))).toBe(createHash("sha384").update(h("0102030405")).digest("hex"));

    expect(hex(new Transcript(D).hash("sha256"))).toBe(createHash("sha256").digest("hex"));
  });

  it("Transcript refuses to switch hash algorithm once a digest was taken", () => {
    const t = new Transcript(D);
    t.add(h("01"));
    t.hash("sha256");
    expect(() => t.hash("sha384")).toThrow(/transcript hashed with sha256, asked for sha384/);
  });
});
