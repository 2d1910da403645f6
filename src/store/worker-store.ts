/**
 * The SQLite store off the event loop: a `Store` whose SQLite connection runs
 * on its own worker thread (sqlite-worker.ts). Every operation is one message
 * to the thread and one answer back; the thread runs them in the order they
 * were called, and commits that queue up while it is busy are applied as one
 * transaction (group commit, each batch in a savepoint; see sqlite-worker.ts).
 *
 * - Transfer: a batch is posted as it is (structured clone, at the call); its
 *   receipts are not sent back: the thread answers with the id of the first
 *   one and the receipts are built here from the batch's own inputs (so the
 *   caller must not change a batch's receipts before its commit settles).
 * - Errors: a StoreError thrown on the thread arrives as a StoreError with the
 *   same code and message; opening rejects with the error openSqliteStore
 *   throws (store_open_failed, store_version).
 * - Prefix rule: once a commit failed, every later commit is refused
 *   (store_failed); reads go on.
 * - Thread failure (an uncaught error, an exit, a termination): every pending
 *   and later operation rejects with StoreError "store_failed" naming the cause.
 * - Liveness: the thread keeps the process alive only while an operation is
 *   pending (so a commit in flight is never lost by an exiting process);
 *   `close()` waits for what was called before, closes the database and ends
 *   the thread; later calls fail with store_closed.
 */
import { Worker } from "node:worker_threads";
import { StoreError, describeError, refusedAfterFailure, type StoreErrorCode } from "./errors.ts";
import type { SqliteStoreOptions } from "./sqlite-store.ts";
import type { CallMethod, CommitResult, WireError, WorkerOptions, WorkerReply, WorkerRequest } from "./sqlite-worker.ts";
import type { Receipt, Store, SyncStore, WriteBatch } from "./types.ts";
import { receiptRecord } from "./validate.ts";

const WORKER_URL = new URL(import.meta.url.endsWith(".ts") ? "./sqlite-worker.ts" : "./sqlite-worker.js", import.meta.url);

/** The code of a failure that reaches us without a StoreError code (not expected: the thread wraps its errors). */
const FALLBACK_CODE: Record<CallMethod, StoreErrorCode> = {
  putDevice: "write_failed",
  getDevice: "read_failed",
  findDeviceByPskIdentity: "read_failed",
  findDeviceByCertIdentity: "read_failed",
  listDevices: "read_failed",
  deleteDevice: "write_failed",
  loadDeliveryState: "read_failed",
  getMessage: "read_failed",
  existingMessageIds: "read_failed",
  receiptsForMessage: "read_failed",
  receiptsAfter: "read_failed",
  prune: "write_failed",
  getSetting: "read_failed",
  putSetting: "write_failed",
};

export interface WorkerStoreStats {
  /** commits answered by the thread */
  commits: number;
  /** group commits (transactions) they were applied in */
  transactions: number;
  /** most batches in one transaction */
  largestGroup: number;
}

/** The worker store: a Store, with grouping stats and test hooks. */
export interface WorkerStore extends Store {
  readonly stats: Readonly<WorkerStoreStats>;
  /**
   * Test hook: blocks the thread until the returned function is called (at
   * most 10 s), so that what is called meanwhile queues up (and groups).
   */
  hold(): () => void;
  /** Test hook: ends the thread as a crash would ("throw": an uncaught error on it; "terminate": Worker.terminate). */
  crash(how: "throw" | "terminate"): Promise<void>;
}

/**
 * Opens the SQLite store at `path` on a new worker thread. Rejects with the
 * StoreError openSqliteStore throws (store_open_failed, store_version), or
 * store_open_failed when the thread cannot start.
 */
export function openWorkerStore(path: string, options: SqliteStoreOptions = {}): Promise<WorkerStore> {
  const workerData: WorkerOptions = { path, synchronous: options.synchronous };
  return new Promise((resolve, reject) => {
    let worker: Worker;
    try {
      worker = new Worker(WORKER_URL, { workerData });
    } catch (e) {
      reject(new StoreError("store_open_failed", `Cannot open store ${path}: its thread cannot start: ${describeError(e)}.`, { cause: e }));
      return;
    }
    const settle = (store: WorkerStore | undefined, error?: StoreError): void => {
      worker.off("message", onMessage);
      worker.off("error", onError);
      worker.off("exit", onExit);
      if (store !== undefined) {
        resolve(store);
        return;
      }
      void worker.terminate();
      reject(error);
    };
    const onMessage = (reply: WorkerReply): void => {
      if (reply.type === "opened") settle(new WorkerSqliteStore(worker, path));
      else if (reply.type === "open_failed") settle(undefined, fromWire(reply.error, "store_open_failed"));
    };
    const onError = (e: Error): void =>
      settle(undefined, new StoreError("store_open_failed", `Cannot open store ${path}: its thread failed: ${e.message}.`, { cause: e }));
    const onExit = (code: number): void =>
      settle(undefined, new StoreError("store_open_failed", `Cannot open store ${path}: its thread exited with code ${code}.`));
    worker.on("message", onMessage);
    worker.on("error", onError);
    worker.on("exit", onExit);
  });
}

function fromWire(error: WireError, fallback: StoreErrorCode): StoreError {
  return new StoreError(error.code ?? fallback, error.message);
}

interface Pending {
  readonly resolve: (value: unknown) => void;
  readonly reject: (e: Error) => void;
  readonly fallback: StoreErrorCode;
  /** a commit's batch: its receipts are built from it */
  readonly batch?: WriteBatch | undefined;
}

class WorkerSqliteStore implements WorkerStore {
  readonly kind = "sqlite";
  readonly stats: WorkerStoreStats = { commits: 0, transactions: 0, largestGroup: 0 };
  private readonly worker: Worker;
  private readonly path: string;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** set by close() */
  private closing: Promise<void> | undefined;
  /** the thread failed: everything is refused with this */
  private dead: StoreError | undefined;
  /** a commit failed: later commits are refused */
  private commitFailed: Error | undefined;
  private readonly exited: Promise<void>;

  constructor(worker: Worker, path: string) {
    this.worker = worker;
    this.path = path;
    worker.on("message", (reply: WorkerReply) => this.onReply(reply));
    // An uncaught error ends the thread: fail at its exit, which comes after every answer it
    // posted before (the error itself travels on another channel and may overtake them).
    let uncaught: Error | undefined;
    worker.on("error", (e: Error) => (uncaught ??= e));
    worker.on("messageerror", (e: Error) => this.fail(`sent an answer that cannot be read: ${e.message}`, e));
    this.exited = new Promise((resolve) =>
      worker.once("exit", (code: number) => {
        if (uncaught !== undefined) this.fail(`threw an uncaught error: ${uncaught.message}`, uncaught);
        else this.fail(`exited with code ${code}`);
        resolve();
      }),
    );
    // Idle: do not keep the process alive (send() refs the thread while an operation is pending).
    worker.unref();
  }

  // --- Store

  putDevice: Store["putDevice"] = (device) => this.call("putDevice", [device]);
  getDevice: Store["getDevice"] = (id) => this.call("getDevice", [id]);
  findDeviceByPskIdentity: Store["findDeviceByPskIdentity"] = (identity) => this.call("findDeviceByPskIdentity", [identity]);
  findDeviceByCertIdentity: Store["findDeviceByCertIdentity"] = (identity) => this.call("findDeviceByCertIdentity", [identity]);
  listDevices: Store["listDevices"] = () => this.call("listDevices", []);
  deleteDevice: Store["deleteDevice"] = (id) => this.call("deleteDevice", [id]);
  loadDeliveryState: Store["loadDeliveryState"] = () => this.call("loadDeliveryState", []);
  getMessage: Store["getMessage"] = (id) => this.call("getMessage", [id]);
  existingMessageIds: Store["existingMessageIds"] = (ids) => this.call("existingMessageIds", [ids]);
  receiptsForMessage: Store["receiptsForMessage"] = (messageId) => this.call("receiptsForMessage", [messageId]);
  receiptsAfter: Store["receiptsAfter"] = (afterId, limit) => this.call("receiptsAfter", [afterId, limit]);
  prune: Store["prune"] = (before) => this.call("prune", [before]);
  getSetting: Store["getSetting"] = (key) => this.call("getSetting", [key]);
  putSetting: Store["putSetting"] = (key, value) => this.call("putSetting", [key, value]);

  commit(batch: WriteBatch): Promise<Receipt[]> {
    const failed = this.commitFailed;
    if (failed !== undefined && this.refusal() === undefined) return Promise.reject(refusedAfterFailure(failed));
    return this.send((id) => ({ op: "commit", id, batch }), "commit_failed", batch) as Promise<Receipt[]>;
  }

  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    if (this.dead !== undefined) {
      this.closing = this.worker.terminate().then(() => undefined);
      return this.closing;
    }
    const done = this.send((id) => ({ op: "close", id }), "write_failed");
    this.closing = done.then(
      () => this.exited,
      async (e: unknown) => {
        await this.worker.terminate();
        throw e;
      },
    );
    return this.closing;
  }

  // --- test hooks

  hold(): () => void {
    const gate = new Int32Array(new SharedArrayBuffer(4));
    this.send((id) => ({ op: "hold", id, gate }), "read_failed").catch(() => undefined);
    return () => {
      Atomics.store(gate, 0, 1);
      Atomics.notify(gate, 0);
    };
  }

  async crash(how: "throw" | "terminate"): Promise<void> {
    if (how === "terminate") await this.worker.terminate();
    else this.send((id) => ({ op: "crash", id }), "read_failed").catch(() => undefined);
    await this.exited;
  }

  // --- messages

  private call<M extends CallMethod>(method: M, args: Parameters<SyncStore[M]>): Promise<ReturnType<SyncStore[M]>> {
    return this.send((id) => ({ op: "call", id, method, args }), FALLBACK_CODE[method]) as Promise<ReturnType<SyncStore[M]>>;
  }

  /** Why calls are refused now (closed, or the thread failed), if they are. */
  private refusal(): StoreError | undefined {
    if (this.closing !== undefined) return new StoreError("store_closed", `Store ${this.path} is closed.`);
    return this.dead;
  }

  private send(request: (id: number) => WorkerRequest, fallback: StoreErrorCode, batch?: WriteBatch): Promise<unknown> {
    const refused = this.refusal();
    if (refused !== undefined) return Promise.reject(refused);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      try {
        this.worker.postMessage(request(id));
      } catch (e) {
        // e.g. a value structured clone cannot copy: the thread never saw it
        const error = new StoreError(
          fallback,
          `Cannot send the ${batch !== undefined ? "batch" : "call"} to store ${this.path}: ${describeError(e)}.`,
          {
            cause: e,
          },
        );
        if (batch !== undefined) this.commitFailed ??= error;
        reject(error);
        return;
      }
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve, reject, fallback, batch });
    });
  }

  private take(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (p === undefined) return undefined;
    this.pending.delete(id);
    // while closing, the thread stays referenced until it has ended
    if (this.pending.size === 0 && this.closing === undefined) this.worker.unref();
    return p;
  }

  private onReply(reply: WorkerReply): void {
    switch (reply.type) {
      case "group":
        this.stats.transactions++;
        this.stats.commits += reply.results.length;
        this.stats.largestGroup = Math.max(this.stats.largestGroup, reply.results.length);
        for (const result of reply.results) this.settleCommit(result);
        return;
      case "result":
        this.take(reply.id)?.resolve(reply.value);
        return;
      case "error": {
        const p = this.take(reply.id);
        p?.reject(fromWire(reply.error, p.fallback));
        return;
      }
      case "opened":
      case "open_failed":
        return;
    }
  }

  private settleCommit(result: CommitResult): void {
    const p = this.take(result.id);
    if (p === undefined) return;
    if ("error" in result) {
      const error = fromWire(result.error, "commit_failed");
      this.commitFailed ??= error;
      p.reject(error);
      return;
    }
    const inputs = p.batch?.receipts ?? [];
    const count = "ids" in result ? result.ids.length : result.count;
    if (count !== inputs.length) {
      // the batch's receipts changed after commit was called: the stored ones cannot be told
      const error = new StoreError("store_failed", `Store ${this.path} stored ${count} receipts of a batch that now holds ${inputs.length}.`);
      this.commitFailed ??= error;
      p.reject(error);
      return;
    }
    p.resolve(
      "ids" in result ? inputs.map((r, j) => receiptRecord(r, result.ids[j] as number)) : inputs.map((r, j) => receiptRecord(r, result.first + j)),
    );
  }

  private fail(cause: string, e?: unknown): void {
    if (this.dead !== undefined) return;
    this.dead = new StoreError("store_failed", `The thread of store ${this.path} ${cause}; nothing more is stored until a restart.`, { cause: e });
    const pending = [...this.pending.values()];
    this.pending.clear();
    this.worker.unref();
    for (const p of pending) p.reject(this.dead);
  }
}
