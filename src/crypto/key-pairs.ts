/**
 * Key pairs for certificate generation (src/pki), through WebCrypto (the
 * API @peculiar/x509 is built on): generation, PKCS#8 PEM export and import,
 * and the check that a private key belongs to a public key.
 */
import { webcrypto } from "./node.ts";
import { DtlspushError } from "../util/errors.ts";
import { encodePem, pemBlocks } from "./pem.ts";

/** The WebCrypto implementation (what @peculiar/x509 is given as its crypto provider). */
export const webCrypto: webcrypto.Crypto = webcrypto;

const subtle = webCrypto.subtle;

/** A WebCrypto key (the DOM `CryptoKey` type without the DOM lib). */
export type WebKey = Awaited<ReturnType<typeof subtle.importKey>>;

export interface WebKeyPair {
  readonly publicKey: WebKey;
  readonly privateKey: WebKey;
}

/** The key kinds the generator makes. */
export type KeyKind = "p256" | "p384" | "rsa2048";

export const KEY_KINDS: readonly KeyKind[] = ["p256", "p384", "rsa2048"];

/** WebCrypto algorithm parameters for each kind (signatures use SHA-256). */
export function keyAlgorithm(kind: KeyKind): {
  name: string;
  namedCurve?: string;
  modulusLength?: number;
  publicExponent?: Uint8Array;
  hash?: string;
} {
  switch (kind) {
    case "p256":
      return { name: "ECDSA", namedCurve: "P-256" };
    case "p384":
      return { name: "ECDSA", namedCurve: "P-384" };
    case "rsa2048":
      return { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" };
  }
}

/** Generates an extractable key pair of `kind`. */
export async function generateKeyPair(kind: KeyKind): Promise<WebKeyPair> {
  const pair = (await subtle.generateKey(keyAlgorithm(kind) as Parameters<typeof subtle.generateKey>[0], true, ["sign", "verify"])) as WebKeyPair;
  return { publicKey: pair.publicKey, privateKey: pair.privateKey };
}

/** The private key as PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"). */
export async function exportPrivateKeyPem(key: WebKey): Promise<string> {
  return encodePem("PRIVATE KEY", await subtle.exportKey("pkcs8", key));
}

/** The kind of a WebCrypto key algorithm, or undefined if the generator does not make it. */
export function kindOfAlgorithm(algorithm: { name: string; namedCurve?: unknown; modulusLength?: unknown }): KeyKind | undefined {
  if (algorithm.name === "ECDSA" && algorithm.namedCurve === "P-256") return "p256";
  if (algorithm.name === "ECDSA" && algorithm.namedCurve === "P-384") return "p384";
  if (algorithm.name === "RSASSA-PKCS1-v1_5" && algorithm.modulusLength === 2048) return "rsa2048";
  return undefined;
}

/**
 * Imports a PKCS#8 PEM private key of `kind` (extractable, for signing).
 * Throws `DtlspushError` code `bad_key` when the text holds no such key.
 */
export async function importPrivateKeyPem(pem: string, kind: KeyKind): Promise<WebKey> {
  const blocks = pemBlocks(pem, "PRIVATE KEY");
  const der = blocks[0];
  if (der === undefined || blocks.length !== 1) throw new DtlspushError("bad_key", "expected exactly one PKCS#8 'PRIVATE KEY' PEM block");
  const { name, namedCurve, hash } = keyAlgorithm(kind);
  const algorithm = name === "ECDSA" ? { name, namedCurve } : { name, hash };
  try {
    return await subtle.importKey("pkcs8", der, algorithm as Parameters<typeof subtle.importKey>[2], true, ["sign"]);
  } catch (e) {
    throw new DtlspushError("bad_key", `not a valid ${kind} PKCS#8 private key`, { cause: e });
  }
}

/** True when `privateKey` is the private half of `publicKey` (compares the public JWK members). */
export async function keysMatch(privateKey: WebKey, publicKey: WebKey): Promise<boolean> {
  const priv = (await subtle.exportKey("jwk", privateKey)) as Record<string, unknown>;
  const pub = (await subtle.exportKey("jwk", publicKey)) as Record<string, unknown>;
  if (priv["kty"] !== pub["kty"]) return false;
  const members = pub["kty"] === "EC" ? ["crv", "x", "y"] : ["n", "e"];
  return members.every((m) => typeof pub[m] === "string" && priv[m] === pub[m]);
}
