/**
 * JWS keys (Ed25519 "EdDSA", ECDSA P-256 "ES256") for content signatures and
 * tokens. Each key is imported once from its JWK into one node:crypto
 * KeyObject, which signs and verifies synchronously here and is what jose
 * takes for JWTs (`key`): no second (WebCrypto) copy of a key is kept.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign as nodeSign, verify as nodeVerify, type KeyObject } from "./node.ts";

/** The JWS algorithms (RFC 7518 / RFC 8037) of JwsSigner and JwsVerifier. */
export type JwsAlg = "EdDSA" | "ES256";

/** The JWK members a JWS key is read from; any other member is ignored. */
export interface JwkKeyMembers {
  readonly kty?: unknown;
  readonly crv?: unknown;
  readonly x?: unknown;
  readonly y?: unknown;
  readonly d?: unknown;
}

/** The private JWK members of a JWS key, as jwsGenerateJwk makes them. */
export interface PrivateJwk {
  readonly kty: string;
  readonly crv: string;
  readonly x: string;
  readonly y?: string;
  readonly d: string;
}

/** A key loaded once, opaque outside this folder: what jose signs and verifies JWTs with on Node. */
export type KeyHandle = KeyObject;

/** Signs JWS signing inputs synchronously. */
export interface JwsSigner {
  readonly alg: JwsAlg;
  /** The JWS signature of `data` (the JWS signing input): 64 bytes, Ed25519 or ECDSA P-256/SHA-256 as raw r||s. */
  sign(data: Uint8Array): Uint8Array;
}

/** Checks JWS signatures synchronously. */
export interface JwsVerifier {
  readonly alg: JwsAlg;
  /** True when `signature` (64 bytes, as JwsSigner makes them) is a good signature of `data`; never throws on bad input. */
  verify(data: Uint8Array, signature: Uint8Array): boolean;
}

/** A public key imported once from a JWK: synchronous checks, and the same key for jose. */
export interface JwsPublicKey extends JwsVerifier {
  readonly key: KeyHandle;
}

/** A private key imported once from a JWK: synchronous signatures, the same key for jose, and its public key. */
export interface JwsPrivateKey extends JwsSigner {
  readonly key: KeyHandle;
  readonly publicKey: JwsPublicKey;
}

/** Ed25519 signatures and raw P-256 r||s signatures are both 64 bytes. */
const JWS_SIGNATURE_LENGTH = 64;

/** A new key of `alg`, as its private JWK members (kty, crv, x, y for P-256, d). */
export function jwsGenerateJwk(alg: JwsAlg): PrivateJwk {
  const { privateKey } = alg === "EdDSA" ? generateKeyPairSync("ed25519") : generateKeyPairSync("ec", { namedCurve: "P-256" });
  return jwsKeyMembers(privateKey.export({ format: "jwk" }), alg, true) as PrivateJwk;
}

/**
 * The private key of the JWK (`kty`, `crv`, `x`, `y` for P-256, `d`) of an
 * `alg` key: EdDSA takes an OKP Ed25519 key, ES256 an EC P-256 key. Throws a
 * TypeError when the JWK is not a private key of that type, or when its public
 * members are not those of its private key.
 */
export function jwsPrivateKeyFromJwk(jwk: JwkKeyMembers, alg: JwsAlg): JwsPrivateKey {
  const { key, members } = importJwk(jwk, alg, true);
  // Node derives an Ed25519 public key from d alone and ignores x: check it, so the kid (from x) names this key.
  const publicKey = createPublicKey(key);
  const derived = publicKey.export({ format: "jwk" });
  if (derived.x !== members.x || derived.y !== members.y) throw new TypeError(`The JWK's public members are not those of its ${alg} private key.`);
  const { hashName, options } = nodeArguments(key, alg);
  return { alg, key, publicKey: publicKeyOf(publicKey, alg), sign: (data) => nodeSign(hashName, data, options) };
}

/** The public key of the public members of a JWK of an `alg` key (see jwsPrivateKeyFromJwk); throws a TypeError when they are not a key of that type. */
export function jwsPublicKeyFromJwk(jwk: JwkKeyMembers, alg: JwsAlg): JwsPublicKey {
  return publicKeyOf(importJwk(jwk, alg, false).key, alg);
}

function publicKeyOf(key: KeyObject, alg: JwsAlg): JwsPublicKey {
  const { hashName, options } = nodeArguments(key, alg);
  return {
    alg,
    key,
    verify(data, signature) {
      if (signature.length !== JWS_SIGNATURE_LENGTH) return false;
      try {
        return nodeVerify(hashName, data, options, signature);
      } catch {
        return false;
      }
    },
  };
}

/** The key of a JWK's members (private: with d), or a TypeError saying it is not a usable key of `alg`. */
function importJwk(jwk: JwkKeyMembers, alg: JwsAlg, isPrivate: boolean): { key: KeyObject; members: ReturnType<typeof jwsKeyMembers> } {
  const members = jwsKeyMembers(jwk, alg, isPrivate);
  try {
    return { key: isPrivate ? createPrivateKey({ key: members, format: "jwk" }) : createPublicKey({ key: members, format: "jwk" }), members };
  } catch (e) {
    throw new TypeError(`The JWK is not a usable ${alg} ${isPrivate ? "private" : "public"} key.`, { cause: e });
  }
}

/** The digest and key arguments of node:crypto sign/verify for `alg` (ES256: raw r||s, as JWS wants). */
function nodeArguments(
  key: KeyObject,
  alg: JwsAlg,
): { hashName: "sha256" | null; options: KeyObject | { key: KeyObject; dsaEncoding: "ieee-p1363" } } {
  return alg === "EdDSA" ? { hashName: null, options: key } : { hashName: "sha256", options: { key, dsaEncoding: "ieee-p1363" } };
}

/** The members node:crypto imports, checked against `alg`; `private` requires (and keeps) d. */
function jwsKeyMembers(jwk: JwkKeyMembers, alg: JwsAlg, isPrivate: boolean): { kty: string; crv: string; x: string; y?: string; d?: string } {
  const { kty, crv, x, y, d } = jwk;
  const want = alg === "EdDSA" ? { kty: "OKP", crv: "Ed25519" } : alg === "ES256" ? { kty: "EC", crv: "P-256" } : undefined;
  if (want === undefined) throw new TypeError(`JWS alg ${String(alg)} is not supported (EdDSA or ES256).`);
  if (kty !== want.kty || crv !== want.crv || typeof x !== "string")
    throw new TypeError(`An ${alg} JWK must have kty ${want.kty}, crv ${want.crv} and x.`);
  if (alg === "ES256" && typeof y !== "string") throw new TypeError("An ES256 JWK must have y.");
  if (isPrivate && typeof d !== "string") throw new TypeError("The JWK holds no private key (no d member).");
  return {
    kty: want.kty,
    crv: want.crv,
    x,
    ...(alg === "ES256" ? { y: y as string } : {}),
    ...(isPrivate ? { d: d as string } : {}),
  };
}
