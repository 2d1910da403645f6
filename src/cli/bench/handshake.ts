/**
 * `bench handshake`: devices connect (DTLS handshake only) and close again,
 * over and over, a bounded number at a time, for the duration (or count).
 * Figures: handshakes/s, handshake time, and the daemon's CPU per handshake
 * from its metrics. With --resume a second phase as long follows in which
 * each device offers the session of its previous handshake: the daemon's CPU
 * per resumed handshake beside the full one of the same run.
 */
import type { RunContext } from "./context.ts";
import { DEFAULT_CONCURRENCY } from "./options.ts";
import { countIncrease } from "./prometheus.ts";
import { distribution, groupDigits, round, roundedDistribution } from "./stats.ts";

export interface HandshakeResult {
  readonly concurrency: number;
  readonly seconds: number;
  /** handshakes the devices completed */
  readonly handshakes: number;
  readonly failures: number;
  readonly errors: readonly string[];
  readonly handshakesPerSecond: number;
  /** the daemon's dtlspush_handshakes_total{result="ok"} increase */
  readonly daemonHandshakes: number;
  /** the daemon's failed handshakes (any other result) */
  readonly daemonFailures: number;
  /** the daemon's completed handshakes by cipher suite (dtlspush_handshakes_total{result="ok"} increase) */
  readonly daemonHandshakesBySuite: Readonly<Record<string, number>>;
  /** daemon CPU per handshake it completed, µs */
  readonly daemonCpuPerHandshakeMicros: number | null;
  readonly daemonCpuCores: number | null;
  readonly workersCpuCores: number | null;
  /** one handshake as a device sees it, ms */
  readonly handshakeMs: ReturnType<typeof roundedDistribution>;
  /** --resume: the second phase, resumed handshakes (the fields above are the full ones of the first) */
  readonly resumed?: ResumedPhase;
}

/** `bench handshake --resume`: the phase of resumed handshakes. */
export interface ResumedPhase extends Omit<HandshakeResult, "resumed"> {
  /** handshakes the devices saw resumed (the others were full: the daemon refused the session) */
  readonly resumedByDevices: number;
  /** the daemon's dtlspush_dtls_handshakes_resumed_total increase */
  readonly daemonResumed: number;
  /** daemon CPU per resumed handshake / per full handshake of the first phase */
  readonly cpuRatio: number | null;
}

/** One phase of churn: the devices' and the daemon's figures. */
async function churnPhase(
  ctx: RunContext,
  concurrency: number,
  resume: boolean,
): Promise<HandshakeResult & { resumedByDevices: number; daemonResumed: number }> {
  const c = ctx.config;
  const w0 = await ctx.fleet.flush();
  const m0 = await ctx.target.snapshot();
  const t0 = performance.now();
  let last = 0;
  const phase = resume ? "handshake (resumed)" : "handshake";
  ctx.progress.start((s) => {
    const p = ctx.fleet.progress();
    const line = `${phase}: ${s.toFixed(1)} s, ${groupDigits(p.ok - last)} handshakes/s${p.failed > 0 ? `, ${groupDigits(p.failed)} failed` : ""}`;
    last = p.ok;
    return line;
  });
  let r;
  try {
    r = await ctx.fleet.churn(concurrency, c.durationSeconds * 1000, c.count, resume);
  } finally {
    ctx.progress.stop();
  }
  const seconds = (performance.now() - t0) / 1000;
  const m1 = await ctx.target.snapshot();
  const w1 = await ctx.fleet.flush();
  const daemonHandshakes = m1.handshakesOk - m0.handshakesOk;
  const cpu = m1.cpuSeconds - m0.cpuSeconds;
  return {
    concurrency,
    seconds: round(seconds) ?? 0,
    handshakes: r.ok,
    failures: r.failed,
    errors: r.errors,
    handshakesPerSecond: round(r.ok / seconds, 1) ?? 0,
    daemonHandshakes,
    daemonFailures: m1.handshakesFailed - m0.handshakesFailed,
    daemonHandshakesBySuite: countIncrease(m0.handshakesBySuite, m1.handshakesBySuite),
    daemonCpuPerHandshakeMicros: daemonHandshakes > 0 ? round((cpu * 1e6) / daemonHandshakes, 1) : null,
    daemonCpuCores: round(cpu / seconds),
    workersCpuCores: round((w1.cpuSeconds - w0.cpuSeconds) / seconds),
    handshakeMs: roundedDistribution(distribution(r.handshakeMs)),
    resumedByDevices: r.resumed,
    daemonResumed: m1.handshakesResumed - m0.handshakesResumed,
  };
}

export async function runHandshake(ctx: RunContext): Promise<HandshakeResult> {
  const concurrency = Math.min(ctx.config.concurrency ?? DEFAULT_CONCURRENCY.handshakes, ctx.ids.length);
  const { resumedByDevices: _r, daemonResumed: _d, ...full } = await churnPhase(ctx, concurrency, false);
  if (!ctx.config.resume) return full;
  // every device handshook at least once above (given the duration), so each has a session to offer
  const resumed = await churnPhase(ctx, concurrency, true);
  const a = resumed.daemonCpuPerHandshakeMicros;
  const b = full.daemonCpuPerHandshakeMicros;
  return { ...full, resumed: { ...resumed, cpuRatio: a === null || b === null || b === 0 ? null : round(a / b, 3) } };
}
