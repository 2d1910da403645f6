import type { MessageRecord, Receipt, ReceiptInput, ReceiptState } from "../store/types.ts";
import { encodeFrame, type FrameInit } from "../wire/index.ts";
import type { PublishResult } from "./delivery-types.ts";
import type { Device, EngineEnv, EngineParts, TurnPart } from "./engine-parts.ts";
import { MessagingError } from "./errors.ts";
import type { LinkState } from "./link-state.ts";
import { BatchBuilder, type BatchHolds } from "./write-batch.ts";

/** The turns handed to the store in one commit, waiting for it. */
interface FlushedTurn {
  readonly batch: BatchBuilder;
  readonly publishes: readonly PendingPublish[];
  readonly outbox: ReadonlyMap<LinkState, readonly Uint8Array[]>;
  readonly after: readonly (() => void)[];
}

interface PendingPublish {
  readonly result: PublishResult;
  readonly resolve: (r: PublishResult) => void;
  readonly reject: (e: Error) => void;
}

/**
 * One event-loop turn of the engine: the changes every part makes go into
 * one batch, the records for sessions into the outbox, the publishes wait for
 * their answer; `flush()` hands the batch to the store, and only once it is
 * durable are the turn's records sent and its publishers answered. Also the turn's budget of devices
 * whose pushes start (pumpPerTurn) and the devices waiting for a later turn.
 */
export class EngineTurn implements TurnPart {
  private readonly env: EngineEnv;
  private readonly parts: EngineParts;
  private readonly requestFlushHook: () => void;
  /** devices with pushes to start that a big fan-out left for the next turns */
  private readonly deferredPumps = new Set<Device>();
  private pumpedThisTurn = 0;

  /** the holds on a shared store, asked by every batch (the parts are filled in before any turn runs) */
  private readonly holds: BatchHolds = {
    fenceOf: (device) => this.parts.holds.fenceOf(device),
    removed: (device, messageId) => this.parts.holds.removed(device, messageId),
  };
  private batchBuilder = new BatchBuilder(this.holds);
  /** the turns of the commit in flight */
  private inFlightTurn: FlushedTurn | undefined;
  private issuedCount = 0;
  private outbox = new Map<LinkState, Uint8Array[]>();
  private publishes: PendingPublish[] = [];
  private afterFlushList: (() => void)[] = [];
  private flushRequested = false;
  private stoppedBy: Error | undefined;
  /** the commit in flight (at most one), settled once its turns are released or failed */
  private inFlight: Promise<void> | undefined;
  closing = false;

  constructor(env: EngineEnv, parts: EngineParts, requestFlush: () => void) {
    this.env = env;
    this.parts = parts;
    this.requestFlushHook = requestFlush;
  }

  get batch(): BatchBuilder {
    return this.batchBuilder;
  }

  get stopped(): Error | undefined {
    return this.stoppedBy;
  }

  get othersWaiting(): boolean {
    return this.deferredPumps.size > 0;
  }

  defer(dev: Device): void {
    this.deferredPumps.add(dev);
  }

  pumpSoon(q: Device, now: number): void {
    if (this.deferredPumps.size === 0 && this.pumpedThisTurn < this.env.options.pumpPerTurn) {
      this.pumpedThisTurn++;
      // a failure while pushing to one recipient fails that device's session, not the publish
      this.parts.sessions.isolated(q, () => this.parts.window.pump(q, now));
    } else this.deferredPumps.add(q);
  }

  touchCounters(dev: Device): void {
    this.batchBuilder.setCounters({ device: dev.id, lastSeq: dev.lastSeq, ackedSeq: dev.ackedSeq });
  }

  receipt(m: MessageRecord, device: string, state: ReceiptState, at: number, reason: string, seq: number): void {
    const r: ReceiptInput = { messageId: m.id, device, state, at, reason, seq, topic: m.topic };
    this.batchBuilder.addReceipt(r);
    this.wake();
  }

  send(ls: LinkState, frame: FrameInit): void {
    this.queueRecord(ls, encodeFrame(frame));
  }

  queueRecord(ls: LinkState, record: Uint8Array): void {
    if (ls.phase === "closed") return;
    const list = this.outbox.get(ls);
    if (list === undefined) this.outbox.set(ls, [record]);
    else list.push(record);
    this.wake();
  }

  dropRecords(ls: LinkState): void {
    this.outbox.delete(ls);
  }

  silence(ls: LinkState): void {
    this.outbox.delete(ls);
    (this.inFlightTurn?.outbox as Map<LinkState, readonly Uint8Array[]> | undefined)?.delete(ls);
  }

  get issued(): number {
    return this.issuedCount;
  }

  afterFlush(fn: () => void): void {
    this.afterFlushList.push(fn);
  }

  answerAfterCommit(result: PublishResult): Promise<PublishResult> {
    return new Promise<PublishResult>((resolve, reject) => {
      this.publishes.push({ result, resolve, reject });
      this.wake();
    });
  }

  wake(): void {
    if (this.flushRequested) return;
    this.flushRequested = true;
    this.requestFlushHook();
  }

  /**
   * Ends the engine's turn. With no commit in flight, the turn's batch goes to
   * the store, and once it is durable the turn's records are sent, its
   * after-flush actions run, its publishers are answered and its receipts
   * emitted ("released"). While a commit is in flight, the turn's changes,
   * records and answers gather with those of the turns after it and go to the
   * store as one batch as soon as that commit is durable: one commit in
   * flight at a time, so under load each commit carries many turns (group
   * commit on the engine's side: one hand-over to the store thread, one
   * savepoint, one answer for all of them) and when idle a turn's commit
   * starts at once. Order is kept: a turn is released after every turn before it.
   *
   * Every record of the batch was checked as it joined (see BatchBuilder), so
   * a failed commit is a failure of the store itself (I/O error, disk full):
   * it stops the engine (event "fatal"), since in-memory state is then ahead
   * of the store and only a restart from the store is consistent. That
   * commit's publishes and every publish gathered after it are rejected and
   * none of their records is sent.
   */
  flush(): void {
    this.flushRequested = false;
    if (this.stoppedBy) {
      this.rejectUnflushed(this.stoppedBy);
      return;
    }
    if (this.deferredPumps.size > 0) this.pumpDeferred();
    this.pumpedThisTurn = 0; // what this flush sends is the turn's budget
    // a commit in flight: this turn gathers with the next ones (handed over when it is durable)
    if (this.inFlight === undefined) this.handOver();
  }

  /** Something waits for the next commit or release. */
  private get gathered(): boolean {
    return !this.batchBuilder.empty || this.publishes.length > 0 || this.outbox.size > 0 || this.afterFlushList.length > 0;
  }

  /** Hands what gathered to the store (nothing is in flight), or releases it at once when it changed nothing. */
  private handOver(): void {
    const turn: FlushedTurn = {
      batch: this.batchBuilder,
      publishes: this.publishes,
      outbox: this.outbox,
      after: this.afterFlushList,
    };
    this.batchBuilder = new BatchBuilder(this.holds);
    this.publishes = [];
    this.outbox = new Map();
    this.afterFlushList = [];
    if (turn.batch.empty) {
      this.release(turn, []);
      return;
    }
    const ids = turn.batch.messageIdList();
    const lastCheck = this.env.ids.lastCheck;
    this.inFlightTurn = turn;
    this.issuedCount++;
    this.inFlight = this.commit(turn.batch)
      .then(
        (receipts) => {
          this.inFlight = undefined;
          this.inFlightTurn = undefined;
          if (this.stoppedBy) {
            this.rejectTurn(turn, this.stoppedBy);
            return;
          }
          this.env.ids.durable(ids, lastCheck);
          this.release(turn, receipts);
          // what gathered meanwhile goes now (not at the next flush: a driver may be idle)
          if (this.stoppedBy === undefined && this.gathered) this.handOver();
        },
        (e: unknown) => {
          this.inFlight = undefined;
          this.inFlightTurn = undefined;
          this.fail(turn, e instanceof Error ? e : new Error(String(e)));
        },
      )
      // release isolates each send, action and listener; should anything still throw, the engine goes on
      .catch((e: unknown) => {
        this.inFlight = undefined;
        this.env.reportFailure("device", "", e);
      });
  }

  /** Commits in flight (0 or 1; what gathers behind it is handed over when it is durable). */
  get pendingCommits(): number {
    return this.inFlight === undefined ? 0 : 1;
  }

  /** Resolves once every turn flushed so far is released (or failed). */
  async drained(): Promise<void> {
    while (this.inFlight !== undefined) await this.inFlight;
  }

  /** The store's commit; a store that throws instead of rejecting fails the same way. */
  private commit(batch: BatchBuilder): Promise<Receipt[]> {
    try {
      return this.env.store.commit(batch.build());
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private release(turn: FlushedTurn, receipts: readonly Receipt[]): void {
    for (const [ls, records] of turn.outbox) {
      if (ls.phase !== "closed" && records.length > 0) this.parts.sessions.isolatedLink(ls, () => ls.link.send(records));
    }
    for (const fn of turn.after) {
      try {
        fn();
      } catch (e) {
        this.env.reportFailure("device", "", e);
      }
    }
    for (const p of turn.publishes) {
      this.env.observer.published(p.result.recipients);
      p.resolve(p.result);
    }
    for (const r of receipts) this.env.notify("receipt", r);
  }

  /** The commit of `turn` failed: the engine stops; nothing of the turn leaves. */
  private fail(turn: FlushedTurn, error: Error): void {
    const first = this.stoppedBy === undefined;
    this.stoppedBy ??= error;
    this.rejectTurn(turn, error);
    this.rejectUnflushed(error);
    if (first) this.env.fatal(error);
  }

  private rejectTurn(turn: Pick<FlushedTurn, "publishes">, error: Error): void {
    const failure = new MessagingError("internal", `the store refused a commit: ${error.message}`, { cause: error });
    for (const p of turn.publishes) p.reject(failure);
  }

  /** After a store failure: the publishes queued since the last flush are rejected too. */
  private rejectUnflushed(error: Error): void {
    const publishes = this.publishes;
    this.publishes = [];
    this.batchBuilder = new BatchBuilder(this.holds);
    this.outbox = new Map();
    this.afterFlushList = [];
    this.rejectTurn({ publishes }, error);
  }

  /**
   * Starts the pushes of up to pumpPerTurn devices that wait (a fan-out's, or
   * those maxInflight held back); asks for another turn if more wait and there
   * is room. Without room, acks (or sessions that end) free it and wake the engine.
   */
  private pumpDeferred(): void {
    const now = this.env.clock.now();
    const { options } = this.env;
    const window = this.parts.window;
    for (const q of this.deferredPumps) {
      if (this.pumpedThisTurn >= options.pumpPerTurn || window.inflightOnline >= options.maxInflight) break;
      this.deferredPumps.delete(q);
      this.pumpedThisTurn++;
      this.parts.sessions.isolated(q, () => window.pump(q, now, true));
    }
    if (this.deferredPumps.size > 0 && window.inflightOnline < options.maxInflight) this.wake();
  }
}
