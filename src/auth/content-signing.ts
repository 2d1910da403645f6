import { base64url, CompactSign, flattenedVerify, importJWK, type CryptoKey, type JWK } from "jose";
import { AuthError } from "./errors.ts";
import type { JsonWebKey, KeyRing, SigningAlg } from "./key-ring.ts";
import { signedContent, type SignedFields } from "./signed-content.ts";

/**
 * Signs the signed content of a publish with the ring's current key: a
 * detached compact JWS (RFC 7515 Appendix F), `BASE64URL(header) + ".." +
 * BASE64URL(signature)`, header exactly {"alg":"EdDSA"|"ES256","kid":"<kid>"}.
 */
export async function signContent(ring: KeyRing, fields: SignedFields): Promise<string> {
  const { kid, alg, key } = ring.signingKey();
  const jws = await new CompactSign(signedContent(fields)).setProtectedHeader({ alg, kid }).sign(key);
  const first = jws.indexOf(".");
  const last = jws.lastIndexOf(".");
  return `${jws.slice(0, first)}..${jws.slice(last + 1)}`;
}

/** The length of the signatures signContent makes with the ring's current key (Ed25519 and P-256 signatures are both 64 bytes). */
export function contentSignatureLength(ring: KeyRing): number {
  const { kid, alg } = ring.signingKey();
  return base64url.encode(JSON.stringify({ alg, kid })).length + 2 + base64url.encode(new Uint8Array(64)).length;
}

/** Checks content signatures against a JWKS (e.g. the one a Welcome carries). */
export interface ContentVerifier {
  /** Resolves when the signature is good; throws AuthError signature_invalid or unknown_key. */
  verify(fields: SignedFields, signature: string): Promise<void>;
  /** The kids this verifier accepts. */
  readonly kids: readonly string[];
}

interface VerifierKey {
  readonly alg: SigningAlg;
  readonly jwk: JWK;
  key?: Promise<CryptoKey>;
}

/**
 * A verifier for the keys of a JWKS (JSON text or object). Keys that are not
 * EdDSA (Ed25519) or ES256 (P-256) signing keys, or have no kid, are skipped;
 * a signature naming their kid is then unknown_key. A JWKS that is not JSON,
 * has no `keys` array or holds no usable key at all throws AuthError
 * unknown_key here, at creation. Only the public members of a key are used.
 */
export function createContentVerifier(jwks: string | { keys: JsonWebKey[] }): ContentVerifier {
  const keys = parseJwks(jwks);
  return {
    kids: [...keys.keys()],
    async verify(fields: SignedFields, signature: string): Promise<void> {
      const { header, sig, alg, kid } = parseSignature(signature);
      const entry = keys.get(kid);
      if (entry === undefined) throw new AuthError("unknown_key", `The content signature is by key ${kid}, which is not in the JWKS.`);
      if (entry.alg !== alg) throw new AuthError("signature_invalid", `The content signature says alg ${alg} but key ${kid} is ${entry.alg}.`);
      entry.key ??= importVerifierKey(entry, kid);
      const key = await entry.key;
      const payload = base64url.encode(signedContent(fields));
      try {
        await flattenedVerify({ protected: header, payload, signature: sig }, key, { algorithms: [alg] });
      } catch (e) {
        throw new AuthError("signature_invalid", `The content signature by key ${kid} does not verify.`, { cause: e });
      }
    },
  };
}

async function importVerifierKey(entry: VerifierKey, kid: string): Promise<CryptoKey> {
  try {
    const key = await importJWK(entry.jwk, entry.alg);
    if (key instanceof Uint8Array) throw new TypeError("not an asymmetric key");
    return key;
  } catch (e) {
    throw new AuthError("unknown_key", `Key ${kid} of the JWKS cannot be imported.`, { cause: e });
  }
}

function parseSignature(signature: string): { header: string; sig: string; alg: SigningAlg; kid: string } {
  const bad = (problem: string, cause?: unknown): AuthError =>
    new AuthError("signature_invalid", `The content signature ${problem}.`, cause === undefined ? undefined : { cause });
  if (typeof signature !== "string") throw bad("is not a string");
  const parts = signature.split(".");
  if (parts.length !== 3 || parts[1] !== "" || parts[0] === "" || parts[2] === "") {
    throw bad('is not a detached compact JWS ("header..signature")');
  }
  const header = parts[0] as string;
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(base64url.decode(header)));
  } catch (e) {
    throw bad("has a header that is not base64url JSON", e);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw bad("has a header that is not a JSON object");
  const members = Object.keys(parsed);
  const { alg, kid } = parsed as { alg?: unknown; kid?: unknown };
  if (members.length !== 2 || typeof alg !== "string" || typeof kid !== "string" || kid === "") {
    throw bad("header must hold exactly alg and kid");
  }
  if (alg !== "EdDSA" && alg !== "ES256") throw bad(`uses alg ${alg}, not EdDSA or ES256`);
  return { header, sig: parts[2] as string, alg, kid };
}

function parseJwks(input: string | { keys: JsonWebKey[] }): Map<string, VerifierKey> {
  const bad = (problem: string, cause?: unknown): AuthError =>
    new AuthError("unknown_key", `The JWKS ${problem}.`, cause === undefined ? undefined : { cause });
  let data: unknown = input;
  if (typeof input === "string") {
    try {
      data = JSON.parse(input);
    } catch (e) {
      throw bad("is not JSON", e);
    }
  }
  if (typeof data !== "object" || data === null || !Array.isArray((data as { keys?: unknown }).keys)) {
    throw bad('is not an object with a "keys" array');
  }
  const out = new Map<string, VerifierKey>();
  for (const k of (data as { keys: unknown[] }).keys) {
    const usable = usableKey(k);
    if (usable !== undefined && !out.has(usable.kid)) out.set(usable.kid, { alg: usable.alg, jwk: usable.jwk });
  }
  if (out.size === 0) throw bad("holds no EdDSA or ES256 signing key with a kid");
  return out;
}

function usableKey(k: unknown): { kid: string; alg: SigningAlg; jwk: JWK } | undefined {
  if (typeof k !== "object" || k === null) return undefined;
  const { kty, crv, x, y, kid, alg, use } = k as Record<string, unknown>;
  if (typeof kid !== "string" || kid === "") return undefined;
  if (use !== undefined && use !== "sig") return undefined;
  if (kty === "OKP" && crv === "Ed25519" && typeof x === "string") {
    if (alg !== undefined && alg !== "EdDSA" && alg !== "Ed25519") return undefined;
    return { kid, alg: "EdDSA", jwk: { kty, crv, x } };
  }
  if (kty === "EC" && crv === "P-256" && typeof x === "string" && typeof y === "string") {
    if (alg !== undefined && alg !== "ES256") return undefined;
    return { kid, alg: "ES256", jwk: { kty, crv, x, y } };
  }
  return undefined;
}
