import type { DeliveryRecord, DeviceCounters, HoldFence, MessageRecord, ReceiptInput, Subscription, WriteBatch } from "../store/types.ts";
import {
  checkCountersRecord,
  checkDeliveryKey,
  checkDeliveryRecord,
  checkMessageRecord,
  checkReceiptInput,
  checkSubscriptionRecord,
} from "../store/validate.ts";

/**
 * Collects one engine turn's changes for a single atomic `Store.commit`.
 *
 * The batch is shared by every device and publish of the turn, so one bad
 * record would fail them all: each record is checked with the store's own
 * checks as it is added, and a malformed one throws (StoreError
 * "commit_failed") to the operation adding it, before it joins the batch.
 */
export class BatchBuilder {
  private readonly holds: BatchHolds | undefined;
  /** device -> the holder's epoch when its first holder-only write joined (shared stores) */
  private readonly fences = new Map<string, number>();
  private readonly messageList: MessageRecord[] = [];
  private readonly messageIds = new Set<string>();
  /** by device and message id: a delivery queued and sent in the same turn is written once, as sent */
  private readonly deliveryMap = new Map<string, DeliveryRecord>();
  private readonly removals: { device: string; messageId: string }[] = [];
  private readonly counterMap = new Map<string, DeviceCounters>();
  private readonly subscribeList: Subscription[] = [];
  private readonly unsubscribeList: Subscription[] = [];
  private readonly receiptList: ReceiptInput[] = [];

  /** `holds`: on a shared store, the epochs fencing holder-only writes and the removals told back */
  constructor(holds?: BatchHolds) {
    this.holds = holds;
  }

  /** A holder-only write of the device joins: the batch carries the device's epoch as it is now. */
  private fence(device: string): void {
    if (this.holds === undefined || this.fences.has(device)) return;
    const epoch = this.holds.fenceOf(device);
    if (epoch !== undefined) this.fences.set(device, epoch);
  }

  addMessage(m: MessageRecord): void {
    checkMessageRecord(m);
    this.messageList.push(m);
    this.messageIds.add(m.id);
  }

  /** a message with this id is in the batch */
  hasMessage(id: string): boolean {
    return this.messageIds.has(id);
  }

  /** ids of the messages in the batch */
  messageIdList(): string[] {
    return [...this.messageIds];
  }

  addDelivery(d: DeliveryRecord): void {
    checkDeliveryRecord(d);
    if (d.seq > 0 || d.tombstone) this.fence(d.device);
    this.deliveryMap.set(`${d.device}\u0000${d.messageId}`, d);
  }

  removeDelivery(device: string, messageId: string): void {
    const key = { device, messageId };
    checkDeliveryKey(key);
    this.fence(device);
    this.holds?.removed(device, messageId);
    this.removals.push(key);
  }

  setCounters(k: DeviceCounters): void {
    checkCountersRecord(k);
    this.fence(k.device);
    this.counterMap.set(k.device, k);
  }

  addSubscription(s: Subscription, add: boolean): void {
    checkSubscriptionRecord(s, add ? "subscribe" : "unsubscribe");
    (add ? this.subscribeList : this.unsubscribeList).push(s);
  }

  addReceipt(r: ReceiptInput): void {
    checkReceiptInput(r);
    this.receiptList.push(r);
  }

  get empty(): boolean {
    return (
      this.messageList.length === 0 &&
      this.deliveryMap.size === 0 &&
      this.removals.length === 0 &&
      this.counterMap.size === 0 &&
      this.subscribeList.length === 0 &&
      this.unsubscribeList.length === 0 &&
      this.receiptList.length === 0
    );
  }

  /** The batch as the store takes it (the store applies deliveries before removals). */
  build(): WriteBatch {
    return {
      messages: this.messageList,
      deliveries: [...this.deliveryMap.values()],
      removeDeliveries: this.removals,
      counters: [...this.counterMap.values()],
      subscribe: this.subscribeList,
      unsubscribe: this.unsubscribeList,
      receipts: this.receiptList,
      ...(this.fences.size === 0 ? {} : { fence: [...this.fences].map(([device, epoch]): HoldFence => ({ device, epoch })) }),
    };
  }
}

/** What a batch asks of the engine's holds on a shared store (cluster-holds.ts). */
export interface BatchHolds {
  /** the epoch of the device's hold now; 0 when not held (its holder-only writes are then skipped); undefined: not shared */
  fenceOf(device: string): number | undefined;
  /** a delivery of the device leaves its queue in this batch */
  removed(device: string, messageId: string): void;
}
