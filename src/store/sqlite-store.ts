/**
 * The durable Store on SQLite (node:sqlite, synchronous).
 *
 * Durability: the database runs in WAL journal mode and every `commit` (or
 * `commitGroup` of several batches, each in its own savepoint) is one
 * transaction (BEGIN IMMEDIATE ... COMMIT). When it returns, the
 * transaction is in the WAL file:
 * - synchronous "normal" (the default): a returned commit survives a crash or
 *   kill -9 of the process (the data is in the operating system's cache); a power
 *   loss or OS crash may lose the last commits, but never corrupts the database.
 * - synchronous "full": the WAL is fsync'ed on every commit, so a returned commit
 *   also survives power loss, at the cost of one fsync per commit.
 *
 * Other settings: foreign keys on (a delivery must reference a stored message),
 * a busy timeout so that a second process holding the write lock is waited for,
 * STRICT tables. The schema, its version (`PRAGMA user_version`) and the
 * in-place upgrades are in sqlite-schema.ts; a file written by a newer version
 * is refused (StoreError "store_version"). Every statement is prepared once,
 * at open.
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type { DatabaseSync, SQLInputValue, SQLOutputValue, StatementResultingChanges, StatementSync } from "node:sqlite";
import { StoreError, describeError, refusedAfterFailure, type StoreErrorCode } from "./errors.ts";
import type {
  DeliveryRecord,
  DeliveryState,
  DeviceCounters,
  DeviceRecord,
  MessageRecord,
  Receipt,
  ReceiptInput,
  SyncStore,
  Subscription,
  WriteBatch,
} from "./types.ts";
import { checkBatch, checkDevice, checkSetting, receiptRecord } from "./validate.ts";
import { decodeRow, encodeRow, parseRowList, rowList, rowsOf, type ReceiptRow } from "./receipt-rows.ts";
import { checkVersion, migrate } from "./sqlite-schema.ts";

export { SCHEMA_V1, SQLITE_SCHEMA_VERSION } from "./sqlite-schema.ts";

/** A batch's outcome in a group commit: its stored receipts, or why nothing of it was applied. */
export type CommitOutcome = { readonly ok: true; readonly receipts: Receipt[] } | { readonly ok: false; readonly error: StoreError };

/** The SQLite SyncStore, with group commit (what its worker thread uses). */
export interface SqliteSyncStore extends SyncStore {
  commitGroup(batches: readonly WriteBatch[]): CommitOutcome[];
}

export interface SqliteStoreOptions {
  /** "normal" (default): commits survive kill -9; "full": commits also survive power loss. */
  readonly synchronous?: "normal" | "full" | undefined;
  /**
   * WAL pages after which a commit checkpoints the WAL into the database
   * itself (SQLite's wal_autocheckpoint; default 1000). The worker store
   * checkpoints on a thread of its own and sets this higher, as a safety net
   * only: a checkpoint inside a commit holds up every commit behind it.
   */
  readonly walAutocheckpointPages?: number | undefined;
}

/** How long a statement waits for another connection's lock before failing, ms. */
const BUSY_TIMEOUT_MS = 5_000;

/** Receipts rows prune reads at a time while it walks them in id order. */
const PRUNE_WALK_ROWS = 256;

/**
 * The journal's row writes are multi-row statements: one statement per kind of
 * change and commit (per BULK_ROWS rows), not one per row, so a turn that sends
 * to or hears acks from many devices (a topic fan-out) costs a few statements.
 */
const BULK_ROWS = 100;

interface BulkShape {
  /** the statement up to VALUES / IN (VALUES */
  readonly head: string;
  /** after the row tuples */
  readonly tail: string;
  /** parameters per row */
  readonly columns: number;
  /** one row's tuple, when not `columns` plain parameters */
  readonly tuple?: string;
}

const BULK = {
  upsertDelivery: {
    head: "INSERT INTO deliveries (device, message_id, ord, seq, tombstone) VALUES",
    tail: " ON CONFLICT (device, message_id) DO UPDATE SET ord = excluded.ord, seq = excluded.seq, tombstone = excluded.tombstone",
    columns: 5,
  },
  upsertCounters: {
    head: "INSERT INTO counters (device, last_seq, acked_seq) VALUES",
    tail: " ON CONFLICT (device) DO UPDATE SET last_seq = excluded.last_seq, acked_seq = excluded.acked_seq",
    columns: 3,
  },
  insertReceipts: {
    head: "INSERT INTO receipts (id, count, at_min, at_max, messages, entries) VALUES",
    tail: "",
    columns: 6,
  },
  /** appends receipts-row ids to stored messages' lists, by message id */
  appendReceiptRows: {
    head: "UPDATE messages SET receipt_rows = receipt_rows || v.column2 FROM (VALUES",
    tail: ") AS v WHERE messages.id = v.column1",
    columns: 2,
  },
  upsertOrphans: {
    head: "INSERT INTO receipt_orphans (message_id, last_row, receipt_rows) VALUES",
    tail: " ON CONFLICT (message_id) DO UPDATE SET last_row = max(last_row, excluded.last_row), receipt_rows = receipt_rows || excluded.receipt_rows",
    columns: 3,
  },
} as const satisfies Record<string, BulkShape>;

/** SQLite extended result codes we tell apart. */
const SQLITE_NOTADB = 26;
const SQLITE_CONSTRAINT_PRIMARYKEY = 1555;
const SQLITE_CONSTRAINT_UNIQUE = 2067;
const SQLITE_CONSTRAINT_FOREIGNKEY = 787;

/**
 * Opens (creating if needed, with its parent directory) the SQLite store at
 * `path`. Throws StoreError "store_open_failed" or "store_version" naming the path.
 */
export function openSqliteStore(path: string, options: SqliteStoreOptions = {}): SqliteSyncStore {
  const synchronous = options.synchronous ?? "normal";
  if (synchronous !== "normal" && synchronous !== "full") {
    throw new StoreError("store_open_failed", `Cannot open store ${path}: synchronous must be "normal" or "full", got ${String(synchronous)}.`);
  }
  if (path !== ":memory:") {
    try {
      mkdirSync(dirname(path), { recursive: true });
    } catch (e) {
      throw new StoreError("store_open_failed", `Cannot create the directory of store ${path}: ${describeError(e)}.`, { cause: e });
    }
  }
  const sqlite = loadSqlite(path);
  let db: DatabaseSync;
  try {
    db = new sqlite.DatabaseSync(path, { enableForeignKeyConstraints: true, timeout: BUSY_TIMEOUT_MS });
  } catch (e) {
    throw new StoreError("store_open_failed", `Cannot open store ${path}: ${describeError(e)}.`, { cause: e });
  }
  try {
    // Refuse a file that is not ours before changing anything in it (journal mode is persistent).
    checkVersion(db, path);
    db.exec("PRAGMA journal_mode = WAL");
    db.exec(`PRAGMA synchronous = ${synchronous === "full" ? "FULL" : "NORMAL"}`);
    db.exec("PRAGMA foreign_keys = ON");
    const pages = options.walAutocheckpointPages;
    if (pages !== undefined) {
      if (!Number.isSafeInteger(pages) || pages < 0)
        throw new StoreError("store_open_failed", `Cannot open store ${path}: walAutocheckpointPages must be a whole number >= 0, got ${pages}.`);
      db.exec(`PRAGMA wal_autocheckpoint = ${pages}`);
    }
    migrate(db, path);
    return new SqliteStore(db, path);
  } catch (e) {
    try {
      db.close();
    } catch {
      // already failing; the first error is the one to report
    }
    if (e instanceof StoreError) throw e;
    if (errcode(e) === SQLITE_NOTADB) {
      throw new StoreError("store_open_failed", `Cannot open store ${path}: the file is not a SQLite database.`, { cause: e });
    }
    throw new StoreError("store_open_failed", `Cannot open store ${path}: ${describeError(e)}.`, { cause: e });
  }
}

/**
 * node:sqlite, loaded when a SQLite store is opened rather than at import, so
 * that the memory store (and everything importing this layer) still loads on a
 * Node.js without it; there, opening a SQLite store says what is missing.
 */
function loadSqlite(path: string): typeof import("node:sqlite") {
  const sqlite = process.getBuiltinModule("node:sqlite") as typeof import("node:sqlite") | undefined;
  if (sqlite === undefined) {
    throw new StoreError(
      "store_open_failed",
      `Cannot open store ${path}: this Node.js ${process.version} has no node:sqlite module (Node.js 22.13 or newer is needed).`,
    );
  }
  return sqlite;
}

function errcode(e: unknown): number | undefined {
  const code = (e as { errcode?: unknown } | null)?.errcode;
  return typeof code === "number" ? code : undefined;
}

type Row = Record<string, SQLOutputValue>;

const RECEIPT_COLUMNS = "id, count, at_min, at_max, messages, entries";

/** A commit's receipts as they will be stored: with ids, in rows, and the rows holding each message's. */
interface PlannedReceipts {
  readonly stored: Receipt[];
  readonly rows: ReceiptRow[];
  /** message id -> ids of the rows holding its receipts */
  readonly rowsOfMessage: Map<string, number[]>;
}

class SqliteStore implements SqliteSyncStore {
  readonly kind = "sqlite";
  private readonly db: DatabaseSync;
  private readonly path: string;
  private closed = false;
  /** SAVEPOINT / RELEASE / ROLLBACK TO of commitGroup, prepared when first needed */
  private savepoint: Record<"begin" | "release" | "rollback", StatementSync> | undefined;
  /** multi-row statements, by shape and row count, prepared when first needed */
  private readonly bulkStatements = new Map<BulkShape, StatementSync[]>();
  private readonly s: Record<
    | "begin"
    | "beginRead"
    | "commit"
    | "rollback"
    | "messageExists"
    | "getDevice"
    | "findByPsk"
    | "findByCert"
    | "listDevices"
    | "upsertDevice"
    | "deleteDevice"
    | "keepDeviceSeqs"
    | "deleteDelivery"
    | "deleteDeviceDeliveries"
    | "deleteDeviceSubscriptions"
    | "insertMessage"
    | "insertSubscription"
    | "deleteSubscription"
    | "getMessage"
    | "receiptRow"
    | "messageReceiptRows"
    | "orphanReceiptRows"
    | "receiptsAfter"
    | "lastReceiptId"
    | "loadCounters"
    | "loadDeliveries"
    | "loadMessages"
    | "loadSubscriptions"
    | "pruneMessages"
    | "prunedMessageRows"
    | "pruneWalk"
    | "deleteReceiptRows"
    | "rewriteReceiptRow"
    | "firstReceiptRow"
    | "pruneOrphans"
    | "getSetting"
    | "putSetting",
    StatementSync
  >;

  constructor(db: DatabaseSync, path: string) {
    this.db = db;
    this.path = path;
    const p = (sql: string): StatementSync => db.prepare(sql);
    this.s = {
      begin: p("BEGIN IMMEDIATE"),
      beginRead: p("BEGIN"),
      commit: p("COMMIT"),
      rollback: p("ROLLBACK"),
      messageExists: p("SELECT 1 FROM messages WHERE id = ?"),
      getDevice: p("SELECT * FROM devices WHERE id = ?"),
      findByPsk: p("SELECT * FROM devices WHERE psk_identity = ?"),
      findByCert: p("SELECT * FROM devices WHERE cert_identity = ?"),
      listDevices: p("SELECT * FROM devices ORDER BY id"),
      upsertDevice: p(
        `INSERT INTO devices (id, psk_identity, psk_key, cert_identity, revoked, topics, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET psk_identity = excluded.psk_identity, psk_key = excluded.psk_key,
           cert_identity = excluded.cert_identity, revoked = excluded.revoked, topics = excluded.topics,
           created_at = excluded.created_at, updated_at = excluded.updated_at`,
      ),
      deleteDevice: p("DELETE FROM devices WHERE id = ?"),
      keepDeviceSeqs: p(
        `INSERT INTO counters (device, last_seq, acked_seq)
         SELECT device, MAX(seq), 0 FROM deliveries WHERE device = ? AND seq > 0 GROUP BY device
         ON CONFLICT (device) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)`,
      ),
      deleteDelivery: p("DELETE FROM deliveries WHERE device = ? AND message_id = ?"),
      deleteDeviceDeliveries: p("DELETE FROM deliveries WHERE device = ?"),
      deleteDeviceSubscriptions: p("DELETE FROM subscriptions WHERE device = ?"),
      insertMessage: p(
        `INSERT INTO messages (id, topic, device, payload, content_type, created_at, expires_at, priority, collapse_key, publisher, signature, receipt_rows)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      insertSubscription: p("INSERT INTO subscriptions (device, topic) VALUES (?, ?) ON CONFLICT DO NOTHING"),
      deleteSubscription: p("DELETE FROM subscriptions WHERE device = ? AND topic = ?"),
      getMessage: p("SELECT * FROM messages WHERE id = ?"),
      receiptRow: p(`SELECT ${RECEIPT_COLUMNS} FROM receipts WHERE id = ?`),
      // a message's receipts: the rows its own list names, and those written while it was not stored
      messageReceiptRows: p("SELECT receipt_rows FROM messages WHERE id = ?"),
      orphanReceiptRows: p("SELECT receipt_rows FROM receipt_orphans WHERE message_id = ?"),
      receiptsAfter: p(`SELECT ${RECEIPT_COLUMNS} FROM receipts WHERE id > ? ORDER BY id LIMIT ?`),
      lastReceiptId: p(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'receipts'), 0), coalesce((SELECT max(id) FROM receipts), 0)) AS id",
      ),
      loadCounters: p("SELECT device, last_seq, acked_seq FROM counters ORDER BY device"),
      loadDeliveries: p("SELECT device, message_id, ord, seq, tombstone FROM deliveries ORDER BY device, ord, message_id"),
      loadMessages: p("SELECT * FROM messages AS m WHERE EXISTS (SELECT 1 FROM deliveries AS d WHERE d.message_id = m.id) ORDER BY m.id"),
      loadSubscriptions: p("SELECT device, topic FROM subscriptions ORDER BY device, topic"),
      pruneMessages: p("DELETE FROM messages WHERE expires_at < ? AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.message_id = messages.id)"),
      prunedMessageRows: p(
        `SELECT id, receipt_rows FROM messages WHERE expires_at < ? AND receipt_rows != ''
           AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.message_id = messages.id)`,
      ),
      pruneWalk: p("SELECT id, at_min, at_max FROM receipts WHERE id > ? ORDER BY id LIMIT ?"),
      deleteReceiptRows: p("DELETE FROM receipts WHERE id > ? AND id <= ?"),
      rewriteReceiptRow: p("UPDATE receipts SET count = ?, at_min = ?, at_max = ?, messages = ?, entries = ? WHERE id = ?"),
      firstReceiptRow: p("SELECT min(id) AS id FROM receipts"),
      pruneOrphans: p("DELETE FROM receipt_orphans WHERE last_row < ?"),
      getSetting: p("SELECT value FROM settings WHERE key = ?"),
      putSetting: p("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
    };
  }

  private open(): void {
    if (this.closed) throw new StoreError("store_closed", `Store ${this.path} is closed.`);
  }

  /** Runs `fn` in one write transaction; any failure rolls it back and is rethrown as StoreError. */
  private transaction<T>(code: StoreErrorCode, what: string, fn: () => T): T {
    try {
      this.s.begin.run();
      const result = fn();
      this.s.commit.run();
      return result;
    } catch (e) {
      if (this.db.isTransaction) this.s.rollback.run();
      if (e instanceof StoreError) throw e;
      throw new StoreError(code, `${what} failed on store ${this.path}: ${describeError(e)}.`, { cause: e });
    }
  }

  /** Runs `shape` once over all of `params` (its rows, flattened): one statement, prepared once per row count. */
  private bulk(shape: BulkShape, params: SQLInputValue[]): StatementResultingChanges {
    const rows = params.length / shape.columns;
    let byRows = this.bulkStatements.get(shape);
    if (byRows === undefined) this.bulkStatements.set(shape, (byRows = []));
    let stmt = byRows[rows];
    if (stmt === undefined) {
      const tuple = shape.tuple ?? `(${new Array<string>(shape.columns).fill("?").join(", ")})`;
      stmt = this.db.prepare(`${shape.head} ${new Array<string>(rows).fill(tuple).join(", ")}${shape.tail}`);
      byRows[rows] = stmt;
    }
    return stmt.run(...params);
  }

  /** `bulk` over `items` in chunks of at most BULK_ROWS rows. */
  private bulkAll<T>(shape: BulkShape, items: readonly T[], row: (item: T) => SQLInputValue[]): void {
    for (let i = 0; i < items.length; i += BULK_ROWS) this.bulk(shape, items.slice(i, i + BULK_ROWS).flatMap(row));
  }

  /** Runs a read, rethrowing database failures as StoreError "read_failed". */
  private read<T>(what: string, fn: () => T): T {
    this.open();
    try {
      return fn();
    } catch (e) {
      if (e instanceof StoreError) throw e;
      throw new StoreError("read_failed", `Reading ${what} failed on store ${this.path}: ${describeError(e)}.`, { cause: e });
    }
  }

  // --- device registry

  putDevice(device: DeviceRecord): void {
    this.open();
    checkDevice(device);
    this.write("putDevice", () => {
      const psk = device.psk?.identity;
      const cert = device.certIdentity;
      const pskOwner = psk === undefined ? undefined : this.s.findByPsk.get(psk);
      if (pskOwner !== undefined && pskOwner["id"] !== device.id) {
        throw new StoreError(
          "identity_in_use",
          `PSK identity ${JSON.stringify(psk)} of device ${JSON.stringify(device.id)} is already used by device ${JSON.stringify(pskOwner["id"])}.`,
        );
      }
      const certOwner = cert === undefined ? undefined : this.s.findByCert.get(cert);
      if (certOwner !== undefined && certOwner["id"] !== device.id) {
        throw new StoreError(
          "identity_in_use",
          `Certificate identity ${JSON.stringify(cert)} of device ${JSON.stringify(device.id)} is already used by device ${JSON.stringify(certOwner["id"])}.`,
        );
      }
      this.s.upsertDevice.run(
        device.id,
        psk ?? null,
        device.psk?.key ?? null,
        cert ?? null,
        device.revoked ? 1 : 0,
        JSON.stringify(device.topics),
        device.createdAt,
        device.updatedAt,
      );
    });
  }

  private write<T>(what: string, fn: () => T): T {
    this.open();
    return this.transaction("write_failed", what, fn);
  }

  getDevice(id: string): DeviceRecord | undefined {
    return this.read("a device", () => {
      const row = this.s.getDevice.get(id);
      return row === undefined ? undefined : this.device(row);
    });
  }

  findDeviceByPskIdentity(identity: string): DeviceRecord | undefined {
    return this.read("a device", () => {
      const row = this.s.findByPsk.get(identity);
      return row === undefined ? undefined : this.device(row);
    });
  }

  findDeviceByCertIdentity(identity: string): DeviceRecord | undefined {
    return this.read("a device", () => {
      const row = this.s.findByCert.get(identity);
      return row === undefined ? undefined : this.device(row);
    });
  }

  listDevices(): DeviceRecord[] {
    return this.read("devices", () => this.s.listDevices.all().map((row) => this.device(row)));
  }

  deleteDevice(id: string): boolean {
    return this.write("deleteDevice", () => {
      const existed = this.s.deleteDevice.run(id).changes > 0;
      // seqs given to its deliveries stay taken (the engine writes lastSeq at ack, not at send)
      this.s.keepDeviceSeqs.run(id);
      this.s.deleteDeviceDeliveries.run(id);
      this.s.deleteDeviceSubscriptions.run(id);
      return existed;
    });
  }

  // --- delivery journal

  commit(batch: WriteBatch): Receipt[] {
    const outcome = this.commitGroup([batch])[0] as CommitOutcome;
    if (!outcome.ok) throw outcome.error;
    return outcome.receipts;
  }

  /**
   * Group commit: applies `batches` in order in ONE transaction, each inside
   * its own savepoint. A batch that fails (a StoreError, or any database error
   * as commit_failed) is rolled back alone; the batches before it are
   * committed, and every batch after it is refused with store_failed without
   * being applied, so the file holds a prefix of the batches. When the
   * transaction itself cannot begin or commit, every batch fails with that error.
   */
  commitGroup(batches: readonly WriteBatch[]): CommitOutcome[] {
    this.open();
    const outcomes: CommitOutcome[] = [];
    try {
      this.s.begin.run();
    } catch (e) {
      const error = this.commitError(e);
      return batches.map(() => ({ ok: false, error }));
    }
    let failed: StoreError | undefined;
    for (const batch of batches) {
      if (failed !== undefined) {
        outcomes.push({ ok: false, error: refusedAfterFailure(failed) });
        continue;
      }
      try {
        outcomes.push({ ok: true, receipts: this.applyBatch(batch) });
      } catch (e) {
        failed = this.commitError(e);
        outcomes.push({ ok: false, error: failed });
        // Some errors (disk full, I/O) make SQLite roll back the whole transaction: then nothing of the group is stored.
        if (!this.db.isTransaction) return this.allFailed(outcomes, batches.length, failed);
      }
    }
    try {
      this.s.commit.run();
    } catch (e) {
      if (this.db.isTransaction) this.s.rollback.run();
      return this.allFailed(outcomes, batches.length, this.commitError(e));
    }
    return outcomes;
  }

  /** The outcomes of a group whose transaction was lost: `error` for the batches that had been applied and those not reached. */
  private allFailed(outcomes: CommitOutcome[], total: number, error: StoreError): CommitOutcome[] {
    const all: CommitOutcome[] = outcomes.map((o) => (o.ok ? { ok: false, error } : o));
    while (all.length < total) all.push({ ok: false, error: refusedAfterFailure(error) });
    return all;
  }

  private commitError(e: unknown): StoreError {
    return e instanceof StoreError ? e : new StoreError("commit_failed", `Commit failed on store ${this.path}: ${describeError(e)}.`, { cause: e });
  }

  /** Runs `fn` inside a savepoint of the open transaction: a failure rolls back what `fn` wrote, and only that. */
  private inSavepoint<T>(fn: () => T): T {
    const sp = (this.savepoint ??= {
      begin: this.db.prepare("SAVEPOINT batch"),
      release: this.db.prepare("RELEASE batch"),
      rollback: this.db.prepare("ROLLBACK TO batch"),
    });
    sp.begin.run();
    try {
      const result = fn();
      sp.release.run();
      return result;
    } catch (e) {
      if (this.db.isTransaction) {
        sp.rollback.run();
        sp.release.run();
      }
      throw e;
    }
  }

  /** One batch's rows, inside commitGroup's transaction; returns its stored receipts. */
  private applyBatch(batch: WriteBatch): Receipt[] {
    checkBatch(batch);
    const s = this.s;
    return this.inSavepoint(() => {
      const receipts = this.planReceipts(batch.receipts ?? []);
      for (const m of batch.messages ?? []) {
        // a message stored now gets the rows of this commit's receipts of it in its insert
        const rows = receipts.rowsOfMessage.get(m.id);
        receipts.rowsOfMessage.delete(m.id);
        try {
          s.insertMessage.run(
            m.id,
            m.topic,
            m.device,
            m.payload,
            m.contentType,
            m.createdAt,
            m.expiresAt,
            m.priority,
            m.collapseKey,
            m.publisher,
            m.signature,
            rows === undefined ? "" : rowList(rows),
          );
        } catch (e) {
          // messages.id is UNIQUE since version 2 (the PRIMARY KEY in version 1)
          const code = errcode(e);
          if (code !== SQLITE_CONSTRAINT_UNIQUE && code !== SQLITE_CONSTRAINT_PRIMARYKEY) throw e;
          throw new StoreError("duplicate_message", `Message id ${JSON.stringify(m.id)} is already stored; nothing of the batch was applied.`, {
            cause: e,
          });
        }
      }
      const deliveries = batch.deliveries ?? [];
      for (let i = 0; i < deliveries.length; i += BULK_ROWS) {
        const chunk = deliveries.slice(i, i + BULK_ROWS);
        try {
          this.bulk(
            BULK.upsertDelivery,
            chunk.flatMap((d) => [d.device, d.messageId, d.order, d.seq, d.tombstone ? 1 : 0]),
          );
        } catch (e) {
          if (errcode(e) !== SQLITE_CONSTRAINT_FOREIGNKEY) throw e;
          const d = chunk.find((x) => s.messageExists.get(x.messageId) === undefined) ?? (chunk[0] as DeliveryRecord);
          throw new StoreError(
            "commit_failed",
            `Delivery to device ${JSON.stringify(d.device)} references message ${JSON.stringify(d.messageId)}, which is not stored; nothing of the batch was applied.`,
            { cause: e },
          );
        }
      }
      // one statement per row: a multi-row DELETE (… IN (VALUES …)) costs more per row than this
      for (const k of batch.removeDeliveries ?? []) s.deleteDelivery.run(k.device, k.messageId);
      this.bulkAll(BULK.upsertCounters, batch.counters ?? [], (c) => [c.device, c.lastSeq, c.ackedSeq]);
      for (const x of batch.subscribe ?? []) s.insertSubscription.run(x.device, x.topic);
      for (const x of batch.unsubscribe ?? []) s.deleteSubscription.run(x.device, x.topic);
      this.writeReceipts(receipts);
      return receipts.stored;
    });
  }

  /**
   * A commit's receipts: ids following the highest ever given (read under the
   * write lock), in input order, in rows of up to RECEIPTS_PER_ROW whatever
   * messages they concern.
   */
  private planReceipts(receipts: readonly ReceiptInput[]): PlannedReceipts {
    const rowsOfMessage = new Map<string, number[]>();
    if (receipts.length === 0) return { stored: [], rows: [], rowsOfMessage };
    let id = this.int(this.s.lastReceiptId.get() ?? {}, "id");
    const stored = receipts.map((r) => receiptRecord(r, ++id));
    const rows = rowsOf(stored);
    let next = 0;
    for (const row of rows) {
      for (const r of stored.slice(next, next + row.count)) {
        const list = rowsOfMessage.get(r.messageId);
        if (list === undefined) rowsOfMessage.set(r.messageId, [row.id]);
        else if (list.at(-1) !== row.id) list.push(row.id);
      }
      next += row.count;
    }
    return { stored, rows, rowsOfMessage };
  }

  /**
   * Writes a commit's receipts rows and appends their ids to the lists of the
   * stored messages they concern (the messages of the same batch got theirs at
   * insert); a message not stored gets an orphan entry, found by message id.
   */
  private writeReceipts(planned: PlannedReceipts): void {
    if (planned.rows.length === 0) return;
    this.bulkAll(BULK.insertReceipts, planned.rows, (r) => [r.id, r.count, r.atMin, r.atMax, r.messages, r.entries]);
    const others = [...planned.rowsOfMessage];
    let updated = 0;
    for (let i = 0; i < others.length; i += BULK_ROWS) {
      const chunk = others.slice(i, i + BULK_ROWS);
      updated += Number(
        this.bulk(
          BULK.appendReceiptRows,
          chunk.flatMap(([id, rows]) => [id, rowList(rows)]),
        ).changes,
      );
    }
    if (updated === others.length) return;
    const orphans = others.filter(([id]) => this.s.messageExists.get(id) === undefined);
    this.bulkAll(BULK.upsertOrphans, orphans, ([id, rows]) => [id, rows.at(-1) as number, rowList(rows)]);
  }

  loadDeliveryState(): DeliveryState {
    return this.read("the delivery state", () => {
      // One read transaction, so the four lists are one consistent snapshot.
      const s = this.s;
      s.beginRead.run();
      try {
        const counters: DeviceCounters[] = s.loadCounters.all().map((r) => ({
          device: this.text(r, "device"),
          lastSeq: this.int(r, "last_seq"),
          ackedSeq: this.int(r, "acked_seq"),
        }));
        const deliveries: DeliveryRecord[] = s.loadDeliveries.all().map((r) => ({
          device: this.text(r, "device"),
          messageId: this.text(r, "message_id"),
          order: this.int(r, "ord"),
          seq: this.int(r, "seq"),
          tombstone: this.int(r, "tombstone") !== 0,
        }));
        const messages = s.loadMessages.all().map((r) => this.message(r));
        const subscriptions: Subscription[] = s.loadSubscriptions.all().map((r) => ({
          device: this.text(r, "device"),
          topic: this.text(r, "topic"),
        }));
        return { counters, deliveries, messages, subscriptions };
      } finally {
        s.commit.run();
      }
    });
  }

  getMessage(id: string): MessageRecord | undefined {
    return this.read("a message", () => {
      const row = this.s.getMessage.get(id);
      return row === undefined ? undefined : this.message(row);
    });
  }

  existingMessageIds(ids: readonly string[]): Set<string> {
    return this.read("message ids", () => {
      const found = new Set<string>();
      for (const id of ids) if (this.s.messageExists.get(id) !== undefined) found.add(id);
      return found;
    });
  }

  receiptsForMessage(messageId: string): Receipt[] {
    return this.read("receipts", () => {
      const ids = new Set<number>();
      const own = this.s.messageReceiptRows.get(messageId);
      if (own !== undefined) for (const id of this.rowIds(own)) ids.add(id);
      const orphan = this.s.orphanReceiptRows.get(messageId);
      if (orphan !== undefined) for (const id of this.rowIds(orphan)) ids.add(id);
      const out: Receipt[] = [];
      // rows hold disjoint runs of ids: in row order, the receipts are in id order
      for (const id of [...ids].sort((a, b) => a - b)) {
        const row = this.s.receiptRow.get(id);
        // a row prune deleted stays named in the lists
        if (row === undefined) continue;
        for (const r of this.receipts(row)) if (r.messageId === messageId) out.push(r);
      }
      return out;
    });
  }

  receiptsAfter(afterId: number, limit: number): Receipt[] {
    if (!(limit > 0)) {
      this.open();
      return [];
    }
    const max = Math.min(Math.floor(limit), Number.MAX_SAFE_INTEGER);
    return this.read("receipts", () => {
      const out: Receipt[] = [];
      // A row's id is its highest receipt's when written; prune may have deleted
      // that receipt and kept lower ones, so a row past afterId can hold none wanted: read on.
      for (let cursor = afterId; out.length < max;) {
        const want = max - out.length;
        const rows = this.s.receiptsAfter.all(cursor, want);
        for (const row of rows) {
          for (const r of this.receipts(row)) if (r.id > afterId && out.length < max) out.push(r);
          cursor = this.int(row, "id");
        }
        if (rows.length < want) break;
      }
      return out;
    });
  }

  /**
   * Deletes receipts with at < before walking the rows in id order (ids
   * increase with time): a row all older is deleted, a row partly older
   * rewritten with the rest, and the walk stops at the first row with no older
   * receipt. Then the messages: a message deleted whose receipts rows remain
   * gets an orphan entry (its receipts stay found by message id).
   */
  prune(before: number): number {
    return this.write("prune", () => {
      const s = this.s;
      let cursor = 0;
      /** the run of whole rows to delete: (from, to] */
      let from = 0;
      let to = 0;
      const flush = (): void => {
        if (to > from) s.deleteReceiptRows.run(from, to);
        from = to = cursor;
      };
      walk: for (;;) {
        const rows = s.pruneWalk.all(cursor, PRUNE_WALK_ROWS);
        for (const row of rows) {
          const id = this.int(row, "id");
          if (this.int(row, "at_min") >= before) break walk;
          if (this.int(row, "at_max") < before) {
            to = cursor = id;
            continue;
          }
          flush();
          const whole = s.receiptRow.get(id) as Row;
          const kept = this.receipts(whole).filter((r) => r.at >= before);
          if (kept.length === 0) {
            // at_max said otherwise: the row's times were not its receipts'
            s.deleteReceiptRows.run(id - 1, id);
          } else {
            const r = encodeRow(kept, id);
            s.rewriteReceiptRow.run(r.count, r.atMin, r.atMax, r.messages, r.entries, id);
          }
          from = to = cursor = id;
        }
        if (rows.length < PRUNE_WALK_ROWS) break;
      }
      flush();
      // every row below the first one left is gone
      const first = s.firstReceiptRow.get()?.["id"];
      const floor = typeof first === "number" ? first : Number.MAX_SAFE_INTEGER;
      const orphans: [string, number, string][] = [];
      for (const m of s.prunedMessageRows.all(before)) {
        const left = this.rowIds(m).filter((id) => id >= floor);
        if (left.length > 0) orphans.push([this.text(m, "id"), Math.max(...left), rowList(left)]);
      }
      this.bulkAll(BULK.upsertOrphans, orphans, (o) => o);
      s.pruneOrphans.run(floor);
      return Number(s.pruneMessages.run(before).changes);
    });
  }

  /** The receipts-row ids of a message's or an orphan entry's list. */
  private rowIds(row: Row): number[] {
    const text = this.text(row, "receipt_rows");
    return parseRowList(text) ?? this.corrupt("receipt_rows", text);
  }

  // --- settings

  getSetting(key: string): string | undefined {
    return this.read("a setting", () => {
      const row = this.s.getSetting.get(key);
      return row === undefined ? undefined : this.text(row, "value");
    });
  }

  putSetting(key: string, value: string): void {
    this.open();
    checkSetting(key, value);
    this.write("putSetting", () => {
      this.s.putSetting.run(key, value);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }

  // --- rows to records

  private corrupt(column: string, value: SQLOutputValue | undefined): never {
    throw new StoreError(
      "store_corrupt",
      `Store ${this.path} holds an unexpected value in column ${column} (${value === null ? "null" : typeof value}).`,
    );
  }

  private text(row: Row, column: string): string {
    const v = row[column];
    return typeof v === "string" ? v : this.corrupt(column, v);
  }

  private int(row: Row, column: string): number {
    const v = row[column];
    return typeof v === "number" ? v : this.corrupt(column, v);
  }

  private blob(row: Row, column: string): Uint8Array {
    const v = row[column];
    return v instanceof Uint8Array ? v : this.corrupt(column, v);
  }

  private device(row: Row): DeviceRecord {
    const pskIdentity = row["psk_identity"];
    const certIdentity = row["cert_identity"];
    let topics: unknown;
    try {
      topics = JSON.parse(this.text(row, "topics"));
    } catch (e) {
      if (e instanceof StoreError) throw e;
      topics = undefined;
    }
    if (!Array.isArray(topics) || !topics.every((t) => typeof t === "string")) this.corrupt("topics", row["topics"]);
    return {
      id: this.text(row, "id"),
      ...(pskIdentity !== null ? { psk: { identity: this.text(row, "psk_identity"), key: this.blob(row, "psk_key") } } : {}),
      ...(certIdentity !== null ? { certIdentity: this.text(row, "cert_identity") } : {}),
      revoked: this.int(row, "revoked") !== 0,
      topics: topics as string[],
      createdAt: this.int(row, "created_at"),
      updatedAt: this.int(row, "updated_at"),
    };
  }

  private message(row: Row): MessageRecord {
    return {
      id: this.text(row, "id"),
      topic: this.text(row, "topic"),
      device: this.text(row, "device"),
      payload: this.blob(row, "payload"),
      contentType: this.text(row, "content_type"),
      createdAt: this.int(row, "created_at"),
      expiresAt: this.int(row, "expires_at"),
      priority: this.int(row, "priority"),
      collapseKey: this.text(row, "collapse_key"),
      publisher: this.text(row, "publisher"),
      signature: this.text(row, "signature"),
    };
  }

  /** The receipts one row holds, by id. */
  private receipts(row: Row): Receipt[] {
    const stored: ReceiptRow = {
      id: this.int(row, "id"),
      count: this.int(row, "count"),
      atMin: this.int(row, "at_min"),
      atMax: this.int(row, "at_max"),
      messages: this.text(row, "messages"),
      entries: this.text(row, "entries"),
    };
    return decodeRow(stored) ?? this.corrupt("entries", stored.entries);
  }
}
