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

const NO_ENTRIES: readonly Entry[] = Object.freeze([]);
const NO_INFLIGHT: ReadonlyMap<number, Entry> = new Map();
const NO_MESSAGES: ReadonlyMap<string, Entry> = new Map();
const NO_TOPICS: ReadonlySet<string> = new Set();
const NO_REGISTRY_TOPICS: readonly string[] = Object.freeze([]);

/**
 * The server's delivery state for one device: unsent messages by priority
 * then age, pushes in flight by seq, the RTT estimate, and the session the
 * device is online on.
 *
 * A daemon holds one per registered device and most are idle, so the
 * collections and the RTT estimator exist only while used: the lists and maps
 * are created by the first entry and dropped when the last one goes, the
 * estimator by the first push. Readers get shared empty collections meanwhile;
 * every change goes through the methods.
 */
export class DeviceQueue<L = unknown> {
  readonly kind = "device";
  readonly id: string;
  lastSeq = 0;
  ackedSeq = 0;
  private pendingList: Entry[] | undefined;
  private inflightMap: Map<number, Entry> | undefined;
  private byMessageMap: Map<string, Entry> | undefined;
  private subscribed: Set<string> | undefined;
  private rttEstimator: RttEstimator | undefined;
  private readonly rttOptions: RttOptions;
  /** the session the device is online on */
  link: L | undefined;
  /** topics the registry assigns */
  registryTopics: readonly string[] = NO_REGISTRY_TOPICS;
  /** last time anything was heard from the device, ms; 0 = never */
  lastSeen = 0;

  /** `rtt` is shared by every queue (not copied). */
  constructor(id: string, rtt: RttOptions) {
    this.id = id;
    this.rttOptions = rtt;
  }

  /** unsent entries: priority descending, then order ascending */
  get pending(): readonly Entry[] {
    return this.pendingList ?? NO_ENTRIES;
  }

  /** entries with a seq, not yet cumulatively acked; Map order is seq order */
  get inflight(): ReadonlyMap<number, Entry> {
    return this.inflightMap ?? NO_INFLIGHT;
  }

  /** every entry of this queue by message id */
  get byMessage(): ReadonlyMap<string, Entry> {
    return this.byMessageMap ?? NO_MESSAGES;
  }

  /** topics the device subscribed to itself */
  get subscriptions(): ReadonlySet<string> {
    return this.subscribed ?? NO_TOPICS;
  }

  /** The RTT estimate, made at the first use (the first push). */
  get rtt(): RttEstimator {
    return (this.rttEstimator ??= new RttEstimator(this.rttOptions));
  }

  /** messages queued or in flight */
  get depth(): number {
    return this.byMessageMap?.size ?? 0;
  }

  subscribe(topic: string): void {
    (this.subscribed ??= new Set()).add(topic);
  }

  unsubscribe(topic: string): void {
    const s = this.subscribed;
    if (s === undefined) return;
    s.delete(topic);
    if (s.size === 0) this.subscribed = undefined;
  }

  addPending(entry: Entry): void {
    const p = entry.message.priority;
    const list = (this.pendingList ??= []);
    // most messages share a priority and arrive in order: search from the end
    let i = list.length;
    while (i > 0) {
      const prev = list[i - 1] as Entry;
      if (prev.message.priority > p || (prev.message.priority === p && prev.order < entry.order)) break;
      i--;
    }
    list.splice(i, 0, entry);
    this.remember(entry);
  }

  removePending(entry: Entry): void {
    const list = this.pendingList;
    if (list !== undefined) {
      const i = list.indexOf(entry);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.pendingList = undefined;
    }
    this.forget(entry);
  }

  /** Takes the first unsent entry off the pending list; it stays known by message id (it goes in flight or is forgotten next). */
  shiftPending(): Entry | undefined {
    const list = this.pendingList;
    if (list === undefined) return undefined;
    const e = list.shift();
    if (list.length === 0) this.pendingList = undefined;
    return e;
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
    (this.inflightMap ??= new Map()).set(entry.seq, entry);
    this.remember(entry);
  }

  removeInflight(entry: Entry): void {
    const m = this.inflightMap;
    if (m !== undefined) {
      m.delete(entry.seq);
      // iterations over `inflight` in progress go on over the detached map
      if (m.size === 0) this.inflightMap = undefined;
    }
    this.forget(entry);
  }

  /** Drops the entry from the by-message index (when it leaves the queue). */
  forget(entry: Entry): void {
    const m = this.byMessageMap;
    if (m === undefined) return;
    m.delete(entry.message.id);
    if (m.size === 0) this.byMessageMap = undefined;
  }

  private remember(entry: Entry): void {
    (this.byMessageMap ??= new Map()).set(entry.message.id, entry);
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
