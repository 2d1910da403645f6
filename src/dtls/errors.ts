import { DtlspushError } from "../util/errors.ts";
import { AlertDescription, alertName, type AlertName } from "./constants.ts";

/**
 * An engine error. `code` is stable; `alert` is the TLS alert that was (or is
 * to be) sent for it, when one applies.
 */
export class DtlsError extends DtlspushError {
  readonly alert: number | undefined;
  constructor(code: string, message: string, alert?: number, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "DtlsError";
    this.alert = alert;
  }
}

/** An error that maps to a fatal alert; its code is the alert's name. */
export function alertError(alert: AlertName, message: string): DtlsError {
  return new DtlsError(alert, message, AlertDescription[alert]);
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

/** The error for a handshake message that arrived where another was due. */
export function unexpectedMessage(msgType: number, wanted: string): DtlsError {
  return alertError("unexpected_message", `expected ${wanted}, got handshake message type ${msgType}`);
}
