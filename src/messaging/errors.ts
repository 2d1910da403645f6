import { DtlspushError } from "../util/errors.ts";

/**
 * The closed set of MessagingError codes. Every map from a code (to a wire
 * ErrorCode in wire-errors.ts, to an HTTP status in the daemon) is a
 * `Record<MessagingErrorCode, …>`, so a code added here without a mapping
 * fails to compile.
 */
export const MESSAGING_ERROR_CODES = [
  // thrown by the engine (publish, subscribe, options)
  /** the payload, or the Push it would become, does not fit (maxPayload, Welcome.limits.max_payload, one record) */
  "payload_too_large",
  /** a queue the message would join is full */
  "queue_full",
  /** the target device is not registered */
  "device_unknown",
  /** the target device is revoked */
  "device_revoked",
  /** a field of the request is out of range (TTL, priority, content type, collapse key, a string that is not well-formed Unicode) */
  "bad_request",
  /** a topic name breaks the naming rules */
  "bad_topic",
  /** a subscription would exceed maxTopics, or a request lists too many topics */
  "too_many_topics",
  /** the server is closing */
  "shutting_down",
  /** an explicit message id that is already stored */
  "duplicate_message",
  /** the target device has used every sequence number (its stored counters are at 2^53-1) */
  "sequence_exhausted",
  /** a DeliveryOptions value is out of range */
  "bad_option",
  /** the engine failed (a store failure stopped it, or an operation failed unexpectedly) */
  "internal",
  // wire ErrorCodes a device session receives from the server (device-session.ts), lower-cased
  "bad_frame",
  "unsupported_version",
  "hello_required",
  "token_invalid",
  "token_expired",
  "token_identity_mismatch",
  "rate_limited",
  "session_replaced",
  /** Hello.received_seq above the last seq the server sent (the device's saved state is not from this server's store) */
  "seq_ahead",
] as const;

export type MessagingErrorCode = (typeof MESSAGING_ERROR_CODES)[number];

/** Errors of the delivery engine and of the device session; `code` is one of MESSAGING_ERROR_CODES. */
export class MessagingError extends DtlspushError {
  declare readonly code: MessagingErrorCode;
  constructor(code: MessagingErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "MessagingError";
  }
}
