import { copyBytes } from "../util/bytes.ts";
import { StoreError } from "./errors.ts";
import { inlineStore } from "./inline-store.ts";
import type {
  DeliveryRecord,
  DeliveryState,
  DeviceCounters,
  DeviceRecord,
  MessageRecord,
  Receipt,
  Store,
  SyncStore,
  Subscription,
  WriteBatch,
} from "./types.ts";
import { checkBatch, checkDevice, checkSetting, receiptRecord } from "./validate.ts";

/**
 * The in-memory Store, for tests and throw-away runs. It keeps the semantics of
 * the SQLite store: the same checks and error codes, a batch validated in full
 * before anything of it is applied, receipt ids that never repeat (even after
 * prune), the same orderings (strings by code point, as SQLite compares UTF-8),
 * and records copied on the way in and out, so no caller shares memory with it.
 */
export function createMemoryStore(): SyncStore {
  return new MemoryStore();
}

/** A fresh in-memory `Store` (the memory SyncStore, inline). */
export function openMemoryStore(): Store {
  return inlineStore(new MemoryStore());
}

/** Code-point order, which is SQLite's BINARY order of the same strings in UTF-8. */
export function compareText(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a.charCodeAt(i) !== b.charCodeAt(i)) return (a.codePointAt(i) as number) - (b.codePointAt(i) as number);
  }
  return a.length - b.length;
}

function copyDevice(d: DeviceRecord): DeviceRecord {
  return {
    id: d.id,
    ...(d.psk !== undefined ? { psk: { identity: d.psk.identity, key: copyBytes(d.psk.key) } } : {}),
    ...(d.certIdentity !== undefined ? { certIdentity: d.certIdentity } : {}),
    revoked: d.revoked,
    topics: [...d.topics],
    createdAt: d.createdAt,
    updatedAt: d.updatedAt,
  };
}

function copyMessage(m: MessageRecord): MessageRecord {
  return {
    id: m.id,
    topic: m.topic,
    device: m.device,
    payload: copyBytes(m.payload),
    contentType: m.contentType,
    createdAt: m.createdAt,
    expiresAt: m.expiresAt,
    priority: m.priority,
    collapseKey: m.collapseKey,
    publisher: m.publisher,
    signature: m.signature,
  };
}

function copyDelivery(d: DeliveryRecord): DeliveryRecord {
  return { device: d.device, messageId: d.messageId, order: d.order, seq: d.seq, tombstone: d.tombstone };
}

function copyReceipt(r: Receipt): Receipt {
  return receiptRecord(r, r.id);
}

class MemoryStore implements SyncStore {
  readonly kind = "memory";
  private closed = false;
  private readonly devices = new Map<string, DeviceRecord>();
  private readonly byPskIdentity = new Map<string, string>();
  private readonly byCertIdentity = new Map<string, string>();
  private readonly messages = new Map<string, MessageRecord>();
  /** device -> messageId -> delivery */
  private readonly deliveries = new Map<string, Map<string, DeliveryRecord>>();
  private readonly counters = new Map<string, DeviceCounters>();
  /** device -> topics */
  private readonly subscriptions = new Map<string, Set<string>>();
  /** ascending by id */
  private receipts: Receipt[] = [];
  private receiptsByMessage = new Map<string, Receipt[]>();
  private nextReceiptId = 1;
  private readonly settings = new Map<string, string>();

  private open(): void {
    if (this.closed) throw new StoreError("store_closed", "The memory store is closed.");
  }

  // --- device registry

  putDevice(device: DeviceRecord): void {
    this.open();
    checkDevice(device);
    const psk = device.psk?.identity;
    const cert = device.certIdentity;
    const pskOwner = psk === undefined ? undefined : this.byPskIdentity.get(psk);
    if (pskOwner !== undefined && pskOwner !== device.id) {
      throw new StoreError(
        "identity_in_use",
        `PSK identity ${JSON.stringify(psk)} of device ${JSON.stringify(device.id)} is already used by device ${JSON.stringify(pskOwner)}.`,
      );
    }
    const certOwner = cert === undefined ? undefined : this.byCertIdentity.get(cert);
    if (certOwner !== undefined && certOwner !== device.id) {
      throw new StoreError(
        "identity_in_use",
        `Certificate identity ${JSON.stringify(cert)} of device ${JSON.stringify(device.id)} is already used by device ${JSON.stringify(certOwner)}.`,
      );
    }
    this.unindex(device.id);
    this.devices.set(device.id, copyDevice(device));
    if (psk !== undefined) this.byPskIdentity.set(psk, device.id);
    if (cert !== undefined) this.byCertIdentity.set(cert, device.id);
  }

  private unindex(id: string): void {
    const old = this.devices.get(id);
    if (old?.psk !== undefined) this.byPskIdentity.delete(old.psk.identity);
    if (old?.certIdentity !== undefined) this.byCertIdentity.delete(old.certIdentity);
  }

  getDevice(id: string): DeviceRecord | undefined {
    this.open();
    const d = this.devices.get(id);
    return d === undefined ? undefined : copyDevice(d);
  }

  findDeviceByPskIdentity(identity: string): DeviceRecord | undefined {
    this.open();
    const id = this.byPskIdentity.get(identity);
    return id === undefined ? undefined : this.getDevice(id);
  }

  findDeviceByCertIdentity(identity: string): DeviceRecord | undefined {
    this.open();
    const id = this.byCertIdentity.get(identity);
    return id === undefined ? undefined : this.getDevice(id);
  }

  listDevices(): DeviceRecord[] {
    this.open();
    return [...this.devices.values()].sort((a, b) => compareText(a.id, b.id)).map(copyDevice);
  }

  deleteDevice(id: string): boolean {
    this.open();
    const existed = this.devices.has(id);
    this.unindex(id);
    this.devices.delete(id);
    // seqs given to its deliveries stay taken (the engine writes lastSeq at ack, not at send)
    let taken = 0;
    for (const d of this.deliveries.get(id)?.values() ?? []) taken = Math.max(taken, d.seq);
    const kept = this.counters.get(id);
    if (taken > (kept?.lastSeq ?? 0)) this.counters.set(id, { device: id, lastSeq: taken, ackedSeq: kept?.ackedSeq ?? 0 });
    this.deliveries.delete(id);
    this.subscriptions.delete(id);
    return existed;
  }

  // --- delivery journal

  commit(batch: WriteBatch): Receipt[] {
    this.open();
    // Everything that can refuse the batch is checked before anything is applied.
    checkBatch(batch);
    const fresh = new Set<string>();
    for (const m of batch.messages ?? []) {
      if (this.messages.has(m.id) || fresh.has(m.id)) {
        throw new StoreError("duplicate_message", `Message id ${JSON.stringify(m.id)} is already stored; nothing of the batch was applied.`);
      }
      fresh.add(m.id);
    }
    for (const d of batch.deliveries ?? []) {
      if (!this.messages.has(d.messageId) && !fresh.has(d.messageId)) {
        throw new StoreError(
          "commit_failed",
          `Delivery to device ${JSON.stringify(d.device)} references message ${JSON.stringify(d.messageId)}, which is not stored; nothing of the batch was applied.`,
        );
      }
    }

    for (const m of batch.messages ?? []) this.messages.set(m.id, copyMessage(m));
    for (const d of batch.deliveries ?? []) {
      let queue = this.deliveries.get(d.device);
      if (queue === undefined) this.deliveries.set(d.device, (queue = new Map()));
      queue.set(d.messageId, copyDelivery(d));
    }
    for (const k of batch.removeDeliveries ?? []) {
      const queue = this.deliveries.get(k.device);
      if (queue === undefined) continue;
      queue.delete(k.messageId);
      if (queue.size === 0) this.deliveries.delete(k.device);
    }
    for (const c of batch.counters ?? []) {
      this.counters.set(c.device, { device: c.device, lastSeq: c.lastSeq, ackedSeq: c.ackedSeq });
    }
    for (const s of batch.subscribe ?? []) {
      let topics = this.subscriptions.get(s.device);
      if (topics === undefined) this.subscriptions.set(s.device, (topics = new Set()));
      topics.add(s.topic);
    }
    for (const s of batch.unsubscribe ?? []) {
      const topics = this.subscriptions.get(s.device);
      if (topics === undefined) continue;
      topics.delete(s.topic);
      if (topics.size === 0) this.subscriptions.delete(s.device);
    }
    const stored: Receipt[] = [];
    for (const r of batch.receipts ?? []) {
      const receipt = copyReceipt({ ...r, id: this.nextReceiptId++ });
      this.receipts.push(receipt);
      let list = this.receiptsByMessage.get(receipt.messageId);
      if (list === undefined) this.receiptsByMessage.set(receipt.messageId, (list = []));
      list.push(receipt);
      stored.push(copyReceipt(receipt));
    }
    return stored;
  }

  loadDeliveryState(): DeliveryState {
    this.open();
    const counters = [...this.counters.values()].sort((a, b) => compareText(a.device, b.device)).map((c) => ({ ...c }));
    const deliveries: DeliveryRecord[] = [];
    const referenced = new Set<string>();
    for (const device of [...this.deliveries.keys()].sort(compareText)) {
      const queue = [...(this.deliveries.get(device) as Map<string, DeliveryRecord>).values()];
      queue.sort((a, b) => a.order - b.order || compareText(a.messageId, b.messageId));
      for (const d of queue) {
        deliveries.push(copyDelivery(d));
        referenced.add(d.messageId);
      }
    }
    const messages = [...referenced].sort(compareText).map((id) => copyMessage(this.messages.get(id) as MessageRecord));
    const subscriptions: Subscription[] = [];
    for (const device of [...this.subscriptions.keys()].sort(compareText)) {
      for (const topic of [...(this.subscriptions.get(device) as Set<string>)].sort(compareText)) {
        subscriptions.push({ device, topic });
      }
    }
    return { counters, deliveries, messages, subscriptions };
  }

  getMessage(id: string): MessageRecord | undefined {
    this.open();
    const m = this.messages.get(id);
    return m === undefined ? undefined : copyMessage(m);
  }

  existingMessageIds(ids: readonly string[]): Set<string> {
    this.open();
    const found = new Set<string>();
    for (const id of ids) if (this.messages.has(id)) found.add(id);
    return found;
  }

  receiptsForMessage(messageId: string): Receipt[] {
    this.open();
    return (this.receiptsByMessage.get(messageId) ?? []).map(copyReceipt);
  }

  receiptsAfter(afterId: number, limit: number): Receipt[] {
    this.open();
    if (!(limit > 0)) return [];
    // first index whose id > afterId (ids ascend)
    let lo = 0;
    let hi = this.receipts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.receipts[mid] as Receipt).id > afterId) hi = mid;
      else lo = mid + 1;
    }
    return this.receipts.slice(lo, lo + Math.floor(limit)).map(copyReceipt);
  }

  prune(before: number): number {
    this.open();
    const referenced = new Set<string>();
    for (const queue of this.deliveries.values()) for (const id of queue.keys()) referenced.add(id);
    let deleted = 0;
    for (const [id, m] of this.messages) {
      if (m.expiresAt < before && !referenced.has(id)) {
        this.messages.delete(id);
        deleted++;
      }
    }
    if (this.receipts.some((r) => r.at < before)) {
      this.receipts = this.receipts.filter((r) => r.at >= before);
      this.receiptsByMessage = new Map();
      for (const r of this.receipts) {
        let list = this.receiptsByMessage.get(r.messageId);
        if (list === undefined) this.receiptsByMessage.set(r.messageId, (list = []));
        list.push(r);
      }
    }
    return deleted;
  }

  // --- settings

  getSetting(key: string): string | undefined {
    this.open();
    return this.settings.get(key);
  }

  putSetting(key: string, value: string): void {
    this.open();
    checkSetting(key, value);
    this.settings.set(key, value);
  }

  close(): void {
    this.closed = true;
  }
}
