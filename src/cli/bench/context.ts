/** What every bench mode works with, and the steps they share. */
import type { Fleet } from "./fleet.ts";
import type { BenchConfig } from "./options.ts";
import { distribution, groupDigits, roundedDistribution } from "./stats.ts";
import type { BenchTarget } from "./target.ts";

/** One line per second on standard error while a phase runs. */
export class Progress {
  private readonly write: (line: string) => void;
  private timer: NodeJS.Timeout | undefined;

  constructor(write: (line: string) => void) {
    this.write = write;
  }

  /** Calls `line(elapsedSeconds)` every second until `stop()` (or the next `start`). */
  start(line: (elapsed: number) => string): void {
    this.stop();
    const t0 = performance.now();
    this.timer = setInterval(() => this.write(line((performance.now() - t0) / 1000)), 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One line now. */
  say(line: string): void {
    this.write(line);
  }
}

export interface RunContext {
  readonly config: BenchConfig;
  readonly target: BenchTarget;
  readonly fleet: Fleet;
  /** device ids of this run, in index order */
  readonly ids: readonly string[];
  /** the run's seed (hex), e.g. for message ids */
  readonly seedHex: string;
  readonly progress: Progress;
  /** true once the run was interrupted (signal, global timeout) */
  stopped(): boolean;
  /** waits `ms`, or less when the run is stopped */
  sleep(ms: number): Promise<void>;
}

/** How connecting the devices went. */
export interface ConnectSummary {
  readonly ok: number;
  readonly failed: number;
  readonly seconds: number;
  /** connects (handshake + Hello/Welcome) per second */
  readonly perSecond: number;
  /** time of one connect, ms */
  readonly timeMs: ReturnType<typeof roundedDistribution>;
  readonly errors: readonly string[];
}

/** Connects every device (DTLS + Hello/Welcome) with progress. */
export async function connectDevices(ctx: RunContext, concurrency: number): Promise<ConnectSummary> {
  const t0 = performance.now();
  const total = ctx.ids.length;
  ctx.progress.start((s) => {
    const p = ctx.fleet.progress();
    return `connecting: ${s.toFixed(1)} s, ${groupDigits(p.ok)} of ${groupDigits(total)} devices connected${p.failed > 0 ? `, ${groupDigits(p.failed)} failed` : ""}`;
  });
  try {
    const r = await ctx.fleet.connectAll(concurrency);
    const seconds = (performance.now() - t0) / 1000;
    return {
      ok: r.ok,
      failed: r.failed,
      seconds,
      perSecond: r.ok / seconds,
      timeMs: roundedDistribution(distribution(r.handshakeMs)),
      errors: r.errors,
    };
  } finally {
    ctx.progress.stop();
  }
}

/** Resolves when `cond()` holds (checked every `stepMs`), or false after `ms` or when the run stops. */
export async function waitFor(ctx: RunContext, cond: () => boolean, ms: number, stepMs = 20): Promise<boolean> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() >= end || ctx.stopped()) return false;
    await ctx.sleep(stepMs);
  }
  return true;
}
