/**
 * Handshake signatures: the TLS SignatureScheme code points we implement,
 * private keys loaded once from PEM (Signer), and the key descriptions that
 * certificates share.
 */
import { constants as cryptoConstants, createPrivateKey, sign as nodeSign, type KeyObject } from "./node.ts";

/** TLS 1.2 SignatureAndHashAlgorithm / TLS 1.3 SignatureScheme code points we implement. */
export const SignatureScheme = {
  rsa_pkcs1_sha1: 0x0201,
  ecdsa_sha1: 0x0203,
  rsa_pkcs1_sha256: 0x0401,
  ecdsa_secp256r1_sha256: 0x0403,
  rsa_pkcs1_sha384: 0x0501,
  ecdsa_secp384r1_sha384: 0x0503,
  ecdsa_secp521r1_sha512: 0x0603,
  rsa_pss_rsae_sha256: 0x0804,
  rsa_pss_rsae_sha384: 0x0805,
  ed25519: 0x0807,
} as const;

export type KeyType = "ec" | "rsa" | "ed25519";
export type Curve = "P-256" | "P-384" | "P-521";

/** @internal (x509.ts) */
export interface SchemeInfo {
  readonly keyType: KeyType;
  readonly hash: "sha1" | "sha256" | "sha384" | "sha512" | null;
  /** For ECDSA schemes bound to a curve (TLS 1.3 style); in TLS 1.2 0x0403 etc. only name the hash. */
  readonly pss?: boolean;
}

/** @internal (x509.ts) */
export const SCHEMES = new Map<number, SchemeInfo>([
  [SignatureScheme.rsa_pkcs1_sha1, { keyType: "rsa", hash: "sha1" }],
  [SignatureScheme.ecdsa_sha1, { keyType: "ec", hash: "sha1" }],
  [SignatureScheme.rsa_pkcs1_sha256, { keyType: "rsa", hash: "sha256" }],
  [SignatureScheme.ecdsa_secp256r1_sha256, { keyType: "ec", hash: "sha256" }],
  [SignatureScheme.rsa_pkcs1_sha384, { keyType: "rsa", hash: "sha384" }],
  [SignatureScheme.ecdsa_secp384r1_sha384, { keyType: "ec", hash: "sha384" }],
  [SignatureScheme.ecdsa_secp521r1_sha512, { keyType: "ec", hash: "sha512" }],
  [SignatureScheme.rsa_pss_rsae_sha256, { keyType: "rsa", hash: "sha256", pss: true }],
  [SignatureScheme.rsa_pss_rsae_sha384, { keyType: "rsa", hash: "sha384", pss: true }],
  [SignatureScheme.ed25519, { keyType: "ed25519", hash: null }],
]);

export function schemeKeyType(scheme: number): KeyType | undefined {
  return SCHEMES.get(scheme)?.keyType;
}

export function schemeUsesSha1(scheme: number): boolean {
  return SCHEMES.get(scheme)?.hash === "sha1";
}

/** @internal (x509.ts) The type and curve of a key; throws for a type we do not implement. */
export function keyDescription(key: KeyObject): { keyType: KeyType; curve: Curve | undefined } {
  const t = key.asymmetricKeyType;
  if (t === "ec") {
    const named = key.asymmetricKeyDetails?.namedCurve;
    const curve: Curve | undefined = named === "prime256v1" ? "P-256" : named === "secp384r1" ? "P-384" : named === "secp521r1" ? "P-521" : undefined;
    return { keyType: "ec", curve };
  }
  if (t === "rsa") return { keyType: "rsa", curve: undefined };
  if (t === "ed25519") return { keyType: "ed25519", curve: undefined };
  throw new Error(`unsupported key type ${t ?? "unknown"}`);
}

/** @internal (x509.ts) The key argument of sign/verify for a scheme (RSA-PSS needs padding and salt length). */
export function signOptions(key: KeyObject, info: SchemeInfo): KeyObject | { key: KeyObject; padding: number; saltLength: number } {
  return info.pss ? { key, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: info.hash === "sha384" ? 48 : 32 } : key;
}

/** A private key loaded once (a KeyObject), for handshake signatures. */
export interface Signer {
  readonly keyType: KeyType;
  readonly curve: Curve | undefined;
  sign(scheme: number, data: Uint8Array): Uint8Array;
}

/** Loads a PEM (PKCS#8, SEC1 or PKCS#1) private key; throws with the reason when it is not one. */
export function loadPrivateKey(pem: string | Uint8Array): Signer {
  const text = typeof pem === "string" ? pem : Buffer.from(pem).toString("utf8");
  if (!/-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----/.test(text)) throw new Error("holds no PEM private key");
  if (text.includes("ENCRYPTED PRIVATE KEY")) throw new Error("the private key is encrypted; give an unencrypted PEM key");
  const key = createPrivateKey(text);
  const { keyType, curve } = keyDescription(key);
  return {
    keyType,
    curve,
    sign(scheme, data) {
      const info = SCHEMES.get(scheme);
      if (info === undefined || info.keyType !== keyType) throw new Error(`cannot sign scheme 0x${scheme.toString(16)} with a ${keyType} key`);
      return nodeSign(info.hash, data, signOptions(key, info));
    },
  };
}
