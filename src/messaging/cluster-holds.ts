import type { ClusterEvent, DeviceHold, StoredQueue } from "../store/cluster-types.ts";
import type { DeliveryRecord, DeviceCounters, MessageRecord } from "../store/types.ts";
import { loadSent, pendingEntry, type PendingEntry } from "./device-queue.ts";
import type { Device, EngineEnv, EngineParts, HoldsPart } from "./engine-parts.ts";

/** Removals remembered per device beyond which those every read now sees are forgotten. */
const GONE_PRUNE_AT = 32;

/** What the holds need of the engine's other parts beyond EngineParts. */
export interface HoldsHooks {
  /** a stored order number: later ones are higher (Publishing.loadedOrder) */
  loadedOrder(order: number): void;
  /** the device's session moved to another node: Bye SESSION_REPLACED, nothing more sent to it */
  moved(dev: Device): void;
  /** apply another node's subscription change to the topic index */
  subscriptionChanged(device: string, topic: string, subscribed: boolean): void;
  /** read every subscription again (resync) */
  reloadSubscriptions(): Promise<void>;
  /** the registry re-reads one device */
  registryChanged(device: string): Promise<unknown>;
}

/**
 * Puts one stored delivery of `dev` into its queue, as a start from the store
 * does: with a seq in flight (a tombstone stays one), without one pending, and
 * its expiry timer set. Returns the pending entry (for the checks on load).
 */
export function addStoredDelivery(env: EngineEnv, dev: Device, d: DeliveryRecord, message: MessageRecord, now: number): PendingEntry | undefined {
  if (d.seq > 0) {
    const entry = loadSent(message, dev, d.order, d.seq, d.tombstone);
    if (d.seq > dev.lastSeq) dev.lastSeq = d.seq; // never reuse a seq the store shows as assigned
    dev.addInflight(entry);
    if (entry.state !== "tombstone") env.timers.schedule(entry, Math.max(now, message.expiresAt));
    return undefined;
  }
  const entry = pendingEntry(message, dev, d.order);
  dev.addPending(entry);
  env.timers.schedule(entry, Math.max(now, message.expiresAt));
  return entry;
}

/** Stored deliveries in the order a queue loads them: in flight by seq first, then pending by order. */
export function loadOrder(a: DeliveryRecord, b: DeliveryRecord): number {
  return (a.seq || Infinity) - (b.seq || Infinity) || a.order - b.order;
}

/** Counters as the store holds them: an inconsistent pair (acked above assigned) is read as assigned. */
export function loadCounters(dev: Device, c: DeviceCounters): void {
  dev.lastSeq = c.lastSeq;
  dev.ackedSeq = Math.min(c.ackedSeq, c.lastSeq);
}

/**
 * The device holds of a node on a shared store (cluster-types.ts; docs/delivery.md
 * section 18). A device's queue is in memory only while this node holds it:
 * a Hello claims it (loading its stored queue and applying what nobody could
 * while nobody held it: expiry, collapse keys, the queue cap), the end of its
 * session gives it up after the turn's commit, and a claim by another node
 * ("taken") drops it at once. Other nodes' publishes to a held device are
 * read from the store ("queued") and merged. Without a shared store every
 * device is held and none of this runs.
 */
export class Holds implements HoldsPart {
  private readonly env: EngineEnv;
  private readonly parts: EngineParts;
  private readonly hooks: HoldsHooks;
  /** held device -> epoch of its hold */
  private readonly epochs = new Map<string, number>();
  private readonly claims = new Map<string, Promise<void>>();
  /** held device -> message id -> index of the batch removing its delivery (until a read sees that batch) */
  private readonly gone = new Map<string, Map<string, number>>();
  /** devices whose queue is being read again; true: read once more when done */
  private readonly merging = new Map<string, boolean>();
  /** devices whose queue is being read again -> batches handed to the store when the read was issued */
  private readonly mergeIssued = new Map<string, number>();
  /** devices being claimed whose queue is read again once loaded (deliveries the claim's read may have missed) */
  private readonly afterClaim = new Set<string>();
  /** devices being claimed -> the newest epoch another node was told to have taken them at meanwhile */
  private readonly takenWhileClaiming = new Map<string, number>();
  private readonly unsubscribe: () => void;

  constructor(env: EngineEnv, parts: EngineParts, hooks: HoldsHooks) {
    this.env = env;
    this.parts = parts;
    this.hooks = hooks;
    this.unsubscribe = env.cluster?.onClusterEvent((e) => this.event(e)) ?? (() => undefined);
  }

  /** Stops listening to the other nodes. */
  close(): void {
    this.unsubscribe();
  }

  held(device: string): boolean {
    return this.env.cluster === undefined || this.epochs.has(device);
  }

  fenceOf(device: string): number | undefined {
    if (this.env.cluster === undefined) return undefined;
    return this.epochs.get(device) ?? 0;
  }

  /** Devices held now (cluster mode). */
  heldDevices(): string[] {
    return [...this.epochs.keys()];
  }

  claim(device: string): Promise<void> {
    const cluster = this.env.cluster;
    if (cluster === undefined || this.epochs.has(device)) return Promise.resolve();
    let running = this.claims.get(device);
    if (running === undefined) {
      running = cluster
        .claimDevice(device)
        .then((hold) => this.load(hold))
        .finally(() => {
          this.claims.delete(device);
          this.takenWhileClaiming.delete(device);
          this.afterClaim.delete(device);
        });
      this.claims.set(device, running);
    }
    return running;
  }

  queuedUnheld(device: string): void {
    // the store tells nobody of this node's own inserts: a claim of ours in progress may not have read it
    if (this.claims.has(device)) this.parts.turn.afterFlush(() => this.merge(device));
  }

  removed(device: string, messageId: string): void {
    if (this.env.cluster === undefined || !this.epochs.has(device)) return;
    let ids = this.gone.get(device);
    if (ids === undefined) this.gone.set(device, (ids = new Map()));
    ids.set(messageId, this.parts.turn.issued);
    // a removal in a batch already handed to the store is seen by every read issued from now on:
    // only a read in progress may still need it (a device acked for hours keeps no list of its acks)
    if (ids.size > GONE_PRUNE_AT) {
      const seen = this.mergeIssued.get(device) ?? this.parts.turn.issued;
      for (const [id, batch] of ids) if (batch < seen) ids.delete(id);
    }
  }

  offline(dev: Device): void {
    const cluster = this.env.cluster;
    if (cluster === undefined || !this.epochs.has(dev.id)) return;
    const { turn } = this.parts;
    turn.afterFlush(() => {
      const epoch = this.epochs.get(dev.id);
      // a session bound it again meanwhile (or it was taken): kept
      if (dev.link !== undefined || epoch === undefined) return;
      this.drop(dev);
      this.env.observer.holdEvent?.("released");
      cluster.releaseDevice(dev.id, epoch).catch((e: unknown) => this.env.reportFailure("device", dev.id, e));
    });
    turn.wake();
  }

  /** The claim's answer: the stored queue goes into memory, then what could not be applied while nobody held it. */
  private load(hold: DeviceHold): void {
    if (this.parts.turn.stopped !== undefined) return;
    // another node claimed it after this claim (its event came before our answer): not ours
    const later = this.takenWhileClaiming.get(hold.device);
    if (later !== undefined && later >= hold.epoch) {
      this.env.observer.holdEvent?.("taken");
      return;
    }
    const { devices, clock } = this.env;
    const now = clock.now();
    const dev = devices.queue(hold.device);
    this.clear(dev);
    this.epochs.set(hold.device, hold.epoch);
    try {
      if (hold.counters !== undefined) loadCounters(dev, hold.counters);
      const messages = new Map(hold.messages.map((m) => [m.id, m]));
      for (const d of [...hold.deliveries].sort(loadOrder)) {
        const message = messages.get(d.messageId);
        if (message === undefined || d.device !== hold.device) continue;
        this.hooks.loadedOrder(d.order);
        addStoredDelivery(this.env, dev, d, message, now);
      }
      this.env.observer.holdEvent?.("claimed");
      this.settle(dev, now);
    } catch (e) {
      // a queue that could not be loaded is not held half-loaded: given up (the Hello fails with it)
      this.offline(dev);
      throw e;
    }
    this.parts.turn.wake();
    if (this.afterClaim.delete(hold.device)) this.merge(hold.device);
  }

  /**
   * What a queue gets on load or merge: expired messages out (a tombstone
   * for one with a seq), older unsent ones with a collapse key that a newer
   * one has dropped, and the queue cap applied (queueFullPolicy).
   */
  private settle(dev: Device, now: number): void {
    const { window, turn } = this.parts;
    const { timers, options } = this.env;
    for (const e of [...dev.byMessage.values()]) {
      if (e.message.expiresAt > now || e.state === "tombstone") continue;
      timers.cancel(e);
      window.expire(e, now);
    }
    const newest = new Map<string, PendingEntry>();
    for (const e of dev.pending) {
      const key = e.message.collapseKey;
      if (key === "") continue;
      const other = newest.get(key);
      if (other === undefined || e.order > other.order) newest.set(key, e);
    }
    for (const e of [...dev.pending]) {
      const key = e.message.collapseKey;
      if (key === "" || newest.get(key) === e) continue;
      dev.removePending(e);
      window.dropUnsent(e, now, "collapsed");
    }
    while (dev.depth > options.maxQueue) {
      if (options.queueFullPolicy === "drop-oldest") {
        const oldest = dev.oldestPending();
        if (oldest === undefined) break;
        dev.removePending(oldest);
        window.dropUnsent(oldest, now, "evicted");
        continue;
      }
      // reject: the newest queued beyond the cap are refused, as a publish to a full queue is
      let last: PendingEntry | undefined;
      for (const e of dev.pending) if (last === undefined || e.order > last.order) last = e;
      if (last === undefined) break;
      dev.removePending(last);
      timers.cancel(last);
      turn.batch.removeDelivery(dev.id, last.message.id);
      turn.receipt(last.message, dev.id, "rejected", now, "queue_full", 0);
    }
  }

  /** Another node queued deliveries for devices this node holds: read them, add what is new, push. */
  private merge(device: string): void {
    const cluster = this.env.cluster;
    if (cluster === undefined) return;
    if (!this.epochs.has(device)) {
      // being claimed: the claim's read may be older than what was queued (its answer comes first, then a read)
      if (this.claims.has(device)) this.afterClaim.add(device);
      return;
    }
    if (this.merging.has(device)) {
      this.merging.set(device, true);
      return;
    }
    this.merging.set(device, false);
    const epoch = this.epochs.get(device);
    const issued = this.parts.turn.issued;
    this.mergeIssued.set(device, issued);
    cluster
      .readQueue(device)
      .then((q) => {
        if (this.epochs.get(device) === epoch) this.mergeQueue(device, q, issued);
      })
      .catch((e: unknown) => this.env.reportFailure("device", device, e))
      .finally(() => {
        const again = this.merging.get(device) === true;
        this.merging.delete(device);
        this.mergeIssued.delete(device);
        if (again) this.merge(device);
      });
  }

  /** `issued`: batches handed to the store when the read was: removals of later ones are not in `q`. */
  private mergeQueue(device: string, q: StoredQueue, issued: number): void {
    const dev = this.env.devices.queue(device);
    const now = this.env.clock.now();
    const gone = this.gone.get(device);
    const messages = new Map(q.messages.map((m) => [m.id, m]));
    let added = false;
    for (const d of [...q.deliveries].sort(loadOrder)) {
      // only unsent deliveries are another node's; one this node removed since is not taken back
      if (d.seq !== 0 || d.device !== device || dev.byMessage.has(d.messageId)) continue;
      if ((gone?.get(d.messageId) ?? -1) >= issued) continue;
      const message = messages.get(d.messageId);
      if (message === undefined) continue;
      this.hooks.loadedOrder(d.order);
      addStoredDelivery(this.env, dev, d, message, now);
      added = true;
    }
    if (gone !== undefined) {
      for (const [id, batch] of gone) if (batch < issued) gone.delete(id);
      if (gone.size === 0) this.gone.delete(device);
    }
    if (!added) return;
    this.env.observer.holdEvent?.("merged");
    this.parts.sessions.isolated(dev, () => {
      this.settle(dev, now);
      if (dev.link !== undefined) this.parts.turn.pumpSoon(dev, now);
    });
    this.parts.turn.wake();
  }

  /** Another node claimed a device: dropped at once (its session moved), nothing more written for it. */
  private taken(device: string, epoch: number): void {
    const ours = this.epochs.get(device);
    if (ours === undefined && this.claims.has(device)) {
      this.takenWhileClaiming.set(device, Math.max(epoch, this.takenWhileClaiming.get(device) ?? 0));
      return;
    }
    // the event names the new claim's epoch (or the one it ended): a claim of ours after it stays
    if (ours === undefined || ours > epoch) return;
    this.epochs.delete(device);
    const dev = this.env.devices.queue(device);
    this.env.observer.holdEvent?.("taken");
    if (dev.link !== undefined) this.hooks.moved(dev);
    this.drop(dev);
    this.parts.turn.wake();
  }

  /** The device's queue leaves memory (its subscriptions and registry topics stay: the topic index is the node's). */
  private drop(dev: Device): void {
    this.epochs.delete(dev.id);
    this.gone.delete(dev.id);
    this.clear(dev);
  }

  private clear(dev: Device): void {
    const { timers } = this.env;
    for (const e of [...dev.byMessage.values()]) {
      timers.cancel(e);
      if (e.state === "pending") dev.removePending(e);
      else dev.removeInflight(e);
    }
    timers.cancel(dev);
    dev.lastSeq = 0;
    dev.ackedSeq = 0;
  }

  /**
   * After events may have been missed: a device another node claimed meanwhile
   * (its "taken" was lost) is dropped as on "taken"; every other held device's
   * queue is read again.
   */
  private checkHolds(): void {
    const cluster = this.env.cluster;
    if (cluster === undefined || this.epochs.size === 0) return;
    const asked = new Map(this.epochs);
    cluster
      .holders([...asked.keys()])
      .then((holders) => {
        for (const [device, epoch] of asked) {
          if (this.epochs.get(device) !== epoch) continue;
          if (holders.get(device) === cluster.instance) this.merge(device);
          else this.taken(device, epoch);
        }
      })
      .catch((e: unknown) => this.env.reportFailure("device", "", e));
  }

  private event(e: ClusterEvent): void {
    if (this.parts.turn.stopped !== undefined) return;
    try {
      switch (e.kind) {
        case "queued":
          for (const d of e.devices) this.merge(d);
          return;
        case "taken":
          this.taken(e.device, e.epoch);
          return;
        case "subscriptions":
          for (const c of e.changes) this.hooks.subscriptionChanged(c.device, c.topic, c.subscribed);
          return;
        case "registry":
          this.hooks.registryChanged(e.device).catch((err: unknown) => this.env.reportFailure("device", e.device, err));
          return;
        case "resync":
          this.hooks.reloadSubscriptions().catch((err: unknown) => this.env.reportFailure("device", "", err));
          this.checkHolds();
          return;
        case "receipts":
          return; // the daemon's receipt streams read these
      }
    } catch (err) {
      this.env.reportFailure("device", "", err);
    }
  }
}
