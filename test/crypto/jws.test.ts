import { base64url, CompactSign, exportJWK, flattenedVerify, generateKeyPair } from "jose";
import { describe, expect, it } from "vitest";
import { jwsGenerateJwk, jwsPrivateKeyFromJwk, jwsPublicKeyFromJwk } from "../../src/crypto/index.ts";

/** RFC 8037 A.1 Ed25519 key. */
const RFC8037 = { kty: "OKP", crv: "Ed25519", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", d: "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A" };

describe("JWS keys", () => {
  const data = new TextEncoder().encode("header.payload");

  it("ES256 signatures are raw r||s (64 bytes) that jose verifies, and jose's verify here", async () => {
    const pair = await generateKeyPair("ES256", { extractable: true });
    const jwk = await exportJWK(pair.privateKey);
    const signer = jwsPrivateKeyFromJwk(jwk, "ES256");
    const verifier = jwsPublicKeyFromJwk(jwk, "ES256");
    const header = base64url.encode('{"alg":"ES256"}');
    const payload = base64url.encode("p");
    const input = new TextEncoder().encode(`${header}.${payload}`);
    const sig = signer.sign(input);
    expect(sig).toHaveLength(64);
    await expect(
      flattenedVerify({ protected: header, payload, signature: base64url.encode(sig) }, pair.publicKey, { algorithms: ["ES256"] }),
    ).resolves.toBeDefined();
    const theirs = base64url.decode(
      (await new CompactSign(base64url.decode(payload)).setProtectedHeader({ alg: "ES256" }).sign(pair.privateKey)).split(".")[2]!,
    );
    expect(verifier.verify(input, theirs)).toBe(true);
    expect(verifier.verify(data, theirs)).toBe(false);
  });

  it("verifiers return false, never throw, for signatures of another length", () => {
    const signer = jwsPrivateKeyFromJwk(RFC8037, "EdDSA");
    const verifier = jwsPublicKeyFromJwk(RFC8037, "EdDSA");
    const sig = signer.sign(data);
    expect(verifier.verify(data, sig)).toBe(true);
    expect(verifier.verify(data, sig.subarray(0, 63))).toBe(false);
    expect(verifier.verify(data, new Uint8Array(65))).toBe(false);
    expect(verifier.verify(data, new Uint8Array(0))).toBe(false);
  });

  it("refuse a JWK of the wrong type, without d (signer), or whose x is not its private key's", () => {
    const p256 = { kty: "EC", crv: "P-256", x: "AAAA", y: "AAAA" };
    expect(() => jwsPrivateKeyFromJwk(RFC8037, "ES256")).toThrow(TypeError);
    expect(() => jwsPublicKeyFromJwk(p256, "EdDSA")).toThrow(TypeError);
    expect(() => jwsPublicKeyFromJwk(p256, "ES256")).toThrow(TypeError); // not a point
    expect(() => jwsPrivateKeyFromJwk({ ...RFC8037, d: undefined }, "EdDSA")).toThrow(/no d member/);
    const otherX = Buffer.from("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "hex").toString("base64url");
    expect(() => jwsPrivateKeyFromJwk({ ...RFC8037, x: otherX }, "EdDSA")).toThrow(/public members/);
    expect(() => jwsPrivateKeyFromJwk(RFC8037, "HS256" as "EdDSA")).toThrow(TypeError);
  });

  it("generated keys hold only kty, crv, x, (y,) d; import into a private key whose public key verifies its signatures", () => {
    for (const [alg, members] of [
      ["EdDSA", ["crv", "d", "kty", "x"]],
      ["ES256", ["crv", "d", "kty", "x", "y"]],
    ] as const) {
      const jwk = jwsGenerateJwk(alg);
      expect(Object.keys(jwk).sort()).toEqual(members);
      const key = jwsPrivateKeyFromJwk(jwk, alg);
      const sig = key.sign(data);
      expect(sig).toHaveLength(64);
      expect(key.publicKey.verify(data, sig)).toBe(true);
      expect(jwsPublicKeyFromJwk(jwk, alg).verify(data, sig)).toBe(true);
      expect(jwsGenerateJwk(alg).x).not.toBe(jwk.x);
    }
  });
});
