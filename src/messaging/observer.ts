/**
 * What the delivery engine reports to a metrics sink. Every method is called
 * synchronously on the engine's path, so implementations must be cheap (a
 * counter increment or a histogram observation), never throw and never call
 * back into the engine.
 */
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
}

export const NO_OBSERVER: DeliveryObserver = {
  pushSent: () => undefined,
  pushRetransmitted: () => undefined,
  pushAcked: () => undefined,
  pushExpired: () => undefined,
  pushRejected: () => undefined,
  rttSample: () => undefined,
  storeCommit: () => undefined,
  published: () => undefined,
};
