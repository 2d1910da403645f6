/**
 * `bench sessions`: every device connects (DTLS + Hello/Welcome) and stays
 * idle; the daemon's resident memory and V8 heap are read before the first
 * connect and after the hold time. Figures: memory per session.
 */
import { connectDevices, type ConnectSummary, type RunContext } from "./context.ts";
import { DEFAULT_CONCURRENCY } from "./options.ts";
import { groupDigits, round } from "./stats.ts";

export interface SessionsResult {
  readonly connect: ConnectSummary;
  /** sessions the devices hold at the end of the hold time */
  readonly sessions: number;
  /** the daemon's dtlspush_sessions gauge at the end */
  readonly daemonSessions: number;
  readonly daemonDevicesOnline: number;
  readonly holdSeconds: number;
  readonly residentBytesBefore: number;
  readonly residentBytesAfter: number;
  readonly heapUsedBytesBefore: number;
  readonly heapUsedBytesAfter: number;
  /** resident memory growth per session, bytes */
  readonly residentBytesPerSession: number | null;
  /** V8 heap growth per session, bytes */
  readonly heapBytesPerSession: number | null;
  readonly sessionsLost: number;
  /** why sessions were lost during the whole run: "bye:<ERROR_CODE>", "stale", "dtls:<code>" */
  readonly lostReasons: Readonly<Record<string, number>>;
}

export async function runSessions(ctx: RunContext): Promise<SessionsResult> {
  const c = ctx.config;
  const m0 = await ctx.target.snapshot();
  const lost0 = ctx.fleet.totals.lost;
  const connect = await connectDevices(ctx, c.concurrency ?? DEFAULT_CONCURRENCY.handshakes);
  const holdMs = c.durationSeconds * 1000;
  ctx.progress.start((s) => `sessions: holding ${groupDigits(connect.ok)} idle sessions, ${s.toFixed(1)} of ${c.durationSeconds} s`);
  try {
    await ctx.sleep(holdMs);
  } finally {
    ctx.progress.stop();
  }
  await ctx.fleet.flush();
  const m1 = await ctx.target.snapshot();
  const lost = ctx.fleet.totals.lost - lost0;
  const sessions = connect.ok - lost;
  const per = (before: number, after: number): number | null => (sessions > 0 ? round((after - before) / sessions, 1) : null);
  return {
    connect,
    sessions,
    daemonSessions: m1.sessions,
    daemonDevicesOnline: m1.devicesOnline,
    holdSeconds: c.durationSeconds,
    residentBytesBefore: m0.residentBytes,
    residentBytesAfter: m1.residentBytes,
    heapUsedBytesBefore: m0.heapUsedBytes,
    heapUsedBytesAfter: m1.heapUsedBytes,
    residentBytesPerSession: per(m0.residentBytes, m1.residentBytes),
    heapBytesPerSession: per(m0.heapUsedBytes, m1.heapUsedBytes),
    sessionsLost: lost,
    lostReasons: { ...ctx.fleet.totals.lostReasons },
  };
}
