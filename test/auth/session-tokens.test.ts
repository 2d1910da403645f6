import { base64url, decodeJwt, decodeProtectedHeader, SignJWT, UnsecuredJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { AuthError } from "../../src/auth/errors.ts";
import { KeyRing } from "../../src/auth/key-ring.ts";
import { issuePublisherToken } from "../../src/auth/publisher-tokens.ts";
import { issueSessionToken, verifySessionToken } from "../../src/auth/session-tokens.ts";
import { MapStorage } from "./map-storage.ts";

const NOW = 1_700_000_000_500; // not on a whole second
const DEVICE = "sensor-1";
const IDENTITY = "psk:sensor-1-psk";
const expected = { deviceId: DEVICE, identity: IDENTITY, now: NOW };

async function errorOf(p: Promise<unknown>): Promise<AuthError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(AuthError);
  return e as AuthError;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  return (await errorOf(p)).code;
}

/** The code and message of the refusal, to check it was refused for the reason meant. */
async function refusal(p: Promise<unknown>): Promise<string> {
  const e = await errorOf(p);
  return `${e.code}: ${e.message}`;
}

function b64json(v: unknown): string {
  return base64url.encode(JSON.stringify(v));
}

let ring: KeyRing;
let token: string;
let expiresAt: number;

beforeAll(async () => {
  ring = await KeyRing.open(new MapStorage(), "session", { now: NOW });
  ({ token, expiresAt } = await issueSessionToken(ring, { deviceId: DEVICE, identity: IDENTITY, sessionId: "sess-1", now: NOW, ttlSeconds: 3600 }));
});

describe("session tokens", () => {
  it("carry iss, aud, sub, identity, sid, iat and exp, signed with the ring's kid", async () => {
    expect(decodeProtectedHeader(token)).toEqual({ alg: "EdDSA", kid: ring.currentKid, typ: "JWT" });
    const payload = decodeJwt(token);
    expect(payload).toMatchObject({
      iss: "dtlspush",
      aud: "dtlspush:session",
      sub: DEVICE,
      identity: IDENTITY,
      sid: "sess-1",
      iat: 1_700_000_000,
      exp: 1_700_003_600,
    });
    expect(expiresAt).toBe(1_700_003_600_000);
  });

  it("verify: returns the claims", async () => {
    await expect(verifySessionToken(ring, token, expected)).resolves.toEqual({
      deviceId: DEVICE,
      identity: IDENTITY,
      sessionId: "sess-1",
      issuedAt: 1_700_000_000_000,
      expiresAt: 1_700_003_600_000,
    });
  });

  it("expire at exp with at most 5 s of leeway", async () => {
    await expect(verifySessionToken(ring, token, { ...expected, now: expiresAt + 4_999 })).resolves.toBeDefined();
    expect(await codeOf(verifySessionToken(ring, token, { ...expected, now: expiresAt + 5_000 }))).toBe("token_expired");
    expect(await codeOf(verifySessionToken(ring, token, { ...expected, now: expiresAt + 86_400_000 }))).toBe("token_expired");
  });

  it("refuse another device or another DTLS identity with token_identity_mismatch", async () => {
    expect(await codeOf(verifySessionToken(ring, token, { ...expected, deviceId: "sensor-2" }))).toBe("token_identity_mismatch");
    expect(await codeOf(verifySessionToken(ring, token, { ...expected, identity: "cert:sensor-1-psk" }))).toBe("token_identity_mismatch");
    expect(await codeOf(verifySessionToken(ring, token, { ...expected, identity: "psk:other" }))).toBe("token_identity_mismatch");
  });

  it("refuse a tampered payload", async () => {
    const [h, p, s] = token.split(".");
    const claims = JSON.parse(new TextDecoder().decode(base64url.decode(p!)));
    const forged = `${h}.${b64json({ ...claims, exp: claims.exp + 1_000_000 })}.${s}`;
    expect(await refusal(verifySessionToken(ring, forged, expected))).toMatch(/^token_invalid: .*does not verify/);
    const flipped = `${h}.${p}.${s!.slice(0, -2)}${s!.endsWith("AA") ? "BA" : "AA"}`;
    expect(await codeOf(verifySessionToken(ring, flipped, expected))).toBe("token_invalid");
  });

  it('refuse alg "none" and unsigned tokens', async () => {
    const payload = decodeJwt(token);
    const unsecured = new UnsecuredJWT(payload).encode();
    expect(await codeOf(verifySessionToken(ring, unsecured, expected))).toBe("token_invalid");
    const noneWithKid = `${b64json({ alg: "none", kid: ring.currentKid })}.${b64json(payload)}.`;
    expect(await refusal(verifySessionToken(ring, noneWithKid, expected))).toMatch(/^token_invalid: .*not allowed/);
    const [h, p] = token.split(".");
    expect(await codeOf(verifySessionToken(ring, `${h}.${p}.`, expected))).toBe("token_invalid");
    expect(await codeOf(verifySessionToken(ring, `${h}.${p}`, expected))).toBe("token_invalid");
  });

  it("refuse HS256 tokens keyed with the public key (algorithm allowlist)", async () => {
    const jwk = ring.jwks().keys[0]!;
    const payload = decodeJwt(token);
    for (const secret of [base64url.decode(jwk.x!), new TextEncoder().encode(JSON.stringify(jwk))]) {
      const hs = await new SignJWT(payload).setProtectedHeader({ alg: "HS256", kid: ring.currentKid }).sign(secret);
      expect(await refusal(verifySessionToken(ring, hs, expected))).toMatch(/^token_invalid: .*algorithm that is not allowed/);
    }
  });

  it("refuse a well-formed token signed by a key not in the ring, whatever kid it names", async () => {
    const other = await KeyRing.open(new MapStorage(), "session", { now: NOW });
    const foreign = await issueSessionToken(other, { deviceId: DEVICE, identity: IDENTITY, sessionId: "s", now: NOW, ttlSeconds: 60 });
    expect(await refusal(verifySessionToken(ring, foreign.token, expected))).toMatch(/^token_invalid: .*not in key ring session/);
    // the same token relabelled with our kid: the signature does not verify
    const [, p, s] = foreign.token.split(".");
    const relabelled = `${b64json({ alg: "EdDSA", kid: ring.currentKid, typ: "JWT" })}.${p}.${s}`;
    expect(await refusal(verifySessionToken(ring, relabelled, expected))).toMatch(/^token_invalid: .*does not verify/);
    // no kid at all
    const { key } = ring.signingKey();
    const noKid = await new SignJWT(decodeJwt(token)).setProtectedHeader({ alg: "EdDSA" }).sign(key);
    expect(await codeOf(verifySessionToken(ring, noKid, expected))).toBe("token_invalid");
  });

  it("refuse a publisher token presented as a session token (wrong aud)", async () => {
    const pub = await issuePublisherToken(ring, { subject: DEVICE, scopes: ["admin"], now: NOW, ttlSeconds: 60 });
    expect(await refusal(verifySessionToken(ring, pub.token, expected))).toMatch(/^token_invalid: .*aud claim/);
  });

  it("refuse a wrong iss, an aud list, missing claims and garbage", async () => {
    const { kid, alg, key } = ring.signingKey();
    const base = decodeJwt(token);
    const sign = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg, kid }).sign(key);
    expect(await refusal(verifySessionToken(ring, await sign({ ...base, iss: "someone-else" }), expected))).toMatch(/^token_invalid: .*iss claim/);
    expect(await codeOf(verifySessionToken(ring, await sign({ ...base, aud: ["dtlspush:session", "dtlspush:api"] }), expected))).toBe(
      "token_invalid",
    );
    const { sid: _sid, ...noSid } = base;
    expect(await codeOf(verifySessionToken(ring, await sign(noSid), expected))).toBe("token_invalid");
    const { exp: _exp, ...noExp } = base;
    expect(await codeOf(verifySessionToken(ring, await sign(noExp), expected))).toBe("token_invalid");
    expect(await codeOf(verifySessionToken(ring, await sign({ ...base, identity: 42 }), expected))).toBe("token_invalid");
    for (const junk of ["", "abc", "a.b.c", "..."]) {
      expect(await codeOf(verifySessionToken(ring, junk, expected))).toBe("token_invalid");
    }
  });

  it("rotation: tokens of the old key verify until it is retired, then token_invalid", async () => {
    const storage = new MapStorage();
    const r = await KeyRing.open(storage, "rot", { now: 1000 });
    const old = await issueSessionToken(r, { deviceId: DEVICE, identity: IDENTITY, sessionId: "a", now: NOW, ttlSeconds: 600 });
    const newKid = await r.rotate(2000);
    const fresh = await issueSessionToken(r, { deviceId: DEVICE, identity: IDENTITY, sessionId: "b", now: NOW, ttlSeconds: 600 });
    expect(decodeProtectedHeader(fresh.token).kid).toBe(newKid);
    expect(decodeProtectedHeader(old.token).kid).not.toBe(newKid);
    await expect(verifySessionToken(r, old.token, expected)).resolves.toMatchObject({ sessionId: "a" });
    // a ring reopened from the same storage verifies it too
    await expect(verifySessionToken(await KeyRing.open(storage, "rot"), old.token, expected)).resolves.toBeDefined();
    await r.retire(1500);
    expect(await refusal(verifySessionToken(r, old.token, expected))).toMatch(/^token_invalid: .*not in key ring rot/);
    await expect(verifySessionToken(r, fresh.token, expected)).resolves.toMatchObject({ sessionId: "b" });
  });

  it("work with ES256 rings, and a key's tokens only with that key's alg", async () => {
    const storage = new MapStorage();
    const ed = await KeyRing.open(storage, "mix", { now: 1 });
    const edToken = await issueSessionToken(ed, { deviceId: DEVICE, identity: IDENTITY, sessionId: "e", now: NOW, ttlSeconds: 60 });
    const es = await KeyRing.open(storage, "mix", { alg: "ES256", now: 2 });
    const esToken = await issueSessionToken(es, { deviceId: DEVICE, identity: IDENTITY, sessionId: "p", now: NOW, ttlSeconds: 60 });
    expect(decodeProtectedHeader(esToken.token).alg).toBe("ES256");
    await expect(verifySessionToken(es, esToken.token, expected)).resolves.toMatchObject({ sessionId: "p" });
    await expect(verifySessionToken(es, edToken.token, expected)).resolves.toMatchObject({ sessionId: "e" });
    // the EdDSA signature relabelled as ES256 with the EdDSA key's kid
    const [, p, s] = edToken.token.split(".");
    const relabelled = `${b64json({ alg: "ES256", kid: ed.currentKid, typ: "JWT" })}.${p}.${s}`;
    expect(await refusal(verifySessionToken(es, relabelled, expected))).toMatch(/^token_invalid: .*says alg ES256 but key .* is EdDSA/);
  });

  it("refuse bad issue arguments", async () => {
    const base = { deviceId: DEVICE, identity: IDENTITY, sessionId: "s", now: NOW, ttlSeconds: 60 };
    await expect(issueSessionToken(ring, { ...base, ttlSeconds: 0 })).rejects.toThrow(RangeError);
    await expect(issueSessionToken(ring, { ...base, ttlSeconds: 1.5 })).rejects.toThrow(RangeError);
    await expect(issueSessionToken(ring, { ...base, identity: "sensor-1" })).rejects.toThrow(RangeError);
    await expect(issueSessionToken(ring, { ...base, sessionId: "" })).rejects.toThrow(RangeError);
    expect(await codeOf(issueSessionToken(ring, { ...base, deviceId: "bad id" }))).toBe("bad_device");
  });
});
