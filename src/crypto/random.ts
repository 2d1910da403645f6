/**
 * Randomness and identifiers: CSPRNG bytes, random (v4) and time-ordered (v7)
 * UUIDs.
 */
import { randomFillSync, randomUUID } from "./node.ts";

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

/** A random (version 4) UUID, e.g. a message id. */
export function randomId(): string {
  return randomUUID();
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
