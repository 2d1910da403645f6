import { AuthError } from "../auth/index.ts";
import { ErrorCode } from "../wire/index.ts";
import { MessagingError } from "./errors.ts";

/** The protocol's ErrorCode for an error the engine sends a device (INTERNAL for anything unexpected). */
export function wireErrorCode(e: unknown): number {
  if (e instanceof AuthError) {
    switch (e.code) {
      case "token_expired":
        return ErrorCode.TOKEN_EXPIRED;
      case "token_identity_mismatch":
        return ErrorCode.TOKEN_IDENTITY_MISMATCH;
      case "bad_topic":
        return ErrorCode.BAD_TOPIC;
      default:
        return ErrorCode.TOKEN_INVALID;
    }
  }
  if (e instanceof MessagingError) {
    switch (e.code) {
      case "payload_too_large":
        return ErrorCode.PAYLOAD_TOO_LARGE;
      case "queue_full":
        return ErrorCode.QUEUE_FULL;
      case "bad_topic":
        return ErrorCode.BAD_TOPIC;
      case "too_many_topics":
        return ErrorCode.TOO_MANY_TOPICS;
      case "device_revoked":
        return ErrorCode.DEVICE_REVOKED;
      case "device_unknown":
        return ErrorCode.DEVICE_UNKNOWN;
      case "shutting_down":
        return ErrorCode.SHUTTING_DOWN;
      case "bad_request":
        return ErrorCode.BAD_FRAME;
      default:
        return ErrorCode.INTERNAL;
    }
  }
  return ErrorCode.INTERNAL;
}
