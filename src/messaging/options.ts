import { DEFAULT_RTT_OPTIONS, type RttOptions } from "./rtt-estimator.ts";

/** What a full device queue does to a new message. */
export type QueueFullPolicy = "reject" | "drop-oldest";

export interface DeliveryOptions {
  /** pushes per device sent and not yet cumulatively acked (default 32) */
  readonly window: number;
  /** messages per device queued or in flight (default 1000) */
  readonly maxQueue: number;
  /** "reject" (default): the publish is refused with queue_full; "drop-oldest": the oldest unsent message is expired (reason "evicted") */
  readonly queueFullPolicy: QueueFullPolicy;
  /** largest payload, bytes (default 1024); the encoded Push must also fit in one record (maxRecordPayload) */
  readonly maxPayload: number;
  /** record plaintext bound the Push frame must fit, bytes (default 1163: MTU 1200 - 13 header - 24 AES-GCM overhead) */
  readonly maxRecordPayload: number;
  /** TTL of a publish without one, s (default 86 400) */
  readonly defaultTtlSeconds: number;
  /** largest TTL accepted, s (default 30 days) */
  readonly maxTtlSeconds: number;
  /** heartbeat interval announced in Welcome, ms (default 30 000) */
  readonly heartbeatIntervalMs: number;
  /** missed heartbeat intervals before a device is marked offline (default 3) */
  readonly missedHeartbeats: number;
  /** lifetime of session tokens, s (default 3600) */
  readonly sessionTokenTtlSeconds: number;
  /** topics a device may subscribe to itself (default 100) */
  readonly maxTopics: number;
  /** retransmission timer parameters */
  readonly rtt: RttOptions;
  /** retransmission timeouts are spread by +- this fraction (default 0.2) */
  readonly jitter: number;
}

export const DEFAULT_DELIVERY_OPTIONS: DeliveryOptions = {
  window: 32,
  maxQueue: 1000,
  queueFullPolicy: "reject",
  maxPayload: 1024,
  maxRecordPayload: 1163,
  defaultTtlSeconds: 86_400,
  maxTtlSeconds: 30 * 86_400,
  heartbeatIntervalMs: 30_000,
  missedHeartbeats: 3,
  sessionTokenTtlSeconds: 3600,
  maxTopics: 100,
  rtt: DEFAULT_RTT_OPTIONS,
  jitter: 0.2,
};
