import type { MessageRecord } from "../store/types.ts";
import { RttEstimator, type RttOptions } from "./rtt-estimator.ts";

/**
 * One message queued for one device, in one of three states:
 * - pending: waiting in the queue; it has no seq yet (priorities, collapse
 *   keys, eviction and expiry may still remove or reorder it);
 * - in flight: it has a seq and was (or is about to be) transmitted;
 * - tombstone: it expired (or could not be encoded) after its seq was
 *   assigned, and is sent as a tombstone until the device acks that seq.
 * The state moves only forward, on the same object (no allocation per
 * transition): `assignSeq`, `loadSent`, `toTombstone`.
 */
export type Entry = PendingEntry | InflightEntry | TombstoneEntry;
/** An entry with a seq: in the window until the cumulative ack passes it. */
export type SentEntry = InflightEntry | TombstoneEntry;

interface EntryBase {
  readonly kind: "entry";
  readonly message: MessageRecord;
  readonly queue: DeviceQueue;
  readonly order: number;
}

export interface PendingEntry extends EntryBase {
  readonly state: "pending";
}

interface SentFields extends EntryBase {
  readonly seq: number;
  /** selectively acked: kept until the cumulative ack passes it, retransmitted only as the window's head */
  sacked: boolean;
  transmissions: number;
  /** retransmission timeouts in a row since the device last made progress (the backoff exponent) */
  timeouts: number;
  /** time of the latest transmission (read only while transmissions is 1: the RTT sample) */
  sentAt: number;
  /** retransmission deadline; Infinity while this process has not transmitted it (never due) */
  dueAt: number;
  /** the encoded Push (or tombstone), so retransmissions are byte for byte the same; encoded at the first transmission */
  frame: Uint8Array | undefined;
}

export interface InflightEntry extends SentFields {
  readonly state: "inflight";
  /** time of the first transmission by this process; undefined when sent by an earlier process (unknown) */
  firstSentAt: number | undefined;
}

export interface TombstoneEntry extends SentFields {
  readonly state: "tombstone";
}

/** The one runtime shape of every entry (one hidden class; fields set in the constructor, moved by the functions below). */
class EntryRecord {
  readonly kind = "entry";
  state: Entry["state"] = "pending";
  readonly message: MessageRecord;
  readonly queue: DeviceQueue;
  readonly order: number;
  seq = 0;
  sacked = false;
  transmissions = 0;
  timeouts = 0;
  sentAt = 0;
  dueAt = Infinity;
  firstSentAt: number | undefined = undefined;
  frame: Uint8Array | undefined = undefined;

  constructor(message: MessageRecord, queue: DeviceQueue, order: number) {
    this.message = message;
    this.queue = queue;
    this.order = order;
  }
}

/** A new entry waiting in `queue` for its seq. */
export function pendingEntry(message: MessageRecord, queue: DeviceQueue, order: number): PendingEntry {
  return new EntryRecord(message, queue, order) as PendingEntry;
}

/** The pending entry `e` takes `seq` and its encoded Push: now in flight (not transmitted yet). */
export function assignSeq(e: PendingEntry, seq: number, frame: Uint8Array): InflightEntry {
  const r = e as unknown as EntryRecord;
  r.state = "inflight";
  r.seq = seq;
  r.frame = frame;
  return r as unknown as InflightEntry;
}

/**
 * An entry the store holds with `seq`: sent by an earlier process, a
 * transmission whose time this one does not know (no RTT sample from it).
 */
export function loadSent(message: MessageRecord, queue: DeviceQueue, order: number, seq: number, tombstone: boolean): SentEntry {
  const r = new EntryRecord(message, queue, order);
  r.state = tombstone ? "tombstone" : "inflight";
  r.seq = seq;
  r.transmissions = 1;
  return r as unknown as SentEntry;
}

/** The entry's seq is resolved by a tombstone from now on (its frame is encoded again, as a tombstone). */
export function toTombstone(e: SentEntry): TombstoneEntry {
  const r = e as unknown as EntryRecord;
  r.state = "tombstone";
  r.frame = undefined;
  return r as unknown as TombstoneEntry;
}

/** The seq a receipt records for the entry: 0 while it has none. */
export function receiptSeq(e: Entry): number {
  return e.state === "pending" ? 0 : e.seq;
}

const NO_ENTRIES: readonly PendingEntry[] = Object.freeze([]);
const NO_INFLIGHT: ReadonlyMap<number, SentEntry> = new Map();
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
  private pendingList: PendingEntry[] | undefined;
  private inflightMap: Map<number, SentEntry> | undefined;
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
  get pending(): readonly PendingEntry[] {
    return this.pendingList ?? NO_ENTRIES;
  }

  /** entries with a seq, not yet cumulatively acked; Map order is seq order */
  get inflight(): ReadonlyMap<number, SentEntry> {
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

  addPending(entry: PendingEntry): void {
    const p = entry.message.priority;
    const list = (this.pendingList ??= []);
    // most messages share a priority and arrive in order: search from the end
    let i = list.length;
    while (i > 0) {
      const prev = list[i - 1] as PendingEntry;
      if (prev.message.priority > p || (prev.message.priority === p && prev.order < entry.order)) break;
      i--;
    }
    list.splice(i, 0, entry);
    this.remember(entry);
  }

  removePending(entry: PendingEntry): void {
    const list = this.pendingList;
    if (list !== undefined) {
      const i = list.indexOf(entry);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.pendingList = undefined;
    }
    this.forget(entry);
  }

  /** Takes the first unsent entry off the pending list; it stays known by message id (it goes in flight or is forgotten next). */
  shiftPending(): PendingEntry | undefined {
    const list = this.pendingList;
    if (list === undefined) return undefined;
    const e = list.shift();
    if (list.length === 0) this.pendingList = undefined;
    return e;
  }

  /** An unsent entry with this collapse key. */
  pendingWithCollapseKey(key: string): PendingEntry | undefined {
    for (const e of this.pending) if (e.message.collapseKey === key) return e;
    return undefined;
  }

  /** The oldest unsent entry (lowest order). */
  oldestPending(): PendingEntry | undefined {
    let oldest: PendingEntry | undefined;
    for (const e of this.pending) if (oldest === undefined || e.order < oldest.order) oldest = e;
    return oldest;
  }

  /** Adds an entry whose seq is assigned. */
  addInflight(entry: SentEntry): void {
    (this.inflightMap ??= new Map()).set(entry.seq, entry);
    this.remember(entry);
  }

  removeInflight(entry: SentEntry): void {
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
    let min = Infinity;
    for (const e of this.inflight.values()) if (e.dueAt < min) min = e.dueAt;
    return min === Infinity ? undefined : min;
  }
}
