/**
 * Content signatures off the event loop: a small pool of worker threads
 * (signing-worker.ts) that sign publishes with the content ring's current key.
 *
 * - Batched per turn: what `sign` is asked during one event-loop turn is sent
 *   in the check phase of that turn (setImmediate), at most one message per
 *   worker; a turn with fewer than MIN_PER_WORKER signatures per worker uses
 *   fewer workers.
 * - Keys: a worker gets the current key's private JWK with its first batch
 *   and again only when the ring's current kid changed (rotation), and
 *   imports it once.
 * - Failures: a worker that throws outside one item, or exits, fails the
 *   batches it holds (their `sign` promises reject; the engine answers those
 *   publishes 500 internal); the pool counts it and starts a replacement (at
 *   once when the failed worker had started, after RESPAWN_DELAY_MS when it
 *   never did). While no worker runs, signatures are made on the main thread.
 */
import { Worker } from "node:worker_threads";
import { signContentWith, type ContentSigner } from "./content-signing.ts";
import type { KeyRing } from "./key-ring.ts";
import type { SignedFields } from "./signed-content.ts";
import type { SignBatch, SignResults } from "./signing-worker.ts";

/** A batch smaller than this per worker goes to fewer workers (a message costs about as much as a few signatures). */
const MIN_PER_WORKER = 8;
/** A worker that died before it started is replaced after this long (not in a tight loop). */
const RESPAWN_DELAY_MS = 1000;

const WORKER_URL = new URL(import.meta.url.endsWith(".ts") ? "./signing-worker.ts" : "./signing-worker.js", import.meta.url);

/** The ring members the pool reads: the current kid and key. */
export type SigningKeySource = Pick<KeyRing, "currentKid" | "signingKeyMaterial" | "signingKey">;

export interface SigningPoolStats {
  /** workers the pool runs (configured) */
  readonly workers: number;
  /** signatures made by workers */
  signed: number;
  /** batches posted to workers */
  batches: number;
  /** signatures made on the main thread while no worker ran */
  signedOnMainThread: number;
  /** workers that crashed, threw or exited and were replaced */
  workerFailures: number;
  /** signatures (publishes) failed because their worker failed */
  failedByWorkerFailure: number;
}

interface Pending {
  readonly fields: SignedFields;
  readonly resolve: (signature: string) => void;
  readonly reject: (e: Error) => void;
}

interface Slot {
  worker: Worker | undefined;
  /** it reached "online" */
  started: boolean;
  /** the kid of the key it holds */
  kid: string | undefined;
  /** batches posted and not answered, by id */
  readonly batches: Map<number, Pending[]>;
  /** signatures in those batches */
  inflight: number;
}

export class SigningPool implements ContentSigner {
  readonly stats: SigningPoolStats;
  private readonly ring: SigningKeySource;
  private readonly slots: Slot[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private queue: Pending[] = [];
  private flushQueued = false;
  private nextBatch = 1;
  private closed = false;

  private constructor(ring: SigningKeySource, workers: number) {
    this.ring = ring;
    this.stats = { workers, signed: 0, batches: 0, signedOnMainThread: 0, workerFailures: 0, failedByWorkerFailure: 0 };
  }

  /**
   * Starts `workers` (≥ 1) worker threads and resolves once all run. A worker
   * that cannot start fails the start: the pool is closed and the error says so.
   */
  static async start(ring: SigningKeySource, workers: number): Promise<SigningPool> {
    if (!Number.isSafeInteger(workers) || workers < 1) throw new RangeError(`A signing pool needs at least one worker, not ${workers}.`);
    const pool = new SigningPool(ring, workers);
    const started: Promise<void>[] = [];
    for (let i = 0; i < workers; i++) {
      const slot: Slot = { worker: undefined, started: false, kid: undefined, batches: new Map(), inflight: 0 };
      pool.slots.push(slot);
      const w = pool.spawn(slot);
      started.push(
        new Promise<void>((resolve, reject) => {
          w.once("online", () => resolve());
          w.once("error", reject);
          w.once("exit", (code) => reject(new Error(`the worker exited with code ${code}`)));
        }),
      );
    }
    try {
      await Promise.all(started);
    } catch (e) {
      await pool.close();
      throw new Error(`The content-signing worker pool cannot start: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    return pool;
  }

  /** Signs in a worker, batched with the other signatures of this turn. Rejects when the worker fails or the pool is closed. */
  sign(fields: SignedFields): Promise<string> {
    if (this.closed) return Promise.reject(new Error("the content-signing pool is closed"));
    return new Promise<string>((resolve, reject) => {
      this.queue.push({ fields, resolve, reject });
      if (!this.flushQueued) {
        this.flushQueued = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Sends what waits to the workers now (normally in the check phase of the turn that asked). */
  flush(): void {
    this.flushQueued = false;
    const queue = this.queue;
    if (queue.length === 0) return;
    this.queue = [];
    const live = this.slots.filter((s) => s.worker !== undefined).sort((a, b) => a.inflight - b.inflight);
    if (live.length === 0) {
      for (const p of queue) this.signHere(p);
      return;
    }
    const n = Math.min(live.length, Math.ceil(queue.length / MIN_PER_WORKER));
    const per = Math.ceil(queue.length / n);
    for (let i = 0; i < n; i++) {
      const items = queue.slice(i * per, (i + 1) * per);
      if (items.length > 0) this.post(live[i] as Slot, items);
    }
  }

  /** Workers running now (a failed one is counted again once replaced). */
  get liveWorkers(): number {
    return this.slots.filter((s) => s.worker !== undefined).length;
  }

  /**
   * Ends worker `index` the way a crash does: the batches it holds fail, it is
   * counted and replaced. For tests and for an operator's diagnostics.
   */
  terminateWorker(index: number): void {
    const slot = this.slots[index];
    if (slot?.worker !== undefined) this.fail(slot, new Error("the worker was terminated"));
  }

  /** Stops every worker; what waits or is in flight is rejected. Call after the last publish. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const closing = new Error("the content-signing pool is closed");
    for (const p of this.queue) p.reject(closing);
    this.queue = [];
    const ending: Promise<number>[] = [];
    for (const slot of this.slots) {
      const w = slot.worker;
      slot.worker = undefined;
      for (const batch of slot.batches.values()) for (const p of batch) p.reject(closing);
      slot.batches.clear();
      slot.inflight = 0;
      if (w !== undefined) ending.push(w.terminate());
    }
    await Promise.all(ending);
  }

  private spawn(slot: Slot): Worker {
    const w = new Worker(WORKER_URL);
    slot.worker = w;
    slot.started = false;
    slot.kid = undefined;
    w.on("online", () => {
      if (slot.worker === w) slot.started = true;
    });
    w.on("message", (m: SignResults) => {
      if (slot.worker === w) this.answered(slot, m);
    });
    w.on("error", (e) => {
      if (slot.worker === w) this.fail(slot, e);
    });
    w.on("exit", (code) => {
      if (slot.worker === w) this.fail(slot, new Error(`the worker exited with code ${code}`));
    });
    return w;
  }

  private post(slot: Slot, items: Pending[]): void {
    const w = slot.worker as Worker;
    const id = this.nextBatch++;
    const kid = this.ring.currentKid;
    const batch: SignBatch =
      slot.kid === kid ? { id, items: items.map((p) => p.fields) } : { id, key: this.ring.signingKeyMaterial(), items: items.map((p) => p.fields) };
    try {
      w.postMessage(batch);
    } catch (e) {
      // a field that cannot be cloned: only this batch fails, the worker is fine
      const error = new Error(`the publish cannot be sent to a signing worker: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      for (const p of items) p.reject(error);
      return;
    }
    slot.kid = kid;
    slot.batches.set(id, items);
    slot.inflight += items.length;
    this.stats.batches++;
  }

  private answered(slot: Slot, m: SignResults): void {
    const items = slot.batches.get(m.id);
    if (items === undefined) return;
    slot.batches.delete(m.id);
    slot.inflight -= items.length;
    for (const [i, p] of items.entries()) {
      const r = m.results[i];
      if (typeof r === "string") {
        this.stats.signed++;
        p.resolve(r);
      } else p.reject(new Error(`the content cannot be signed: ${r?.error ?? "no answer from the signing worker"}`));
    }
  }

  /** One worker failed: its batches fail, it is replaced. */
  private fail(slot: Slot, cause: unknown): void {
    const w = slot.worker;
    if (w === undefined) return;
    slot.worker = undefined;
    this.stats.workerFailures++;
    const error = new Error(`the content-signing worker failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    for (const batch of slot.batches.values()) {
      this.stats.failedByWorkerFailure += batch.length;
      for (const p of batch) p.reject(error);
    }
    slot.batches.clear();
    slot.inflight = 0;
    void w.terminate();
    if (slot.started) this.respawn(slot);
    else this.respawnLater(slot);
  }

  private respawn(slot: Slot): void {
    if (this.closed || slot.worker !== undefined) return;
    try {
      this.spawn(slot);
    } catch {
      this.respawnLater(slot);
    }
  }

  private respawnLater(slot: Slot): void {
    if (this.closed) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.respawn(slot);
    }, RESPAWN_DELAY_MS);
    t.unref();
    this.timers.add(t);
  }

  private signHere(p: Pending): void {
    try {
      const signature = signContentWith(this.ring.signingKey(), p.fields);
      this.stats.signedOnMainThread++;
      p.resolve(signature);
    } catch (e) {
      p.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }
}
