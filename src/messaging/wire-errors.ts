import { AuthError, type AuthErrorCode } from "../auth/index.ts";
import { ErrorCode, WireError, type ErrorCodeNumber } from "../wire/index.ts";
import { MessagingError, type MessagingErrorCode } from "./errors.ts";

/**
 * Maps between error codes and the protocol's ErrorCode. Every map is a
 * Record over a closed union, so a code nobody mapped fails to compile.
 */

/** The wire ErrorCode of each MessagingError code. */
export const MESSAGING_WIRE_CODE: Readonly<Record<MessagingErrorCode, ErrorCodeNumber>> = {
  payload_too_large: ErrorCode.PAYLOAD_TOO_LARGE,
  queue_full: ErrorCode.QUEUE_FULL,
  device_unknown: ErrorCode.DEVICE_UNKNOWN,
  device_revoked: ErrorCode.DEVICE_REVOKED,
  bad_request: ErrorCode.BAD_FRAME,
  bad_topic: ErrorCode.BAD_TOPIC,
  too_many_topics: ErrorCode.TOO_MANY_TOPICS,
  shutting_down: ErrorCode.SHUTTING_DOWN,
  // an uplink id is derived from the request id, which the engine checks before publishing
  duplicate_message: ErrorCode.INTERNAL,
  sequence_exhausted: ErrorCode.INTERNAL,
  bad_option: ErrorCode.INTERNAL,
  internal: ErrorCode.INTERNAL,
  bad_frame: ErrorCode.BAD_FRAME,
  unsupported_version: ErrorCode.UNSUPPORTED_VERSION,
  hello_required: ErrorCode.HELLO_REQUIRED,
  token_invalid: ErrorCode.TOKEN_INVALID,
  token_expired: ErrorCode.TOKEN_EXPIRED,
  token_identity_mismatch: ErrorCode.TOKEN_IDENTITY_MISMATCH,
  rate_limited: ErrorCode.RATE_LIMITED,
  session_replaced: ErrorCode.SESSION_REPLACED,
  seq_ahead: ErrorCode.SEQ_AHEAD,
};

/**
 * The wire ErrorCode of each AuthError code. The engine meets them when it checks a session token
 * (anything but an expired or mismatched token is TOKEN_INVALID: the device then says Hello without
 * a token) and topic names.
 */
export const AUTH_WIRE_CODE: Readonly<Record<AuthErrorCode, ErrorCodeNumber>> = {
  token_missing: ErrorCode.TOKEN_INVALID,
  token_invalid: ErrorCode.TOKEN_INVALID,
  token_expired: ErrorCode.TOKEN_EXPIRED,
  token_identity_mismatch: ErrorCode.TOKEN_IDENTITY_MISMATCH,
  insufficient_scope: ErrorCode.TOKEN_INVALID,
  signature_invalid: ErrorCode.TOKEN_INVALID,
  unknown_key: ErrorCode.TOKEN_INVALID,
  key_ring_invalid: ErrorCode.TOKEN_INVALID,
  bad_device: ErrorCode.TOKEN_INVALID,
  bad_topic: ErrorCode.BAD_TOPIC,
  device_exists: ErrorCode.TOKEN_INVALID,
  device_unknown: ErrorCode.TOKEN_INVALID,
};

type WireCodeName = Exclude<keyof typeof ErrorCode, "ERROR_CODE_UNSPECIFIED">;

/** The MessagingError code a device session reports for each wire ErrorCode it receives. */
const WIRE_MESSAGING_CODE: Readonly<Record<WireCodeName, MessagingErrorCode>> = {
  BAD_FRAME: "bad_frame",
  UNSUPPORTED_VERSION: "unsupported_version",
  HELLO_REQUIRED: "hello_required",
  TOKEN_INVALID: "token_invalid",
  TOKEN_EXPIRED: "token_expired",
  TOKEN_IDENTITY_MISMATCH: "token_identity_mismatch",
  DEVICE_REVOKED: "device_revoked",
  DEVICE_UNKNOWN: "device_unknown",
  PAYLOAD_TOO_LARGE: "payload_too_large",
  QUEUE_FULL: "queue_full",
  RATE_LIMITED: "rate_limited",
  BAD_TOPIC: "bad_topic",
  TOO_MANY_TOPICS: "too_many_topics",
  INTERNAL: "internal",
  SESSION_REPLACED: "session_replaced",
  SHUTTING_DOWN: "shutting_down",
  SEQ_AHEAD: "seq_ahead",
};

const BY_NUMBER = new Map<number, MessagingErrorCode>(
  (Object.entries(WIRE_MESSAGING_CODE) as [WireCodeName, MessagingErrorCode][]).map(([name, code]) => [ErrorCode[name], code]),
);

/** The MessagingError code for a wire ErrorCode from the server; a code this version does not know counts as "internal" (docs/protocol.md). */
export function messagingCodeOfWire(code: ErrorCodeNumber): MessagingErrorCode {
  return BY_NUMBER.get(code) ?? "internal";
}

/** The protocol's ErrorCode for an error the engine sends a device (INTERNAL for anything unexpected). */
export function wireErrorCode(e: unknown): ErrorCodeNumber {
  if (e instanceof AuthError) return AUTH_WIRE_CODE[e.code];
  if (e instanceof MessagingError) return MESSAGING_WIRE_CODE[e.code];
  if (e instanceof WireError) return ErrorCode.BAD_FRAME;
  return ErrorCode.INTERNAL;
}
