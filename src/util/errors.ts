/**
 * Typed errors with a stable `code`. Codes are part of the public contract:
 * logs, metrics and callers match on them, never on messages.
 */
export class DtlspushError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DtlspushError";
    this.code = code;
  }
}

/** Thrown by the byte reader when input ends early or holds bytes it should not. */
export class DecodeError extends DtlspushError {
  constructor(message: string) {
    super("decode_error", message);
    this.name = "DecodeError";
  }
}
