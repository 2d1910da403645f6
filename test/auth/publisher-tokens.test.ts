import { decodeJwt, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { AuthError } from "../../src/auth/errors.ts";
import { KeyRing } from "../../src/auth/key-ring.ts";
import { issuePublisherToken, verifyPublisherToken } from "../../src/auth/publisher-tokens.ts";
import { issueSessionToken } from "../../src/auth/session-tokens.ts";
import { MapStorage } from "./map-storage.ts";

const NOW = 1_700_000_000_000;

async function codeOf(p: Promise<unknown>): Promise<string> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(AuthError);
  return (e as AuthError).code;
}

let ring: KeyRing;
beforeAll(async () => {
  ring = await KeyRing.open(new MapStorage(), "api", { now: NOW });
});

describe("publisher tokens", () => {
  it("carry aud dtlspush:api, a space-separated scope and a random jti", async () => {
    const a = await issuePublisherToken(ring, { subject: "billing", scopes: ["publish", "admin"], now: NOW, ttlSeconds: 600 });
    const b = await issuePublisherToken(ring, { subject: "billing", scopes: ["publish"], now: NOW, ttlSeconds: 600 });
    const pa = decodeJwt(a.token);
    expect(pa).toMatchObject({ iss: "dtlspush", aud: "dtlspush:api", sub: "billing", scope: "publish admin", exp: 1_700_000_600 });
    expect(a.expiresAt).toBe(1_700_000_600_000);
    expect(typeof pa.jti).toBe("string");
    expect(pa.jti).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(decodeJwt(b.token).jti).not.toBe(pa.jti);
  });

  it("verify: publish scope grants publish; admin implies publish", async () => {
    const pub = await issuePublisherToken(ring, { subject: "svc", scopes: ["publish"], now: NOW, ttlSeconds: 60 });
    const claims = await verifyPublisherToken(ring, pub.token, { scope: "publish", now: NOW });
    expect(claims).toMatchObject({ subject: "svc", scopes: ["publish"], issuedAt: NOW, expiresAt: NOW + 60_000 });
    expect(claims.tokenId).toBe(decodeJwt(pub.token).jti);
    expect(await codeOf(verifyPublisherToken(ring, pub.token, { scope: "admin", now: NOW }))).toBe("insufficient_scope");

    const admin = await issuePublisherToken(ring, { subject: "ops", scopes: ["admin"], now: NOW, ttlSeconds: 60 });
    await expect(verifyPublisherToken(ring, admin.token, { scope: "publish", now: NOW })).resolves.toMatchObject({ scopes: ["admin"] });
    await expect(verifyPublisherToken(ring, admin.token, { scope: "admin", now: NOW })).resolves.toMatchObject({ subject: "ops" });
  });

  it("an empty or absent token is token_missing", async () => {
    expect(await codeOf(verifyPublisherToken(ring, undefined, { scope: "publish", now: NOW }))).toBe("token_missing");
    expect(await codeOf(verifyPublisherToken(ring, "", { scope: "publish", now: NOW }))).toBe("token_missing");
    expect(await codeOf(verifyPublisherToken(ring, "  ", { scope: "publish", now: NOW }))).toBe("token_missing");
  });

  it("a token without scope is insufficient_scope; unknown scope values grant nothing; a non-string scope is token_invalid", async () => {
    const { kid, alg, key } = ring.signingKey();
    const sign = (claims: Record<string, unknown>) =>
      new SignJWT({ iss: "dtlspush", aud: "dtlspush:api", sub: "x", jti: "j", iat: NOW / 1000, exp: NOW / 1000 + 60, ...claims })
        .setProtectedHeader({ alg, kid })
        .sign(key);
    expect(await codeOf(verifyPublisherToken(ring, await sign({}), { scope: "publish", now: NOW }))).toBe("insufficient_scope");
    expect(await codeOf(verifyPublisherToken(ring, await sign({ scope: "" }), { scope: "publish", now: NOW }))).toBe("insufficient_scope");
    expect(await codeOf(verifyPublisherToken(ring, await sign({ scope: "root superuser" }), { scope: "publish", now: NOW }))).toBe(
      "insufficient_scope",
    );
    await expect(verifyPublisherToken(ring, await sign({ scope: "read publish" }), { scope: "publish", now: NOW })).resolves.toMatchObject({
      scopes: ["publish"],
    });
    expect(await codeOf(verifyPublisherToken(ring, await sign({ scope: ["admin"] }), { scope: "publish", now: NOW }))).toBe("token_invalid");
  });

  it("expire (5 s leeway) and refuse session tokens, foreign keys and tampering", async () => {
    const pub = await issuePublisherToken(ring, { subject: "svc", scopes: ["admin"], now: NOW, ttlSeconds: 60 });
    await expect(verifyPublisherToken(ring, pub.token, { scope: "publish", now: pub.expiresAt + 4_000 })).resolves.toBeDefined();
    expect(await codeOf(verifyPublisherToken(ring, pub.token, { scope: "publish", now: pub.expiresAt + 5_000 }))).toBe("token_expired");

    const session = await issueSessionToken(ring, { deviceId: "svc", identity: "psk:svc", sessionId: "s", now: NOW, ttlSeconds: 60 });
    expect(await codeOf(verifyPublisherToken(ring, session.token, { scope: "publish", now: NOW }))).toBe("token_invalid");

    const other = await KeyRing.open(new MapStorage(), "api", { now: NOW });
    const foreign = await issuePublisherToken(other, { subject: "svc", scopes: ["admin"], now: NOW, ttlSeconds: 60 });
    expect(await codeOf(verifyPublisherToken(ring, foreign.token, { scope: "publish", now: NOW }))).toBe("token_invalid");

    const [h, p, s] = pub.token.split(".");
    const claims = decodeJwt(pub.token);
    const forgedPayload = Buffer.from(JSON.stringify({ ...claims, sub: "root" })).toString("base64url");
    expect(forgedPayload).not.toBe(p);
    expect(await codeOf(verifyPublisherToken(ring, `${h}.${forgedPayload}.${s}`, { scope: "publish", now: NOW }))).toBe("token_invalid");
    expect(await codeOf(verifyPublisherToken(ring, "not-a-jwt", { scope: "publish", now: NOW }))).toBe("token_invalid");
  });

  it("refuse bad issue arguments", async () => {
    await expect(issuePublisherToken(ring, { subject: "", scopes: ["publish"], now: NOW, ttlSeconds: 60 })).rejects.toThrow(RangeError);
    await expect(issuePublisherToken(ring, { subject: "a", scopes: [], now: NOW, ttlSeconds: 60 })).rejects.toThrow(RangeError);
    await expect(issuePublisherToken(ring, { subject: "a", scopes: ["root" as "admin"], now: NOW, ttlSeconds: 60 })).rejects.toThrow(RangeError);
    await expect(issuePublisherToken(ring, { subject: "a", scopes: ["publish"], now: NOW, ttlSeconds: -1 })).rejects.toThrow(RangeError);
  });
});
