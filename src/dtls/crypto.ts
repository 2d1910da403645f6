/**
 * The crypto provider: the only module of the project that imports node:crypto.
 *
 * Node 24 charges 6-9 us per call when createCipheriv/createHmac get a raw
 * Buffer key, so every key becomes a KeyObject once (per epoch, per PSK, per
 * cookie secret) and is reused for every record.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  constants as cryptoConstants,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  randomFillSync,
  randomUUID,
  sign as nodeSign,
  verify as nodeVerify,
  X509Certificate,
  timingSafeEqual,
  type KeyObject,
} from "node:crypto";

import { keyUsage, type KeyUsage } from "./der.ts";

export type HashName = "sha256" | "sha384";
export type AeadName = "aes-128-gcm" | "aes-256-gcm" | "aes-128-ccm" | "aes-128-ccm8" | "chacha20-poly1305";

/** An opaque reusable MAC/PRF key. */
export interface SecretKey {
  readonly key: KeyObject;
}

export function secretKey(bytes: Uint8Array): SecretKey {
  return { key: createSecretKey(bytes) };
}

/** The bytes of a secret key (a session's master secret, to seal it into a ticket or a saved session). */
export function secretKeyBytes(k: SecretKey): Uint8Array {
  return new Uint8Array(k.key.export());
}

/**
 * CSPRNG output. Small requests (randoms, nonces) are cut from a pooled 4 KiB
 * block filled by one system call, instead of one call each.
 */
const POOL_SIZE = 4096;
const pool = new Uint8Array(POOL_SIZE);
let poolOffset = POOL_SIZE;

/** A random (version 4) UUID, e.g. a message id. */
export function randomId(): string {
  return randomUUID();
}

export function randomBytes(n: number): Uint8Array {
  if (n > 256) return randomFillSync(new Uint8Array(n));
  if (poolOffset + n > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const out = pool.slice(poolOffset, poolOffset + n);
  pool.fill(0, poolOffset, poolOffset + n);
  poolOffset += n;
  return out;
}

export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export function hash(alg: HashName, parts: readonly Uint8Array[]): Uint8Array {
  const h = createHash(alg);
  for (const p of parts) h.update(p);
  return asBytes(h.digest());
}

/** A hash fed piece by piece whose digest can be taken at any point without ending it. */
export interface RunningHash {
  update(data: Uint8Array): void;
  digest(): Uint8Array;
}

export function runningHash(alg: HashName): RunningHash {
  const h = createHash(alg);
  return {
    update: (data) => {
      h.update(data);
    },
    digest: () => asBytes(h.copy().digest()),
  };
}

export function hmac(alg: HashName, key: SecretKey, parts: readonly Uint8Array[]): Uint8Array {
  const h = createHmac(alg, key.key);
  for (const p of parts) h.update(p);
  return asBytes(h.digest());
}

/** TLS 1.2 PRF (RFC 5246 section 5): P_hash(secret, label || seed). */
export function prf(alg: HashName, secret: Uint8Array | SecretKey, label: string, seed: Uint8Array, length: number): Uint8Array {
  const key = secret instanceof Uint8Array ? secretKey(secret) : secret;
  const labelSeed = new Uint8Array(label.length + seed.length);
  for (let i = 0; i < label.length; i++) labelSeed[i] = label.charCodeAt(i);
  labelSeed.set(seed, label.length);
  const out = new Uint8Array(length);
  let a: Uint8Array = labelSeed; // A(0)
  let off = 0;
  while (off < length) {
    a = asBytes(createHmac(alg, key.key).update(a).digest());
    const block = createHmac(alg, key.key).update(a).update(labelSeed).digest();
    const n = Math.min(block.length, length - off);
    out.set(block.subarray(0, n), off);
    off += n;
  }
  return out;
}

/**
 * An AEAD key, loaded once (a KeyObject, opaque outside this module). The
 * record layer keeps one per direction of every session and calls aeadSeal /
 * aeadOpen with it: no object around the key, nothing per session but the key.
 */
export type AeadKey = KeyObject & { readonly __aeadKey: never };

export function aeadKey(bytes: Uint8Array): AeadKey {
  return createSecretKey(bytes) as AeadKey;
}

/** The raw bytes of an AEAD key (for a session snapshot: handle as the secret it is). */
export function aeadKeyBytes(key: AeadKey): Uint8Array {
  return new Uint8Array(key.export());
}

/** The tag length of an AEAD, bytes. */
export function aeadTagLength(name: AeadName): 8 | 16 {
  return name === "aes-128-ccm8" ? 8 : 16;
}

/**
 * Seals `plaintext` under `key` and `nonce`, authenticating `aad`: `reserve`
 * bytes left for the caller to fill (a record header), then ciphertext, then
 * tag, in one fresh buffer. Pass Buffers for nonce and AAD where possible:
 * node:crypto takes a slower path for other views.
 */
export function aeadSeal(name: AeadName, key: AeadKey, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, reserve = 0): Uint8Array {
  switch (name) {
    case "aes-128-ccm":
    case "aes-128-ccm8": {
      const c = createCipheriv("aes-128-ccm", key, nonce, name === "aes-128-ccm8" ? CCM_8 : CCM_16);
      c.setAAD(aad, { plaintextLength: plaintext.length });
      const body = c.update(plaintext);
      c.final();
      return assemble(reserve, body, c.getAuthTag());
    }
    default: {
      // ChaCha20-Poly1305 has the GCM call shape at run time and a 16-byte tag by default.
      const c = createCipheriv(name as "aes-128-gcm", key, nonce);
      c.setAAD(aad);
      const body = c.update(plaintext);
      c.final();
      return assemble(reserve, body, c.getAuthTag());
    }
  }
}

/** The plaintext of `sealed` (ciphertext then tag), or null when it does not authenticate (callers drop silently). */
export function aeadOpen(name: AeadName, key: AeadKey, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | null {
  const tagLength = aeadTagLength(name);
  if (sealed.length < tagLength) return null;
  const ct = sealed.subarray(0, sealed.length - tagLength);
  const tag = sealed.subarray(sealed.length - tagLength);
  switch (name) {
    case "aes-128-ccm":
    case "aes-128-ccm8": {
      const d = createDecipheriv("aes-128-ccm", key, nonce, name === "aes-128-ccm8" ? CCM_8 : CCM_16);
      d.setAuthTag(tag);
      d.setAAD(aad, { plaintextLength: ct.length });
      // CCM authenticates inside update(): a bad tag makes update throw.
      try {
        const body = d.update(ct);
        d.final();
        return body;
      } catch {
        return null;
      }
    }
    default: {
      const d = createDecipheriv(name as "aes-128-gcm", key, nonce);
      d.setAuthTag(tag);
      d.setAAD(aad);
      const body = d.update(ct);
      try {
        d.final();
      } catch {
        return null;
      }
      return body;
    }
  }
}

/** An AEAD bound to one key (seal and open as aeadSeal / aeadOpen). */
export interface Aead {
  readonly tagLength: number;
  seal(nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, reserve?: number): Uint8Array;
  open(nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | null;
}

export function createAead(name: AeadName, key: Uint8Array): Aead {
  const k = aeadKey(key);
  return {
    tagLength: aeadTagLength(name),
    seal: (nonce, aad, plaintext, reserve) => aeadSeal(name, k, nonce, aad, plaintext, reserve),
    open: (nonce, aad, sealed) => aeadOpen(name, k, nonce, aad, sealed),
  };
}

function assemble(reserve: number, body: Buffer, tag: Buffer): Buffer {
  const out = Buffer.allocUnsafe(reserve + body.length + tag.length);
  out.fill(0, 0, reserve);
  body.copy(out, reserve);
  tag.copy(out, reserve + body.length);
  return out;
}

const CCM_8 = { authTagLength: 8 } as const;
const CCM_16 = { authTagLength: 16 } as const;

/** Groups for ephemeral ECDH (RFC 8422 / RFC 7748). */
export type EcdhGroup = "x25519" | "secp256r1" | "secp384r1" | "secp521r1";

const NIST: Record<Exclude<EcdhGroup, "x25519">, { crv: string; size: number }> = {
  secp256r1: { crv: "P-256", size: 32 },
  secp384r1: { crv: "P-384", size: 48 },
  secp521r1: { crv: "P-521", size: 66 },
};

/** One side's ephemeral key pair. `derive` returns null for an invalid peer key. */
export interface EcdhKeyPair {
  /** The wire encoding: 32 raw bytes for x25519, an uncompressed point (0x04 || X || Y) otherwise. */
  readonly publicKey: Uint8Array;
  derive(peerPublic: Uint8Array): Uint8Array | null;
}

function x25519FromPrivate(d: Uint8Array): { privateKey: KeyObject; publicKey: KeyObject } {
  const privateKey = createPrivateKey({ key: { kty: "OKP", crv: "X25519", d: b64u(d), x: "" }, format: "jwk" });
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

const b64u = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64url");

/** An ephemeral key pair: a fresh one, or (for known-answer tests) one from a raw x25519 private key. */
export function generateEcdh(group: EcdhGroup, x25519PrivateKey?: Uint8Array): EcdhKeyPair {
  if (group === "x25519") {
    const { privateKey, publicKey } =
      x25519PrivateKey === undefined ? generateKeyPairSync("x25519") : x25519FromPrivate(x25519PrivateKey);
    const x = Buffer.from(publicKey.export({ format: "jwk" }).x as string, "base64url");
    return {
      publicKey: x,
      derive(peer) {
        if (peer.length !== 32) return null;
        try {
          const peerKey = createPublicKey({ key: { kty: "OKP", crv: "X25519", x: b64u(peer) }, format: "jwk" });
          const z = diffieHellman({ privateKey, publicKey: peerKey });
          // RFC 7748 6.1: an all-zero result means a small-order peer key.
          return z.some((v) => v !== 0) ? z : null;
        } catch {
          return null;
        }
      },
    };
  }
  const { crv, size } = NIST[group];
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: crv });
  const jwk = publicKey.export({ format: "jwk" });
  const point = Buffer.concat([Buffer.of(4), Buffer.from(jwk.x as string, "base64url"), Buffer.from(jwk.y as string, "base64url")]);
  return {
    publicKey: point,
    derive(peer) {
      // Only uncompressed points (RFC 8422 5.1.2); OpenSSL checks the point is on the curve.
      if (peer.length !== 1 + 2 * size || peer[0] !== 4) return null;
      try {
        const peerKey = createPublicKey({
          key: { kty: "EC", crv, x: b64u(peer.subarray(1, 1 + size)), y: b64u(peer.subarray(1 + size)) },
          format: "jwk",
        });
        return diffieHellman({ privateKey, publicKey: peerKey });
      } catch {
        return null;
      }
    },
  };
}

// ---- signatures and certificates -------------------------------------------

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

interface SchemeInfo {
  readonly keyType: KeyType;
  readonly hash: "sha1" | "sha256" | "sha384" | "sha512" | null;
  /** For ECDSA schemes bound to a curve (TLS 1.3 style); in TLS 1.2 0x0403 etc. only name the hash. */
  readonly pss?: boolean;
}

const SCHEMES = new Map<number, SchemeInfo>([
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

function keyDescription(key: KeyObject): { keyType: KeyType; curve: Curve | undefined } {
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

function signOptions(key: KeyObject, info: SchemeInfo): KeyObject | { key: KeyObject; padding: number; saltLength: number } {
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

/** A parsed X.509 certificate, as the handshake needs it. */
export interface Certificate {
  readonly der: Uint8Array;
  /** The subject on one line, e.g. "CN=localhost, O=dtlspush". */
  readonly subject: string;
  /** The subject's common name, if it has one. */
  readonly commonName: string | undefined;
  readonly issuer: string;
  /** SHA-256 of the DER, lower-case hex without colons. */
  readonly fingerprint256: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCA: boolean;
  readonly keyType: KeyType;
  readonly curve: Curve | undefined;
  readonly subjectAltName: string | undefined;
  /** keyUsage bits, or undefined when the certificate has no such extension (any use). */
  readonly keyUsage: KeyUsage | undefined;
  /** Extended key usage OIDs, or undefined when the certificate has no such extension (any use). */
  readonly extendedKeyUsage: readonly string[] | undefined;
  /** Verifies a handshake signature made with this certificate's key. */
  verifySignature(scheme: number, data: Uint8Array, signature: Uint8Array): boolean;
  /** True when `issuer`'s subject (and key identifier, if any) is this certificate's issuer. */
  namesIssuer(issuer: Certificate): boolean;
  /** True when `issuer` names this certificate's issuer and its key signed it. */
  issuedBy(issuer: Certificate): boolean;
  matchesPrivateKey(pem: string | Uint8Array): boolean;
  checkHost(name: string): boolean;
  checkIP(ip: string): boolean;
}

/** Each parsed certificate's node:crypto object, so issuer checks never re-parse a trust anchor. */
const x509Of = new WeakMap<Certificate, X509Certificate>();

function x509(cert: Certificate): X509Certificate {
  let x = x509Of.get(cert);
  if (x === undefined) {
    x = new X509Certificate(Buffer.from(cert.der));
    x509Of.set(cert, x);
  }
  return x;
}

export function parseCertificate(der: Uint8Array): Certificate {
  const x = new X509Certificate(Buffer.from(der));
  const pub = x.publicKey;
  const { keyType, curve } = keyDescription(pub);
  const oneLine = (dn: string): string => dn.split("\n").join(", ");
  const cn = x.subject.split("\n").find((l) => l.startsWith("CN="));
  const cert: Certificate = {
    der,
    subject: oneLine(x.subject),
    commonName: cn === undefined ? undefined : cn.slice(3),
    issuer: oneLine(x.issuer),
    fingerprint256: x.fingerprint256.replaceAll(":", "").toLowerCase(),
    notBefore: new Date(x.validFrom),
    notAfter: new Date(x.validTo),
    isCA: x.ca,
    keyType,
    curve,
    subjectAltName: x.subjectAltName,
    keyUsage: keyUsage(der),
    // Node names the extended key usage list `keyUsage`.
    extendedKeyUsage: x.keyUsage,
    verifySignature(scheme, data, signature) {
      const info = SCHEMES.get(scheme);
      if (info === undefined || info.keyType !== keyType) return false;
      try {
        return nodeVerify(info.hash, data, signOptions(pub, info) as KeyObject, signature);
      } catch {
        return false;
      }
    },
    namesIssuer(issuer) {
      return x.checkIssued(x509(issuer));
    },
    issuedBy(issuer) {
      const ix = x509(issuer);
      return x.checkIssued(ix) && x.verify(ix.publicKey);
    },
    matchesPrivateKey(pem) {
      try {
        return x.checkPrivateKey(createPrivateKey(typeof pem === "string" ? pem : Buffer.from(pem)));
      } catch {
        return false;
      }
    },
    checkHost: (name) => x.checkHost(name) !== undefined,
    checkIP: (ip) => x.checkIP(ip) !== undefined,
  };
  x509Of.set(cert, x);
  return cert;
}

/** Every CERTIFICATE block of a PEM text, as DER, in order. */
export function pemCertificates(pem: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  const re = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;
  for (let m = re.exec(pem); m !== null; m = re.exec(pem)) out.push(Buffer.from((m[1] ?? "").replace(/\s+/g, ""), "base64"));
  return out;
}

/** Buffers are Uint8Arrays; this only narrows the type for callers. */
function asBytes(b: Buffer): Uint8Array {
  return b;
}

// ---- JWS keys (Ed25519, ECDSA P-256) for content signatures and tokens -----

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

/** A private key imported once from a JWK that signs synchronously with the cached KeyObject. */
export interface JwsSigner {
  readonly alg: JwsAlg;
  /** The JWS signature of `data` (the JWS signing input): 64 bytes, Ed25519 or ECDSA P-256/SHA-256 as raw r||s. */
  sign(data: Uint8Array): Uint8Array;
}

/** A public key imported once from a JWK that checks JWS signatures synchronously. */
export interface JwsVerifier {
  readonly alg: JwsAlg;
  /** True when `signature` (64 bytes, as JwsSigner makes them) is a good signature of `data`; never throws on bad input. */
  verify(data: Uint8Array, signature: Uint8Array): boolean;
}

/** Ed25519 signatures and raw P-256 r||s signatures are both 64 bytes. */
const JWS_SIGNATURE_LENGTH = 64;

/**
 * A signer for the private JWK (`kty`, `crv`, `x`, `y` for P-256, `d`) of an
 * `alg` key: EdDSA takes an OKP Ed25519 key, ES256 an EC P-256 key. Throws a
 * TypeError when the JWK is not a private key of that type, or when its public
 * members are not those of its private key.
 */
export function jwsSignerFromJwk(jwk: JwkKeyMembers, alg: JwsAlg): JwsSigner {
  const members = jwsKeyMembers(jwk, alg, true);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: members, format: "jwk" });
  } catch (e) {
    throw new TypeError(`The JWK is not a usable ${alg} private key.`, { cause: e });
  }
  // Node derives an Ed25519 public key from d alone and ignores x: check it, so the kid (from x) names this key.
  const derived = createPublicKey(key).export({ format: "jwk" });
  if (derived.x !== members.x || derived.y !== members.y) throw new TypeError(`The JWK's public members are not those of its ${alg} private key.`);
  if (alg === "EdDSA") return { alg, sign: (data) => asBytes(nodeSign(null, data, key)) };
  const options = { key, dsaEncoding: "ieee-p1363" as const };
  return { alg, sign: (data) => asBytes(nodeSign("sha256", data, options)) };
}

/** A verifier for the public members of a JWK of an `alg` key (see jwsSignerFromJwk); throws a TypeError when they are not a key of that type. */
export function jwsVerifierFromJwk(jwk: JwkKeyMembers, alg: JwsAlg): JwsVerifier {
  const members = jwsKeyMembers(jwk, alg, false);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: members, format: "jwk" });
  } catch (e) {
    throw new TypeError(`The JWK is not a usable ${alg} public key.`, { cause: e });
  }
  const hashName = alg === "EdDSA" ? null : "sha256";
  const options = alg === "EdDSA" ? key : { key, dsaEncoding: "ieee-p1363" as const };
  return {
    alg,
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

/** The members node:crypto imports, checked against `alg`; `private` requires (and keeps) d. */
function jwsKeyMembers(jwk: JwkKeyMembers, alg: JwsAlg, isPrivate: boolean): { kty: string; crv: string; x: string; y?: string; d?: string } {
  const { kty, crv, x, y, d } = jwk;
  const want = alg === "EdDSA" ? { kty: "OKP", crv: "Ed25519" } : alg === "ES256" ? { kty: "EC", crv: "P-256" } : undefined;
  if (want === undefined) throw new TypeError(`JWS alg ${String(alg)} is not supported (EdDSA or ES256).`);
  if (kty !== want.kty || crv !== want.crv || typeof x !== "string") throw new TypeError(`An ${alg} JWK must have kty ${want.kty}, crv ${want.crv} and x.`);
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

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
let lastIdMs = 0;
let idCounter = 0;

/**
 * A time-ordered (version 7, RFC 9562) UUID: 48 bits of Unix milliseconds,
 * a 12-bit counter that keeps ids of one millisecond in order (method 1 of
 * RFC 9562 §6.2), and 62 random bits. For message ids: a store's unique index
 * over them then grows at its end instead of at a random page per insert.
 * The clock going back does not reorder ids: the last time is kept until the
 * clock passes it.
 */
export function timeOrderedId(now: number = Date.now()): string {
  let ms = Math.max(Math.floor(now), lastIdMs);
  if (ms === lastIdMs) {
    idCounter++;
    if (idCounter > 0xfff) {
      ms++; // 4096 ids in one millisecond: borrow the next one
      idCounter = 0;
    }
  } else idCounter = 0;
  lastIdMs = ms;
  const r = randomBytes(8);
  const hi = Math.floor(ms / 0x10000); // top 32 bits of the 48-bit time
  const lo = ms % 0x10000;
  const t = (hi >>> 0).toString(16).padStart(8, "0");
  const h = HEX;
  return (
    `${t}-${lo.toString(16).padStart(4, "0")}-${(0x7000 | idCounter).toString(16)}-` +
    `${h[0x80 | ((r[0] as number) & 0x3f)]}${h[r[1] as number]}-` +
    `${h[r[2] as number]}${h[r[3] as number]}${h[r[4] as number]}${h[r[5] as number]}${h[r[6] as number]}${h[r[7] as number]}`
  );
}
