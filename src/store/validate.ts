import { StoreError, type StoreErrorCode } from "./errors.ts";
import type { DeliveryRecord, DeviceCounters, DeviceRecord, MessageRecord, Receipt, ReceiptInput, Subscription, WriteBatch } from "./types.ts";

/**
 * Shape checks both store implementations run before writing, so a malformed
 * record (NaN seq, missing field, unsafe integer) is refused the same way by
 * the memory store and by SQLite, and never reaches the file as a value that
 * could not be read back. The checks are structural only: policy (priority
 * range, who may use which topic) belongs to the layers above.
 */

export const RECEIPT_STATES: ReadonlySet<string> = new Set(["queued", "sent", "delivered", "expired", "rejected"]);

/** Field checks for one record; `what` names the record, built only when a check fails. */
class Checker {
  private readonly code: StoreErrorCode;
  private readonly what: () => string;
  constructor(code: StoreErrorCode, what: () => string) {
    this.code = code;
    this.what = what;
  }
  fail(problem: string): never {
    throw new StoreError(this.code, `Invalid ${this.what()}: ${problem}.`);
  }
  text(v: unknown, field: string): void {
    if (typeof v !== "string") this.fail(`${field} must be a string, got ${show(v)}`);
  }
  id(v: unknown, field: string): void {
    if (typeof v !== "string" || v === "") this.fail(`${field} must be a non-empty string, got ${show(v)}`);
  }
  /** Non-negative and exact as a JS number (SQLite INTEGER read back without loss). */
  int(v: unknown, field: string): void {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      this.fail(`${field} must be a non-negative safe integer, got ${show(v)}`);
    }
  }
  bool(v: unknown, field: string): void {
    if (typeof v !== "boolean") this.fail(`${field} must be a boolean, got ${show(v)}`);
  }
  bytes(v: unknown, field: string): void {
    if (!(v instanceof Uint8Array)) this.fail(`${field} must be a Uint8Array, got ${show(v)}`);
  }
  list<T>(v: readonly T[], field: string): readonly T[] {
    if (!Array.isArray(v)) this.fail(`${field} must be an array, got ${show(v)}`);
    return v;
  }
}

function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (Array.isArray(v)) return "an array";
  return v === null ? "null" : typeof v === "object" ? "an object" : String(v);
}

/** Throws StoreError "invalid_record" unless the device record is well-formed. */
export function checkDevice(d: DeviceRecord): void {
  const c = new Checker("invalid_record", () => `device ${show(d?.id)}`);
  if (typeof d !== "object" || d === null) c.fail("the record must be an object");
  c.id(d.id, "id");
  if (d.psk !== undefined) {
    if (typeof d.psk !== "object" || d.psk === null) c.fail("psk must be an object");
    c.id(d.psk.identity, "psk.identity");
    c.bytes(d.psk.key, "psk.key");
    if (d.psk.key.length === 0) c.fail("psk.key must not be empty");
  }
  if (d.certIdentity !== undefined) c.id(d.certIdentity, "certIdentity");
  c.bool(d.revoked, "revoked");
  for (const t of c.list(d.topics, "topics")) c.id(t, "each topic");
  c.int(d.createdAt, "createdAt");
  c.int(d.updatedAt, "updatedAt");
}

/** Throws StoreError "invalid_record" unless key and value are strings (key non-empty). */
export function checkSetting(key: string, value: string): void {
  const c = new Checker("invalid_record", () => `setting ${show(key)}`);
  c.id(key, "key");
  c.text(value, "value");
}

/** Throws StoreError "commit_failed" unless the message record is well-formed. */
export function checkMessageRecord(m: MessageRecord): void {
  const c = new Checker("commit_failed", () => `message ${show(m?.id)}`);
  if (typeof m !== "object" || m === null) c.fail("the record must be an object");
  c.id(m.id, "id");
  c.text(m.topic, "topic");
  c.text(m.device, "device");
  c.bytes(m.payload, "payload");
  c.text(m.contentType, "contentType");
  c.int(m.createdAt, "createdAt");
  c.int(m.expiresAt, "expiresAt");
  c.int(m.priority, "priority");
  c.text(m.collapseKey, "collapseKey");
  c.text(m.publisher, "publisher");
  c.text(m.signature, "signature");
}

/** Throws StoreError "commit_failed" unless the delivery record is well-formed. */
export function checkDeliveryRecord(d: DeliveryRecord): void {
  const c = new Checker("commit_failed", () => `delivery of message ${show(d?.messageId)} to device ${show(d?.device)}`);
  if (typeof d !== "object" || d === null) c.fail("the record must be an object");
  c.id(d.device, "device");
  c.id(d.messageId, "messageId");
  c.int(d.order, "order");
  c.int(d.seq, "seq");
  c.bool(d.tombstone, "tombstone");
}

/** Throws StoreError "commit_failed" unless the key of a delivery to remove is well-formed. */
export function checkDeliveryKey(d: { readonly device: string; readonly messageId: string }): void {
  const c = new Checker("commit_failed", () => "delivery to remove");
  if (typeof d !== "object" || d === null) c.fail("the key must be an object");
  c.text(d.device, "device");
  c.text(d.messageId, "messageId");
}

/** Throws StoreError "commit_failed" unless the counters are well-formed (non-negative safe integers). */
export function checkCountersRecord(k: DeviceCounters): void {
  const c = new Checker("commit_failed", () => `counters of device ${show(k?.device)}`);
  if (typeof k !== "object" || k === null) c.fail("the record must be an object");
  c.id(k.device, "device");
  c.int(k.lastSeq, "lastSeq");
  c.int(k.ackedSeq, "ackedSeq");
}

/** Throws StoreError "commit_failed" unless the subscription is well-formed; `field` names the list it is in. */
export function checkSubscriptionRecord(s: Subscription, field: "subscribe" | "unsubscribe"): void {
  const c = new Checker("commit_failed", () => `subscription in ${field}`);
  if (typeof s !== "object" || s === null) c.fail("the record must be an object");
  c.id(s.device, "device");
  c.id(s.topic, "topic");
}

/** Throws StoreError "commit_failed" unless the receipt is well-formed. */
export function checkReceiptInput(r: ReceiptInput): void {
  const c = new Checker("commit_failed", () => `receipt of message ${show(r?.messageId)} for device ${show(r?.device)}`);
  if (typeof r !== "object" || r === null) c.fail("the record must be an object");
  c.text(r.messageId, "messageId");
  c.text(r.device, "device");
  if (typeof r.state !== "string" || !RECEIPT_STATES.has(r.state)) c.fail(`state must be a receipt state, got ${show(r.state)}`);
  c.int(r.at, "at");
  c.text(r.reason, "reason");
  c.int(r.seq, "seq");
  c.text(r.topic, "topic");
}

/**
 * Throws StoreError "commit_failed" naming the first malformed record of the
 * batch. Duplicate message ids and deliveries of unknown messages are the
 * store's own checks (they depend on what is stored). The per-record checks
 * above are exported so that a writer can check each record before it joins
 * a batch shared with others (the delivery engine does).
 */
export function checkBatch(batch: WriteBatch): void {
  const b = new Checker("commit_failed", () => "batch");
  if (typeof batch !== "object" || batch === null) b.fail("must be an object");
  if (batch.messages !== undefined) for (const m of b.list(batch.messages, "messages")) checkMessageRecord(m);
  if (batch.deliveries !== undefined) for (const d of b.list(batch.deliveries, "deliveries")) checkDeliveryRecord(d);
  if (batch.removeDeliveries !== undefined) for (const d of b.list(batch.removeDeliveries, "removeDeliveries")) checkDeliveryKey(d);
  if (batch.counters !== undefined) for (const k of b.list(batch.counters, "counters")) checkCountersRecord(k);
  for (const field of ["subscribe", "unsubscribe"] as const) {
    const list = batch[field];
    if (list === undefined) continue;
    for (const s of b.list(list, field)) checkSubscriptionRecord(s, field);
  }
  if (batch.receipts !== undefined) for (const r of b.list(batch.receipts, "receipts")) checkReceiptInput(r);
}

/** A stored receipt: the receipt fields of `r` (and no others), with its id. */
export function receiptRecord(r: ReceiptInput, id: number): Receipt {
  return {
    id,
    messageId: r.messageId,
    device: r.device,
    state: r.state,
    at: r.at,
    reason: r.reason,
    seq: r.seq,
    topic: r.topic,
  };
}
