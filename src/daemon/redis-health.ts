/**
 * The daemon's own view of the Redis it shares its state through: a small
 * connection of its own (never the store's, so a check never waits behind
 * commits) that PINGs it at a fixed interval for /healthz and the metrics,
 * and reads its persistence settings once at start.
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

/** Redis's persistence as CONFIG GET reports it. */
export interface RedisPersistence {
  /** "yes" | "no" */
  readonly appendonly: string;
  /** "always" | "everysec" | "no" */
  readonly appendfsync: string;
  /** RDB save points ("3600 1 300 100"), "" when none */
  readonly save: string;
}

export interface RedisProbe {
  current(): RedisHealth;
  /** checks now (also what the interval runs); resolves with the outcome, never rejects */
  check(): Promise<RedisHealth>;
  /** CONFIG GET appendonly / appendfsync / save; rejects when Redis refuses CONFIG (a managed Redis may) */
  persistence(): Promise<RedisPersistence>;
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
      o.onCheck?.(health);
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
    check,
    async persistence() {
      const c = await withTimeout(client.configGet(["appendonly", "appendfsync", "save"]), 5000, "CONFIG GET timed out");
      return { appendonly: c["appendonly"] ?? "", appendfsync: c["appendfsync"] ?? "", save: c["save"] ?? "" };
    },
    async close() {
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

/** What a 202 means with this persistence (one phrase for logs and docs/cluster.md). */
export function persistenceMeaning(p: RedisPersistence): { level: "none" | "weak" | "strong"; text: string } {
  const aof = p.appendonly === "yes";
  const rdb = p.save.trim() !== "";
  if (!aof && !rdb) {
    return { level: "none", text: "Redis has no persistence (appendonly no, no save points): a Redis restart loses everything, messages answered 202 included" };
  }
  if (!aof) {
    return {
      level: "weak",
      text: `Redis keeps only RDB snapshots (save "${p.save}"): a 202 survives a Redis restart only once the next snapshot is written; a crash loses what came after the last one. Set appendonly yes, appendfsync always`,
    };
  }
  if (p.appendfsync === "always") return { level: "strong", text: "appendfsync always: a 202 is on Redis's disk" };
  if (p.appendfsync === "everysec") {
    return {
      level: "weak",
      text: "appendfsync everysec: a 202 is written to Redis's append-only file but synced to disk only once a second; a power loss or kernel crash of the Redis host can lose the last second of 202'd messages (a crash of redis-server alone loses nothing). Set appendfsync always for a 202 that survives both",
    };
  }
  return {
    level: "weak",
    text: `appendfsync ${p.appendfsync}: a 202 is written to Redis's append-only file and synced when the kernel decides (often ~30 s later); a power loss or kernel crash of the Redis host can lose that much. Set appendfsync always`,
  };
}
