/**
 * The store layer: the Store interface (types.ts) and its two implementations,
 * SQLite (durable, the default) and memory (tests, throw-away runs).
 */
import { StoreError } from "./errors.ts";
import { createMemoryStore } from "./memory-store.ts";
import { openSqliteStore } from "./sqlite-store.ts";
import type { Store } from "./types.ts";

export type * from "./types.ts";
export { StoreError, type StoreErrorCode } from "./errors.ts";
export { createMemoryStore, openMemoryStore } from "./memory-store.ts";
export { inlineStore } from "./inline-store.ts";
export { openSqliteStore, SQLITE_SCHEMA_VERSION, type CommitOutcome, type SqliteStoreOptions, type SqliteSyncStore } from "./sqlite-store.ts";
export { openWorkerStore, type WorkerStore, type WorkerStoreStats } from "./worker-store.ts";

export type StoreOptions =
  | { readonly kind: "memory" }
  | { readonly kind: "sqlite"; readonly path: string; readonly synchronous?: "normal" | "full" | undefined };

/** Opens the store the options name (see openSqliteStore for the SQLite errors). */
export function openStore(options: StoreOptions): Store {
  switch (options.kind) {
    case "memory":
      return createMemoryStore();
    case "sqlite":
      return openSqliteStore(options.path, { synchronous: options.synchronous });
  }
  // Options can come from a configuration file: say what was wrong rather than return undefined.
  throw new StoreError("store_open_failed", `Unknown store kind ${JSON.stringify((options as { kind?: unknown }).kind)}; use "sqlite" or "memory".`);
}
