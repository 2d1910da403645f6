/**
 * The engine's errors: DtlsError with a stable code (the fatal alert's name,
 * a refusal of a new handshake, or a local condition), the alert each code
 * sends, and the errors of received alerts and unexpected handshake messages.
 */
import { DecodeError, DtlspushError } from "../util/errors.ts";
import { AlertDescription, alertName, handshakeName, type AlertName } from "./constants.ts";

/** Codes of errors that end a connection with a fatal alert: the alert's name. */
export type AlertErrorCode = Exclude<AlertName, "close_notify" | "user_canceled" | "no_renegotiation">;

/** Refusals of a new handshake (the server's handshakeError; stats.refusals counts them by code). */
export type RefusalCode =
  /** the global cap on handshakes in progress or on sessions is reached */
  | "over_capacity"
  /** the source address has its cap of handshakes in progress */
  | "host_handshakes_exceeded"
  /** the source address has its cap of sessions */
  | "host_sessions_exceeded"
  /** the memory budget of all handshakes in progress is spent */
  | "handshake_memory_exceeded";

/** Codes of errors that are not (or not only) an alert of ours. */
export type LocalErrorCode =
  | RefusalCode
  /** orderly close (close_notify, either side) or closed before it started */
  | "closed"
  /** the peer sent a fatal alert (`alert` is the peer's description) */
  | "alert_received"
  | "bad_option"
  | "bad_suite"
  | "listen_failed"
  | "connect_failed"
  | "socket_error"
  /** a flight was retransmitted to the limit without an answer (or the client's whole-handshake limit) */
  | "timeout"
  /** the server's handshake deadline passed */
  | "handshake_timeout"
  | "idle_timeout"
  | "too_large"
  | "not_established"
  | "sequence_exhausted"
  /** a new cookie-valid ClientHello from the same address and port took the connection's place */
  | "replaced";

export type DtlsErrorCode = AlertErrorCode | LocalErrorCode;

/**
 * The one map from error code to the fatal alert we send for it (undefined:
 * none). Every path that fails a connection goes through it: a code nobody
 * mapped does not compile.
 */
const ALERT_OF: Record<DtlsErrorCode, AlertName | undefined> = {
  unexpected_message: "unexpected_message",
  bad_record_mac: "bad_record_mac",
  record_overflow: "record_overflow",
  handshake_failure: "handshake_failure",
  bad_certificate: "bad_certificate",
  unsupported_certificate: "unsupported_certificate",
  certificate_revoked: "certificate_revoked",
  certificate_expired: "certificate_expired",
  certificate_unknown: "certificate_unknown",
  illegal_parameter: "illegal_parameter",
  unknown_ca: "unknown_ca",
  access_denied: "access_denied",
  decode_error: "decode_error",
  decrypt_error: "decrypt_error",
  protocol_version: "protocol_version",
  insufficient_security: "insufficient_security",
  internal_error: "internal_error",
  unsupported_extension: "unsupported_extension",
  unknown_psk_identity: "unknown_psk_identity",
  // refusals before any connection exists: nothing is sent
  over_capacity: undefined,
  host_handshakes_exceeded: undefined,
  host_sessions_exceeded: undefined,
  handshake_memory_exceeded: undefined,
  closed: undefined,
  alert_received: undefined,
  bad_option: undefined,
  bad_suite: undefined,
  listen_failed: undefined,
  connect_failed: undefined,
  socket_error: undefined,
  timeout: undefined,
  handshake_timeout: undefined,
  idle_timeout: undefined,
  too_large: undefined,
  not_established: undefined,
  sequence_exhausted: undefined,
  replaced: undefined,
};

/** The fatal alert (description number) we send for an error code, or undefined. */
export function alertFor(code: DtlsErrorCode): number | undefined {
  const name = ALERT_OF[code];
  return name === undefined ? undefined : AlertDescription[name];
}

/**
 * An engine error. `code` is stable; `alert` is the fatal alert sent for it
 * (from the code, see alertFor), or for "alert_received" / "closed" the
 * description the peer sent.
 */
export class DtlsError extends DtlspushError {
  declare readonly code: DtlsErrorCode;
  readonly alert: number | undefined;
  /** `peerAlert`: only for "alert_received" and "closed", the description the peer sent. */
  constructor(code: DtlsErrorCode, message: string, peerAlert?: number, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "DtlsError";
    this.alert = code === "alert_received" || code === "closed" ? peerAlert : alertFor(code);
  }
}

/**
 * A client handshake that did not finish in time (code "timeout"):
 * `serverAnswered` when a datagram came from the server meanwhile, so the
 * server is up and the path loses datagrams (worth another attempt there).
 */
export class HandshakeTimeoutError extends DtlsError {
  readonly serverAnswered: boolean;
  constructor(message: string, serverAnswered: boolean) {
    super("timeout", serverAnswered ? `${message} (the server answered: the path loses datagrams)` : message);
    this.serverAnswered = serverAnswered;
  }
}

/** A new handshake refused by the server's caps (no alert: the ClientHello is dropped). */
export class RefusalError extends DtlsError {
  declare readonly code: RefusalCode;
  constructor(code: RefusalCode, message: string) {
    super(code, message);
  }
}

/** An error that maps to a fatal alert; its code is the alert's name. */
export function alertError(alert: AlertErrorCode, message: string): DtlsError {
  return new DtlsError(alert, message);
}

/** The error for an alert received from the peer. */
export function receivedAlertError(level: number, description: number): DtlsError {
  const name = alertName(description);
  return new DtlsError(
    description === AlertDescription.close_notify ? "closed" : "alert_received",
    `peer sent ${level === 2 ? "fatal" : "warning"} alert ${name} (${description})`,
    description,
  );
}

/** The error for a handshake message that arrived where another was due: `wanted` names what the state expects. */
export function unexpectedMessage(msgType: number, wanted: string): DtlsError {
  return alertError("unexpected_message", `expected ${wanted}, got ${handshakeName(msgType)}`);
}

/** The message of anything thrown (an Error's message, else the value as a string). */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Anything thrown while handling a peer's input, as the DtlsError to fail
 * with: a DtlsError as it is; input that does not parse (the byte reader's
 * DecodeError, a RangeError from a truncated buffer) decode_error; anything
 * else internal_error.
 */
export function toDtlsError(e: unknown): DtlsError {
  if (e instanceof DtlsError) return e;
  if (e instanceof DecodeError || e instanceof RangeError) return alertError("decode_error", e.message);
  return alertError("internal_error", errorMessage(e));
}
