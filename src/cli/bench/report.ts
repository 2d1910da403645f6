/** The results of a bench run: the JSON document and the table printed for humans. */
import type { FanoutResult } from "./fanout.ts";
import type { HandshakeResult, ResumedPhase } from "./handshake.ts";
import type { BenchMode } from "./options.ts";
import type { LoopDelay } from "./loop-delay.ts";
import type { PushResult } from "./push.ts";
import type { SessionsResult } from "./sessions.ts";
import { formatBytes, formatMs, groupDigits } from "./stats.ts";

export interface BenchReport {
  readonly mode: BenchMode;
  /** "api": a running daemon through its HTTP API; "in-process": started by the bench */
  readonly target: "api" | "in-process";
  readonly api: string;
  readonly server: string;
  readonly devices: number;
  readonly workers: number;
  /** local addresses the devices send from (127.0.0.1 .. 127.0.0.N; 1: the one the system picks) */
  readonly sourceAddresses: number;
  readonly payloadBytes: number;
  readonly verify: boolean;
  /** how the devices authenticate: "psk", or "certificate (p256)" / "certificate (p384)" */
  readonly credentials: string;
  /** --cert: the device certificates issued at start */
  readonly certificates?: CertificatesSummary;
  /** seconds to register the devices through the API */
  readonly provisionSeconds: number;
  /** each worker's clock minus the bench's, ms (latencies are corrected by it) */
  readonly clockOffsetMs: readonly number[];
  readonly handshake?: HandshakeResult;
  readonly push?: PushResult;
  readonly sessions?: SessionsResult;
  readonly fanout?: FanoutResult;
}

/** How issuing the devices' certificates went (--cert). */
export interface CertificatesSummary {
  /** where the CA's ca.pem and ca.key were read */
  readonly caDir: string;
  readonly curve: string;
  readonly issued: number;
  /** from the first worker starting to the last one done, seconds */
  readonly seconds: number;
  /** a worker's time per certificate, ms (issued ISSUE_CONCURRENCY at a time) */
  readonly msEach: number | null;
  readonly perSecond: number;
}

type Row = readonly [string, string];

const ms = (v: number | null): string => (v === null ? "-" : formatMs(v));
const n = (v: number | null, decimals = 0): string => (v === null ? "-" : groupDigits(v, decimals));
const us = (v: number | null): string => (v === null ? "-" : `${v.toFixed(1)} µs`);
const cores = (v: number | null): string => (v === null ? "-" : `${v.toFixed(2)} cores`);

function connectRows(c: {
  ok: number;
  failed: number;
  seconds: number;
  perSecond: number;
  timeMs: { p50: number | null; p99: number | null };
}): Row[] {
  return [
    ["devices connected", `${n(c.ok)}${c.failed > 0 ? ` (${n(c.failed)} failed)` : ""} in ${c.seconds.toFixed(1)} s, ${n(c.perSecond)}/s`],
    ["connect time p50 / p99", `${ms(c.timeMs.p50)} / ${ms(c.timeMs.p99)}`],
  ];
}

function certificateRows(r: BenchReport): Row[] {
  const c = r.certificates;
  if (c === undefined) return [];
  return [
    [
      "device certificates issued",
      `${n(c.issued)} in ${c.seconds.toFixed(1)} s, ${n(c.perSecond)}/s (${c.msEach === null ? "-" : `${c.msEach.toFixed(2)} ms`} each in a worker)`,
    ],
  ];
}

function modeRows(r: BenchReport): Row[] {
  return [...certificateRows(r), ...loadRows(r)];
}

function suiteText(bySuite: Readonly<Record<string, number>>): string {
  const entries = Object.entries(bySuite).sort((a, b) => b[1] - a[1]);
  return entries.length === 0 ? "-" : entries.map(([suite, k]) => `${suite} ${n(k)}`).join(", ");
}

function loadRows(r: BenchReport): Row[] {
  if (r.handshake !== undefined) {
    const h = r.handshake;
    return [
      ["handshakes", `${n(h.handshakes)} in ${h.seconds.toFixed(1)} s (${n(h.failures)} failed), ${h.concurrency} in flight`],
      ["handshakes/s", n(h.handshakesPerSecond)],
      ["handshake time p50 / p99 / p99.9", `${ms(h.handshakeMs.p50)} / ${ms(h.handshakeMs.p99)} / ${ms(h.handshakeMs.p999)}`],
      ["daemon handshakes (ok / failed)", `${n(h.daemonHandshakes)} / ${n(h.daemonFailures)}`],
      ["daemon handshakes by suite", suiteText(h.daemonHandshakesBySuite)],
      ["daemon CPU per handshake", us(h.daemonCpuPerHandshakeMicros)],
      ["daemon CPU", cores(h.daemonCpuCores)],
      ["device workers CPU", cores(h.workersCpuCores)],
      ...resumedRows(h.resumed, h.daemonCpuPerHandshakeMicros),
    ];
  }
  if (r.push !== undefined) {
    const p = r.push;
    const errors = Object.entries(p.publishErrors).map(([code, k]) => `${code} ${n(k)}`);
    return [
      ...connectRows(p.connect),
      [
        "load window",
        `${p.windowSeconds.toFixed(1)} s, ${p.rateTarget === null ? "as fast as acked" : `${n(p.rateTarget)}/s`}, ${n(p.concurrency)} requests in flight${p.batch === null ? "" : ` of ${n(p.batch)} messages (batch API)`}, window ${n(p.window)}`,
      ],
      ["published", `${n(p.published)}${errors.length > 0 ? ` (refused: ${errors.join(", ")})` : ""}`],
      ["acked pushes/s (daemon)", n(p.ackedPerSecond)],
      ["received pushes/s (devices)", n(p.receivedPerSecond)],
      ["acked / received / undelivered", `${n(p.acked)} / ${n(p.received)} / ${n(p.undelivered)}`],
      ["retransmitted", n(p.retransmitted)],
      ["publish-to-device p50", ms(p.latencyMs.p50)],
      ["publish-to-device p99", ms(p.latencyMs.p99)],
      ["publish-to-device p99.9", ms(p.latencyMs.p999)],
      ["publish-to-device max", ms(p.latencyMs.max)],
      ["daemon CPU per push", us(p.daemonCpuPerPushMicros)],
      ["daemon event-loop delay p50 / p99 / max", loopDelay(p.eventLoopDelayMs)],
      ["daemon CPU", cores(p.daemonCpuCores)],
      ["device workers CPU", cores(p.workersCpuCores)],
      [r.target === "in-process" ? "bench process CPU (daemon + publisher)" : "bench process CPU (publisher)", cores(p.benchCpuCores)],
      ...(p.sessionsLost > 0 || p.rejected > 0 ? ([["sessions lost / pushes refused", `${n(p.sessionsLost)} / ${n(p.rejected)}`]] as Row[]) : []),
      ...lostRows(p.lostReasons),
    ];
  }
  if (r.sessions !== undefined) {
    const s = r.sessions;
    return [
      ...connectRows(s.connect),
      ["idle sessions held", `${n(s.sessions)} for ${s.holdSeconds} s (daemon: ${n(s.daemonSessions)} sessions, ${n(s.daemonDevicesOnline)} online)`],
      ["daemon resident memory", `${formatBytes(s.residentBytesBefore)} -> ${formatBytes(s.residentBytesAfter)}`],
      ["daemon heap used", `${formatBytes(s.heapUsedBytesBefore)} -> ${formatBytes(s.heapUsedBytesAfter)}`],
      ["resident memory per session", s.residentBytesPerSession === null ? "-" : formatBytes(s.residentBytesPerSession)],
      ["heap per session", s.heapBytesPerSession === null ? "-" : formatBytes(s.heapBytesPerSession)],
      ...(s.sessionsLost > 0 ? ([["sessions lost", n(s.sessionsLost)]] as Row[]) : []),
      ...lostRows(s.lostReasons),
    ];
  }
  if (r.fanout !== undefined) {
    const f = r.fanout;
    const rows: Row[] = [...connectRows(f.connect)];
    for (const [i, round] of f.rounds.entries()) {
      const tag = f.rounds.length > 1 ? ` (round ${i + 1})` : "";
      rows.push(
        [
          `recipients / received once${tag}`,
          `${n(round.recipients)} / ${n(round.received)}${round.duplicates > 0 ? `, ${n(round.duplicates)} duplicates` : ""}`,
        ],
        [`accepted by the daemon${tag}`, ms(round.acceptedMs)],
        [`first / median / all received${tag}`, `${ms(round.firstReceivedMs)} / ${ms(round.receivedMs.p50)} / ${ms(round.allReceivedMs)}`],
        [`all acks counted by the daemon${tag}`, ms(round.allAckedMs)],
      );
    }
    rows.push(["every device received it once", f.allReceivedOnce ? "yes" : "NO"], ["daemon CPU (all rounds)", `${f.daemonCpuSeconds.toFixed(2)} s`]);
    rows.push(["daemon event-loop delay p50 / p99 / max", loopDelay(f.eventLoopDelayMs)]);
    if (f.sessionsLost > 0) rows.push(["sessions lost during the fan-out", n(f.sessionsLost)]);
    rows.push(...lostRows(f.lostReasons));
    return rows;
  }
  return [];
}

/** `bench handshake --resume`: the resumed phase beside the full one. */
function resumedRows(r: ResumedPhase | undefined, fullMicros: number | null): Row[] {
  if (r === undefined) return [];
  return [
    [
      "resumed handshakes",
      `${n(r.handshakes)} in ${r.seconds.toFixed(1)} s (${n(r.failures)} failed; resumed: ${n(r.resumedByDevices)} by the devices, ${n(r.daemonResumed)} by the daemon)`,
    ],
    ["resumed handshakes/s", n(r.handshakesPerSecond)],
    ["resumed handshake time p50 / p99 / p99.9", `${ms(r.handshakeMs.p50)} / ${ms(r.handshakeMs.p99)} / ${ms(r.handshakeMs.p999)}`],
    [
      "daemon CPU per handshake, resumed / full",
      `${us(r.daemonCpuPerHandshakeMicros)} / ${us(fullMicros)}${r.cpuRatio === null ? "" : ` (ratio ${r.cpuRatio.toFixed(3)})`}`,
    ],
    ["daemon CPU (resumed phase)", cores(r.daemonCpuCores)],
  ];
}

function loopDelay(d: LoopDelay | null): string {
  return d === null ? "- (not reported by the daemon)" : `${ms(d.p50)} / ${ms(d.p99)} / ${ms(d.max)}`;
}

/** Why sessions ended by themselves during the run, most frequent first. */
function lostRows(reasons: Readonly<Record<string, number>>): Row[] {
  const entries = Object.entries(reasons).sort((a, b) => b[1] - a[1]);
  return entries.length === 0 ? [] : [["sessions lost, by reason", entries.map(([why, k]) => `${why} ${n(k)}`).join(", ")]];
}

/** The human-readable result table. */
export function formatTable(r: BenchReport): string {
  const where = r.target === "in-process" ? "daemon in this process" : `API ${r.api}`;
  const head = `dtlspush bench ${r.mode}: ${n(r.devices)} devices, ${r.workers} worker${r.workers === 1 ? "" : "s"}${r.sourceAddresses > 1 ? ` on ${r.sourceAddresses} source addresses` : ""}, ${where}, DTLS ${r.server}, ${r.credentials}, payload ${r.payloadBytes} B${r.verify ? ", signatures verified" : ""}`;
  const rows = modeRows(r);
  const width = Math.max(...rows.map(([k]) => k.length));
  return `${[head, ...rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`)].join("\n")}\n`;
}
