import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  constantTimeEqual,
  createAead,
  hash,
  hmac,
  prf,
  randomBytes,
  runningHash,
  secretKey,
  type AeadName,
  timeOrderedId,
} from "../../src/crypto/index.ts";
import { concatBytes } from "../../src/util/bytes.ts";
import { refPrf } from "../support/prf-reference.ts";

const h = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const seqBytes = (n: number, start = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);

describe("hash / hmac / helpers", () => {
  it("hash matches FIPS 180 'abc' digests and hashes parts as one stream", () => {
    const abc = new TextEncoder().encode("abc");
    expect(hex(hash("sha256", [abc]))).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(hex(hash("sha384", [abc.subarray(0, 1), abc.subarray(1)]))).toBe(
      "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
    );
  });

  it("hmac matches RFC 4231 test case 2", () => {
    const key = secretKey(new TextEncoder().encode("Jefe"));
    const data = new TextEncoder().encode("what do ya want for nothing?");
    expect(hex(hmac("sha256", key, [data]))).toBe("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    expect(hex(hmac("sha384", key, [data.subarray(0, 4), data.subarray(4)]))).toBe(
      "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
    );
  });

  it("constantTimeEqual compares content and length without throwing", () => {
    expect(constantTimeEqual(h("0102"), h("0102"))).toBe(true);
    expect(constantTimeEqual(h("0102"), h("0103"))).toBe(false);
    expect(constantTimeEqual(h("0102"), h("010200"))).toBe(false);
    expect(constantTimeEqual(new Uint8Array(0), new Uint8Array(0))).toBe(true);
  });

  it("randomBytes returns fresh, independent arrays of the requested length, across pool refills", () => {
    const seen = new Set<string>();
    const outs: Uint8Array[] = [];
    // 32-byte draws cross the 4 KiB pool boundary several times; odd sizes misalign it
    for (let i = 0; i < 600; i++) {
      const n = i % 3 === 0 ? 32 : i % 3 === 1 ? 13 : 256;
      const b = randomBytes(n);
      expect(b).toBeInstanceOf(Uint8Array);
      expect(b.length).toBe(n);
      seen.add(hex(b));
      outs.push(b);
    }
    expect(seen.size).toBe(600);
    // no two results share memory: writing every other one leaves its neighbours unchanged
    const before = outs.map(hex);
    outs.forEach((o, i) => {
      if (i % 2 === 0) o.fill(0xaa);
    });
    expect(outs.map(hex).filter((_, i) => i % 2 === 1)).toEqual(before.filter((_, i) => i % 2 === 1));
    for (let i = 0; i < 20; i++) expect(hex(randomBytes(32))).not.toBe("aa".repeat(32));
    expect(randomBytes(0).length).toBe(0);
    const big = randomBytes(5000);
    expect(big.length).toBe(5000);
    expect(big.some((x) => x !== 0)).toBe(true);
    const a = randomBytes(257);
    const b = randomBytes(257);
    expect(a.length).toBe(257);
    expect(hex(a)).not.toBe(hex(b));
  });
});

describe("TLS 1.2 PRF", () => {
  // Published vectors (IETF TLS WG list, msg03416; also in BearSSL's test_crypto.c).
  const SHA256_OUT =
    "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a" +
    "6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab" +
    "4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701" +
    "87347b66";
  const SHA384_OUT =
    "7b0c18e9ced410ed1804f2cfa34a336a1c14dffb4900bb5fd7942107e81c83cd" +
    "e9ca0faa60be9fe34f82b1233c9146a0e534cb400fed2700884f9dc236f80edd" +
    "8bfa961144c9e8d792eca722a7b32fc3d416d473ebc2c5fd4abfdad05d918425" +
    "9b5bf8cd4d90fa0d31e2dec479e4f1a26066f2eea9a69236a3e52655c9e9aee6" +
    "91c8f3a26854308d5eaa3be85e0990703d73e56f";

  it("P_SHA256 published vector (100 bytes)", () => {
    const out = prf("sha256", h("9bbe436ba940f017b17652849a71db35"), "test label", h("a0ba9f936cda311827a6f796ffd5198c"), 100);
    expect(out.length).toBe(100);
    expect(hex(out)).toBe(SHA256_OUT);
  });

  it("P_SHA384 published vector (148 bytes)", () => {
    const out = prf("sha384", h("b80b733d6ceefcdc71566ea48e5567df"), "test label", h("cd665cf6a8447dd6ff8b27555edb7465"), 148);
    expect(out.length).toBe(148);
    expect(hex(out)).toBe(SHA384_OUT);
  });

  it("the independent reference P_hash reproduces the published vectors (sanity of the reference)", () => {
    expect(hex(refPrf("sha256", h("9bbe436ba940f017b17652849a71db35"), "test label", h("a0ba9f936cda311827a6f796ffd5198c"), 100))).toBe(SHA256_OUT);
    expect(hex(refPrf("sha384", h("b80b733d6ceefcdc71566ea48e5567df"), "test label", h("cd665cf6a8447dd6ff8b27555edb7465"), 148))).toBe(SHA384_OUT);
  });

  it("agrees with the reference for every output length 0..130 and both hashes, with raw and SecretKey secrets", () => {
    const secret = seqBytes(48, 3);
    const seed = seqBytes(64, 0x80);
    for (const alg of ["sha256", "sha384"] as const) {
      const full = refPrf(alg, secret, "key expansion", seed, 130);
      for (let n = 0; n <= 130; n++) {
        expect(hex(prf(alg, secret, "key expansion", seed, n)), `${alg} ${n}`).toBe(hex(full.subarray(0, n)));
      }
      expect(hex(prf(alg, secretKey(secret), "key expansion", seed, 130))).toBe(hex(full));
    }
  });

  it("a shorter output is a prefix of a longer one; label and seed both matter", () => {
    const s = seqBytes(16);
    const long = prf("sha256", s, "a", seqBytes(8), 64);
    expect(hex(prf("sha256", s, "a", seqBytes(8), 12))).toBe(hex(long.subarray(0, 12)));
    expect(hex(prf("sha256", s, "b", seqBytes(8), 12))).not.toBe(hex(long.subarray(0, 12)));
    expect(hex(prf("sha256", s, "a", seqBytes(8, 1), 12))).not.toBe(hex(long.subarray(0, 12)));
    // label||seed is one string: moving a byte between them does not matter (per RFC 5246)
    expect(hex(prf("sha256", s, "ab", h("00"), 32))).toBe(hex(prf("sha256", s, "a", concatBytes([h("62"), h("00")]), 32)));
    // empty secret and empty seed are legal
    expect(hex(prf("sha256", new Uint8Array(0), "x", new Uint8Array(0), 40))).toBe(
      hex(refPrf("sha256", new Uint8Array(0), "x", new Uint8Array(0), 40)),
    );
  });
});

interface Kat {
  readonly source: string;
  readonly name: AeadName;
  readonly key: string;
  readonly nonce: string;
  readonly aad: string;
  readonly plaintext: string;
  readonly ciphertext: string;
  readonly tag: string;
}

const KATS: readonly Kat[] = [
  {
    source: "RFC 8439 section 2.8.2 (AEAD_CHACHA20_POLY1305)",
    name: "chacha20-poly1305",
    key: "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
    nonce: "070000004041424344454647",
    aad: "50515253c0c1c2c3c4c5c6c7",
    plaintext: Buffer.from(
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
    ).toString("hex"),
    ciphertext:
      "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36" +
      "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116",
    tag: "1ae10b594f09e26a7e902ecbd0600691",
  },
  {
    source: "McGrew-Viega GCM spec, test case 4 (AES-128, 96-bit IV, AAD)",
    name: "aes-128-gcm",
    key: "feffe9928665731c6d6a8f9467308308",
    nonce: "cafebabefacedbaddecaf888",
    aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
    plaintext: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    ciphertext: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
    tag: "5bc94fbc3221a5db94fae95ae7121a47",
  },
  {
    source: "McGrew-Viega GCM spec, test case 16 (AES-256, 96-bit IV, AAD)",
    name: "aes-256-gcm",
    key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
    nonce: "cafebabefacedbaddecaf888",
    aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
    plaintext: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
    tag: "76fc6ece0f4e1768cddf8853bb2d551b",
  },
  {
    source: "RFC 3610 packet vector #1 (13-byte nonce, 8-byte header, M=8)",
    name: "aes-128-ccm8",
    key: "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf",
    nonce: "00000003020100a0a1a2a3a4a5",
    aad: "0001020304050607",
    plaintext: "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e",
    ciphertext: "588c979a61c663d2f066d0c2c0f989806d5f6b61dac384",
    tag: "17e8d12cfdf926e0",
  },
  {
    source: "NIST SP 800-38C appendix C.3 (12-byte nonce, Tlen=64)",
    name: "aes-128-ccm8",
    key: "404142434445464748494a4b4c4d4e4f",
    nonce: "101112131415161718191a1b",
    aad: "000102030405060708090a0b0c0d0e0f10111213",
    plaintext: "202122232425262728292a2b2c2d2e2f3031323334353637",
    ciphertext: "e3b201a9f5b71a7a9b1ceaeccd97e70b6176aad9a4428aa5",
    tag: "484392fbc1b09951",
  },
  {
    source: "Wycheproof aes_ccm_test.json tcId 11 (12-byte nonce, 16-byte tag)",
    name: "aes-128-ccm",
    key: "9415f925bcb41dc25e86c826dbc8bf68",
    nonce: "bdffaa763b916ff0ee3f3ce4",
    aad: "705d676cd8a94451",
    plaintext: "feb36167eafc02c8e2bd6e13817686ba",
    ciphertext: "08db327a88be7b48f430fd7bfccdf502",
    tag: "b7c249f810adacf99abded1f3b9130f2",
  },
  {
    source: "Wycheproof aes_ccm_test.json tcId 34 (12-byte nonce, 16-byte AAD, 16-byte tag)",
    name: "aes-128-ccm",
    key: "875b0b4a84150524eb1f50f9d8de1388",
    nonce: "fdc5014ed1ad706129d57322",
    aad: "35a6d9829c8449c4402e385cc5c6fe98",
    plaintext: "2f575dfb2dbe9d238de576fc63e4ac32",
    ciphertext: "3469c3ff738aa32aacc1ac48d89b1d75",
    tag: "fa68720a3171a54c4b3690bffde7b610",
  },
  {
    source: "Wycheproof aes_ccm_test.json tcId 1 (empty AAD and message, 16-byte tag)",
    name: "aes-128-ccm",
    key: "bedcfb5a011ebc84600fcb296c15af0d",
    nonce: "438a547a94ea88dce46c6c85",
    aad: "",
    plaintext: "",
    ciphertext: "",
    tag: "25d1a38495a7dea45bda049705627d10",
  },
];

function flipBit(b: Uint8Array, bit: number): Uint8Array {
  const c = new Uint8Array(b);
  c[bit >>> 3] = (c[bit >>> 3] as number) ^ (1 << (bit & 7));
  return c;
}

describe("createAead known answers", () => {
  for (const v of KATS) {
    describe(`${v.name}: ${v.source}`, () => {
      const aead = createAead(v.name, h(v.key));
      const sealed = h(v.ciphertext + v.tag);

      it("seal produces ciphertext || tag exactly", () => {
        expect(aead.tagLength).toBe(v.tag.length / 2);
        expect(hex(aead.seal(h(v.nonce), h(v.aad), h(v.plaintext)))).toBe(v.ciphertext + v.tag);
      });

      it("open recovers the plaintext", () => {
        const pt = aead.open(h(v.nonce), h(v.aad), sealed);
        expect(pt).not.toBeNull();
        expect(hex(pt as Uint8Array)).toBe(v.plaintext);
      });

      it("open returns null on any single bit flip in ciphertext or tag", () => {
        for (let bit = 0; bit < sealed.length * 8; bit++) {
          expect(aead.open(h(v.nonce), h(v.aad), flipBit(sealed, bit)), `bit ${bit}`).toBeNull();
        }
      });

      it("open returns null on any single bit flip in the AAD or nonce, and on empty/extra AAD", () => {
        const aad = h(v.aad);
        for (let bit = 0; bit < aad.length * 8; bit++) {
          expect(aead.open(h(v.nonce), flipBit(aad, bit), sealed), `aad bit ${bit}`).toBeNull();
        }
        expect(aead.open(h(v.nonce), concatBytes([aad, h("00")]), sealed)).toBeNull();
        if (aad.length > 0) expect(aead.open(h(v.nonce), new Uint8Array(0), sealed)).toBeNull();
        const nonce = h(v.nonce);
        for (let bit = 0; bit < nonce.length * 8; bit += 7) {
          expect(aead.open(flipBit(nonce, bit), aad, sealed), `nonce bit ${bit}`).toBeNull();
        }
      });

      it("open returns null on too-short input, on truncation and on an appended byte", () => {
        for (let n = 0; n < sealed.length; n++) {
          expect(aead.open(h(v.nonce), h(v.aad), sealed.slice(0, n)), `prefix ${n}`).toBeNull();
        }
        expect(aead.open(h(v.nonce), h(v.aad), concatBytes([sealed, h("00")]))).toBeNull();
      });

      it("open with a different key fails", () => {
        const other = flipBit(h(v.key), 0);
        expect(createAead(v.name, other).open(h(v.nonce), h(v.aad), sealed)).toBeNull();
      });
    });
  }

  it("every AEAD round-trips lengths 0..64 with a TLS-shaped 12-byte nonce and 13-byte AAD", () => {
    const names: [AeadName, number, number][] = [
      ["aes-128-gcm", 16, 16],
      ["aes-256-gcm", 32, 16],
      ["aes-128-ccm", 16, 16],
      ["aes-128-ccm8", 16, 8],
      ["chacha20-poly1305", 32, 16],
    ];
    for (const [name, keyLen, tagLen] of names) {
      const a = createAead(name, seqBytes(keyLen, 1));
      expect(a.tagLength).toBe(tagLen);
      const nonce = seqBytes(12, 0x40);
      const aad = seqBytes(13, 0x90);
      for (let n = 0; n <= 64; n++) {
        const pt = seqBytes(n, n);
        const sealed = a.seal(nonce, aad, pt);
        expect(sealed.length).toBe(n + tagLen);
        expect(hex(a.open(nonce, aad, sealed) ?? h("dead"))).toBe(hex(pt));
        // reusing the AEAD object is safe: sealing twice gives the same output
        expect(hex(a.seal(nonce, aad, pt))).toBe(hex(sealed));
      }
      for (let n = 0; n < tagLen; n++) expect(a.open(nonce, aad, new Uint8Array(n))).toBeNull();
    }
  });
});

describe("runningHash", () => {
  it("runningHash digests at any point without ending the stream", () => {
    for (const alg of ["sha256", "sha384"] as const) {
      const r = runningHash(alg);
      expect(hex(r.digest())).toBe(createHash(alg).digest("hex"));
      r.update(h("616263"));
      expect(hex(r.digest())).toBe(hex(hash(alg, [h("616263")])));
      r.update(h("64"));
      expect(hex(r.digest())).toBe(hex(hash(alg, [h("61626364")])));
    }
  });
});

describe("timeOrderedId", () => {
  const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  it("is a version 7 UUID carrying the time in its first 48 bits", () => {
    const now = Date.UTC(2026, 11, 6, 7, 30);
    const id = timeOrderedId(now);
    expect(id).toMatch(V7);
    expect(Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toBe(now);
  });

  it("sorts in the order made, within one millisecond and when the clock goes back", () => {
    const t = Date.UTC(2027, 0, 1);
    const ids: string[] = [];
    for (let i = 0; i < 5000; i++) ids.push(timeOrderedId(t)); // more than the 4096 of one millisecond's counter
    for (let i = 0; i < 10; i++) ids.push(timeOrderedId(t - 1000)); // the clock went back
    ids.push(timeOrderedId(t + 5000));
    for (const id of ids) expect(id).toMatch(V7);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
