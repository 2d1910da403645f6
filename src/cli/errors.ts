/**
 * Errors the CLI expects and reports as one line.
 *
 * - `UsageError`: the command line is wrong (exit code 2).
 * - `CliError`: the command was fine but the work failed (exit code 1 unless told).
 * Anything else is a bug and is reported as an internal error.
 */

export class UsageError extends Error {
  override readonly name = "UsageError";
}

export class CliError extends Error {
  override readonly name = "CliError";
  readonly exitCode: number;

  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

const SYSTEM_ERRORS: Readonly<Record<string, string>> = {
  EADDRINUSE: "address already in use",
  EADDRNOTAVAIL: "address not available on this machine",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "temporary failure in name resolution",
  EAI_FAIL: "name resolution failed",
  EAFNOSUPPORT: "address family not supported",
  ECONNREFUSED: "connection refused",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  EINVAL: "invalid argument",
};

/** The `code` property of an error-like value, if it is a string. */
export function errorCode(e: unknown): string | undefined {
  if (typeof e === "object" && e !== null && "code" in e) {
    const code = (e as { code: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/**
 * A short human description of an expected failure: system errors (bind,
 * lookup) by their meaning, errors with a stable `code` (such as the DTLS
 * engine's) as "message (code)".
 */
export function describeError(e: unknown): string {
  const code = errorCode(e);
  if (code !== undefined) {
    const system = SYSTEM_ERRORS[code];
    if (system !== undefined) return system;
  }
  const message = e instanceof Error ? e.message : String(e);
  // Wrapped system errors keep the code only in the text ("bind EADDRINUSE 1.2.3.4:5").
  for (const token of message.match(/\bE[A-Z_]{3,}\b/g) ?? []) {
    const system = SYSTEM_ERRORS[token];
    if (system !== undefined) return system;
  }
  const oneLine = firstLine(message);
  if (code === undefined || oneLine.includes(code)) return oneLine;
  return oneLine === "" ? code : `${oneLine} (${code})`;
}

/** True for errors that should be reported without a stack trace. */
export function isExpectedError(e: unknown): boolean {
  return e instanceof UsageError || e instanceof CliError || errorCode(e) !== undefined;
}

export function firstLine(text: string): string {
  const nl = text.indexOf("\n");
  return (nl === -1 ? text : text.slice(0, nl)).trim();
}
