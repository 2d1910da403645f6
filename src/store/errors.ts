import { DtlspushError } from "../util/errors.ts";

/**
 * Stable codes of store errors:
 * - store_open_failed: the file could not be opened or created (missing permission, not a SQLite
 *   database, a path under a regular file, ...)
 * - store_version: the file holds a schema this version does not know (newer, or another application's)
 * - store_closed: the store was used after close()
 * - store_corrupt: a stored row does not have the shape this version wrote
 * - invalid_record: a record given to putDevice/putSetting is malformed
 * - identity_in_use: a PSK or certificate identity already belongs to another device
 * - duplicate_message: a committed message id is already stored (or repeated in the batch)
 * - commit_failed: any other reason a batch was refused or failed; nothing of it was applied
 * - store_failed: a commit was refused because an earlier one failed (the store keeps a prefix of
 *   the batches; restart the daemon to continue from what is stored)
 * - store_unavailable: a shared store (Redis) is unreachable for now; the call was not done (try
 *   again later). Commits already handed to the store are kept and applied once it is back.
 * - write_failed / read_failed: the database failed outside commit (I/O error, disk full, ...)
 */
export type StoreErrorCode =
  | "store_open_failed"
  | "store_version"
  | "store_closed"
  | "store_corrupt"
  | "invalid_record"
  | "identity_in_use"
  | "duplicate_message"
  | "commit_failed"
  | "store_failed"
  | "store_unavailable"
  | "write_failed"
  | "read_failed";

export class StoreError extends DtlspushError {
  declare readonly code: StoreErrorCode;
  constructor(code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "StoreError";
  }
}

/** The message of an unknown thrown value, for wrapping it in a StoreError. */
export function describeError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The refusal of a commit after an earlier one failed (the Store's prefix rule). */
export function refusedAfterFailure(cause: Error): StoreError {
  return new StoreError("store_failed", `an earlier commit failed (${cause.message}); nothing more is committed until a restart`, { cause });
}
