/**
 * The SQLite store's schema: its version (PRAGMA user_version), the tables as
 * version 1 created them, the upgrade steps, and the migration that brings a
 * file to this version in one transaction (a new file gets version 1 and every
 * step, so new and upgraded files have the same schema).
 */
import type { DatabaseSync } from "node:sqlite";
import { StoreError } from "./errors.ts";
import { rowList, rowsOf } from "./receipt-rows.ts";
import type { Receipt, ReceiptState } from "./types.ts";
import { RECEIPT_STATES } from "./validate.ts";

/** The schema version this code writes and reads. */
export const SQLITE_SCHEMA_VERSION = 3;

/**
 * The schema as version 1 created it. A new file gets it and then every
 * upgrade step (UPGRADES), so new and upgraded files have the same schema.
 * Never edit: files written by version 1 hold exactly this.
 */
export const SCHEMA_V1 = `
CREATE TABLE devices (
  id TEXT PRIMARY KEY NOT NULL,
  psk_identity TEXT UNIQUE,
  psk_key BLOB,
  cert_identity TEXT UNIQUE,
  revoked INTEGER NOT NULL,
  topics TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  CHECK ((psk_identity IS NULL) = (psk_key IS NULL))
) STRICT;
CREATE TABLE messages (
  id TEXT PRIMARY KEY NOT NULL,
  topic TEXT NOT NULL,
  device TEXT NOT NULL,
  payload BLOB NOT NULL,
  content_type TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  collapse_key TEXT NOT NULL,
  publisher TEXT NOT NULL,
  signature TEXT NOT NULL
) STRICT;
CREATE INDEX messages_expires_at ON messages (expires_at);
CREATE TABLE deliveries (
  device TEXT NOT NULL,
  message_id TEXT NOT NULL REFERENCES messages (id),
  ord INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  tombstone INTEGER NOT NULL,
  PRIMARY KEY (device, message_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX deliveries_message_id ON deliveries (message_id);
CREATE TABLE counters (
  device TEXT PRIMARY KEY NOT NULL,
  last_seq INTEGER NOT NULL,
  acked_seq INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE subscriptions (
  device TEXT NOT NULL,
  topic TEXT NOT NULL,
  PRIMARY KEY (device, topic)
) STRICT, WITHOUT ROWID;
CREATE TABLE receipts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  message_id TEXT NOT NULL,
  device TEXT NOT NULL,
  state TEXT NOT NULL,
  at INTEGER NOT NULL,
  reason TEXT NOT NULL,
  seq INTEGER NOT NULL,
  topic TEXT NOT NULL
) STRICT;
CREATE INDEX receipts_message_id ON receipts (message_id);
CREATE INDEX receipts_at ON receipts (at);
CREATE TABLE settings (
  key TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
`;

/**
 * Version 1 -> 2, receipts (kept for files of version 1; tests write version 2 files with it):
 * - found by message through an increasing integer, not the message id (a
 *   random text key: every receipt inserted into an index on it dirtied a
 *   random page of an index as large as the receipts table). Messages get
 *   `n`, a stable integer key (an INTEGER PRIMARY KEY survives VACUUM); a
 *   receipt row keeps its message's `n` in `msg`, or NULL when the message is
 *   not stored (then it is found by message_id in a partial index holding
 *   only those rows). prune sets `msg` to NULL on the receipts of the
 *   messages it deletes, so a reused `n` never points at another message's.
 * - recorded in bulk: one row holds `count` receipts of one message with the
 *   same state, time, reason and topic (a fan-out's recipients), ids
 *   id - count + 1 .. id; a row of one receipt has its device and seq in
 *   `device`/`seq`, a row of several has them in `devices` (JSON
 *   [[device, seq], ...]). The row's id is its last receipt id, so AUTOINCREMENT
 *   keeps the highest receipt id ever given, as in version 1.
 */
export const UPGRADE_1_TO_2 = `
CREATE TABLE messages_v2 (
  n INTEGER PRIMARY KEY,
  id TEXT UNIQUE NOT NULL,
  topic TEXT NOT NULL,
  device TEXT NOT NULL,
  payload BLOB NOT NULL,
  content_type TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  collapse_key TEXT NOT NULL,
  publisher TEXT NOT NULL,
  signature TEXT NOT NULL
) STRICT;
INSERT INTO messages_v2 (id, topic, device, payload, content_type, created_at, expires_at, priority, collapse_key, publisher, signature)
  SELECT id, topic, device, payload, content_type, created_at, expires_at, priority, collapse_key, publisher, signature FROM messages ORDER BY rowid;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
CREATE INDEX messages_expires_at ON messages (expires_at);
CREATE TABLE receipts_v2 (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  count INTEGER NOT NULL CHECK (count >= 1),
  msg INTEGER,
  message_id TEXT NOT NULL,
  state TEXT NOT NULL,
  at INTEGER NOT NULL,
  reason TEXT NOT NULL,
  topic TEXT NOT NULL,
  device TEXT NOT NULL,
  seq INTEGER NOT NULL,
  devices TEXT,
  CHECK ((count = 1) = (devices IS NULL))
) STRICT;
INSERT INTO receipts_v2 (id, count, msg, message_id, state, at, reason, topic, device, seq, devices)
  SELECT r.id, 1, m.n, r.message_id, r.state, r.at, r.reason, r.topic, r.device, r.seq, NULL
  FROM receipts AS r LEFT JOIN messages AS m ON m.id = r.message_id ORDER BY r.id;
DELETE FROM sqlite_sequence WHERE name = 'receipts_v2';
INSERT INTO sqlite_sequence (name, seq) SELECT 'receipts_v2', seq FROM sqlite_sequence WHERE name = 'receipts';
DROP TABLE receipts;
ALTER TABLE receipts_v2 RENAME TO receipts;
CREATE INDEX receipts_at ON receipts (at);
CREATE INDEX receipts_msg ON receipts (msg) WHERE msg IS NOT NULL;
CREATE INDEX receipts_orphan ON receipts (message_id) WHERE msg IS NULL;
`;

/**
 * Upgrade steps: UPGRADES[v] takes a file from version v + 1 to v + 2. Each runs
 * in the migration's one transaction, with foreign key enforcement off (a table
 * that others reference is rebuilt), checked with foreign_key_check before COMMIT.
 */
const UPGRADES: readonly (string | ((db: DatabaseSync, path: string) => void))[] = [
  UPGRADE_1_TO_2,
  // 2 -> 3, receipts in bulk across messages (receipt-rows.ts), no index over receipts:
  // - a row holds a run of receipts of one commit, any messages, states and devices;
  //   its id is its highest receipt id (AUTOINCREMENT keeps the highest ever given);
  // - a message finds its receipts through `messages.receipt_rows`, the ids of the
  //   rows holding them, appended in the commit that writes them;
  // - receipts whose message is not stored (written before it, or kept after prune
  //   deleted it) are found through `receipt_orphans`, by message id;
  // - prune walks rows in id order (ids increase with time), not an index on `at`.
  upgradeTo3,
];

/** The version 3 receipts tables, created empty. */
const RECEIPTS_V3 = `
ALTER TABLE messages ADD COLUMN receipt_rows TEXT NOT NULL DEFAULT '';
CREATE TABLE receipts_v3 (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  count INTEGER NOT NULL CHECK (count >= 1),
  at_min INTEGER NOT NULL,
  at_max INTEGER NOT NULL,
  messages TEXT NOT NULL,
  entries TEXT NOT NULL
) STRICT;
CREATE TABLE receipt_orphans (
  message_id TEXT PRIMARY KEY NOT NULL,
  last_row INTEGER NOT NULL,
  receipt_rows TEXT NOT NULL
) STRICT, WITHOUT ROWID;
`;

/**
 * 2 -> 3: every version 2 row (receipts of one message) becomes one version 3
 * row with the same id and receipt ids; each stored message gets the ids of
 * the rows holding its receipts, the others an orphan entry.
 */
function upgradeTo3(db: DatabaseSync, path: string): void {
  db.exec(RECEIPTS_V3);
  const insert = db.prepare("INSERT INTO receipts_v3 (id, count, at_min, at_max, messages, entries) VALUES (?, ?, ?, ?, ?, ?)");
  const rowsOfMessage = new Map<string, number[]>();
  for (const row of db.prepare("SELECT id, count, message_id, state, at, reason, topic, device, seq, devices FROM receipts ORDER BY id").iterate()) {
    const receipts = v2Receipts(row, path);
    for (const r of rowsOf(receipts)) {
      insert.run(r.id, r.count, r.atMin, r.atMax, r.messages, r.entries);
      const messageId = String(row["message_id"]);
      const list = rowsOfMessage.get(messageId);
      if (list === undefined) rowsOfMessage.set(messageId, [r.id]);
      else list.push(r.id);
    }
  }
  const setRows = db.prepare("UPDATE messages SET receipt_rows = ? WHERE id = ?");
  const orphan = db.prepare("INSERT INTO receipt_orphans (message_id, last_row, receipt_rows) VALUES (?, ?, ?)");
  for (const [messageId, rows] of rowsOfMessage) {
    if (Number(setRows.run(rowList(rows), messageId).changes) === 0) orphan.run(messageId, rows.at(-1) as number, rowList(rows));
  }
  db.exec(`
DELETE FROM sqlite_sequence WHERE name = 'receipts_v3';
INSERT INTO sqlite_sequence (name, seq) SELECT 'receipts_v3', seq FROM sqlite_sequence WHERE name = 'receipts';
DROP TABLE receipts;
ALTER TABLE receipts_v3 RENAME TO receipts;
`);
}

/** The receipts of a version 2 row (receipts of one message with one state, time, reason and topic). */
function v2Receipts(row: Record<string, unknown>, path: string): Receipt[] {
  const id = row["id"];
  const count = row["count"];
  const corrupt = (): never => {
    throw new StoreError("store_corrupt", `Store ${path}: receipts row ${String(id)} cannot be read; the file was left as it was.`);
  };
  const state = String(row["state"]);
  const at = row["at"];
  if (typeof id !== "number" || typeof count !== "number" || count < 1 || !RECEIPT_STATES.has(state) || typeof at !== "number" || at < 0)
    return corrupt();
  let pairs: unknown = [[row["device"], row["seq"]]];
  if (count > 1) {
    try {
      pairs = JSON.parse(String(row["devices"]));
    } catch {
      return corrupt();
    }
  }
  if (!Array.isArray(pairs) || pairs.length !== count) return corrupt();
  return (pairs as unknown[]).map((p, i) => {
    const [device, seq] = Array.isArray(p) ? (p as unknown[]) : [];
    if (typeof device !== "string" || typeof seq !== "number" || seq < 0) return corrupt();
    return {
      id: id - count + 1 + i,
      messageId: String(row["message_id"]),
      device,
      state: state as ReceiptState,
      at,
      reason: String(row["reason"]),
      seq,
      topic: String(row["topic"]),
    };
  });
}

export function userVersion(db: DatabaseSync): number {
  return Number(db.prepare("PRAGMA user_version").get()?.["user_version"] ?? 0);
}

/** Throws StoreError "store_version" for a file of a newer schema version or of another application. */
export function checkVersion(db: DatabaseSync, path: string): void {
  const version = userVersion(db);
  if (version > SQLITE_SCHEMA_VERSION) throw newerVersion(path, version);
  if (version === 0 && Number(db.prepare("SELECT count(*) AS n FROM sqlite_schema").get()?.["n"] ?? 0) > 0) {
    throw new StoreError(
      "store_version",
      `Store ${path} is a SQLite database without a dtlspush schema version (another application's file?); refusing to use it.`,
    );
  }
}

/**
 * Creates the schema of a new file, or upgrades a file of an older version in
 * place, data preserved: all in one transaction, so a failure (or a kill -9)
 * leaves the file as it was.
 */
export function migrate(db: DatabaseSync, path: string): void {
  if (userVersion(db) === SQLITE_SCHEMA_VERSION) return;
  // Foreign key enforcement cannot change inside a transaction; an upgrade that
  // rebuilds a referenced table needs it off (checked below before COMMIT).
  db.exec("PRAGMA foreign_keys = OFF");
  try {
    db.exec("BEGIN IMMEDIATE");
    try {
      // Check again under the write lock: another process may have just created or upgraded the schema.
      checkVersion(db, path);
      let version = userVersion(db);
      if (version === 0) {
        db.exec(SCHEMA_V1);
        version = 1;
      }
      for (; version < SQLITE_SCHEMA_VERSION; version++) {
        const step = UPGRADES[version - 1] as (typeof UPGRADES)[number];
        if (typeof step === "string") db.exec(step);
        else step(db, path);
      }
      const broken = db.prepare("PRAGMA foreign_key_check").all();
      if (broken.length > 0) {
        throw new StoreError(
          "store_corrupt",
          `Store ${path}: ${broken.length} rows break a foreign key after the schema upgrade; the file was left as it was.`,
        );
      }
      db.exec(`PRAGMA user_version = ${SQLITE_SCHEMA_VERSION}`);
      db.exec("COMMIT");
    } catch (e) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw e;
    }
  } finally {
    db.exec("PRAGMA foreign_keys = ON");
  }
}

function newerVersion(path: string, version: number): StoreError {
  return new StoreError(
    "store_version",
    `Store ${path} has schema version ${version}, newer than the ${SQLITE_SCHEMA_VERSION} this dtlspush supports; upgrade dtlspush or use another file.`,
  );
}
