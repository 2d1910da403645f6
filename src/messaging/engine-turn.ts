import type { MessageRecord, Receipt, ReceiptInput, ReceiptState } from "../store/types.ts";
import { encodeFrame, type FrameInit } from "../wire/index.ts";
import type { PublishResult } from "./delivery-types.ts";
import type { Device, EngineEnv, EngineParts, TurnPart } from "./engine-parts.ts";
import { MessagingError } from "./errors.ts";
import type { LinkState } from "./link-state.ts";
import { BatchBuilder } from "./write-batch.ts";

interface PendingPublish {
  readonly result: PublishResult;
  readonly resolve: (r: PublishResult) => void;
  readonly reject: (e: Error) => void;
}

/**
 * One event-loop turn of the engine: the changes every part makes go into
 * one batch, the records for sessions into the outbox, the publishes wait for
 * their answer; `flush()` commits the batch *before* any record of the turn
 * is sent or any publisher is answered. Also the turn's budget of devices
 * whose pushes start (pumpPerTurn) and the devices waiting for a later turn.
 */
export class EngineTurn implements TurnPart {
  private readonly env: EngineEnv;
  private readonly parts: EngineParts;
  private readonly requestFlushHook: () => void;
  /** devices with pushes to start that a big fan-out left for the next turns */
  private readonly deferredPumps = new Set<Device>();
  private pumpedThisTurn = 0;

  private batchBuilder = new BatchBuilder();
  private outbox = new Map<LinkState, Uint8Array[]>();
  private publishes: PendingPublish[] = [];
  private afterFlushList: (() => void)[] = [];
  private flushRequested = false;
  private stoppedBy: Error | undefined;
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
   * Commits the turn's batch, then sends its records and answers its
   * publishers. Every record of the batch was checked as it joined (see
   * BatchBuilder), so a failed commit is a failure of the store itself (I/O
   * error, disk full): it stops the engine (event "fatal"), since in-memory
   * state is then ahead of the store and only a restart from the store is
   * consistent.
   */
  flush(): void {
    this.flushRequested = false;
    if (this.stoppedBy) return;
    if (this.deferredPumps.size > 0) this.pumpDeferred();
    this.pumpedThisTurn = 0; // what this flush sends is the turn's budget
    const batch = this.batchBuilder;
    const publishes = this.publishes;
    const outbox = this.outbox;
    const after = this.afterFlushList;
    this.batchBuilder = new BatchBuilder();
    this.publishes = [];
    this.outbox = new Map();
    this.afterFlushList = [];
    let receipts: Receipt[] = [];
    if (!batch.empty) {
      try {
        receipts = this.env.store.commit(batch.build());
      } catch (e) {
        const error = e instanceof Error ? e : new Error(String(e));
        this.stoppedBy = error;
        const failure = new MessagingError("internal", `the store refused a commit: ${error.message}`, { cause: error });
        for (const p of publishes) p.reject(failure);
        this.env.fatal(error);
        return;
      }
    }
    for (const [ls, records] of outbox) {
      if (ls.phase !== "closed" && records.length > 0) this.parts.sessions.isolatedLink(ls, () => ls.link.send(records));
    }
    for (const fn of after) {
      try {
        fn();
      } catch (e) {
        this.env.reportFailure("device", "", e);
      }
    }
    for (const p of publishes) {
      this.env.observer.published(p.result.recipients);
      p.resolve(p.result);
    }
    for (const r of receipts) this.env.notify("receipt", r);
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
