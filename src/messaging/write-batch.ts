import type {
  DeliveryRecord,
  DeviceCounters,
  MessageRecord,
  ReceiptInput,
  Subscription,
  WriteBatch,
} from "../store/types.ts";

/** Collects one engine turn's changes for a single atomic `Store.commit`. */
export class BatchBuilder {
  messages: MessageRecord[] = [];
  deliveries: DeliveryRecord[] = [];
  removeDeliveries: { device: string; messageId: string }[] = [];
  counters = new Map<string, DeviceCounters>();
  subscribe: Subscription[] = [];
  unsubscribe: Subscription[] = [];
  receipts: ReceiptInput[] = [];

  get empty(): boolean {
    return (
      this.messages.length === 0 &&
      this.deliveries.length === 0 &&
      this.removeDeliveries.length === 0 &&
      this.counters.size === 0 &&
      this.subscribe.length === 0 &&
      this.unsubscribe.length === 0 &&
      this.receipts.length === 0
    );
  }

  /** The batch as the store takes it (the store applies deliveries before removals). */
  build(): WriteBatch {
    return {
      messages: this.messages,
      deliveries: this.deliveries,
      removeDeliveries: this.removeDeliveries,
      counters: [...this.counters.values()],
      subscribe: this.subscribe,
      unsubscribe: this.unsubscribe,
      receipts: this.receipts,
    };
  }
}
