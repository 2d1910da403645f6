import { createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify } from "node:crypto";
import { base64url, calculateJwkThumbprint, CompactSign, exportJWK, flattenedVerify, generateKeyPair, importJWK } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { createContentVerifier, signContent, type ContentVerifier } from "../../src/auth/content-signing.ts";
import { AuthError } from "../../src/auth/errors.ts";
import { KeyRing } from "../../src/auth/key-ring.ts";
import { signedContent, type SignedFields } from "../../src/auth/signed-content.ts";
import { MapStorage } from "./map-storage.ts";

const FIELDS: SignedFields = {
  messageId: "msg-é",
  topic: "",
  device: "dev-1",
  contentType: "text/plain",
  publisher: "ops",
  collapseKey: "k",
  payload: Uint8Array.of(0x00, 0x01, 0xff),
  createdAt: 1_700_000_000_000,
  expiresAt: 1_700_000_060_000,
  priority: 5,
};

/** RFC 8037 A.1 key (thumbprint from A.3) and the signature over FIELDS computed with an independent Ed25519 implementation. */
const RFC8037 = { kty: "OKP", crv: "Ed25519", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", d: "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A" };
const RFC8037_KID = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
const KNOWN_SIGNATURE =
  "eyJhbGciOiJFZERTQSIsImtpZCI6ImtQcktfcW14VldhWVZBOXd3QkY2SXVvM3ZWeno3VHhIQ1R3WEJ5Z3JTNGsifQ" +
  "..8DV7vOilvuU95rFz7usLTZHaDW0_5ERH1F_7LbtfWRsTdrTxHxpmlcfl7_iKjDgt5nZmbg44Dq2AYUcNDWaFDA";

async function errorOf(p: Promise<unknown>): Promise<AuthError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(AuthError);
  return e as AuthError;
}

function codeOfSync(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(AuthError);
    return (e as AuthError).code;
  }
  return undefined;
}

function headerOf(signature: string): string {
  return new TextDecoder().decode(base64url.decode(signature.split(".")[0]!));
}

let ring: KeyRing;
let verifier: ContentVerifier;
let signature: string;

beforeAll(async () => {
  ring = await KeyRing.open(new MapStorage(), "content", { now: 1 });
  verifier = createContentVerifier(ring.jwks());
  signature = await signContent(ring, FIELDS);
});

describe("content signatures", () => {
  it('are detached compact JWS "header..signature" with exactly alg and kid in the header', () => {
    expect(signature).toMatch(/^[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]{86}$/);
    expect(headerOf(signature)).toBe(`{"alg":"EdDSA","kid":"${ring.currentKid}"}`);
  });

  it("verify against the ring's JWKS (object or JSON text)", async () => {
    await expect(verifier.verify(FIELDS, signature)).resolves.toBeUndefined();
    await expect(createContentVerifier(JSON.stringify(ring.jwks())).verify(FIELDS, signature)).resolves.toBeUndefined();
    expect(verifier.kids).toEqual([ring.currentKid]);
  });

  it("verify with a plain Ed25519 implementation over header.BASE64URL(signed content)", () => {
    const [h, , s] = signature.split(".");
    const input = Buffer.from(`${h}.${base64url.encode(signedContent(FIELDS))}`);
    const publicKey = createPublicKey({ key: ring.jwks().keys[0] as object, format: "jwk" } as Parameters<typeof createPublicKey>[0]);
    expect(nodeVerify(null, input, publicKey, Buffer.from(s!, "base64url"))).toBe(true);
  });

  it("known answer: the RFC 8037 key signs the known-answer content to the independently computed JWS", async () => {
    const storage = new MapStorage();
    await storage.putSetting(
      "keys.kat",
      JSON.stringify({ version: 1, current: RFC8037_KID, keys: [{ kid: RFC8037_KID, alg: "EdDSA", createdAt: 0, jwk: RFC8037 }] }),
    );
    const kat = await KeyRing.open(storage, "kat");
    expect(await signContent(kat, FIELDS)).toBe(KNOWN_SIGNATURE);
    // and node's Ed25519 agrees on the signature bytes
    const h = KNOWN_SIGNATURE.split(".")[0]!;
    const input = Buffer.from(`${h}.${base64url.encode(signedContent(FIELDS))}`);
    const privateKey = createPrivateKey({ key: RFC8037, format: "jwk" } as Parameters<typeof createPrivateKey>[0]);
    expect(`${h}..${nodeSign(null, input, privateKey).toString("base64url")}`).toBe(KNOWN_SIGNATURE);
    await expect(createContentVerifier(kat.jwks()).verify(FIELDS, KNOWN_SIGNATURE)).resolves.toBeUndefined();
  });

  it("refuse every tampered field with signature_invalid", async () => {
    const tampered: Partial<SignedFields>[] = [
      { messageId: "msg-f" },
      { topic: "alerts" },
      { device: "dev-2" },
      { contentType: "text/html" },
      { publisher: "eve" },
      { collapseKey: "" },
      { payload: Uint8Array.of(0x00, 0x01, 0xfe) },
      { payload: Uint8Array.of(0x00, 0x01) },
      { createdAt: FIELDS.createdAt + 1 },
      { expiresAt: FIELDS.expiresAt + 1 },
      { priority: 6 },
    ];
    expect(tampered.flatMap((t) => Object.keys(t)).sort()).toEqual(expect.arrayContaining(Object.keys(FIELDS).sort()));
    for (const change of tampered) {
      const e = await errorOf(verifier.verify({ ...FIELDS, ...change }, signature));
      expect(e.code, JSON.stringify(Object.keys(change))).toBe("signature_invalid");
      expect(e.message).toMatch(/does not verify/);
    }
  });

  it("refuse a flipped signature bit, and malformed signatures, with signature_invalid", async () => {
    const [h, , s] = signature.split(".");
    const bytes = base64url.decode(s!);
    bytes[10]! ^= 1;
    const cases = [
      `${h}..${base64url.encode(bytes)}`,
      "",
      "abc",
      `${h}.${base64url.encode(signedContent(FIELDS))}.${s}`, // not detached
      `..${s}`,
      `${h}..`,
      `${base64url.encode(JSON.stringify({ alg: "EdDSA", kid: ring.currentKid, b64: false }))}..${s}`,
      `${base64url.encode(JSON.stringify({ alg: "EdDSA", kid: ring.currentKid, crit: ["exp"] }))}..${s}`,
      `${base64url.encode(JSON.stringify({ alg: "none", kid: ring.currentKid }))}..${s}`,
      `${base64url.encode(JSON.stringify({ alg: "HS256", kid: ring.currentKid }))}..${s}`,
      `${base64url.encode(JSON.stringify({ alg: "ES256", kid: ring.currentKid }))}..${s}`, // alg not the key's
      `${base64url.encode(JSON.stringify({ alg: "EdDSA" }))}..${s}`,
      `${base64url.encode("not json")}..${s}`,
      `!!..${s}`,
    ];
    for (const bad of cases) {
      expect((await errorOf(verifier.verify(FIELDS, bad))).code, bad).toBe("signature_invalid");
    }
  });

  it("refuse an unknown kid, and a signature from another ring, with unknown_key", async () => {
    const other = await KeyRing.open(new MapStorage(), "content", { now: 1 });
    const foreign = await signContent(other, FIELDS);
    expect(headerOf(foreign)).toMatch(/^\{"alg":"EdDSA","kid":"[A-Za-z0-9_-]{43}"\}$/); // same kid format
    const e = await errorOf(verifier.verify(FIELDS, foreign));
    expect(e.code).toBe("unknown_key");
    expect(e.message).toContain(other.currentKid);
    const made = `${base64url.encode(JSON.stringify({ alg: "EdDSA", kid: "no-such-key" }))}..${signature.split(".")[2]}`;
    expect((await errorOf(verifier.verify(FIELDS, made))).code).toBe("unknown_key");
  });

  it("refuse another ring's signature relabelled with a known kid as signature_invalid", async () => {
    const other = await KeyRing.open(new MapStorage(), "content", { now: 1 });
    const foreign = await signContent(other, FIELDS);
    const relabelled = `${base64url.encode(JSON.stringify({ alg: "EdDSA", kid: ring.currentKid }))}..${foreign.split(".")[2]}`;
    expect((await errorOf(verifier.verify(FIELDS, relabelled))).code).toBe("signature_invalid");
  });

  it("after rotation: new signatures use the new kid, a verifier from the new JWKS checks both until the old key is retired", async () => {
    const r = await KeyRing.open(new MapStorage(), "rot", { now: 100 });
    const old = await signContent(r, FIELDS);
    const kid = await r.rotate(200);
    const fresh = await signContent(r, FIELDS);
    expect(headerOf(fresh)).toBe(`{"alg":"EdDSA","kid":"${kid}"}`);
    const both = createContentVerifier(r.jwks());
    expect(both.kids).toHaveLength(2);
    await expect(both.verify(FIELDS, old)).resolves.toBeUndefined();
    await expect(both.verify(FIELDS, fresh)).resolves.toBeUndefined();
    await r.retire(150);
    const after = createContentVerifier(r.jwks());
    expect((await errorOf(after.verify(FIELDS, old))).code).toBe("unknown_key");
    await expect(after.verify(FIELDS, fresh)).resolves.toBeUndefined();
  });

  it("work with ES256 rings (64-byte raw signatures)", async () => {
    const es = await KeyRing.open(new MapStorage(), "es", { alg: "ES256" });
    const sig = await signContent(es, FIELDS);
    expect(headerOf(sig)).toBe(`{"alg":"ES256","kid":"${es.currentKid}"}`);
    expect(base64url.decode(sig.split(".")[2]!).length).toBe(64);
    const v = createContentVerifier(es.jwks());
    await expect(v.verify(FIELDS, sig)).resolves.toBeUndefined();
    expect((await errorOf(v.verify({ ...FIELDS, priority: 1 }, sig))).code).toBe("signature_invalid");
    // an EdDSA header on the ES256 key
    const relabelled = `${base64url.encode(JSON.stringify({ alg: "EdDSA", kid: es.currentKid }))}..${sig.split(".")[2]}`;
    expect((await errorOf(v.verify(FIELDS, relabelled))).code).toBe("signature_invalid");
  });

  it("a JWKS that is not JSON, has no keys array or no usable key throws unknown_key at creation", () => {
    const rsa = { kty: "RSA", kid: "r", n: "AQAB", e: "AQAB" };
    for (const bad of [
      "nope",
      "{}",
      '{"keys":{}}',
      '{"keys":[]}',
      JSON.stringify({ keys: [rsa] }),
      JSON.stringify({ keys: [{ ...ring.jwks().keys[0], kid: undefined }] }),
    ]) {
      expect(
        codeOfSync(() => createContentVerifier(bad)),
        bad,
      ).toBe("unknown_key");
    }
  });

  it("skips keys it cannot use, uses only public members, and refuses a key that does not import with unknown_key", async () => {
    const pub = ring.jwks().keys[0]!;
    const rsa = { kty: "RSA", kid: "r", n: "AQAB", e: "AQAB" };
    const enc = { ...pub, kid: "enc", use: "enc" };
    const broken = { kty: "OKP", crv: "Ed25519", x: "AAAA", kid: "broken", alg: "EdDSA" };
    const v = createContentVerifier({ keys: [rsa, enc, broken, { ...pub, d: "ignored-private-member" }] });
    expect(v.kids).toEqual(["broken", ring.currentKid]);
    await expect(v.verify(FIELDS, signature)).resolves.toBeUndefined();
    const asBroken = `${base64url.encode(JSON.stringify({ alg: "EdDSA", kid: "broken" }))}..${signature.split(".")[2]}`;
    expect((await errorOf(v.verify(FIELDS, asBroken))).code).toBe("unknown_key");
    const asRsa = `${base64url.encode(JSON.stringify({ alg: "EdDSA", kid: "r" }))}..${signature.split(".")[2]}`;
    expect((await errorOf(v.verify(FIELDS, asRsa))).code).toBe("unknown_key");
  });

  it("are what jose makes and verifies: ours signs -> jose verifies, jose signs -> ours verifies (EdDSA and ES256)", async () => {
    for (const alg of ["EdDSA", "ES256"] as const) {
      const r = await KeyRing.open(new MapStorage(), "x", { alg });
      const payload = base64url.encode(signedContent(FIELDS));
      // ours -> jose
      const ours = await signContent(r, FIELDS);
      const [h, , s] = ours.split(".");
      const publicKey = await importJWK(r.jwks().keys[0]!, alg);
      const checked = await flattenedVerify({ protected: h!, payload, signature: s! }, publicKey, { algorithms: [alg] });
      expect(checked.protectedHeader).toEqual({ alg, kid: r.currentKid });
      // jose -> ours, with a key jose made
      const pair = await generateKeyPair(alg, { extractable: true });
      const pub = await exportJWK(pair.publicKey);
      const kid = await calculateJwkThumbprint(pub);
      const jws = await new CompactSign(signedContent(FIELDS)).setProtectedHeader({ alg, kid }).sign(pair.privateKey);
      const [jh, , js] = jws.split(".");
      const v = createContentVerifier({ keys: [{ ...pub, kid }] });
      await expect(v.verify(FIELDS, `${jh}..${js}`)).resolves.toBeUndefined();
      expect((await errorOf(v.verify({ ...FIELDS, payload: Uint8Array.of(1) }, `${jh}..${js}`))).code).toBe("signature_invalid");
      // same header bytes as jose writes for the ring's key
      const joseHeader = (await new CompactSign(new Uint8Array(1)).setProtectedHeader({ alg, kid: r.currentKid }).sign(pair.privateKey)).split(
        ".",
      )[0];
      expect(h).toBe(joseHeader);
    }
  });

  it("refuse a signature part that is not canonical base64url of 64 bytes with signature_invalid", async () => {
    const [h, , s] = signature.split(".");
    const last = s!.at(-1)!;
    // the last of 86 characters carries 2 bits; setting a padding bit keeps the bytes but changes the text
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const noncanonical = `${s!.slice(0, -1)}${alphabet[alphabet.indexOf(last) | 1]}`;
    expect(Buffer.from(noncanonical, "base64url")).toEqual(Buffer.from(s!, "base64url"));
    for (const bad of [
      noncanonical,
      `${s}A`,
      s!.slice(0, -2),
      `${s!.slice(0, -1)}=`,
      `${s!.slice(0, 40)}*${s!.slice(41)}`,
      `${s!.slice(0, 40)} ${s!.slice(41)}`,
    ]) {
      expect((await errorOf(verifier.verify(FIELDS, `${h}..${bad}`))).code, bad).toBe("signature_invalid");
    }
    await expect(verifier.verify(FIELDS, signature)).resolves.toBeUndefined();
  });

  it("a key that does not import stays unknown_key on every use", async () => {
    const broken = { kty: "EC", crv: "P-256", x: "AAAA", y: "AAAA", kid: "broken" };
    const v = createContentVerifier({ keys: [broken, ring.jwks().keys[0]!] });
    const asBroken = `${base64url.encode(JSON.stringify({ alg: "ES256", kid: "broken" }))}..${signature.split(".")[2]}`;
    for (let i = 0; i < 2; i++) expect((await errorOf(v.verify(FIELDS, asBroken))).code).toBe("unknown_key");
    await expect(v.verify(FIELDS, signature)).resolves.toBeUndefined();
  });
});
