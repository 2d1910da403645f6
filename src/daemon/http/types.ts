import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import type { Store } from "../../store/types.ts";
import type { ClusterStore } from "../../store/cluster-types.ts";
import type { PushServer } from "../push-server.ts";
import type { HttpObserver } from "./errors.ts";
import type { BatchObserver } from "./routes-batch.ts";

/** What the HTTP API is built from. */
export interface HttpApiDeps {
  readonly server: PushServer;
  readonly store: Store;
  /** wall clock, ms since the epoch (token expiry, uptime); default Date.now */
  readonly clock?: { now(): number };
  /** fastify's loggerInstance; default no logging. Tokens and payloads are never logged. */
  readonly logger?: Logger;
  /** what GET /metrics serves (Prometheus text); no /metrics route without it */
  readonly metrics?: { readonly contentType: string; text(): Promise<string> };
  /** told of every error answer, by code, and of batch entries by result (the daemon's metrics) */
  readonly observer?: HttpObserver & Partial<BatchObserver>;
  readonly limits?: {
    /** largest request body; default 65536 */
    readonly bodyLimitBytes?: number;
    /** largest body of a batch publish (POST /v1/messages); default 4 MiB */
    readonly batchBodyLimitBytes?: number;
    /** requests per minute per token (per IP when unauthenticated); 0 = off; default 60000 */
    readonly rateLimitPerMinute?: number;
    /** a request not received in full after this long is answered 408 request_timeout; default 30 000 */
    readonly requestTimeoutMs?: number;
    /** GET /metrics without a token; default false (admin scope) */
    readonly publicMetrics?: boolean;
  };
  /**
   * The shared store's reachability (a Redis store: the daemon's own PING), for /healthz: unreachable
   * answers 503 store_unavailable. Absent with an embedded store.
   */
  readonly storeHealth?: () => StoreHealth;
  /**
   * The shared store's cluster side (cluster mode): receipt streams follow
   * every node's commits, device views ask which node holds a device.
   */
  readonly cluster?: ClusterStore;
  /** this node's id in a cluster (/healthz says which node, or which worker of `serve --workers`, answered) */
  readonly node?: string;
  /** ms since the epoch the daemon started (healthz uptime); default when the API was created */
  readonly startedAt?: number;
}

/** What /healthz says of a shared store. */
export interface StoreHealth {
  readonly kind: "redis";
  readonly reachable: boolean;
  /** the last check's round trip, ms */
  readonly latencyMs: number | undefined;
  /** ms since the epoch of the last check */
  readonly checkedAt: number;
  /** why it is unreachable, in a few words */
  readonly error: string | undefined;
}

/** A listening HTTP API. */
export interface HttpApi {
  readonly app: FastifyInstance;
  address(): { host: string; port: number };
  /** Shutdown has begun: /healthz answers 503, new event streams are refused, open ones are ended. */
  draining(): void;
  /** Ends the event streams and closes the server (waits for requests in progress). */
  close(): Promise<void>;
}

export const DEFAULT_BODY_LIMIT_BYTES = 65_536;
export const DEFAULT_BATCH_BODY_LIMIT_BYTES = 4 * 1024 * 1024;
export const DEFAULT_RATE_LIMIT_PER_MINUTE = 60_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
