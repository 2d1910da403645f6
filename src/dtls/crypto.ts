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
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  randomFillSync,
  timingSafeEqual,
  type KeyObject,
} from "node:crypto";

export type HashName = "sha256" | "sha384";
export type AeadName = "aes-128-gcm" | "aes-256-gcm" | "aes-128-ccm" | "aes-128-ccm8" | "chacha20-poly1305";

/** An opaque reusable MAC/PRF key. */
export interface SecretKey {
  readonly key: KeyObject;
}

export function secretKey(bytes: Uint8Array): SecretKey {
  return { key: createSecretKey(bytes) };
}

/**
 * CSPRNG output. Small requests (randoms, nonces) are cut from a pooled 4 KiB
 * block filled by one system call, instead of one call each.
 */
const POOL_SIZE = 4096;
const pool = new Uint8Array(POOL_SIZE);
let poolOffset = POOL_SIZE;

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
 * An AEAD bound to one key. `seal` returns `reserve` bytes left for the caller
 * to fill (a record header), then ciphertext, then tag, in one fresh buffer;
 * `open` returns the plaintext, or null when authentication fails (callers
 * drop silently). Pass Buffers for nonce and AAD where possible: node:crypto
 * takes a slower path for other views.
 */
export interface Aead {
  readonly tagLength: number;
  seal(nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, reserve?: number): Uint8Array;
  open(nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | null;
}

export function createAead(name: AeadName, key: Uint8Array): Aead {
  const ko = createSecretKey(key);
  switch (name) {
    case "aes-128-gcm":
    case "aes-256-gcm":
    case "chacha20-poly1305":
      return streamAead(name, ko);
    case "aes-128-ccm":
      return ccmAead(ko, 16);
    case "aes-128-ccm8":
      return ccmAead(ko, 8);
  }
}

function assemble(reserve: number, body: Buffer, tag: Buffer): Buffer {
  const out = Buffer.allocUnsafe(reserve + body.length + tag.length);
  out.fill(0, 0, reserve);
  body.copy(out, reserve);
  tag.copy(out, reserve + body.length);
  return out;
}

function streamAead(cipher: "aes-128-gcm" | "aes-256-gcm" | "chacha20-poly1305", key: KeyObject): Aead {
  // ChaCha20-Poly1305 has the GCM call shape at run time and a 16-byte tag by default.
  const name = cipher as "aes-128-gcm";
  return {
    tagLength: 16,
    seal(nonce, aad, plaintext, reserve = 0) {
      const c = createCipheriv(name, key, nonce);
      c.setAAD(aad);
      const body = c.update(plaintext);
      c.final();
      return assemble(reserve, body, c.getAuthTag());
    },
    open(nonce, aad, sealed) {
      if (sealed.length < 16) return null;
      const d = createDecipheriv(name, key, nonce);
      d.setAuthTag(sealed.subarray(sealed.length - 16));
      d.setAAD(aad);
      const body = d.update(sealed.subarray(0, sealed.length - 16));
      try {
        d.final();
      } catch {
        return null;
      }
      return body;
    },
  };
}

function ccmAead(key: KeyObject, tagLength: 8 | 16): Aead {
  const opts = { authTagLength: tagLength } as const;
  return {
    tagLength,
    seal(nonce, aad, plaintext, reserve = 0) {
      const c = createCipheriv("aes-128-ccm", key, nonce, opts);
      c.setAAD(aad, { plaintextLength: plaintext.length });
      const body = c.update(plaintext);
      c.final();
      return assemble(reserve, body, c.getAuthTag());
    },
    open(nonce, aad, sealed) {
      if (sealed.length < tagLength) return null;
      const ct = sealed.subarray(0, sealed.length - tagLength);
      const d = createDecipheriv("aes-128-ccm", key, nonce, opts);
      d.setAuthTag(sealed.subarray(sealed.length - tagLength));
      d.setAAD(aad, { plaintextLength: ct.length });
      // CCM authenticates inside update(): a bad tag makes update throw.
      try {
        const body = d.update(ct);
        d.final();
        return body;
      } catch {
        return null;
      }
    },
  };
}

/** Groups for ephemeral ECDH (RFC 8422 / RFC 7748). */
export type EcdhGroup = "x25519" | "secp256r1" | "secp384r1";

const NIST: Record<Exclude<EcdhGroup, "x25519">, { crv: string; size: number }> = {
  secp256r1: { crv: "P-256", size: 32 },
  secp384r1: { crv: "P-384", size: 48 },
};

/** One side's ephemeral key pair. `derive` returns null for an invalid peer key. */
export interface EcdhKeyPair {
  /** The wire encoding: 32 raw bytes for x25519, an uncompressed point (0x04 || X || Y) otherwise. */
  readonly publicKey: Uint8Array;
  derive(peerPublic: Uint8Array): Uint8Array | null;
}

const b64u = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64url");

export function generateEcdh(group: EcdhGroup): EcdhKeyPair {
  if (group === "x25519") {
    const { privateKey, publicKey } = generateKeyPairSync("x25519");
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

/** Buffers are Uint8Arrays; this only narrows the type for callers. */
function asBytes(b: Buffer): Uint8Array {
  return b;
}
