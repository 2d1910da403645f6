/**
 * What a Redis-backed Store (the cluster's shared state, issue "cluster on
 * Redis") is opened with. Without these settings the daemon keeps its
 * embedded SQLite store.
 */
export interface RedisStoreOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://...` (TLS). */
  readonly url: string;
  /** Prefix of every key the store writes, so several deployments share one Redis; default "dtlspush:". */
  readonly keyPrefix?: string;
  /** How long opening waits for Redis before failing with StoreError "store_open_failed", ms; default 5000. */
  readonly connectTimeoutMs?: number;
}

export const DEFAULT_REDIS_KEY_PREFIX = "dtlspush:";
