/**
 * The bench devices' names and keys: device i is `bench-<i>` with PSK
 * identity = its id and a 16-byte key derived from the id and the run's random
 * seed (SHA-256 of seed ‖ id, first 16 bytes), so the bench process and its
 * workers agree without sending keys around, and keys differ from run to run.
 */
import { hash, randomBytes } from "../../crypto/index.ts";

export const DEVICE_PREFIX = "bench-";
export const PSK_KEY_BYTES = 16;

export function benchDeviceId(index: number, prefix = DEVICE_PREFIX): string {
  return `${prefix}${index}`;
}

/** A fresh random seed for one run (16 bytes, hex). */
export function randomSeedHex(): string {
  return Buffer.from(randomBytes(16)).toString("hex");
}

/** The PSK of a device in this run. */
export async function deriveDeviceKey(seedHex: string, id: string): Promise<Uint8Array> {
  const seed = Buffer.from(seedHex, "hex");
  const name = Buffer.from(id, "utf8");
  return new Uint8Array(hash("sha256", [seed, name]).subarray(0, PSK_KEY_BYTES));
}
