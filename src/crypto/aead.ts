/**
 * AEAD (AES-GCM, AES-CCM, AES-CCM_8, ChaCha20-Poly1305) with keys loaded once.
 */
import { createCipheriv, createDecipheriv } from "./node.ts";
import { keyObjectOf, loadSecretKey, secretKeyBytesOf } from "./secret-keys.ts";

export type AeadName = "aes-128-gcm" | "aes-256-gcm" | "aes-128-ccm" | "aes-128-ccm8" | "chacha20-poly1305";

/**
 * An AEAD key, loaded once (opaque; a KeyObject in this implementation). The
 * record layer keeps one per direction of every session and calls aeadSeal /
 * aeadOpen with it: no object around the key, nothing per session but the key.
 */
export interface AeadKey {
  readonly __aeadKey: never;
}

export function aeadKey(bytes: Uint8Array): AeadKey {
  return loadSecretKey<AeadKey>(bytes);
}

/** The raw bytes of an AEAD key (for a session snapshot: handle as the secret it is). */
export function aeadKeyBytes(key: AeadKey): Uint8Array {
  return secretKeyBytesOf(key);
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
      const c = createCipheriv("aes-128-ccm", keyObjectOf(key), nonce, name === "aes-128-ccm8" ? CCM_8 : CCM_16);
      c.setAAD(aad, { plaintextLength: plaintext.length });
      const body = c.update(plaintext);
      c.final();
      return assemble(reserve, body, c.getAuthTag());
    }
    default: {
      // ChaCha20-Poly1305 has the GCM call shape at run time and a 16-byte tag by default.
      const c = createCipheriv(name as "aes-128-gcm", keyObjectOf(key), nonce);
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
      const d = createDecipheriv("aes-128-ccm", keyObjectOf(key), nonce, name === "aes-128-ccm8" ? CCM_8 : CCM_16);
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
      const d = createDecipheriv(name as "aes-128-gcm", keyObjectOf(key), nonce);
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
