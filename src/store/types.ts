/**
 * The storage interfaces of dtlspush: the device registry, the delivery
 * journal (messages, per-device deliveries and counters), receipts,
 * subscriptions and small settings (signing keys).
 *
 * - `Store` is what the daemon uses: asynchronous and batch-shaped. The
 *   delivery engine keeps its live state in memory and hands every change of
 *   an event-loop turn to `commit` as one batch; the promise settles when the
 *   batch is durable, and only then does the engine answer publishers and let
 *   that turn's datagrams go. The network loop never waits on a statement.
 *   Implementations: SQLite in a worker thread (group commit), memory (an
 *   inline `SyncStore`), Redis (redis-store.ts: one Lua script per commit,
 *   pipelined round trips).
 * - `SyncStore` is one synchronous connection: SQLite (node:sqlite, run on the
 *   store's worker thread and by offline CLI commands) or memory (tests).
 */
/** A registered device. A device has a PSK, a certificate identity, or both. */
export interface DeviceRecord {
  readonly id: string;
  /** PSK credentials: the DTLS PSK identity and key. */
  readonly psk?: { readonly identity: string; readonly key: Uint8Array } | undefined;
  /** Certificate identity as the DTLS layer reports it (CN, SAN URI or SHA-256 fingerprint, per its clientIdentity setting). */
  readonly certIdentity?: string | undefined;
  /** A revoked device cannot complete a handshake or keep a session. */
  readonly revoked: boolean;
  /** Topics assigned by the registry (an operator); subscriptions the device makes itself are separate. */
  readonly topics: readonly string[];
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** One published message, stored once however many devices receive it. */
export interface MessageRecord {
  readonly id: string;
  /** Topic published to; "" for a message to one device. */
  readonly topic: string;
  /** Target device; "" for a topic message. */
  readonly device: string;
  readonly payload: Uint8Array;
  readonly contentType: string;
  /** ms since the epoch */
  readonly createdAt: number;
  /** ms since the epoch */
  readonly expiresAt: number;
  /** 0..9, higher first */
  readonly priority: number;
  /** "" when none */
  readonly collapseKey: string;
  readonly publisher: string;
  /** detached compact JWS over the signed content */
  readonly signature: string;
}

/** One message queued for one device. */
export interface DeliveryRecord {
  readonly device: string;
  readonly messageId: string;
  /** Enqueue order, increasing across the whole store; FIFO within a priority. */
  readonly order: number;
  /** Per-device sequence number, assigned at first transmission; 0 while unsent. */
  readonly seq: number;
  /** The message expired after its seq was assigned: the device gets a tombstone for this seq. */
  readonly tombstone: boolean;
}

/** Per-device delivery counters. Kept even when the device is deleted, so seq numbers never restart. */
export interface DeviceCounters {
  readonly device: string;
  /** Highest seq assigned so far (0 = none). */
  readonly lastSeq: number;
  /** Highest seq the device has acknowledged cumulatively (0 = none). */
  readonly ackedSeq: number;
}

export type ReceiptState = "queued" | "sent" | "delivered" | "expired" | "rejected";

/** A state change of one message for one device (or of the publish itself when device is ""). */
export interface ReceiptInput {
  readonly messageId: string;
  readonly device: string;
  readonly state: ReceiptState;
  /** ms since the epoch */
  readonly at: number;
  /** e.g. "ttl", "collapsed", "queue_full", "revoked", "bad_signature"; "" when none */
  readonly reason: string;
  /** per-device seq when one was assigned, else 0 */
  readonly seq: number;
  /** the message's topic, "" for a direct message (lets event streams filter by topic) */
  readonly topic: string;
}

/** A stored receipt: its id increases with every receipt the store has ever written (event ids for SSE resume). */
export interface Receipt extends ReceiptInput {
  readonly id: number;
}

export interface Subscription {
  readonly device: string;
  readonly topic: string;
}

/** A holder's fence for one device (shared stores, cluster-types.ts): its writes apply only while `epoch` is the device's current hold. */
export interface HoldFence {
  readonly device: string;
  readonly epoch: number;
}

/** Everything one engine turn changed; applied atomically by `commit`, in the order of the fields below. */
export interface WriteBatch {
  /** inserted; an id already stored is an error (StoreError code "duplicate_message") and nothing of the batch is applied */
  readonly messages?: readonly MessageRecord[];
  /** inserted or replaced, keyed by (device, messageId) */
  readonly deliveries?: readonly DeliveryRecord[];
  /** removed, keyed by (device, messageId); absent ones are ignored */
  readonly removeDeliveries?: readonly { readonly device: string; readonly messageId: string }[];
  /** inserted or replaced, keyed by device */
  readonly counters?: readonly DeviceCounters[];
  readonly subscribe?: readonly Subscription[];
  readonly unsubscribe?: readonly Subscription[];
  readonly receipts?: readonly ReceiptInput[];
  /**
   * Shared stores only (cluster-types.ts): the holder's epoch of each device
   * whose counters, deliveries with a seq, tombstones or removals are in the
   * batch. Those writes of a device whose current hold is another are
   * skipped; the rest of the batch is applied. Stores that are not shared
   * ignore it.
   */
  readonly fence?: readonly HoldFence[];
}

/** What the engine needs at start-up. */
export interface DeliveryState {
  readonly counters: readonly DeviceCounters[];
  /** all deliveries, ordered by (device, order) */
  readonly deliveries: readonly DeliveryRecord[];
  /** every message referenced by a delivery */
  readonly messages: readonly MessageRecord[];
  readonly subscriptions: readonly Subscription[];
}

/**
 * One synchronous connection to the data: every call is done when it returns
 * (a returned commit is durable). Used on the store's own thread (SQLite
 * worker), by offline CLI commands, and in memory under `inlineStore`.
 */
export interface SyncStore {
  /** "sqlite", "memory" or "redis" */
  readonly kind: string;

  // --- device registry
  /** insert or replace */
  putDevice(device: DeviceRecord): void;
  getDevice(id: string): DeviceRecord | undefined;
  findDeviceByPskIdentity(identity: string): DeviceRecord | undefined;
  findDeviceByCertIdentity(identity: string): DeviceRecord | undefined;
  /** ordered by id */
  listDevices(): DeviceRecord[];
  /** removes the device, its deliveries and subscriptions (keeps its counters); false when absent */
  deleteDevice(id: string): boolean;

  // --- delivery journal
  /** atomic: all of it or nothing (throws StoreError); returns the stored receipts with their ids, in input order */
  commit(batch: WriteBatch): Receipt[];
  loadDeliveryState(): DeliveryState;
  getMessage(id: string): MessageRecord | undefined;
  /** which of `ids` are stored messages */
  existingMessageIds(ids: readonly string[]): Set<string>;
  /** receipts of one message, by id ascending */
  receiptsForMessage(messageId: string): Receipt[];
  /** receipts with id > afterId, ascending, at most limit */
  receiptsAfter(afterId: number, limit: number): Receipt[];
  /** deletes messages no delivery references whose expiresAt < before, and receipts with at < before; returns messages deleted */
  prune(before: number): number;

  // --- small settings (e.g. serialized signing keys)
  getSetting(key: string): string | undefined;
  putSetting(key: string, value: string): void;

  close(): void;
}

/**
 * The store as the daemon uses it: every operation completes asynchronously.
 *
 * Order: operations take effect in the order they are called, and their
 * promises settle in that order; a read sees every write called before it.
 * Atomicity: each `commit` batch is applied whole or not at all. An
 * implementation may apply several batches in one transaction (group commit),
 * but a batch that fails never takes another batch's changes with it.
 * Prefix: once a commit has failed, every later commit is refused (StoreError
 * "store_failed") without applying anything, so the stored journal is always
 * the result of a prefix of the batches committed: what a restart reads back
 * never holds a batch whose predecessor is missing.
 */
export interface Store {
  /** "sqlite", "memory" or "redis" */
  readonly kind: string;
  /**
   * false while a shared store cannot take calls (Redis away: its calls
   * reject with store_unavailable, commits handed over before are kept);
   * absent for a store that is always there (SQLite, memory).
   */
  readonly available?: boolean;

  // --- device registry
  /** insert or replace; StoreError identity_in_use when another device has its PSK or certificate identity */
  putDevice(device: DeviceRecord): Promise<void>;
  getDevice(id: string): Promise<DeviceRecord | undefined>;
  findDeviceByPskIdentity(identity: string): Promise<DeviceRecord | undefined>;
  findDeviceByCertIdentity(identity: string): Promise<DeviceRecord | undefined>;
  /** ordered by id */
  listDevices(): Promise<DeviceRecord[]>;
  /** removes the device, its deliveries and subscriptions (keeps its counters); false when absent */
  deleteDevice(id: string): Promise<boolean>;

  // --- delivery journal
  /** atomic: all of the batch or nothing; settles when durable, with the stored receipts (ids assigned), in input order */
  commit(batch: WriteBatch): Promise<Receipt[]>;
  loadDeliveryState(): Promise<DeliveryState>;
  getMessage(id: string): Promise<MessageRecord | undefined>;
  /** which of `ids` are stored messages (one round trip for a batch of publishes) */
  existingMessageIds(ids: readonly string[]): Promise<Set<string>>;
  /** receipts of one message, by id ascending */
  receiptsForMessage(messageId: string): Promise<Receipt[]>;
  /** receipts with id > afterId, ascending, at most limit */
  receiptsAfter(afterId: number, limit: number): Promise<Receipt[]>;
  /** deletes messages no delivery references whose expiresAt < before, and receipts with at < before; resolves to messages deleted */
  prune(before: number): Promise<number>;

  // --- small settings (e.g. serialized signing keys)
  getSetting(key: string): Promise<string | undefined>;
  putSetting(key: string, value: string): Promise<void>;

  /** waits for every operation called before, then closes; later calls fail with store_closed */
  close(): Promise<void>;
}
