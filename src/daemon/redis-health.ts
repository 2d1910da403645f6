/**
 * The daemon's own view of the Redis it shares its state through: a small
 * connection of its own (never the store's, so a check never waits behind
 * commits) that PINGs it at a fixed interval for /healthz and the metrics.
 * (Its persistence is read through the store: readRedisPersistence.)
 */
import { createClient } from "redis";
import type { RedisUrl } from "./config/redis-url.ts";

/** The last check's outcome. */
export interface RedisHealth {
  /** the last PING was answered within the timeout */
  readonly reachable: boolean;
  /** its round trip, ms (undefined when it failed) */
  readonly latencyMs: number | undefined;
  /** ms since the epoch of the last check */
  readonly checkedAt: number;
  /** why the last check failed, in a few words (never the URL's password) */
  readonly error: string | undefined;
}

export interface RedisProbe {
  current(): RedisHealth;
  /**
   * Store instances alive under `keyPrefix` (the nodes of the cluster now):
   * the store counts its instances in `P instances` and each running one
   * keeps `P alive:<n>` (a few seconds' expiry, refreshed); this asks EXISTS
   * of the newest MAX_INSTANCES_COUNTED instance numbers, 1000 a command.
   */
  aliveInstances(keyPrefix: string): Promise<number>;
  /** checks now (also what the interval runs); resolves with the outcome, never rejects */
  check(): Promise<RedisHealth>;
  close(): Promise<void>;
}

export interface RedisProbeOptions {
  /** between checks, ms; default 1000 */
  readonly intervalMs?: number;
  /** a PING not answered within this is a failure, ms; default 1000 */
  readonly timeoutMs?: number;
  /** how long connecting may take, ms; default 5000 */
  readonly connectTimeoutMs?: number;
  /** told of every check (metrics) */
  readonly onCheck?: (h: RedisHealth) => void;
  readonly now?: () => number;
}

/** How many of the newest store instances `aliveInstances` looks at (every CLI command that opens the store is one). */
export const MAX_INSTANCES_COUNTED = 100_000;
const EXISTS_PER_COMMAND = 1000;

/** Connects (bounded by connectTimeoutMs; rejects when Redis cannot be reached) and starts the checks. */
export async function startRedisProbe(url: RedisUrl, o: RedisProbeOptions = {}): Promise<RedisProbe> {
  const now = o.now ?? Date.now;
  const timeoutMs = o.timeoutMs ?? 1000;
  let connected = false;
  const client = createClient({
    url: url.reveal(),
    // a command while disconnected fails at once instead of waiting for the reconnection
    disableOfflineQueue: true,
    socket: {
      connectTimeout: o.connectTimeoutMs ?? 5000,
      // the first connection fails at once with its cause (the start says why); once up, it reconnects for ever
      reconnectStrategy: (retries: number, cause: Error) => (connected ? Math.min(50 * 2 ** Math.min(retries, 5), 1000) : cause),
    },
  });
  // connection errors are what the checks report; an unhandled 'error' would end the process
  let lastError: string | undefined;
  client.on("error", (e: unknown) => {
    lastError = e instanceof Error ? e.message : String(e);
  });
  const connectTimeoutMs = o.connectTimeoutMs ?? 5000;
  try {
    await withTimeout(client.connect(), connectTimeoutMs, `no connection within ${connectTimeoutMs} ms`);
  } catch (e) {
    client.destroy();
    throw e;
  }
  connected = true;

  let health: RedisHealth = { reachable: true, latencyMs: undefined, checkedAt: now(), error: undefined };
  let inFlight: Promise<RedisHealth> | undefined;
  let closed = false;
  const check = (): Promise<RedisHealth> => {
    inFlight ??= (async () => {
      const t0 = performance.now();
      try {
        await withTimeout(client.ping(), timeoutMs, `no answer to PING within ${timeoutMs} ms`);
        health = { reachable: true, latencyMs: performance.now() - t0, checkedAt: now(), error: undefined };
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        health = { reachable: false, latencyMs: undefined, checkedAt: now(), error: lastError !== undefined && !client.isReady ? lastError : why };
      }
      // a check cut short by close() is not news
      if (!closed) o.onCheck?.(health);
      inFlight = undefined;
      return health;
    })();
    return inFlight;
  };
  await check();
  const timer = setInterval(() => void check(), o.intervalMs ?? 1000);
  timer.unref();

  return {
    current: () => health,
    async aliveInstances(keyPrefix: string): Promise<number> {
      const newest = Number((await withTimeout(client.get(`${keyPrefix}instances`), timeoutMs, "no answer")) ?? 0);
      let alive = 0;
      const oldest = Math.max(1, newest - MAX_INSTANCES_COUNTED + 1);
      for (let hi = newest; hi >= oldest; hi -= EXISTS_PER_COMMAND) {
        const keys: string[] = [];
        for (let n = hi; n > hi - EXISTS_PER_COMMAND && n >= oldest; n--) keys.push(`${keyPrefix}alive:${n}`);
        alive += await withTimeout(client.exists(keys), timeoutMs, "no answer");
      }
      return alive;
    },
    check,
    async close() {
      closed = true;
      clearInterval(timer);
      client.destroy();
    },
  };
}

async function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
