/**
 * In-place upgrade of a SQLite store file from schema version 1: a file written
 * with the version 1 schema SQL and version 1 rows is opened by this code, which
 * upgrades it in one transaction; everything stored stays readable as before.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openSqliteStore, SQLITE_SCHEMA_VERSION } from "../../src/store/index.ts";
import { SCHEMA_V1 } from "../../src/store/sqlite-store.ts";
import { delivery, message, receipt } from "./contract.ts";

import { DatabaseSync, expectSameSchemaAsNew, expectUpgradeRefused, userVersion } from "./sqlite-files.ts";

const dir = mkdtempSync(join(tmpdir(), "dtlspush-migration-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const freshPath = (): string => join(dir, `v1-${++n}.db`);

const KEY = new Uint8Array([9, 8, 7, 0, 255]);

/** Writes a version 1 file as version 1 did: its schema SQL, its rows, user_version 1. */
function writeV1(path: string, extra = ""): void {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL");
  db.exec(SCHEMA_V1);
  db.exec("PRAGMA user_version = 1");
  const run = (sql: string, ...args: (string | number | Uint8Array | null)[]): void => void db.prepare(sql).run(...args);
  run("INSERT INTO devices VALUES (?, ?, ?, ?, 0, ?, 10, 20)", "dev-a", "psk-a", KEY, "CN=a", '["news"]');
  run("INSERT INTO devices VALUES (?, NULL, NULL, ?, 1, '[]', 11, 21)", "dev-b", "CN=b");
  const m = (id: string, topic: string, device: string, expiresAt: number): void =>
    run(
      "INSERT INTO messages VALUES (?, ?, ?, ?, 'text/plain', 1000, ?, 5, '', 'pub', 'sig')",
      id,
      topic,
      device,
      new Uint8Array([1, 2, 3]),
      expiresAt,
    );
  m("m-queued", "", "dev-a", 50_000);
  m("m-sent", "news", "", 50_000);
  m("m-done", "", "dev-b", 50_000);
  run("INSERT INTO deliveries VALUES ('dev-a', 'm-queued', 1, 0, 0)");
  run("INSERT INTO deliveries VALUES ('dev-a', 'm-sent', 2, 4, 0)");
  run("INSERT INTO deliveries VALUES ('dev-b', 'm-sent', 3, 7, 1)");
  run("INSERT INTO counters VALUES ('dev-a', 3, 3)");
  run("INSERT INTO counters VALUES ('gone', 12, 10)");
  run("INSERT INTO subscriptions VALUES ('dev-a', 'alerts')");
  const r = (messageId: string, device: string, state: string, seq: number, topic: string): void =>
    run(
      "INSERT INTO receipts (message_id, device, state, at, reason, seq, topic) VALUES (?, ?, ?, 2000, '', ?, ?)",
      messageId,
      device,
      state,
      seq,
      topic,
    );
  r("m-queued", "dev-a", "queued", 0, "");
  r("m-sent", "dev-a", "queued", 0, "news");
  r("m-sent", "dev-a", "sent", 4, "news");
  r("m-done", "dev-b", "queued", 0, "");
  r("pruned-long-ago", "dev-b", "delivered", 2, "");
  r("m-done", "dev-b", "delivered", 1, "");
  // receipt ids as version 1 left them: the highest ones pruned (AUTOINCREMENT remembers 8)
  r("m-done", "dev-b", "expired", 0, "");
  r("m-done", "dev-b", "expired", 0, "");
  run("DELETE FROM receipts WHERE id > 6");
  run("INSERT INTO settings VALUES ('keys.content', '{\"k\":1}')");
  if (extra !== "") db.exec(extra);
  db.close();
}

describe("sqlite store: upgrade from schema version 1", () => {
  it("upgrades a version 1 file in place, keeping devices, messages, deliveries, counters, receipts and settings", () => {
    const path = freshPath();
    writeV1(path);
    const s = openSqliteStore(path);
    try {
      expect(userVersion(path)).toBe(SQLITE_SCHEMA_VERSION);
      expect(s.listDevices()).toEqual([
        { id: "dev-a", psk: { identity: "psk-a", key: KEY }, certIdentity: "CN=a", revoked: false, topics: ["news"], createdAt: 10, updatedAt: 20 },
        { id: "dev-b", certIdentity: "CN=b", revoked: true, topics: [], createdAt: 11, updatedAt: 21 },
      ]);
      expect(s.findDeviceByPskIdentity("psk-a")?.id).toBe("dev-a");
      const state = s.loadDeliveryState();
      expect(state.counters).toEqual([
        { device: "dev-a", lastSeq: 3, ackedSeq: 3 },
        { device: "gone", lastSeq: 12, ackedSeq: 10 },
      ]);
      expect(state.deliveries).toEqual([
        { device: "dev-a", messageId: "m-queued", order: 1, seq: 0, tombstone: false },
        { device: "dev-a", messageId: "m-sent", order: 2, seq: 4, tombstone: false },
        { device: "dev-b", messageId: "m-sent", order: 3, seq: 7, tombstone: true },
      ]);
      expect(state.messages.map((m) => m.id)).toEqual(["m-queued", "m-sent"]);
      expect(state.subscriptions).toEqual([{ device: "dev-a", topic: "alerts" }]);
      expect(s.getMessage("m-done")).toEqual({
        id: "m-done",
        topic: "",
        device: "dev-b",
        payload: new Uint8Array([1, 2, 3]),
        contentType: "text/plain",
        createdAt: 1000,
        expiresAt: 50_000,
        priority: 5,
        collapseKey: "",
        publisher: "pub",
        signature: "sig",
      });
      const all = s.receiptsAfter(0, 100);
      expect(all.map((r) => [r.id, r.messageId, r.state])).toEqual([
        [1, "m-queued", "queued"],
        [2, "m-sent", "queued"],
        [3, "m-sent", "sent"],
        [4, "m-done", "queued"],
        [5, "pruned-long-ago", "delivered"],
        [6, "m-done", "delivered"],
      ]);
      expect(s.receiptsForMessage("m-done").map((r) => r.id)).toEqual([4, 6]);
      expect(s.receiptsForMessage("m-sent").map((r) => r.id)).toEqual([2, 3]);
      // a receipt whose message is not stored is still found by its message id
      expect(s.receiptsForMessage("pruned-long-ago")).toEqual([all[4]]);
      expect(s.getSetting("keys.content")).toBe('{"k":1}');

      // it goes on working: ids continue after the highest version 1 ever gave, old ids are still refused
      const next = s.commit({
        messages: [message("m-new")],
        deliveries: [delivery("dev-b", "m-new", 4)],
        receipts: [receipt("m-new", "dev-b"), receipt("m-done", "dev-b", { state: "expired" })],
      });
      expect(next.map((r) => r.id)).toEqual([9, 10]);
      expect(s.receiptsForMessage("m-done").map((r) => r.id)).toEqual([4, 6, 10]);
      expect(() => s.commit({ messages: [message("m-sent")] })).toThrow(/already stored/);
      // prune: m-done goes (expired, unreferenced) with the receipts of time 2000; its newer receipt stays findable
      expect(s.prune(60_000)).toBe(1);
      expect(s.getMessage("m-done")).toBeUndefined();
      expect(s.receiptsForMessage("m-done").map((r) => r.id)).toEqual([10]);
    } finally {
      s.close();
    }
  });

  it("gives an upgraded file the same schema as a new file", () => {
    const upgraded = freshPath();
    writeV1(upgraded);
    expectSameSchemaAsNew(upgraded, freshPath());
  });

  it("leaves a version 1 file as it was when the upgrade cannot complete", () => {
    const path = freshPath();
    // a delivery of a message that is not stored (written with foreign keys off): the upgrade refuses the file
    writeV1(path, "PRAGMA foreign_keys = OFF; INSERT INTO deliveries VALUES ('dev-b', 'ghost', 9, 0, 0);");
    expectUpgradeRefused(path, 1);
  });
});
