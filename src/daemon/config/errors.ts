import { DtlspushError } from "../../util/errors.ts";

/**
 * A configuration the daemon cannot run with: one sentence naming the setting
 * as the user wrote it and where it came from, e.g.
 * `http.listen (from DTLSPUSH_HTTP_LISTEN): expected HOST:PORT, got "8080"`.
 */
export class ConfigError extends DtlspushError {
  declare readonly code: "config_invalid";
  constructor(message: string, options?: { cause?: unknown }) {
    super("config_invalid", message, options);
    this.name = "ConfigError";
  }
}

const FS_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "it is a directory",
  ENOTDIR: "a part of the path is not a directory",
  EROFS: "read-only file system",
  ENOSPC: "no space left on the device",
  EEXIST: "it already exists",
  ELOOP: "too many symbolic links",
  ENAMETOOLONG: "the name is too long",
};

/** A failure in a few words for messages: file system errors by meaning ("permission denied"), others by their first line. */
export function shortReason(e: unknown): string {
  const code = typeof e === "object" && e !== null && "code" in e ? (e as { code: unknown }).code : undefined;
  if (typeof code === "string") {
    const known = FS_ERRORS[code];
    if (known !== undefined) return known;
  }
  const message = e instanceof Error ? e.message : String(e);
  const nl = message.indexOf("\n");
  return (nl === -1 ? message : message.slice(0, nl)).trim();
}
