/**
 * In-place upgrade of a SQLite store file from schema version 2 (receipts of
 * one message per row, found through the indexes receipts_msg and
 * receipts_orphan) to version 3 (receipts of a commit in bulk across messages,
 * no index over receipts): a file written with the version 2 schema and rows
 * is opened by this code, which upgrades it in one transaction; every receipt
 * keeps its id, and new ones continue above the highest ever given.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openSqliteStore, SQLITE_SCHEMA_VERSION } from "../../src/store/index.ts";
import type { Receipt } from "../../src/store/index.ts";
import { SCHEMA_V1, UPGRADE_1_TO_2 } from "../../src/store/sqlite-schema.ts";
import { message, receipt } from "./contract.ts";

import { DatabaseSync, expectSameSchemaAsNew, expectUpgradeRefused, userVersion } from "./sqlite-files.ts";

const dir = mkdtempSync(join(tmpdir(), "dtlspush-migration-v2-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const freshPath = (): string => join(dir, `v2-${++n}.db`);

const AT = 1_700_000_000_000;

/** The receipts the version 2 file below holds, as receiptsAfter must return them. */
const OLD: Receipt[] = [
  { id: 1, messageId: "m-uni", device: "dev-a", state: "queued", at: AT, reason: "", seq: 0, topic: "" },
  { id: 2, messageId: "m-uni", device: "dev-a", state: "sent", at: AT + 1, reason: "", seq: 5, topic: "" },
  { id: 3, messageId: "m-fan", device: "dev-a", state: "queued", at: AT + 2, reason: "", seq: 0, topic: "news" },
  { id: 4, messageId: "m-fan", device: "dev-b", state: "queued", at: AT + 2, reason: "", seq: 0, topic: "news" },
  { id: 5, messageId: "m-fan", device: "dev-c", state: "queued", at: AT + 2, reason: "", seq: 0, topic: "news" },
  { id: 6, messageId: "m-fan", device: "dev-b", state: "delivered", at: AT + 3, reason: "", seq: 9, topic: "news" },
  { id: 7, messageId: "gone", device: "dev-c", state: "rejected", at: AT + 4, reason: "queue_full", seq: 0, topic: "" },
  { id: 8, messageId: "m-late", device: "dev-a", state: "queued", at: AT + 5, reason: "", seq: 0, topic: "" },
  { id: 9, messageId: "m-uni", device: "dev-a", state: "delivered", at: AT + 6, reason: "", seq: 5, topic: "" },
];

/**
 * Writes a version 2 file as version 2 did: the version 1 schema and its upgrade
 * to 2, then rows of version 2: a unicast message's receipts one a row, a
 * fan-out's queued receipts in one row of 3, a receipt of a message never stored
 * and one written before its message was (both `msg` NULL), user_version 2, and
 * the highest receipt ids pruned (AUTOINCREMENT remembers 11).
 */
function writeV2(path: string, extra = ""): void {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL");
  db.exec(SCHEMA_V1);
  db.exec(UPGRADE_1_TO_2);
  db.exec("PRAGMA user_version = 2");
  const run = (sql: string, ...args: (string | number | Uint8Array | null)[]): void => void db.prepare(sql).run(...args);
  const m = (id: string, topic: string, device: string): void =>
    run(
      "INSERT INTO messages (id, topic, device, payload, content_type, created_at, expires_at, priority, collapse_key, publisher, signature) VALUES (?, ?, ?, ?, 'text/plain', 1000, 50000, 5, '', 'pub', 'sig')",
      id,
      topic,
      device,
      new Uint8Array([1, 2, 3]),
    );
  m("m-uni", "", "dev-a");
  m("m-fan", "news", "");
  const r = (
    id: number,
    count: number,
    messageId: string,
    state: string,
    at: number,
    reason: string,
    topic: string,
    device: string,
    seq: number,
    devices: string | null,
  ): void =>
    run(
      `INSERT INTO receipts (id, count, msg, message_id, state, at, reason, topic, device, seq, devices)
       VALUES (?, ?, (SELECT n FROM messages WHERE id = ?), ?, ?, ?, ?, ?, ?, ?, ?)`,
      id,
      count,
      messageId,
      messageId,
      state,
      at,
      reason,
      topic,
      device,
      seq,
      devices,
    );
  r(1, 1, "m-uni", "queued", AT, "", "", "dev-a", 0, null);
  r(2, 1, "m-uni", "sent", AT + 1, "", "", "dev-a", 5, null);
  r(
    5,
    3,
    "m-fan",
    "queued",
    AT + 2,
    "",
    "news",
    "",
    0,
    JSON.stringify([
      ["dev-a", 0],
      ["dev-b", 0],
      ["dev-c", 0],
    ]),
  );
  r(6, 1, "m-fan", "delivered", AT + 3, "", "news", "dev-b", 9, null);
  r(7, 1, "gone", "rejected", AT + 4, "queue_full", "", "dev-c", 0, null);
  r(8, 1, "m-late", "queued", AT + 5, "", "", "dev-a", 0, null);
  r(9, 1, "m-uni", "delivered", AT + 6, "", "", "dev-a", 5, null);
  r(11, 1, "m-uni", "expired", AT + 7, "", "", "dev-a", 0, null);
  run("DELETE FROM receipts WHERE id > 9");
  // stored after its receipt: that receipt stays msg NULL in version 2, found by message id
  m("m-late", "", "dev-a");
  if (extra !== "") db.exec(extra);
  db.close();
}

describe("sqlite store: upgrade from schema version 2", () => {
  it("keeps every receipt under its id, each found by its message, and new ids continue above the highest ever given", () => {
    const path = freshPath();
    writeV2(path);
    const s = openSqliteStore(path);
    try {
      expect(userVersion(path)).toBe(SQLITE_SCHEMA_VERSION);
      expect(s.receiptsAfter(0, 100)).toEqual(OLD);
      // resume from every id, one at a time: no gap, no duplicate
      for (let k = 0; k < OLD.length; k++) expect(s.receiptsAfter(k === 0 ? 0 : (OLD[k - 1] as Receipt).id, 1)).toEqual([OLD[k]]);
      expect(s.receiptsForMessage("m-uni")).toEqual(OLD.filter((r) => r.messageId === "m-uni"));
      expect(s.receiptsForMessage("m-fan")).toEqual(OLD.filter((r) => r.messageId === "m-fan"));
      // a message never stored, and one stored after its first receipt
      expect(s.receiptsForMessage("gone")).toEqual([OLD[6]]);
      expect(s.receiptsForMessage("m-late")).toEqual([OLD[7]]);
      expect(s.getMessage("m-fan")?.payload).toEqual(new Uint8Array([1, 2, 3]));

      // ids continue above 11, the highest version 2 ever gave (10 and 11 were pruned)
      const next = s.commit({
        messages: [message("m-new")],
        receipts: [
          receipt("m-new", "dev-a"),
          receipt("m-fan", "dev-c", { state: "delivered", seq: 3 }),
          receipt("gone", "dev-a", { state: "rejected" }),
          receipt("m-late", "dev-a", { state: "sent", seq: 1 }),
        ],
      });
      expect(next.map((r) => r.id)).toEqual([12, 13, 14, 15]);
      expect(s.receiptsAfter(9, 100)).toEqual(next);
      expect(s.receiptsForMessage("m-fan")).toEqual([...OLD.filter((r) => r.messageId === "m-fan"), next[1]]);
      expect(s.receiptsForMessage("gone")).toEqual([OLD[6], next[2]]);
      expect(s.receiptsForMessage("m-late")).toEqual([OLD[7], next[3]]);
      expect(s.receiptsForMessage("m-new")).toEqual([next[0]]);
      // prune by time works on the upgraded rows; the three old messages (expired at 50 000, no delivery)
      // go, and their receipts left are still found by message id
      expect(s.prune(AT + 3)).toBe(3);
      expect(s.getMessage("m-uni")).toBeUndefined();
      expect(s.receiptsAfter(0, 100)).toEqual([...OLD.slice(5), ...next]);
      expect(s.receiptsForMessage("m-uni")).toEqual([OLD[8]]);
      expect(s.receiptsForMessage("m-fan")).toEqual([OLD[5], next[1]]);
      expect(s.receiptsForMessage("m-late")).toEqual([OLD[7], next[3]]);
      expect(s.receiptsForMessage("gone")).toEqual([OLD[6], next[2]]);
    } finally {
      s.close();
    }
  });

  it("gives a file upgraded from version 2 the same schema as a new file", () => {
    const upgraded = freshPath();
    writeV2(upgraded);
    expectSameSchemaAsNew(upgraded, freshPath());
  });

  it("leaves a version 2 file as it was when a receipts row cannot be read", () => {
    const path = freshPath();
    writeV2(path, `UPDATE receipts SET devices = '[["dev-a", 0]]' WHERE id = 5;`);
    expectUpgradeRefused(path, 2);
  });
});
