/**
 * The cluster side of a shared store (Redis): several daemons ("nodes") on
 * one store, each delivering to the devices whose sessions it holds.
 *
 * The model (docs/cluster.md):
 * - **Holds.** A device's live queue (sequence numbers, the in-flight window,
 *   acks) is kept in memory by at most one node: the one that holds its
 *   session. A node takes the hold when the device says Hello
 *   (`claimDevice`, which also reads the device's stored queue) and gives it
 *   up when the session ends (`releaseDevice`). Every claim increases the
 *   device's epoch over the whole cluster; a claim by another node tells the
 *   previous holder (event "taken"), which drops the device at once.
 * - **Fencing.** Writes that only the holder makes (counters, deliveries with
 *   a seq, tombstones, removals of deliveries) carry the holder's epoch in
 *   `WriteBatch.fence`; the store applies them only while that epoch is still
 *   the device's current hold, and silently skips them otherwise (the rest of
 *   the batch is applied: one node losing a device never fails a shared
 *   batch). So a node that lost a device can never corrupt its queue.
 *   The one write of such a device that is kept: a delivery of a message new
 *   in the same batch (published by this node) is inserted as unsent (seq 0,
 *   no tombstone), unless the device already has a row for it, so a publish
 *   sent in the turn its node lost the device still reaches the device through
 *   its new holder. Every other delivery of the device in that batch (with a
 *   seq or not) is skipped: rows of messages stored before are the holder's
 *   (one it removed must not come back).
 * - **Enqueue anywhere.** Any node may insert a delivery with seq 0 (a
 *   publish) for any device, held or not, without a fence. When the device
 *   is held by another node, the store tells the holder (event "queued"),
 *   which reads the device's queue (`readQueue`) and adds what it did not
 *   know. A device held by nobody finds its queue when it is next claimed.
 * - **Message ids.** A publisher may choose a message id; the same id
 *   published on two nodes at once must not reach two commits (the second
 *   would fail with duplicate_message). A node reserves the chosen ids when it
 *   checks a publish (`reserveMessageIds`, one atomic step per batch): an id
 *   stored or reserved by another instance is refused as a duplicate. A
 *   reservation lasts `ttlMs` (it must outlast the commit, outages included),
 *   the commit storing the message ends it, and `releaseMessageIds` ends the
 *   ones of publishes that were not queued.
 * - **Shared indexes.** Topic subscriptions, registry changes and new
 *   receipts are told to every node (events "subscriptions", "registry",
 *   "receipts"), so each node's topic index, device registry and receipt
 *   streams follow the others'.
 *
 * A store that is not shared (SQLite, memory) does not implement this: the
 * daemon is then the only node and holds every device.
 */
import type { DeliveryRecord, DeviceCounters, MessageRecord, Subscription } from "./types.ts";

export type { HoldFence } from "./types.ts";

/** What `claimDevice` gives: the hold and the device's stored queue. */
export interface DeviceHold {
  readonly device: string;
  /** increases with every claim of this device over the cluster's life (the fence of its writes) */
  readonly epoch: number;
  /** undefined when the device never had a seq assigned */
  readonly counters: DeviceCounters | undefined;
  /** every delivery of the device as stored, in no particular order */
  readonly deliveries: readonly DeliveryRecord[];
  /** every message a delivery above references */
  readonly messages: readonly MessageRecord[];
  /** the store instance that held the device before this claim ("" when none) */
  readonly previous: string;
}

/** A device's queue as stored (readQueue). */
export interface StoredQueue {
  readonly deliveries: readonly DeliveryRecord[];
  readonly messages: readonly MessageRecord[];
}

/** One change of a self-made topic subscription. */
export interface SubscriptionChange extends Subscription {
  readonly subscribed: boolean;
}

/**
 * What a node is told by the others. Events are hints, delivered at most
 * once and possibly late (pub/sub): the state is always in the store, and a
 * node that may have missed events reads it again ("resync").
 */
export type ClusterEvent =
  /** unsent deliveries (seq 0) were committed by another node for these devices, which this node holds */
  | { readonly kind: "queued"; readonly devices: readonly string[] }
  /** another node claimed a device this node held: `epoch` is the new claim's (this node's hold was older) */
  | { readonly kind: "taken"; readonly device: string; readonly epoch: number }
  /** another node committed subscription changes */
  | { readonly kind: "subscriptions"; readonly changes: readonly SubscriptionChange[] }
  /** a device record was put or deleted (by any node or an offline command): read it again */
  | { readonly kind: "registry"; readonly device: string }
  /** receipts up to this id are stored (any node): receipt streams read on from their last id */
  | { readonly kind: "receipts"; readonly lastId: number }
  /** the event connection was lost and is back: events may have been missed; read the state again */
  | { readonly kind: "resync" };

export type ClusterEventKind = ClusterEvent["kind"];

/** The cluster operations of a shared store; `openRedisStore` returns a Store that is also this. */
export interface ClusterStore {
  /** this store instance's name: unique over the cluster's life (a restarted node is a new instance) */
  readonly instance: string;
  /** takes the device's hold for this instance (one atomic step) and reads its stored queue */
  claimDevice(device: string): Promise<DeviceHold>;
  /** gives the hold up if it is still this instance's at `epoch` (a later claim by anyone wins) */
  releaseDevice(device: string, epoch: number): Promise<void>;
  /** the device's queue as stored now */
  readQueue(device: string): Promise<StoredQueue>;
  /** the instance holding each device ("" when none); devices absent from the store map to "" */
  holders(devices: readonly string[]): Promise<Map<string, string>>;
  /** every self-made subscription (for a node's topic index at start and after a resync) */
  loadSubscriptions(): Promise<Subscription[]>;
  /** stored deliveries per device, for the given devices (queue depth of devices held elsewhere) */
  queueDepths(devices: readonly string[]): Promise<Map<string, number>>;
  /**
   * Reserves message ids for this instance for `ttlMs` (an own reservation is
   * renewed), in one atomic step; returns the ids that are already stored or
   * reserved by another instance (those are not reserved).
   */
  reserveMessageIds(ids: readonly string[], ttlMs: number): Promise<Set<string>>;
  /** ends this instance's reservations of `ids` (publishes that were not queued); others' are kept */
  releaseMessageIds(ids: readonly string[]): Promise<void>;
  /** listens to the other nodes' events; returns the unsubscribe. A throwing listener fails nobody. */
  onClusterEvent(listener: (event: ClusterEvent) => void): () => void;
}

/** The cluster view of a store, when it is shared. */
export function clusterOf(store: object): ClusterStore | undefined {
  const s = store as Partial<ClusterStore>;
  return typeof s.claimDevice === "function" && typeof s.onClusterEvent === "function" ? (store as ClusterStore) : undefined;
}
