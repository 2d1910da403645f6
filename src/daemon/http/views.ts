/** The JSON shapes the API answers with, built from store records and engine state. */
import type { DeviceStatus, PresenceEvent, PublishResult } from "../../messaging/delivery-engine.ts";
import type { DeviceRecord, MessageRecord, Receipt } from "../../store/types.ts";

/**
 * The last few times formatted: a batch's results repeat the same createdAt
 * and expiresAt (one clock reading, one TTL) entry after entry, and a Date
 * plus toISOString costs more than the lookup.
 */
const ISO_SLOTS = 4;
const isoKeys: number[] = new Array<number>(ISO_SLOTS).fill(Number.NaN);
const isoValues: string[] = new Array<string>(ISO_SLOTS).fill("");
let isoNext = 0;

/** ms since the epoch as ISO 8601 (toISOString; throws RangeError for an invalid time, as it does). */
export function iso(ms: number): string {
  for (let i = 0; i < ISO_SLOTS; i++) if (isoKeys[i] === ms) return isoValues[i] as string;
  const text = new Date(ms).toISOString();
  isoKeys[isoNext] = ms;
  isoValues[isoNext] = text;
  isoNext = (isoNext + 1) % ISO_SLOTS;
  return text;
}

export interface DeviceView {
  id: string;
  revoked: boolean;
  psk: { identity: string } | null;
  certificate: { identity: string } | null;
  topics: string[];
  online: boolean;
  lastSeen: string | null;
  queueDepth: number;
  /** cluster: the store instance holding the device's session; null when offline or on one node */
  node: string | null;
}

/** A device without its key material; `node`: the cluster node holding its session. */
export function deviceView(
  d: DeviceRecord,
  status: Pick<DeviceStatus, "online" | "lastSeen" | "queueDepth">,
  node: string | null = null,
): DeviceView {
  return {
    id: d.id,
    revoked: d.revoked,
    psk: d.psk === undefined ? null : { identity: d.psk.identity },
    certificate: d.certIdentity === undefined ? null : { identity: d.certIdentity },
    topics: [...d.topics],
    online: status.online,
    lastSeen: status.lastSeen > 0 ? iso(status.lastSeen) : null,
    queueDepth: status.queueDepth,
    node,
  };
}

export interface ReceiptView {
  eventId: number;
  device: string;
  state: string;
  at: string;
  reason: string | null;
  seq: number | null;
}

export function receiptView(r: Receipt): ReceiptView {
  return { eventId: r.id, device: r.device, state: r.state, at: iso(r.at), reason: r.reason === "" ? null : r.reason, seq: r.seq > 0 ? r.seq : null };
}

/** A receipt as an event stream carries it: which message, and its topic, too. */
export function receiptEventView(r: Receipt): ReceiptView & { messageId: string; topic: string | null } {
  return { ...receiptView(r), messageId: r.messageId, topic: r.topic === "" ? null : r.topic };
}

export function presenceView(p: PresenceEvent): { device: string; online: boolean; at: string } {
  return { device: p.device, online: p.online, at: iso(p.at) };
}

export interface PublishResultView {
  id: string;
  createdAt: string;
  expiresAt: string;
  recipients: number;
  rejected: { device: string; reason: string }[];
}

export function publishResultView(r: PublishResult): PublishResultView {
  return {
    id: r.messageId,
    createdAt: iso(r.createdAt),
    expiresAt: iso(r.expiresAt),
    recipients: r.recipients,
    rejected: r.rejected.map((x) => ({ device: x.device, reason: x.reason })),
  };
}

export function messageStatusView(m: MessageRecord, receipts: readonly Receipt[]): object {
  return {
    id: m.id,
    target: m.topic !== "" ? { topic: m.topic } : { device: m.device },
    createdAt: iso(m.createdAt),
    expiresAt: iso(m.expiresAt),
    priority: m.priority,
    collapseKey: m.collapseKey === "" ? null : m.collapseKey,
    contentType: m.contentType === "" ? null : m.contentType,
    publisher: m.publisher,
    receipts: receipts.map(receiptView),
  };
}
