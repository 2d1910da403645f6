/**
 * The daemon's event-loop delay during a measured window: how late a 10 ms
 * sampling timer fired (the excess over its 10 ms), as percentiles. A long
 * turn of the loop (a commit, a big HTTP body, a GC pause) delays every
 * datagram and timer behind it, so this is the floor under the p99 latency.
 *
 * Read from the daemon's metrics, in process as over HTTP: prom-client's
 * nodejs_eventloop_lag_{p50,p99,max}_seconds (perf_hooks.monitorEventLoopDelay,
 * sampled every 10 ms, reset at each scrape). Each scrape covers the time since
 * the one before, and a window reports its worst scrape interval's figures
 * (push scrapes at the start and the end of its window: exactly the window).
 * The bench runs no sampler of its own: a second one on the in-process
 * daemon's loop made fan-outs measurably slower.
 */
export interface LoopDelay {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

/** The sampling timer's period, in process and in prom-client's default metrics. */
export const LOOP_DELAY_RESOLUTION_MS = 10;

const round2 = (x: number): number => Math.round(x * 100) / 100;
const excess = (ms: number): number => round2(Math.max(0, ms - LOOP_DELAY_RESOLUTION_MS));

/** From a sampled interval's figures (ms, the sampling period included). */
export function loopDelayOf(p50Ms: number, p99Ms: number, maxMs: number): LoopDelay {
  return { p50: excess(p50Ms), p99: excess(p99Ms), max: excess(maxMs) };
}

/** The worse of two windows' figures, field by field. */
export function worseLoopDelay(a: LoopDelay | null, b: LoopDelay | null): LoopDelay | null {
  if (a === null) return b;
  if (b === null) return a;
  return { p50: Math.max(a.p50, b.p50), p99: Math.max(a.p99, b.p99), max: Math.max(a.max, b.max) };
}

/** A window being measured; stop() ends it (null: the daemon does not report its loop delay). */
export interface LoopDelayWindow {
  stop(): LoopDelay | null;
}

/** Windows over the daemon's scrapes: each scrape is folded into every open window. */
export class ScrapedLoopDelay {
  private readonly open = new Set<{ worst: LoopDelay | null }>();

  /** One scrape's figures (since the scrape before). */
  scraped(d: LoopDelay | null): void {
    for (const w of this.open) w.worst = worseLoopDelay(w.worst, d);
  }

  watch(): LoopDelayWindow {
    const w = { worst: null as LoopDelay | null };
    this.open.add(w);
    return {
      stop: () => {
        this.open.delete(w);
        return w.worst;
      },
    };
  }
}
