/**
 * What the delivery engine reports to a metrics sink. Every method is called
 * synchronously on the engine's path, so implementations must be cheap (a
 * counter increment or a histogram observation) and never call back into the
 * engine. They should never throw; the engine wraps the observer so that one
 * that does cannot fail a device, a publish or a commit (the call is dropped).
 */
import type { LinkRestoreOutcome } from "./link-snapshot.ts";
export interface DeliveryObserver {
  /** a Push went out for the first time (seq assigned) */
  pushSent(): void;
  /** a Push was sent again after its retransmission timeout */
  pushRetransmitted(): void;
  /** the device acknowledged a push; ms from first transmission to the ack */
  pushAcked(latencyMs: number): void;
  /** a message expired (or was evicted) before the device acked it */
  pushExpired(): void;
  /** the device refused a push (signature, bad frame) */
  pushRejected(): void;
  /** an RTT sample taken by the estimator (Karn's rule: first transmissions only), ms */
  rttSample(ms: number): void;
  /** one store commit and its wall time, ms */
  storeCommit(ms: number): void;
  /** a message was accepted from a publisher (API or uplink) */
  published(recipients: number): void;
  /** a frame (or a field of one) from a device was refused: answered with an Error, or ignored; nothing of it was stored */
  frameRefused(cause: FrameRefusal): void;
  /** an operation failed unexpectedly and only its device, publish or listener was failed (the engine went on) */
  engineFailure(cause: EngineFailure): void;
  /** A session carried over a daemon restart was attached (bound again, or ended with Bye): by outcome. */
  linkRestored(outcome: LinkRestoreOutcome): void;
  /** On a shared store (cluster): a device hold claimed, released, taken by another node, or another node's deliveries merged. Optional. */
  holdEvent?(event: HoldEvent): void;
}

/**
 * What happened to a device hold on a shared store (the `event` label of
 * dtlspush_cluster_holds_total): `taken` counts sessions moved to another
 * node (a device flapping between nodes, or a node claiming devices it
 * should not, shows there).
 */
export const HOLD_EVENTS = ["claimed", "released", "taken", "merged"] as const;

export type HoldEvent = (typeof HOLD_EVENTS)[number];

/**
 * Why a device's frame was refused (the `cause` label of
 * dtlspush_device_frames_refused_total). An honest device causes none of
 * them except `token_refused` (an expired token) and the publish and
 * subscribe refusals its application asked for; the others mean a broken or
 * hostile device.
 */
export const FRAME_REFUSALS = [
  /** the record is not a Frame (protobuf, UTF-8, a uint64 above 2^53-1) */
  "undecodable",
  /** a frame other than Hello before the Welcome */
  "hello_required",
  /** a frame only the server sends (Welcome, Push, ...) */
  "server_frame",
  /** Hello.version 0 */
  "unsupported_version",
  /** Hello.session_token refused */
  "token_refused",
  /** Hello.received_seq above the last seq the server sent the device */
  "hello_seq_ahead",
  /** Ack.cumulative above the last seq sent */
  "ack_seq_ahead",
  /** an Ack range empty, reversed, or outside the seqs sent */
  "ack_bad_range",
  /** an Ack.rejected seq outside the seqs sent */
  "ack_bad_rejected",
  /** more Ack ranges or rejected seqs than a device can have (window + 64) */
  "ack_too_long",
  /** a Publish payload above Welcome.limits.max_payload */
  "publish_too_large",
  /** a Publish with a bad topic, TTL, priority or content type */
  "publish_invalid",
  /** a Subscribe/Unsubscribe listing more topics than a request may */
  "subscribe_too_long",
  /** a Subscribe/Unsubscribe with a bad topic, or above maxTopics */
  "subscribe_invalid",
] as const;

export type FrameRefusal = (typeof FRAME_REFUSALS)[number];

/** What failed (the `cause` label of dtlspush_engine_failures_total). */
export const ENGINE_FAILURES = [
  /** serving one device threw; that device's session was closed with Bye INTERNAL */
  "device",
  /** a publish threw unexpectedly; that publish was refused with "internal" */
  "publish",
  /** an event listener (receipt, presence) threw; the other listeners and the engine went on */
  "listener",
  /** a device whose counters are at 2^53-1 (left by an earlier version) cannot get another seq */
  "sequence_exhausted",
] as const;

export type EngineFailure = (typeof ENGINE_FAILURES)[number];

export const NO_OBSERVER: DeliveryObserver = {
  pushSent: () => undefined,
  pushRetransmitted: () => undefined,
  pushAcked: () => undefined,
  pushExpired: () => undefined,
  pushRejected: () => undefined,
  rttSample: () => undefined,
  storeCommit: () => undefined,
  published: () => undefined,
  frameRefused: () => undefined,
  engineFailure: () => undefined,
  linkRestored: () => undefined,
};

/** The observer with every call guarded: one that throws loses that call, never the caller's operation. */
export function guardedObserver(o: DeliveryObserver): DeliveryObserver {
  const guard =
    <A extends unknown[]>(fn: (...a: A) => void) =>
    (...a: A): void => {
      try {
        fn.apply(o, a);
      } catch {
        // a metrics sink that throws must not fail delivery
      }
    };
  return {
    pushSent: guard(o.pushSent),
    pushRetransmitted: guard(o.pushRetransmitted),
    pushAcked: guard(o.pushAcked),
    pushExpired: guard(o.pushExpired),
    pushRejected: guard(o.pushRejected),
    rttSample: guard(o.rttSample),
    storeCommit: guard(o.storeCommit),
    published: guard(o.published),
    frameRefused: guard(o.frameRefused),
    engineFailure: guard(o.engineFailure),
    linkRestored: guard(o.linkRestored),
    holdEvent: o.holdEvent === undefined ? () => undefined : guard(o.holdEvent),
  };
}
