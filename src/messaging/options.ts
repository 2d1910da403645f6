import { MessagingError } from "./errors.ts";
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
  /** devices a topic fan-out starts pushing to per engine turn; the rest follow in the next turns (default 32) */
  readonly pumpPerTurn: number;
  /**
   * Pushes sent and not yet acked, all online devices together, at most (default
   * 4096). Beyond it, devices wait until acks free room: a fan-out larger than
   * what the network and the devices absorb is clocked by their acks instead of
   * being retransmitted into a collapse.
   */
  readonly maxInflight: number;
  /**
   * On a shared store (cluster): how long a publisher's chosen message id stays
   * reserved for the node checking its publish, s (default 900). It must outlast
   * the publish's commit, a store outage included (at least the cluster's
   * outage limit, 300 s by default); the commit storing the message ends it.
   */
  readonly idReservationSeconds: number;
}

export const DEFAULT_DELIVERY_OPTIONS: DeliveryOptions = {
  window: 32,
  maxQueue: 1000,
  queueFullPolicy: "reject",
  maxPayload: 768,
  maxRecordPayload: 1163,
  defaultTtlSeconds: 86_400,
  maxTtlSeconds: 30 * 86_400,
  heartbeatIntervalMs: 30_000,
  missedHeartbeats: 3,
  sessionTokenTtlSeconds: 3600,
  maxTopics: 100,
  rtt: DEFAULT_RTT_OPTIONS,
  jitter: 0.2,
  pumpPerTurn: 32,
  maxInflight: 4096,
  idReservationSeconds: 900,
};

type Bound = readonly [min: number, max: number, integer: boolean];

const BOUNDS: Readonly<Record<Exclude<keyof DeliveryOptions, "queueFullPolicy" | "rtt">, Bound>> = {
  window: [1, 1024, true],
  maxQueue: [1, 1_000_000, true],
  maxPayload: [1, 65_536, true],
  maxRecordPayload: [64, 16_384, true],
  defaultTtlSeconds: [1, 365 * 86_400, true],
  maxTtlSeconds: [1, 365 * 86_400, true],
  heartbeatIntervalMs: [1000, 3_600_000, true],
  missedHeartbeats: [1, 100, true],
  sessionTokenTtlSeconds: [60, 30 * 86_400, true],
  maxTopics: [0, 10_000, true],
  jitter: [0, 0.5, false],
  pumpPerTurn: [1, 1_000_000, true],
  maxInflight: [1, 100_000_000, true],
  idReservationSeconds: [10, 7 * 86_400, true],
};

const RTT_BOUNDS: Readonly<Record<keyof RttOptions, Bound>> = {
  initialRto: [1, 600_000, false],
  minRto: [1, 600_000, false],
  maxRto: [1, 3_600_000, false],
  granularity: [0, 1000, false],
  maxBackoff: [1, 3_600_000, false],
};

/**
 * The defaults with `partial` applied, checked: a value out of range, of the
 * wrong type, or inconsistent with another (defaultTtlSeconds above
 * maxTtlSeconds, minRto above maxRto) throws MessagingError "bad_option"
 * naming the option.
 */
export function resolveDeliveryOptions(partial: Partial<DeliveryOptions> = {}): DeliveryOptions {
  const o: DeliveryOptions = { ...DEFAULT_DELIVERY_OPTIONS, ...partial, rtt: { ...DEFAULT_RTT_OPTIONS, ...partial.rtt } };
  const check = (name: string, value: unknown, [min, max, integer]: Bound): void => {
    if (typeof value !== "number" || Number.isNaN(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
      throw new MessagingError(
        "bad_option",
        `delivery option ${name} must be ${integer ? "an integer" : "a number"} from ${min} to ${max}, got ${String(value)}`,
      );
    }
  };
  for (const [name, bound] of Object.entries(BOUNDS) as [keyof typeof BOUNDS, Bound][]) check(name, o[name], bound);
  for (const [name, bound] of Object.entries(RTT_BOUNDS) as [keyof RttOptions, Bound][]) check(`rtt.${name}`, o.rtt[name], bound);
  if (o.queueFullPolicy !== "reject" && o.queueFullPolicy !== "drop-oldest") {
    throw new MessagingError("bad_option", `delivery option queueFullPolicy must be "reject" or "drop-oldest", got ${String(o.queueFullPolicy)}`);
  }
  if (o.defaultTtlSeconds > o.maxTtlSeconds) {
    throw new MessagingError("bad_option", `delivery option defaultTtlSeconds (${o.defaultTtlSeconds}) is above maxTtlSeconds (${o.maxTtlSeconds})`);
  }
  if (o.rtt.minRto > o.rtt.maxRto)
    throw new MessagingError("bad_option", `delivery option rtt.minRto (${o.rtt.minRto}) is above rtt.maxRto (${o.rtt.maxRto})`);
  return o;
}
