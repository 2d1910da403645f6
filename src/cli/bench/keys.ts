/**
 * The bench devices' names and keys: device i is `bench-<i>` with PSK
 * identity = its id and a 16-byte key derived from the id and the run's random
 * seed (SHA-256 of seed ‖ id, first 16 bytes), so the bench process and its
 * workers agree without sending keys around, and keys differ from run to run.
 */

export const DEVICE_PREFIX = "bench-";
export const PSK_KEY_BYTES = 16;

export function benchDeviceId(index: number, prefix = DEVICE_PREFIX): string {
  return `${prefix}${index}`;
}

/** A fresh random seed for one run (16 bytes, hex). */
export function randomSeedHex(): string {
  const seed = new Uint8Array(16);
  globalThis.crypto.getRandomValues(seed);
  return Buffer.from(seed).toString("hex");
}

/** The PSK of a device in this run. */
export async function deriveDeviceKey(seedHex: string, id: string): Promise<Uint8Array> {
  const seed = Buffer.from(seedHex, "hex");
  const name = Buffer.from(id, "utf8");
  const input = new Uint8Array(seed.length + name.length);
  input.set(seed, 0);
  input.set(name, seed.length);
  const digest = await globalThis.crypto.subtle.digest("SHA-256", input);
  return new Uint8Array(digest.slice(0, PSK_KEY_BYTES));
}
