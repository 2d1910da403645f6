/**
 * Reads the figures the bench needs from the daemon's /metrics (Prometheus
 * text format): sums of counters and gauges, optionally only the series with
 * given label values.
 */
import { loopDelayOf, type LoopDelay } from "./loop-delay.ts";

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Every sample of the exposition text (comments and blank lines skipped; unparsable lines ignored). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? "").matchAll(LABEL))
      labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    const value = Number(m[4]);
    if (!Number.isNaN(value)) out.push({ name: m[1] as string, labels, value });
  }
  return out;
}

/** The sum of the samples named `name` whose labels include `match`; undefined when there is none. */
export function metricSum(samples: readonly Sample[], name: string, match: Readonly<Record<string, string>> = {}): number | undefined {
  let sum: number | undefined;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (!Object.entries(match).every(([k, v]) => s.labels[k] === v)) continue;
    sum = (sum ?? 0) + s.value;
  }
  return sum;
}

/** The daemon figures the bench compares before and after. */
export interface DaemonSnapshot {
  /** benchNow() when it was taken */
  readonly at: number;
  readonly cpuSeconds: number;
  readonly residentBytes: number;
  readonly heapUsedBytes: number;
  readonly handshakesOk: number;
  readonly handshakesFailed: number;
  /** completed handshakes that were resumptions (abbreviated) */
  readonly handshakesResumed: number;
  /** completed handshakes by cipher suite */
  readonly handshakesBySuite: Readonly<Record<string, number>>;
  readonly pushesSent: number;
  readonly pushesAcked: number;
  readonly pushesRetransmitted: number;
  readonly published: number;
  readonly sessions: number;
  readonly devicesOnline: number;
  /** the event-loop delay since the previous scrape (prom-client's default metrics), or null: not reported */
  readonly loopDelayMs: LoopDelay | null;
}

function bySuite(samples: readonly Sample[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of samples) {
    if (x.name !== "dtlspush_handshakes_total" || x.labels["result"] !== "ok") continue;
    const suite = x.labels["suite"] ?? "";
    out[suite] = (out[suite] ?? 0) + x.value;
  }
  return out;
}

/** What each count grew by from `before` to `after` (keys with no growth left out). */
export function countIncrease(before: Readonly<Record<string, number>>, after: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d > 0) out[k] = d;
  }
  return out;
}

function scrapedLoopDelay(s: readonly Sample[]): LoopDelay | null {
  const p50 = metricSum(s, "nodejs_eventloop_lag_p50_seconds");
  const p99 = metricSum(s, "nodejs_eventloop_lag_p99_seconds");
  const max = metricSum(s, "nodejs_eventloop_lag_max_seconds");
  if (p50 === undefined || p99 === undefined || max === undefined) return null;
  return loopDelayOf(p50 * 1e3, p99 * 1e3, max * 1e3);
}

export function snapshotOf(text: string, at: number): DaemonSnapshot {
  const s = parseMetrics(text);
  const v = (name: string, match: Record<string, string> = {}): number => metricSum(s, name, match) ?? 0;
  const handshakes = v("dtlspush_handshakes_total");
  const ok = v("dtlspush_handshakes_total", { result: "ok" });
  return {
    at,
    cpuSeconds: v("process_cpu_seconds_total"),
    residentBytes: v("process_resident_memory_bytes"),
    heapUsedBytes: v("nodejs_heap_size_used_bytes"),
    handshakesOk: ok,
    handshakesFailed: handshakes - ok,
    handshakesResumed: v("dtlspush_dtls_handshakes_resumed_total"),
    handshakesBySuite: bySuite(s),
    pushesSent: v("dtlspush_pushes_sent_total"),
    pushesAcked: v("dtlspush_pushes_acked_total"),
    pushesRetransmitted: v("dtlspush_pushes_retransmitted_total"),
    published: v("dtlspush_published_total"),
    sessions: v("dtlspush_sessions"),
    devicesOnline: v("dtlspush_devices_online"),
    loopDelayMs: scrapedLoopDelay(s),
  };
}
