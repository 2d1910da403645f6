/** Percentiles and number formatting for bench results. */

export interface Distribution {
  readonly samples: number;
  readonly min: number;
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

/** Nearest-rank percentile (p in 0..100) of ascending `sorted`; NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  // the epsilon keeps 99.9 % of 1000 at rank 999 despite floating point
  const rank = Math.ceil((p / 100) * n - 1e-9);
  return sorted[Math.min(n - 1, Math.max(0, rank - 1))] as number;
}

/** The distribution of `values` (sorted in place as a Float64Array copy). */
export function distribution(values: ArrayLike<number>): Distribution {
  const sorted = Float64Array.from(values).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  const n = sorted.length;
  return {
    samples: n,
    min: n === 0 ? NaN : (sorted[0] as number),
    mean: n === 0 ? NaN : sum / n,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    p999: percentile(sorted, 99.9),
    max: n === 0 ? NaN : (sorted[n - 1] as number),
  };
}

/** Rounds to `digits` decimals; NaN and infinities become null (JSON has no NaN). */
export function round(v: number, digits = 3): number | null {
  if (!Number.isFinite(v)) return null;
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** A distribution with every figure rounded (for JSON). */
export function roundedDistribution(d: Distribution, digits = 3): Record<keyof Distribution, number | null> {
  return {
    samples: d.samples,
    min: round(d.min, digits),
    mean: round(d.mean, digits),
    p50: round(d.p50, digits),
    p90: round(d.p90, digits),
    p99: round(d.p99, digits),
    p999: round(d.p999, digits),
    max: round(d.max, digits),
  };
}

/** 1234567 -> "1 234 567" (thin groups are easy to read in a terminal table). */
export function groupDigits(v: number, decimals = 0): string {
  if (!Number.isFinite(v)) return "-";
  const [int = "", frac] = Math.abs(v).toFixed(decimals).split(".");
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, " ");
  return `${v < 0 ? "-" : ""}${grouped}${frac !== undefined ? `.${frac}` : ""}`;
}

/** Milliseconds for humans: "0.412 ms", "12.3 ms", "1.52 s". */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return "-";
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(3)} ms`;
}

/** Bytes for humans: "812 B", "1.4 KiB", "230.5 MiB". */
export function formatBytes(b: number): string {
  if (!Number.isFinite(b)) return "-";
  const a = Math.abs(b);
  if (a >= 1024 * 1024) return `${(b / 1024 / 1024).toFixed(1)} MiB`;
  if (a >= 1024) return `${(b / 1024).toFixed(2)} KiB`;
  return `${b.toFixed(0)} B`;
}
