import type {
  DeliveryRecord,
  DeviceCounters,
  MessageRecord,
  ReceiptInput,
  Subscription,
  WriteBatch,
} from "../store/types.ts";
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
  private readonly messageList: MessageRecord[] = [];
  private readonly messageIds = new Set<string>();
  /** by device and message id: a delivery queued and sent in the same turn is written once, as sent */
  private readonly deliveryMap = new Map<string, DeliveryRecord>();
  private readonly removals: { device: string; messageId: string }[] = [];
  private readonly counterMap = new Map<string, DeviceCounters>();
  private readonly subscribeList: Subscription[] = [];
  private readonly unsubscribeList: Subscription[] = [];
  private readonly receiptList: ReceiptInput[] = [];

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
    this.deliveryMap.set(`${d.device}\u0000${d.messageId}`, d);
  }

  removeDelivery(device: string, messageId: string): void {
    const key = { device, messageId };
    checkDeliveryKey(key);
    this.removals.push(key);
  }

  setCounters(k: DeviceCounters): void {
    checkCountersRecord(k);
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
    };
  }
}
