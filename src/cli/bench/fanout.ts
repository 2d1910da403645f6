/**
 * `bench fanout`: every device is assigned the topic `bench-fanout` and
 * connected; then one publish to the topic (per round). Figures: time from the
 * request until every device received the message (from the devices' receipt
 * times), and until the daemon counted every ack (its metrics, polled once the
 * devices have it all); whether each device received it exactly once.
 */
import { CliError } from "../errors.ts";
import { connectDevices, waitFor, type ConnectSummary, type RunContext } from "./context.ts";
import { benchNow } from "./ipc.ts";
import type { LoopDelay } from "./loop-delay.ts";
import { DEFAULT_CONCURRENCY, fanoutRoundMs } from "./options.ts";
import { stampedPayload } from "./stamp.ts";
import { distribution, groupDigits, round, roundedDistribution } from "./stats.ts";

export const FANOUT_TOPIC = "bench-fanout";
/** How often the daemon's ack counter is read once the devices have the message, ms. */
const ACK_POLL_MS = 10;

export interface FanoutRound {
  readonly messageId: string;
  /** recipients the daemon queued the message for */
  readonly recipients: number;
  /** request until the daemon answered (stored durably), ms */
  readonly acceptedMs: number | null;
  /** devices that received it (each counted once) */
  readonly received: number;
  /** deliveries beyond the first to one device (must be 0) */
  readonly duplicates: number;
  /** request until the first / the last device received it, ms */
  readonly firstReceivedMs: number | null;
  readonly allReceivedMs: number | null;
  /** request until the daemon counted `recipients` more acks, ms (within ACK_POLL_MS) */
  readonly allAckedMs: number | null;
  /** receipt time over all devices, ms after the request */
  readonly receivedMs: ReturnType<typeof roundedDistribution>;
}

export interface FanoutResult {
  readonly connect: ConnectSummary;
  readonly topic: string;
  readonly rounds: readonly FanoutRound[];
  /** the slowest round's figures */
  readonly allReceivedMs: number | null;
  readonly allAckedMs: number | null;
  /** every round reached every connected device exactly once */
  readonly allReceivedOnce: boolean;
  readonly daemonCpuSeconds: number;
  /** the daemon's event-loop delay over all rounds (see loop-delay.ts), or null: not reported */
  readonly eventLoopDelayMs: LoopDelay | null;
  readonly sessionsLost: number;
  /** why sessions were lost during the whole run: "bye:<ERROR_CODE>", "stale", "dtls:<code>" */
  readonly lostReasons: Readonly<Record<string, number>>;
}

export async function runFanout(ctx: RunContext): Promise<FanoutResult> {
  const c = ctx.config;
  const { fleet, target } = ctx;
  const connect = await connectDevices(ctx, c.concurrency ?? DEFAULT_CONCURRENCY.handshakes);
  if (connect.ok === 0) throw new CliError(`no device could connect: ${connect.errors[0] ?? "unknown reason"}`);
  const lost0 = fleet.totals.lost;
  const rounds: FanoutRound[] = [];
  const mStart = await target.snapshot();
  const loopDelay = target.watchLoopDelay();
  const n = c.count ?? 1;
  // bounded: a round that does not complete in this time is reported as it is
  const roundMs = fanoutRoundMs(connect.ok);
  for (let k = 1; k <= n && !ctx.stopped(); k++) {
    await fleet.flush();
    const latencies = fleet.totals.latencies;
    latencies.length = 0;
    const m0 = await target.snapshot();
    const messageId = `bench-fanout-${ctx.seedHex.slice(0, 12)}-${k}`;
    const t0 = benchNow();
    ctx.progress.start((s) => {
      const got = fleet.totals.ids.get(messageId)?.devices ?? 0;
      return `fanout: round ${k}, ${s.toFixed(1)} s, ${groupDigits(got)} of ${groupDigits(connect.ok)} devices received`;
    });
    let recipients = 0;
    let acceptedMs: number | null = null;
    let allAckedMs: number | null = null;
    try {
      recipients = (await target.publishToTopic(FANOUT_TOPIC, stampedPayload(t0, c.payloadBytes), messageId)).recipients;
      acceptedMs = benchNow() - t0;
      const expected = Math.min(recipients, connect.ok);
      await waitFor(ctx, () => (fleet.totals.ids.get(messageId)?.devices ?? 0) >= expected, roundMs);
      const deadline = performance.now() + roundMs;
      while (!ctx.stopped() && performance.now() < deadline) {
        const m = await target.snapshot();
        if (m.pushesAcked - m0.pushesAcked >= expected) {
          allAckedMs = m.at - t0;
          break;
        }
        await ctx.sleep(ACK_POLL_MS);
      }
      await fleet.flush();
    } finally {
      ctx.progress.stop();
    }
    const seen = fleet.totals.ids.get(messageId) ?? { devices: 0, duplicates: 0 };
    const d = distribution(latencies);
    rounds.push({
      messageId,
      recipients,
      acceptedMs: round(acceptedMs ?? NaN),
      received: seen.devices,
      duplicates: seen.duplicates,
      firstReceivedMs: round(d.min),
      allReceivedMs: seen.devices >= recipients && recipients > 0 ? round(d.max) : null,
      allAckedMs: round(allAckedMs ?? NaN),
      receivedMs: roundedDistribution(d),
    });
  }
  const mEnd = await target.snapshot();
  const eventLoopDelayMs = loopDelay.stop();
  const worst = (pick: (r: FanoutRound) => number | null): number | null => {
    let w: number | null = null;
    for (const r of rounds) {
      const v = pick(r);
      if (v === null) return null;
      w = w === null ? v : Math.max(w, v);
    }
    return w;
  };
  return {
    connect,
    topic: FANOUT_TOPIC,
    rounds,
    allReceivedMs: worst((r) => r.allReceivedMs),
    allAckedMs: worst((r) => r.allAckedMs),
    allReceivedOnce: rounds.length === n && rounds.every((r) => r.recipients === connect.ok && r.received === connect.ok && r.duplicates === 0),
    daemonCpuSeconds: round(mEnd.cpuSeconds - mStart.cpuSeconds) ?? 0,
    eventLoopDelayMs,
    sessionsLost: fleet.totals.lost - lost0,
    lostReasons: { ...fleet.totals.lostReasons },
  };
}
