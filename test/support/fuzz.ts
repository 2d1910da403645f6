/**
 * Seeds and run counts for the fuzz suites (docs/fuzzing.md).
 *
 * A run is deterministic: the seed is fixed unless FUZZ_SEED is set, and the
 * number of cases is each test's base count times FUZZ_RUNS (default 1; e.g.
 * FUZZ_RUNS=50 for a longer session). Every failure message names the seed, so
 * `FUZZ_SEED=<seed> npx vitest run <file>` replays it.
 */
import fc, { type Parameters as FcParameters } from "fast-check";

/** The default seed, used unless FUZZ_SEED is set. */
export const DEFAULT_FUZZ_SEED = 0x5eed_1011;

function envInt(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** The run's seed (FUZZ_SEED, else the fixed default), as an unsigned 32-bit integer. */
export function fuzzSeed(): number {
  return (envInt("FUZZ_SEED") ?? DEFAULT_FUZZ_SEED) >>> 0;
}

/** A test's base case count scaled by FUZZ_RUNS (a multiplier, default 1). */
export function fuzzRuns(base: number): number {
  const scale = envInt("FUZZ_RUNS") ?? 1;
  if (scale < 1) throw new Error(`FUZZ_RUNS must be >= 1, got ${scale}`);
  return Math.max(1, Math.round(base * scale));
}

/**
 * fast-check parameters for a property over shared, long-lived state (a
 * server the whole run attacks): the fixed seed, the scaled count, and no
 * shrinking (a dead server would make every shrunk case fail too, so the
 * first failing case is the one to report). fast-check prints the seed and
 * the counterexample on failure.
 */
export function fcShared<T>(base: number, salt = 0): FcParameters<T> {
  return { seed: (fuzzSeed() + salt) | 0, numRuns: fuzzRuns(base), endOnFailure: true };
}

/** fast-check parameters for a property over fresh state per case (shrinking on). */
export function fcFresh<T>(base: number, salt = 0): FcParameters<T> {
  return { seed: (fuzzSeed() + salt) | 0, numRuns: fuzzRuns(base) };
}

/** Raw protobuf: a varint (any value up to 2^64-1, given as a bigint). */
export function pbVarint(value: bigint): number[] {
  if (value < 0n || value >= 1n << 64n) throw new Error(`varint out of range: ${value}`);
  const out: number[] = [];
  let v = value;
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) b |= 0x80;
    out.push(b);
  } while (v !== 0n);
  return out;
}

/** Raw protobuf: field `n` as a varint. */
export function pbUint(field: number, value: bigint): number[] {
  return [...pbVarint(BigInt(field * 8)), ...pbVarint(value)];
}

/** Raw protobuf: field `n` length-delimited (bytes, string or a nested message). */
export function pbBytes(field: number, body: ArrayLike<number>): number[] {
  return [...pbVarint(BigInt(field * 8 + 2)), ...pbVarint(BigInt(body.length)), ...Array.from(body)];
}

/** Raw protobuf: field `n` as a UTF-8 string. */
export function pbString(field: number, s: string): number[] {
  return pbBytes(field, new TextEncoder().encode(s));
}

/**
 * fc.assert, with the run's FUZZ_SEED and FUZZ_RUNS put in front of the
 * failure message (fast-check's own message follows: the seed it ran with,
 * the path and the counterexample).
 */
export async function fuzzAssert<Ts>(property: fc.IAsyncProperty<Ts> | fc.IProperty<Ts>, params: FcParameters<Ts>): Promise<void> {
  try {
    await fc.assert(property, params);
  } catch (e) {
    if (e instanceof Error) e.message = `FUZZ_SEED=${fuzzSeed()} FUZZ_RUNS=${process.env["FUZZ_RUNS"] ?? 1} (replay: set both)\n${e.message}`;
    throw e;
  }
}
