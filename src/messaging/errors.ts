import { DtlspushError } from "../util/errors.ts";

/**
 * Errors of the delivery engine. Codes: "payload_too_large", "queue_full",
 * "device_unknown", "device_revoked", "bad_request", "bad_topic",
 * "too_many_topics", "shutting_down", "duplicate_message" (an explicit
 * message id that is already stored), "internal" (the engine stopped).
 */
export class MessagingError extends DtlspushError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "MessagingError";
  }
}
