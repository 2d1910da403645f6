/**
 * Symmetric keys as opaque handles: the Node implementation's handle is the
 * KeyObject itself (loaded once, nothing around it), branded per use (AEAD
 * key, MAC key) so one cannot be passed for the other.
 */
import { createSecretKey, type KeyObject } from "./node.ts";

/** A KeyObject of `bytes`, as the opaque handle type `K`. */
export function loadSecretKey<K extends object>(bytes: Uint8Array): K {
  return createSecretKey(bytes) as unknown as K;
}

/** The KeyObject behind a handle made by loadSecretKey. */
export function keyObjectOf(handle: object): KeyObject {
  return handle as KeyObject;
}

/** The bytes of a handle made by loadSecretKey (a secret: handle it as one). */
export function secretKeyBytesOf(handle: object): Uint8Array {
  return new Uint8Array(keyObjectOf(handle).export());
}
