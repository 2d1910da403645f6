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
  /**
   * How long this store instance counts as alive without refreshing its
   * liveness key (`holders` reports "" for the holds of an instance that is
   * not), ms; refreshed every third of it; default 5000.
   */
  readonly livenessMs?: number;
  /**
   * How long Redis may stay unreachable while the store is open before the
   * store fails (store_failed); until then it is unavailable
   * (store_unavailable) and reconnects by itself, ms; default 300000.
   */
  readonly outageMaxMs?: number;
}

export const DEFAULT_REDIS_KEY_PREFIX = "dtlspush:";

/** What replaces the password in every printed form of a Redis URL. */
export const REDACTED_PASSWORD = "***";

/**
 * The URL with its password replaced by `***` (the user name stays: it is
 * not a secret and says which ACL user connects). Text that is not a URL has
 * everything before its last "@" replaced, so a password never shows however
 * the URL is malformed.
 */
export function redactRedisUrl(text: string): string {
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (url !== undefined && url.host !== "") {
    if (url.password !== "") url.password = REDACTED_PASSWORD;
    return url.href;
  }
  const at = text.lastIndexOf("@");
  if (at === -1) return text;
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(text)?.[0] ?? "";
  return `${scheme}${REDACTED_PASSWORD}${text.slice(at)}`;
}
