import { base64url } from "jose";
import { defaultCrypto, type CryptoProvider, type JwsSigner, type JwsVerifier } from "../crypto/index.ts";
import { AuthError } from "./errors.ts";
import type { JsonWebKey, KeyRing, SigningAlg } from "./key-ring.ts";
import { signedContent, type SignedFields } from "./signed-content.ts";

/*
 * Signing and verifying are done synchronously with node:crypto KeyObjects
 * imported once per key (through the crypto provider), not through jose and
 * WebCrypto: for Ed25519 that is several times cheaper per push. The format
 * is exactly what jose's CompactSign makes (and what jose verifies).
 */

const utf8 = new TextEncoder();

/** Both algs make 64-byte signatures: 86 base64url characters. */
const SIGNATURE_BYTES = 64;

/**
 * Signs the signed content of a publish with the ring's current key: a
 * detached compact JWS (RFC 7515 Appendix F), `BASE64URL(header) + ".." +
 * BASE64URL(signature)`, header exactly {"alg":"EdDSA"|"ES256","kid":"<kid>"}.
 * The work is synchronous; the promise is kept for callers.
 */
export async function signContent(ring: KeyRing, fields: SignedFields): Promise<string> {
  return signContentWith(ring.signingKey(), fields);
}

/** signContent with a given key (what the signing pool's workers call); synchronous. */
export function signContentWith(key: { readonly kid: string; readonly alg: SigningAlg; readonly signer: JwsSigner }, fields: SignedFields): string {
  const header = protectedHeader(key.alg, key.kid);
  const signature = key.signer.sign(signingInput(header, fields));
  return `${header}..${encode(signature)}`;
}

/** What makes the content signatures of publishes: on the main thread (signContent) or a SigningPool. */
export interface ContentSigner {
  /** A detached JWS of `fields` by the ring's current key, as signContent makes it. */
  sign(fields: SignedFields): Promise<string>;
}

/** A ContentSigner that signs on the calling thread. */
export function mainThreadSigner(ring: KeyRing): ContentSigner {
  return { sign: (fields) => signContent(ring, fields) };
}

/** The length of the signatures signContent makes with the ring's current key (Ed25519 and P-256 signatures are both 64 bytes). */
export function contentSignatureLength(ring: KeyRing): number {
  const { kid, alg } = ring.signingKey();
  return protectedHeader(alg, kid).length + 2 + encode(new Uint8Array(SIGNATURE_BYTES)).length;
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
  readonly jwk: JsonWebKey;
  /** imported on first use; an AuthError unknown_key when the key does not import */
  key?: JwsVerifier | AuthError;
}

/**
 * A verifier for the keys of a JWKS (JSON text or object). Keys that are not
 * EdDSA (Ed25519) or ES256 (P-256) signing keys, or have no kid, are skipped;
 * a signature naming their kid is then unknown_key. A JWKS that is not JSON,
 * has no `keys` array or holds no usable key at all throws AuthError
 * unknown_key here, at creation. Only the public members of a key are used;
 * keys are imported by `provider` (default: the Node provider). The check is
 * synchronous; the promise is kept for callers.
 */
export function createContentVerifier(jwks: string | { keys: JsonWebKey[] }, provider: CryptoProvider = defaultCrypto): ContentVerifier {
  const keys = parseJwks(jwks);
  return {
    kids: [...keys.keys()],
    async verify(fields: SignedFields, signature: string): Promise<void> {
      const { header, sig, alg, kid } = parseSignature(signature);
      const entry = keys.get(kid);
      if (entry === undefined) throw new AuthError("unknown_key", `The content signature is by key ${kid}, which is not in the JWKS.`);
      if (entry.alg !== alg) throw new AuthError("signature_invalid", `The content signature says alg ${alg} but key ${kid} is ${entry.alg}.`);
      entry.key ??= importVerifierKey(provider, entry, kid);
      if (entry.key instanceof AuthError) throw entry.key;
      const bytes = decodeSignature(sig);
      if (bytes === undefined || !entry.key.verify(signingInput(header, fields), bytes)) {
        throw new AuthError("signature_invalid", `The content signature by key ${kid} does not verify.`);
      }
    },
  };
}

function importVerifierKey(provider: CryptoProvider, entry: VerifierKey, kid: string): JwsVerifier | AuthError {
  try {
    return provider.jws.publicKeyFromJwk(entry.jwk, entry.alg);
  } catch (e) {
    return new AuthError("unknown_key", `Key ${kid} of the JWKS cannot be imported.`, { cause: e });
  }
}

/** The JWS signing input: ASCII(BASE64URL(header) "." BASE64URL(signed content)). */
function signingInput(header: string, fields: SignedFields): Uint8Array {
  return utf8.encode(`${header}.${encode(signedContent(fields))}`);
}

/** BASE64URL of the protected header {"alg","kid"} (member order as jose writes it); the last one is kept. */
let lastHeader: { alg: SigningAlg; kid: string; text: string } | undefined;

function protectedHeader(alg: SigningAlg, kid: string): string {
  if (lastHeader?.alg !== alg || lastHeader.kid !== kid) lastHeader = { alg, kid, text: encode(utf8.encode(JSON.stringify({ alg, kid }))) };
  return lastHeader.text;
}

function encode(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64url");
}

/** The 64 signature bytes of a canonical base64url text, or undefined (Buffer would skip bad characters silently). */
function decodeSignature(text: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9_-]{86}$/.test(text)) return undefined;
  const bytes = Buffer.from(text, "base64url");
  return encode(bytes) === text ? bytes : undefined;
}

/** The last well-formed header parseSignature read: every push by one key has the same one. */
let lastParsed: { header: string; alg: SigningAlg; kid: string } | undefined;

function parseSignature(signature: string): { header: string; sig: string; alg: SigningAlg; kid: string } {
  const bad = (problem: string, cause?: unknown): AuthError =>
    new AuthError("signature_invalid", `The content signature ${problem}.`, cause === undefined ? undefined : { cause });
  if (typeof signature !== "string") throw bad("is not a string");
  const parts = signature.split(".");
  if (parts.length !== 3 || parts[1] !== "" || parts[0] === "" || parts[2] === "") {
    throw bad('is not a detached compact JWS ("header..signature")');
  }
  const header = parts[0] as string;
  const sig = parts[2] as string;
  if (lastParsed?.header === header) return { header, sig, alg: lastParsed.alg, kid: lastParsed.kid };
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
  lastParsed = { header, alg, kid };
  return { header, sig, alg, kid };
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

function usableKey(k: unknown): { kid: string; alg: SigningAlg; jwk: JsonWebKey } | undefined {
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
