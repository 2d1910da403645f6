/**
 * `bench push`: sustained publishes of stamped payloads to random devices,
 * through the API or the in-process daemon, for the duration (or count), at
 * a rate or as fast as the daemon delivers within a window of publishes not
 * yet received. Figures: acked pushes/s from the daemon's counter over the
 * load window, what the devices received, publish-to-receipt latency, and the
 * daemon's CPU per push.
 */
import { CliError, errorCode } from "../errors.ts";
import { connectDevices, waitFor, type ConnectSummary, type RunContext } from "./context.ts";
import type { LoopDelay } from "./loop-delay.ts";
import { DEFAULT_CONCURRENCY, DEFAULT_WINDOW, DEFAULT_WINDOW_PER_DEVICE } from "./options.ts";
import { benchNow } from "./ipc.ts";
import { stampedPayload } from "./stamp.ts";
import { distribution, groupDigits, round, roundedDistribution } from "./stats.ts";

export interface PushResult {
  readonly connect: ConnectSummary;
  /** seconds publishes were made */
  readonly windowSeconds: number;
  readonly rateTarget: number | null;
  readonly concurrency: number;
  readonly window: number;
  /** messages per request of the batch API; null: one request per message */
  readonly batch: number | null;
  /** publishes accepted by the daemon */
  readonly published: number;
  /** publishes refused, by error code */
  readonly publishErrors: Readonly<Record<string, number>>;
  /** the daemon's dtlspush_pushes_acked_total increase during the window */
  readonly ackedInWindow: number;
  readonly ackedPerSecond: number;
  /** the same counter's increase over the whole run, the drain after the window included */
  readonly acked: number;
  /** pushes the devices received (the whole run) */
  readonly received: number;
  readonly receivedPerSecond: number;
  /** published but never received by the end of the drain */
  readonly undelivered: number;
  readonly retransmitted: number;
  /** publish call to the device's receipt, ms */
  readonly latencyMs: ReturnType<typeof roundedDistribution>;
  /** daemon CPU (process_cpu_seconds_total) during the window per push acked in it, µs */
  readonly daemonCpuPerPushMicros: number | null;
  /** daemon CPU seconds per wall second during the window (1 = one core busy) */
  readonly daemonCpuCores: number | null;
  /** the device workers' CPU seconds per wall second during the window */
  readonly workersCpuCores: number | null;
  /** this process's CPU seconds per wall second during the window (publisher; the daemon too with --in-process) */
  readonly benchCpuCores: number | null;
  /** the daemon's event-loop delay during the window (see loop-delay.ts), or null: not reported */
  readonly eventLoopDelayMs: LoopDelay | null;
  readonly rejected: number;
  readonly sessionsLost: number;
  /** why sessions were lost during the whole run: "bye:<ERROR_CODE>", "stale", "dtls:<code>" */
  readonly lostReasons: Readonly<Record<string, number>>;
}

/** How long publishes already accepted may take to reach their devices after the window. */
const DRAIN_MS = 15_000;

export async function runPush(ctx: RunContext): Promise<PushResult> {
  const c = ctx.config;
  const { fleet, target } = ctx;
  const concurrency = c.concurrency ?? (target.kind === "api" ? DEFAULT_CONCURRENCY.api : DEFAULT_CONCURRENCY.inProcess);
  const windowSize = c.window ?? Math.min(DEFAULT_WINDOW, ctx.ids.length * DEFAULT_WINDOW_PER_DEVICE);
  const connect = await connectDevices(ctx, c.concurrency ?? DEFAULT_CONCURRENCY.handshakes);
  if (connect.ok === 0) throw new CliError(`no device could connect: ${connect.errors[0] ?? "unknown reason"}`);
  const ids = ctx.ids;
  const totals = fleet.totals;
  totals.latencies.length = 0;
  const received0 = totals.received;
  const lost0 = totals.lost;
  const rejected0 = totals.rejected;
  const durationMs = c.durationSeconds * 1000;

  let issued = 0;
  let inflight = 0;
  let published = 0;
  let failed = 0;
  const errors: Record<string, number> = {};
  let fatal: unknown;
  let wake: (() => void) | undefined;
  const kick = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  fleet.onStats = kick;

  const w0 = await fleet.flush();
  const m0 = await target.snapshot();
  const loopDelay = target.watchLoopDelay();
  const cpu0 = process.cpuUsage();
  const t0 = benchNow();
  let lastReceived = 0;
  ctx.progress.start((s) => {
    const got = totals.received - received0;
    const line = `push: ${s.toFixed(1)} s, ${groupDigits(got - lastReceived)} received/s, ${groupDigits(published)} published, ${groupDigits(issued - failed - got)} outstanding`;
    lastReceived = got;
    return line;
  });
  const pick = (): string => ids[Math.floor(Math.random() * ids.length)] as string;
  const done = (): void => {
    inflight--;
    kick();
  };
  // paced publishes are topped up every millisecond; otherwise completions and device stats drive the loop
  const pacer = setInterval(kick, c.rate === undefined ? 20 : 1);
  try {
    for (;;) {
      const now = benchNow();
      if (now - t0 >= durationMs || (c.count !== undefined && issued >= c.count) || ctx.stopped() || fatal !== undefined) break;
      const allowed = c.rate === undefined ? Infinity : Math.floor(((now - t0) / 1000) * c.rate) + 1;
      const limit = c.count ?? Infinity;
      const got = totals.received - received0;
      while (issued < allowed && issued < limit && inflight < concurrency && issued - failed - got < windowSize) {
        // one message, or with --batch as many as the rate, the count and the window allow, up to the batch size
        const n = Math.min(c.batch ?? 1, allowed - issued, limit - issued, windowSize - (issued - failed - got));
        issued += n;
        inflight++;
        const refused = (code: string, k: number): void => {
          failed += k;
          errors[code] = (errors[code] ?? 0) + k;
        };
        const fail = (e: unknown): void => {
          refused(errorCode(e) ?? "error", n);
          // the API gone or refusing the bench as such: no point in going on
          if (!(e instanceof Error) || e.name === "CliError" || e.name === "ApiUnreachableError") fatal ??= e;
          done();
        };
        if (c.batch === undefined) {
          target.publishToDevice(pick(), stampedPayload(benchNow(), c.payloadBytes)).then(() => {
            published++;
            done();
          }, fail);
        } else {
          const entries = Array.from({ length: n }, () => ({ device: pick(), payload: stampedPayload(benchNow(), c.payloadBytes) }));
          target.publishBatch(entries).then((codes) => {
            for (const code of codes) {
              if (code === undefined) published++;
              else refused(code, 1);
            }
            done();
          }, fail);
        }
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    clearInterval(pacer);
    ctx.progress.stop();
  }
  const tEnd = benchNow();
  const cpu = process.cpuUsage(cpu0);
  const mEnd = await target.snapshot();
  const eventLoopDelayMs = loopDelay.stop();
  const wEnd = await fleet.flush();
  const receivedEnd = totals.received - received0;
  if (fatal !== undefined) throw fatal;

  // drain: what was accepted should reach its device
  ctx.progress.say(
    `push: publishing stopped after ${((tEnd - t0) / 1000).toFixed(1)} s; waiting for ${groupDigits(Math.max(0, published - receivedEnd))} pushes in flight`,
  );
  await waitFor(ctx, () => inflight === 0, DRAIN_MS);
  await waitFor(ctx, () => totals.received - received0 >= published, DRAIN_MS, 50);
  await fleet.flush();
  // acks lost on the way are made good by the daemon's retransmissions: wait until its counter caught up
  let m1 = await target.snapshot();
  const drainEnd = performance.now() + DRAIN_MS;
  while (m1.pushesAcked - m0.pushesAcked < totals.received - received0 && performance.now() < drainEnd && !ctx.stopped()) {
    await ctx.sleep(100);
    m1 = await target.snapshot();
  }
  fleet.onStats = undefined;

  const windowSeconds = (tEnd - t0) / 1000;
  const ackedInWindow = mEnd.pushesAcked - m0.pushesAcked;
  const received = totals.received - received0;
  const perSecond = (n: number, s: number): number | null => (s > 0 ? n / s : null);
  return {
    connect,
    windowSeconds: round(windowSeconds) ?? 0,
    rateTarget: c.rate ?? null,
    concurrency,
    window: windowSize,
    batch: c.batch ?? null,
    published,
    publishErrors: errors,
    ackedInWindow,
    ackedPerSecond: round(ackedInWindow / windowSeconds, 1) ?? 0,
    acked: m1.pushesAcked - m0.pushesAcked,
    received,
    receivedPerSecond: round(receivedEnd / windowSeconds, 1) ?? 0,
    undelivered: Math.max(0, published - received),
    retransmitted: m1.pushesRetransmitted - m0.pushesRetransmitted,
    latencyMs: roundedDistribution(distribution(totals.latencies)),
    daemonCpuPerPushMicros: ackedInWindow > 0 ? round(((mEnd.cpuSeconds - m0.cpuSeconds) * 1e6) / ackedInWindow, 1) : null,
    daemonCpuCores: round(perSecond(mEnd.cpuSeconds - m0.cpuSeconds, windowSeconds) ?? NaN),
    workersCpuCores: round(perSecond(wEnd.cpuSeconds - w0.cpuSeconds, windowSeconds) ?? NaN),
    benchCpuCores: round((cpu.user + cpu.system) / 1e6 / windowSeconds),
    eventLoopDelayMs,
    rejected: totals.rejected - rejected0,
    sessionsLost: totals.lost - lost0,
    lostReasons: { ...totals.lostReasons },
  };
}
