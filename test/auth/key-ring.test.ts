import { createHash, KeyObject } from "node:crypto";
import { decodeProtectedHeader } from "jose";
import { describe, expect, it } from "vitest";
import { createContentVerifier, signContent } from "../../src/auth/content-signing.ts";
import { AuthError } from "../../src/auth/errors.ts";
import { KeyRing, type KeyStorage } from "../../src/auth/key-ring.ts";
import { issueSessionToken } from "../../src/auth/session-tokens.ts";
import { SESSION_AUDIENCE, signToken, verifyToken } from "../../src/auth/tokens.ts";
import { defaultCrypto, type CryptoProvider, type JwsPrivateKey, type JwsPublicKey } from "../../src/crypto/index.ts";

class MapStorage implements KeyStorage {
  readonly map = new Map<string, string>();
  writes = 0;
  getSetting(key: string): Promise<string | undefined> {
    return Promise.resolve(this.map.get(key));
  }
  putSetting(key: string, value: string): Promise<void> {
    this.writes++;
    this.map.set(key, value);
    return Promise.resolve();
  }
}

/** RFC 8037 appendix A.1 Ed25519 key; A.3 gives its RFC 7638 thumbprint. */
const RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
/** The public key of RFC 8032 section 7.1 TEST 2 (the RFC 8037 key is TEST 1) and its thumbprint. */
const OTHER_X = Buffer.from("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "hex").toString("base64url");
const OTHER_X_THUMBPRINT = thumbprint({ crv: "Ed25519", kty: "OKP", x: OTHER_X });

function thumbprint(members: Record<string, string>): string {
  const canonical = JSON.stringify(Object.fromEntries(Object.entries(members).sort(([a], [b]) => (a < b ? -1 : 1))));
  return createHash("sha256").update(canonical).digest("base64url");
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(AuthError);
  expect((e as AuthError).code).toBe(code);
}

describe("KeyRing", () => {
  it("generates an EdDSA key on first open and persists it under keys.<name>", async () => {
    const storage = new MapStorage();
    const ring = await KeyRing.open(storage, "session", { now: 1000 });
    expect(ring.name).toBe("session");
    expect(ring.alg).toBe("EdDSA");
    const stored = JSON.parse(storage.map.get("keys.session") ?? "null");
    expect(stored.current).toBe(ring.currentKid);
    expect(stored.keys).toHaveLength(1);
    expect(stored.keys[0]).toMatchObject({ kid: ring.currentKid, alg: "EdDSA", createdAt: 1000 });
    expect(typeof stored.keys[0].jwk.d).toBe("string");
  });

  it("publishes a public JWKS whose kid is the RFC 7638 thumbprint", async () => {
    const ring = await KeyRing.open(new MapStorage(), "content");
    const { keys } = ring.jwks();
    expect(keys).toHaveLength(1);
    const k = keys[0]!;
    expect(Object.keys(k).sort()).toEqual(["alg", "crv", "kid", "kty", "use", "x"]);
    expect(k).toMatchObject({ kty: "OKP", crv: "Ed25519", alg: "EdDSA", use: "sig", kid: ring.currentKid });
    expect(k.d).toBeUndefined();
    expect(ring.currentKid).toBe(thumbprint({ crv: "Ed25519", kty: "OKP", x: k.x! }));
  });

  it("makes ES256 rings on request", async () => {
    const ring = await KeyRing.open(new MapStorage(), "p256", { alg: "ES256" });
    expect(ring.alg).toBe("ES256");
    const k = ring.jwks().keys[0]!;
    expect(Object.keys(k).sort()).toEqual(["alg", "crv", "kid", "kty", "use", "x", "y"]);
    expect(k).toMatchObject({ kty: "EC", crv: "P-256", alg: "ES256", use: "sig" });
    expect(ring.currentKid).toBe(thumbprint({ crv: "P-256", kty: "EC", x: k.x!, y: k.y! }));
  });

  it("reads the same keys back when the same storage is opened again", async () => {
    const storage = new MapStorage();
    const a = await KeyRing.open(storage, "session", { now: 1 });
    await a.rotate(2);
    const b = await KeyRing.open(storage, "session", { now: 3 });
    expect(b.currentKid).toBe(a.currentKid);
    expect(b.kids()).toEqual(a.kids());
    expect(b.jwks()).toEqual(a.jwks());
    // another name is another ring
    const c = await KeyRing.open(storage, "api");
    expect(c.kids()).not.toContain(a.currentKid);
  });

  it("loads a persisted RFC 8037 key and names it by the thumbprint the RFC gives", async () => {
    const storage = new MapStorage();
    await storage.putSetting(
      "keys.rfc",
      JSON.stringify({
        version: 1,
        current: RFC8037_THUMBPRINT,
        keys: [{ kid: RFC8037_THUMBPRINT, alg: "EdDSA", createdAt: 5, jwk: { kty: "OKP", crv: "Ed25519", x: RFC8037_X, d: RFC8037_D } }],
      }),
    );
    const ring = await KeyRing.open(storage, "rfc");
    expect(ring.currentKid).toBe(RFC8037_THUMBPRINT);
    expect(ring.jwks().keys[0]).toEqual({ kty: "OKP", crv: "Ed25519", x: RFC8037_X, kid: RFC8037_THUMBPRINT, alg: "EdDSA", use: "sig" });
  });

  it("rotates: a new current kid, both keys in the JWKS, new signatures use the new kid", async () => {
    const storage = new MapStorage();
    const ring = await KeyRing.open(storage, "session", { now: 100 });
    const old = ring.currentKid;
    const kid = await ring.rotate(200);
    expect(kid).not.toBe(old);
    expect(ring.currentKid).toBe(kid);
    expect(ring.jwks().keys.map((k) => k.kid)).toEqual([old, kid]);
    expect(ring.verificationKey(old)).toBeDefined();
    const { token } = await issueSessionToken(ring, { deviceId: "d", identity: "psk:d", sessionId: "s", now: 1_700_000_000_000, ttlSeconds: 60 });
    expect(decodeProtectedHeader(token).kid).toBe(kid);
    expect(JSON.parse(storage.map.get("keys.session")!).current).toBe(kid);
  });

  it("retires keys created before a time, never the current one, and persists", async () => {
    const storage = new MapStorage();
    const ring = await KeyRing.open(storage, "r", { now: 100 });
    const k1 = ring.currentKid;
    const k2 = await ring.rotate(200);
    const k3 = await ring.rotate(300);
    expect(await ring.retire(50)).toEqual([]);
    expect(await ring.retire(250)).toEqual([k1, k2]);
    expect(ring.kids()).toEqual([k3]);
    expect(ring.verificationKey(k1)).toBeUndefined();
    expect(await ring.retire(10_000)).toEqual([]); // the current key stays
    expect(ring.kids()).toEqual([k3]);
    const again = await KeyRing.open(storage, "r");
    expect(again.kids()).toEqual([k3]);
  });

  it("rotates in a key of another alg when opened with it, keeping the old key for verification", async () => {
    const storage = new MapStorage();
    const ed = await KeyRing.open(storage, "m", { now: 1 });
    const es = await KeyRing.open(storage, "m", { alg: "ES256", now: 2 });
    expect(es.alg).toBe("ES256");
    expect(es.kids()).toEqual([ed.currentKid, es.currentKid]);
    expect(es.algorithms().sort()).toEqual(["ES256", "EdDSA"]);
    expect((await KeyRing.open(storage, "m")).alg).toBe("ES256");
  });

  it("refuses a stored ring it cannot read with key_ring_invalid", async () => {
    const cases = [
      "not json",
      JSON.stringify({ version: 2, current: "x", keys: [] }),
      JSON.stringify({ version: 1, current: "x", keys: [] }),
      JSON.stringify({ version: 1, current: "x", keys: [{ kid: "x", alg: "HS256", createdAt: 0, jwk: {} }] }),
      // kid that is not the thumbprint of the key
      JSON.stringify({
        version: 1,
        current: "x",
        keys: [{ kid: "x", alg: "EdDSA", createdAt: 0, jwk: { kty: "OKP", crv: "Ed25519", x: RFC8037_X, d: RFC8037_D } }],
      }),
      // an Ed25519 private key (d) with another key's x, named by that x's thumbprint: it would sign under a kid not its own
      JSON.stringify({
        version: 1,
        current: OTHER_X_THUMBPRINT,
        keys: [{ kid: OTHER_X_THUMBPRINT, alg: "EdDSA", createdAt: 0, jwk: { kty: "OKP", crv: "Ed25519", x: OTHER_X, d: RFC8037_D } }],
      }),
      // a public key only
      JSON.stringify({
        version: 1,
        current: RFC8037_THUMBPRINT,
        keys: [{ kid: RFC8037_THUMBPRINT, alg: "EdDSA", createdAt: 0, jwk: { kty: "OKP", crv: "Ed25519", x: RFC8037_X } }],
      }),
    ];
    for (const text of cases) {
      const storage = new MapStorage();
      await storage.putSetting("keys.bad", text);
      await rejectsWith(KeyRing.open(storage, "bad"), "key_ring_invalid");
    }
  });

  it("signs and verifies synchronously with the same keys jose uses", async () => {
    for (const alg of ["EdDSA", "ES256"] as const) {
      const ring = await KeyRing.open(new MapStorage(), "sync", { alg });
      const data = new TextEncoder().encode("signing input");
      const { signer, kid } = ring.signingKey();
      expect(signer.alg).toBe(alg);
      const sig = signer.sign(data);
      expect(sig).toHaveLength(64);
      const key = ring.verificationKey(kid)!;
      expect(key.verifier.verify(data, sig)).toBe(true);
      expect(key.verifier.verify(new TextEncoder().encode("signing inpuT"), sig)).toBe(false);
    }
  });

  it("imports each key once, through the injected provider, into the one key object that signs tokens and content", async () => {
    const fields = {
      messageId: "m-1",
      topic: "",
      device: "d-1",
      contentType: "text/plain",
      publisher: "p",
      collapseKey: "",
      payload: new Uint8Array([1, 2, 3]),
      createdAt: 1_700_000_000_000,
      expiresAt: 1_700_000_060_000,
      priority: 5,
    };
    for (const alg of ["EdDSA", "ES256"] as const) {
      const calls = { generated: 0, imported: 0 };
      const provider: CryptoProvider = {
        ...defaultCrypto,
        jws: {
          ...defaultCrypto.jws,
          generateJwk: (a) => (calls.generated++, defaultCrypto.jws.generateJwk(a)),
          privateKeyFromJwk: (jwk, a) => (calls.imported++, defaultCrypto.jws.privateKeyFromJwk(jwk, a)),
        },
      };
      const storage = new MapStorage();
      const ring = await KeyRing.open(storage, "one", { alg, crypto: provider });
      expect(calls).toEqual({ generated: 1, imported: 1 });
      const signing = ring.signingKey();
      // what jose signs tokens with is the node:crypto key object of the content signer, not a second (WebCrypto) copy
      expect(signing.key).toBeInstanceOf(KeyObject);
      expect(signing.key).toBe((signing.signer as JwsPrivateKey).key);
      const verification = ring.verificationKey(ring.currentKid)!;
      expect(verification.key).toBeInstanceOf(KeyObject);
      expect(verification.key).toBe((verification.verifier as JwsPublicKey).key);
      const now = 1_700_000_000_000;
      const { token } = await signToken(ring, { sub: "d-1" }, SESSION_AUDIENCE, now, 60);
      expect((await verifyToken(ring, token, SESSION_AUDIENCE, now, "token")).sub).toBe("d-1");
      await createContentVerifier(ring.jwks()).verify(fields, await signContent(ring, fields));
      expect(ring.signingKey().key).toBe(signing.key);
      expect(calls).toEqual({ generated: 1, imported: 1 });
      await ring.rotate(now);
      expect(calls).toEqual({ generated: 2, imported: 2 });
      await KeyRing.open(storage, "one", { crypto: provider });
      expect(calls).toEqual({ generated: 2, imported: 4 });
    }
  });

  it("keeps the ring unchanged when persisting a rotation fails", async () => {
    const storage = new MapStorage();
    const ring = await KeyRing.open(storage, "x");
    const before = ring.currentKid;
    storage.putSetting = () => Promise.reject(new Error("disk full"));
    await expect(ring.rotate(5)).rejects.toThrow("disk full");
    expect(ring.currentKid).toBe(before);
    expect(ring.kids()).toEqual([before]);
  });

  it("refuses bad names and algs", async () => {
    await expect(KeyRing.open(new MapStorage(), "")).rejects.toThrow(RangeError);
    await expect(KeyRing.open(new MapStorage(), "a b")).rejects.toThrow(RangeError);
    await expect(KeyRing.open(new MapStorage(), "x", { alg: "HS256" as "EdDSA" })).rejects.toThrow(RangeError);
  });
});
