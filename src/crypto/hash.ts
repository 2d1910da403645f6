/**
 * Hashes, HMAC, the TLS 1.2 PRF and constant-time comparison.
 *
 * Node 24 charges 6-9 us per call when createHmac gets a raw Buffer key, so
 * every MAC/PRF key becomes a KeyObject once (per epoch, per PSK, per cookie
 * secret) and is reused for every record.
 */
import { createHash, createHmac, timingSafeEqual } from "./node.ts";
import { keyObjectOf, loadSecretKey, secretKeyBytesOf } from "./secret-keys.ts";

export type HashName = "sha256" | "sha384";

/** An opaque reusable MAC/PRF key, loaded once (a KeyObject in this implementation). */
export interface SecretKey {
  readonly __secretKey: never;
}

export function secretKey(bytes: Uint8Array): SecretKey {
  return loadSecretKey<SecretKey>(bytes);
}

/** The bytes of a secret key (a session's master secret, to seal it into a ticket or a saved session). */
export function secretKeyBytes(k: SecretKey): Uint8Array {
  return secretKeyBytesOf(k);
}

export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export function hash(alg: HashName, parts: readonly Uint8Array[]): Uint8Array {
  const h = createHash(alg);
  for (const p of parts) h.update(p);
  return h.digest();
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
    digest: () => h.copy().digest(),
  };
}

export function hmac(alg: HashName, key: SecretKey, parts: readonly Uint8Array[]): Uint8Array {
  const h = createHmac(alg, keyObjectOf(key));
  for (const p of parts) h.update(p);
  return h.digest();
}

/** TLS 1.2 PRF (RFC 5246 section 5): P_hash(secret, label || seed). */
export function prf(alg: HashName, secret: Uint8Array | SecretKey, label: string, seed: Uint8Array, length: number): Uint8Array {
  const key = keyObjectOf(secret instanceof Uint8Array ? secretKey(secret) : secret);
  const labelSeed = new Uint8Array(label.length + seed.length);
  for (let i = 0; i < label.length; i++) labelSeed[i] = label.charCodeAt(i);
  labelSeed.set(seed, label.length);
  const out = new Uint8Array(length);
  let a: Uint8Array = labelSeed; // A(0)
  let off = 0;
  while (off < length) {
    a = createHmac(alg, key).update(a).digest();
    const block = createHmac(alg, key).update(a).update(labelSeed).digest();
    const n = Math.min(block.length, length - off);
    out.set(block.subarray(0, n), off);
    off += n;
  }
  return out;
}
