/**
 * The store layer: the asynchronous Store the daemon uses and the
 * synchronous SyncStore connection (types.ts); SQLite (durable, the default)
 * and memory (tests, throw-away runs).
 */
import { StoreError } from "./errors.ts";
import { openMemoryStore } from "./memory-store.ts";
import { openWorkerStore } from "./worker-store.ts";
import type { Store } from "./types.ts";

export type * from "./types.ts";
export type * from "./cluster-types.ts";
export { clusterOf } from "./cluster-types.ts";
export { StoreError, type StoreErrorCode } from "./errors.ts";
export { createMemoryStore, openMemoryStore } from "./memory-store.ts";
export { inlineStore } from "./inline-store.ts";
export { openSqliteStore, SQLITE_SCHEMA_VERSION, type CommitOutcome, type SqliteStoreOptions, type SqliteSyncStore } from "./sqlite-store.ts";
export { openWorkerStore, type WorkerStore, type WorkerStoreStats } from "./worker-store.ts";

export type StoreOptions =
  { readonly kind: "memory" } | { readonly kind: "sqlite"; readonly path: string; readonly synchronous?: "normal" | "full" | undefined };

/**
 * Opens the store the options name: SQLite runs on a worker thread of its own
 * (worker-store.ts: group commit, the event loop never waits on a statement);
 * memory is inline. The SQLite errors are openSqliteStore's.
 */
export async function openStore(options: StoreOptions): Promise<Store> {
  switch (options.kind) {
    case "memory":
      return openMemoryStore();
    case "sqlite":
      return openWorkerStore(options.path, { synchronous: options.synchronous });
  }
  // Options can come from a configuration file: say what was wrong rather than return undefined.
  throw new StoreError("store_open_failed", `Unknown store kind ${JSON.stringify((options as { kind?: unknown }).kind)}; use "sqlite" or "memory".`);
}
export { createMemoryCluster, type MemoryCluster } from "./memory-cluster.ts";
