import type { MessageRecord } from "../store/types.ts";
import { RttEstimator, type RttOptions } from "./rtt-estimator.ts";

/** One message queued for one device. */
export class Entry {
  readonly kind = "entry";
  readonly message: MessageRecord;
  readonly queue: DeviceQueue;
  readonly order: number;
  /** 0 until first transmission */
  seq = 0;
  /** expired after its seq was assigned: sent as a tombstone until acked */
  tombstone = false;
  /** selectively acked: kept until the cumulative ack passes it, retransmitted only as the window's head */
  sacked = false;
  transmissions = 0;
  /** retransmission timeouts in a row since the device last made progress (the backoff exponent) */
  timeouts = 0;
  /** time of the latest transmission */
  sentAt = 0;
  /** time of the first transmission by this process (0: unknown, e.g. sent before a restart) */
  firstSentAt = 0;
  /** retransmission deadline; 0 when none */
  dueAt = 0;
  /** the encoded Push, so retransmissions are byte for byte the same */
  frame: Uint8Array | undefined;

  constructor(message: MessageRecord, queue: DeviceQueue, order: number) {
    this.message = message;
    this.queue = queue;
    this.order = order;
  }
}

/**
 * The server's delivery state for one device: unsent messages by priority
 * then age, pushes in flight by seq, the RTT estimate, and the session the
 * device is online on.
 */
export class DeviceQueue<L = unknown> {
  readonly kind = "device";
  readonly id: string;
  lastSeq = 0;
  ackedSeq = 0;
  /** unsent entries: priority descending, then order ascending */
  readonly pending: Entry[] = [];
  /** entries with a seq, not yet cumulatively acked; Map order is seq order */
  readonly inflight = new Map<number, Entry>();
  /** every entry of this queue by message id */
  readonly byMessage = new Map<string, Entry>();
  readonly rtt: RttEstimator;
  /** the session the device is online on */
  link: L | undefined;
  /** topics the device subscribed to itself */
  readonly subscriptions = new Set<string>();
  /** topics the registry assigns */
  registryTopics: readonly string[] = [];
  /** last time anything was heard from the device, ms; 0 = never */
  lastSeen = 0;

  constructor(id: string, rtt: RttOptions) {
    this.id = id;
    this.rtt = new RttEstimator(rtt);
  }

  /** messages queued or in flight */
  get depth(): number {
    return this.byMessage.size;
  }

  addPending(entry: Entry): void {
    const p = entry.message.priority;
    const list = this.pending;
    // most messages share a priority and arrive in order: search from the end
    let i = list.length;
    while (i > 0) {
      const prev = list[i - 1] as Entry;
      if (prev.message.priority > p || (prev.message.priority === p && prev.order < entry.order)) break;
      i--;
    }
    list.splice(i, 0, entry);
    this.byMessage.set(entry.message.id, entry);
  }

  removePending(entry: Entry): void {
    const i = this.pending.indexOf(entry);
    if (i >= 0) this.pending.splice(i, 1);
    this.byMessage.delete(entry.message.id);
  }

  /** An unsent entry with this collapse key. */
  pendingWithCollapseKey(key: string): Entry | undefined {
    for (const e of this.pending) if (e.message.collapseKey === key) return e;
    return undefined;
  }

  /** The oldest unsent entry (lowest order). */
  oldestPending(): Entry | undefined {
    let oldest: Entry | undefined;
    for (const e of this.pending) if (oldest === undefined || e.order < oldest.order) oldest = e;
    return oldest;
  }

  /** Adds an entry whose seq is assigned. */
  addInflight(entry: Entry): void {
    this.inflight.set(entry.seq, entry);
    this.byMessage.set(entry.message.id, entry);
  }

  removeInflight(entry: Entry): void {
    this.inflight.delete(entry.seq);
    this.byMessage.delete(entry.message.id);
  }

  /** Earliest retransmission deadline of a push in flight; undefined when none. */
  nextDue(): number | undefined {
    let min: number | undefined;
    for (const e of this.inflight.values()) {
      if (e.dueAt === 0) continue;
      if (min === undefined || e.dueAt < min) min = e.dueAt;
    }
    return min;
  }
}
