/**
 * The worker thread of the worker store (worker-store.ts): it opens the SQLite
 * store named in its workerData and runs the operations the main thread posts,
 * in the order posted, answering each.
 *
 * Group commit: messages that arrive while the thread is busy (a transaction,
 * an fsync) wait in the port; when it is free it takes all that waits, and
 * each run of consecutive commits (at most MAX_GROUP_BATCHES batches or
 * MAX_GROUP_ROWS rows, a larger batch alone) is applied as one transaction,
 * each batch in its own savepoint (SqliteSyncStore.commitGroup). Any other
 * operation keeps its place between the runs. The answer to a run is one
 * message; a batch's receipts are answered by the id of its first receipt
 * (AUTOINCREMENT ids of one batch are consecutive), not sent back.
 *
 * Prefix rule: after a commit failed, every later commit is refused
 * (store_failed) without touching the file; reads and other writes go on.
 */
import { parentPort, Worker, workerData } from "node:worker_threads";
import { COMMITS, CONTROL_SLOTS, STOP, STOPPED, type CheckpointerData } from "./checkpoint-worker.ts";
import { StoreError, refusedAfterFailure, type StoreErrorCode } from "./errors.ts";
import { openSqliteStore, type SqliteSyncStore } from "./sqlite-store.ts";
import type { SyncStore, WriteBatch } from "./types.ts";

/** A group commit holds at most this many batches ... */
export const MAX_GROUP_BATCHES = 256;
/** ... and at most this many rows (a larger batch is committed alone). */
export const MAX_GROUP_ROWS = 50_000;

/**
 * The WAL is checkpointed on a thread of its own (checkpoint-worker.ts); a
 * commit checkpoints only when the WAL has this many pages (about 40 MB),
 * should that thread fail or fall behind.
 */
export const WRITER_AUTOCHECKPOINT_PAGES = 10_000;

/** How long closing waits for the checkpointer to close its connection. */
const CHECKPOINTER_STOP_MS = 5_000;

const CHECKPOINTER_URL = new URL(import.meta.url.endsWith(".ts") ? "./checkpoint-worker.ts" : "./checkpoint-worker.js", import.meta.url);

/** A "hold" (test hook) ends after this long even when not released. */
const HOLD_LIMIT_MS = 10_000;

/** The SyncStore methods other than commit and close, called by name. */
export type CallMethod = Exclude<
  { [K in keyof SyncStore]: SyncStore[K] extends (...args: never[]) => unknown ? K : never }[keyof SyncStore],
  "commit" | "close"
>;

/** What "call" may not name: the operations with their own request, and commitGroup. */
const NOT_CALLS: ReadonlySet<string> = new Set(["commit", "commitGroup", "close", "kind"]);

export interface WorkerOptions {
  readonly path: string;
  readonly synchronous: "normal" | "full" | undefined;
}

/** Main -> worker. "hold" and "crash" are test hooks. */
export type WorkerRequest =
  | { readonly op: "commit"; readonly id: number; readonly batch: WriteBatch }
  | { readonly op: "call"; readonly id: number; readonly method: CallMethod; readonly args: readonly unknown[] }
  | { readonly op: "close"; readonly id: number }
  /** blocks the thread until `gate[0]` is set to non-zero (Atomics.notify), so that what is posted meanwhile queues up */
  | { readonly op: "hold"; readonly id: number; readonly gate: Int32Array }
  /** throws outside any operation: an uncaught error that ends the thread */
  | { readonly op: "crash"; readonly id: number };

/** A StoreError (code set) or another error (code undefined) as sent between threads. */
export interface WireError {
  readonly code: StoreErrorCode | undefined;
  readonly message: string;
}

/** A commit's answer: the id of its first receipt (the others follow it), or the ids when they do not, or its error. */
export type CommitResult =
  | { readonly id: number; readonly first: number; readonly count: number }
  | { readonly id: number; readonly ids: readonly number[] }
  | { readonly id: number; readonly error: WireError };

/** Worker -> main. */
export type WorkerReply =
  | { readonly type: "opened" }
  | { readonly type: "open_failed"; readonly error: WireError }
  | { readonly type: "result"; readonly id: number; readonly value: unknown }
  | { readonly type: "error"; readonly id: number; readonly error: WireError }
  /** the answers of one group commit (one transaction), in order */
  | { readonly type: "group"; readonly results: readonly CommitResult[] };

function toWireError(e: unknown): WireError {
  if (e instanceof StoreError) return { code: e.code, message: e.message };
  return { code: undefined, message: e instanceof Error ? e.message : String(e) };
}

function rowsOf(batch: WriteBatch): number {
  let rows = 0;
  for (const list of [batch.messages, batch.deliveries, batch.removeDeliveries, batch.counters, batch.subscribe, batch.unsubscribe, batch.receipts]) {
    if (Array.isArray(list)) rows += list.length;
  }
  return rows;
}

class StoreThread {
  private readonly store: SqliteSyncStore;
  private readonly post: (reply: WorkerReply) => void;
  private readonly queue: WorkerRequest[] = [];
  private drainQueued = false;
  /** the first commit that failed: every later commit is refused */
  private failed: StoreError | undefined;
  private readonly onClose: () => void;
  /** shared with the checkpointer: commits counted, stop handshake (see checkpoint-worker.ts) */
  private readonly control: Int32Array | undefined;

  constructor(store: SqliteSyncStore, post: (reply: WorkerReply) => void, onClose: () => void, control?: Int32Array) {
    this.store = store;
    this.post = post;
    this.onClose = onClose;
    this.control = control;
  }

  receive(request: WorkerRequest): void {
    this.queue.push(request);
    this.schedule();
  }

  private schedule(): void {
    if (this.drainQueued) return;
    this.drainQueued = true;
    // In the check phase: after the port has handed over everything that arrived meanwhile.
    setImmediate(() => this.drain());
  }

  private drain(): void {
    this.drainQueued = false;
    const queue = this.queue.splice(0);
    let i = 0;
    while (i < queue.length) {
      const request = queue[i] as WorkerRequest;
      if (request.op !== "commit") {
        this.run(request);
        i++;
        if (request.op === "hold") {
          // what waits joins what arrived during the hold, in a later drain
          this.queue.unshift(...queue.slice(i));
          this.schedule();
          return;
        }
        continue;
      }
      const group: { id: number; batch: WriteBatch }[] = [];
      let rows = 0;
      while (i < queue.length && group.length < MAX_GROUP_BATCHES) {
        const next = queue[i] as WorkerRequest;
        if (next.op !== "commit") break;
        const r = rowsOf(next.batch);
        if (group.length > 0 && rows + r > MAX_GROUP_ROWS) break;
        group.push(next);
        rows += r;
        i++;
      }
      this.commitGroup(group);
    }
  }

  private commitGroup(group: readonly { id: number; batch: WriteBatch }[]): void {
    const failed = this.failed;
    if (failed !== undefined) {
      this.post({ type: "group", results: group.map(({ id }) => ({ id, error: toWireError(refusedAfterFailure(failed)) })) });
      return;
    }
    let outcomes;
    try {
      outcomes = this.store.commitGroup(group.map((g) => g.batch));
    } catch (e) {
      // store_closed or a bug: nothing of the group was applied
      const error = e instanceof StoreError ? e : new StoreError("commit_failed", e instanceof Error ? e.message : String(e), { cause: e });
      outcomes = group.map(() => ({ ok: false as const, error }));
    }
    if (this.control !== undefined) Atomics.add(this.control, COMMITS, 1);
    const results = outcomes.map((outcome, j): CommitResult => {
      const id = (group[j] as { id: number }).id;
      if (!outcome.ok) {
        this.failed ??= outcome.error;
        return { id, error: toWireError(outcome.error) };
      }
      const receipts = outcome.receipts;
      const first = receipts[0]?.id ?? 0;
      return receipts.every((r, k) => r.id === first + k) ? { id, first, count: receipts.length } : { id, ids: receipts.map((r) => r.id) };
    });
    this.post({ type: "group", results });
  }

  /** Ends the checkpointer's connection first, so that closing the store's (the last one) checkpoints the WAL. */
  private stopCheckpointer(): void {
    const control = this.control;
    if (control === undefined) return;
    Atomics.store(control, STOP, 1);
    Atomics.notify(control, STOP);
    Atomics.wait(control, STOPPED, 0, CHECKPOINTER_STOP_MS);
  }

  private run(request: Exclude<WorkerRequest, { op: "commit" }>): void {
    switch (request.op) {
      case "call": {
        let value: unknown;
        try {
          const fn: unknown = this.store[request.method];
          if (NOT_CALLS.has(request.method) || typeof fn !== "function") throw new Error(`unknown store method ${String(request.method)}`);
          value = (fn as (...args: unknown[]) => unknown).apply(this.store, [...request.args]);
        } catch (e) {
          this.post({ type: "error", id: request.id, error: toWireError(e) });
          return;
        }
        this.post({ type: "result", id: request.id, value });
        return;
      }
      case "close":
        this.stopCheckpointer();
        try {
          this.store.close();
        } catch (e) {
          this.post({ type: "error", id: request.id, error: toWireError(e) });
          this.onClose();
          return;
        }
        this.post({ type: "result", id: request.id, value: undefined });
        this.onClose();
        return;
      case "hold":
        Atomics.wait(request.gate, 0, 0, HOLD_LIMIT_MS);
        this.post({ type: "result", id: request.id, value: undefined });
        return;
      case "crash":
        throw new Error("the store thread was told to crash (test hook)");
    }
  }
}

if (parentPort !== null) {
  const port = parentPort;
  const options = workerData as WorkerOptions;
  const post = (reply: WorkerReply): void => port.postMessage(reply);
  let store: SqliteSyncStore | undefined;
  try {
    store = openSqliteStore(options.path, { synchronous: options.synchronous, walAutocheckpointPages: WRITER_AUTOCHECKPOINT_PAGES });
  } catch (e) {
    post({ type: "open_failed", error: toWireError(e) });
    port.close();
  }
  if (store !== undefined) {
    const thread = new StoreThread(store, post, () => port.close(), startCheckpointer(options.path));
    port.on("message", (request: WorkerRequest) => thread.receive(request));
    post({ type: "opened" });
  }
}

/**
 * Starts the WAL checkpointer for the file at `path` (not for ":memory:"). It
 * never keeps the thread alive, and when it cannot start or fails, the
 * writer's autocheckpoint does its work.
 */
function startCheckpointer(path: string): Int32Array | undefined {
  if (path === ":memory:") return undefined;
  const control = new Int32Array(new SharedArrayBuffer(CONTROL_SLOTS * Int32Array.BYTES_PER_ELEMENT));
  const data: CheckpointerData = { path, control };
  try {
    const w = new Worker(CHECKPOINTER_URL, { workerData: data });
    w.on("error", () => Atomics.store(control, STOPPED, 1));
    w.on("exit", () => Atomics.store(control, STOPPED, 1));
    w.unref();
  } catch {
    return undefined;
  }
  return control;
}
