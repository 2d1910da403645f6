import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openSqliteStore, openStore, SQLITE_SCHEMA_VERSION, StoreError } from "../../src/store/index.ts";
import type { SyncStore as Store } from "../../src/store/index.ts";
import { delivery, describeStoreContract, device, message, receipt } from "./contract.ts";

// node:sqlite is in Node.js 22.13+; say so plainly when these tests run on an older one.
const sqlite = process.getBuiltinModule("node:sqlite") as typeof import("node:sqlite") | undefined;
if (sqlite === undefined)
  throw new Error(`the SQLite store tests need node:sqlite, which Node.js ${process.version} lacks; run them with the project's Node 24`);
const { DatabaseSync } = sqlite;

const dir = mkdtempSync(join(tmpdir(), "dtlspush-store-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const freshPath = (): string => join(dir, `store-${++n}`, "push.db");

describeStoreContract("sqlite", { open: () => openSqliteStore(freshPath()) });
describeStoreContract("sqlite, synchronous full", { open: () => openSqliteStore(freshPath(), { synchronous: "full" }) });

function openError(fn: () => unknown): StoreError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(StoreError);
    return e as StoreError;
  }
  throw new Error("expected a StoreError, nothing was thrown");
}

function pragma(path: string, name: string): unknown {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return db.prepare(`PRAGMA ${name}`).get()?.[name];
  } finally {
    db.close();
  }
}

describe("sqlite store", () => {
  it("keeps everything across close and reopen, and receipt ids keep increasing", () => {
    const path = freshPath();
    let s: Store = openSqliteStore(path);
    expect(s.kind).toBe("sqlite");
    s.putDevice(device("dev", { psk: { identity: "p", key: new Uint8Array([1, 2]) }, certIdentity: "c", topics: ["t"] }));
    s.putSetting("k", "v");
    const first = s.commit({
      messages: [message("m1"), message("m2")],
      deliveries: [delivery("dev", "m1", 1, { seq: 1 })],
      counters: [{ device: "dev", lastSeq: 1, ackedSeq: 0 }],
      subscribe: [{ device: "dev", topic: "t" }],
      receipts: [receipt("m1", "dev"), receipt("m1", "dev", { state: "sent", seq: 1 })],
    });
    const stateBefore = s.loadDeliveryState();
    s.close();

    s = openSqliteStore(path);
    expect(s.getDevice("dev")).toEqual(device("dev", { psk: { identity: "p", key: new Uint8Array([1, 2]) }, certIdentity: "c", topics: ["t"] }));
    expect(s.findDeviceByCertIdentity("c")?.id).toBe("dev");
    expect(s.getSetting("k")).toBe("v");
    expect(s.loadDeliveryState()).toEqual(stateBefore);
    expect(s.getMessage("m2")).toEqual(message("m2"));
    expect(s.receiptsAfter(0, 10)).toEqual(first);
    // prune every receipt, reopen: ids still never repeat (AUTOINCREMENT)
    s.prune(Number.MAX_SAFE_INTEGER);
    s.close();
    s = openSqliteStore(path);
    const next = s.commit({ receipts: [receipt("m1", "dev")] });
    expect(next[0]?.id).toBe((first[1]?.id as number) + 1);
    expect(() => s.commit({ messages: [message("m1")] })).toThrow(/already stored/);
    s.close();
  });

  it("uses WAL journal mode and records the schema version", () => {
    const path = freshPath();
    const s = openSqliteStore(path);
    s.commit({ messages: [message("m1")] });
    expect(pragma(path, "journal_mode")).toBe("wal");
    expect(pragma(path, "user_version")).toBe(SQLITE_SCHEMA_VERSION);
    expect(SQLITE_SCHEMA_VERSION).toBe(3);
    expect(existsSync(`${path}-wal`)).toBe(true);
    s.close();
  });

  it("creates the missing parent directories", () => {
    const path = join(dir, "a", "b", "c", "push.db");
    const s = openSqliteStore(path);
    s.close();
    expect(existsSync(path)).toBe(true);
  });

  it("refuses a file written by a newer schema version, naming the path", () => {
    const path = freshPath();
    openSqliteStore(path).close();
    const db = new DatabaseSync(path);
    db.exec("PRAGMA user_version = 99");
    db.close();
    const e = openError(() => openSqliteStore(path));
    expect(e.code).toBe("store_version");
    expect(e.message).toContain(path);
    expect(e.message).toContain("99");
  });

  it("refuses another application's SQLite database", () => {
    const path = join(dir, "other-app.db");
    const db = new DatabaseSync(path);
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)");
    db.close();
    const e = openError(() => openSqliteStore(path));
    expect(e.code).toBe("store_version");
    expect(e.message).toContain(path);
    // and leaves the file as it was
    expect(pragma(path, "journal_mode")).toBe("delete");
    expect(pragma(path, "user_version")).toBe(0);
  });

  it("refuses a file that is not a SQLite database, naming the path", () => {
    const path = join(dir, "not-a-db.db");
    writeFileSync(path, "this is plain text, not a database file\n".repeat(200));
    const e = openError(() => openSqliteStore(path));
    expect(e.code).toBe("store_open_failed");
    expect(e.message).toContain(path);
    expect(e.message).toMatch(/not a SQLite database/);
  });

  it("refuses a path under a regular file, naming the path", () => {
    const file = join(dir, "plain-file");
    writeFileSync(file, "x");
    const path = join(file, "push.db");
    const e = openError(() => openSqliteStore(path));
    expect(e.code).toBe("store_open_failed");
    expect(e.message).toContain(path);
  });

  it("refuses a directory as the database path", () => {
    const e = openError(() => openSqliteStore(dir));
    expect(e.code).toBe("store_open_failed");
    expect(e.message).toContain(dir);
  });

  it("refuses an unknown synchronous setting", () => {
    const e = openError(() => openSqliteStore(freshPath(), { synchronous: "off" as "full" }));
    expect(e.code).toBe("store_open_failed");
  });

  it("is opened by openStore", async () => {
    const s = await openStore({ kind: "sqlite", path: freshPath(), synchronous: "full" });
    expect(s.kind).toBe("sqlite");
    await s.close();
    await expect(openStore({ kind: "redis" } as unknown as { kind: "memory" })).rejects.toMatchObject({ code: "store_open_failed" });
  });

  it("lets two stores on one file see each other's commits", () => {
    const path = freshPath();
    const a = openSqliteStore(path);
    const b = openSqliteStore(path);
    const ra = a.commit({ messages: [message("m1")], receipts: [receipt("m1", "")] });
    const rb = b.commit({ receipts: [receipt("m1", "x")] });
    expect(rb[0]?.id).toBe((ra[0]?.id as number) + 1);
    expect(b.getMessage("m1")?.id).toBe("m1");
    expect(openError(() => b.commit({ messages: [message("m1")] })).code).toBe("duplicate_message");
    a.close();
    b.close();
  });

  it("records a fan-out's receipts in bulk: a few rows, not one per recipient, and refuses a damaged row", () => {
    const path = freshPath();
    const s = openSqliteStore(path);
    const devices = Array.from({ length: 1_000 }, (_, i) => `device-${i}`);
    const stored = s.commit({
      messages: [message("fan")],
      deliveries: devices.map((d, i) => delivery(d, "fan", i)),
      receipts: devices.map((d) => receipt("fan", d)),
    });
    s.commit({ receipts: [receipt("fan", "device-7", { state: "sent", seq: 1 })] });
    const db = new DatabaseSync(path);
    try {
      expect(Number(db.prepare("SELECT count(*) AS n FROM receipts").get()?.["n"])).toBe(3);
      expect(s.receiptsAfter(0, 2_000)).toHaveLength(1_001);
      expect(s.receiptsForMessage("fan").slice(0, 1_000)).toEqual(stored);
      db.exec(`UPDATE receipts SET entries = '[[0, 0, 0, 0, "", "device-0", 1]]' WHERE count > 1`);
    } finally {
      db.close();
    }
    const e = openError(() => s.receiptsAfter(0, 10));
    expect(e.code).toBe("store_corrupt");
    expect(e.message).toContain("entries");
    s.close();
  });

  it("writes a commit's receipts of many messages as a handful of rows, each message finding its own without an index", () => {
    const path = freshPath();
    const s = openSqliteStore(path);
    const ids = Array.from({ length: 300 }, (_, i) => `m${i}`);
    // the engine's publish turn for 300 unicast pushes: each message queued and sent
    const published = s.commit({
      messages: ids.map((id) => message(id)),
      receipts: ids.flatMap((id, i) => [receipt(id, `d${i}`), receipt(id, `d${i}`, { state: "sent", seq: 1 })]),
    });
    const acked = s.commit({ receipts: ids.map((id, i) => receipt(id, `d${i}`, { state: "delivered", seq: 1 })) });
    const rejected = s.commit({ receipts: [receipt("never-stored", "d1", { state: "rejected", reason: "queue_full" })] });
    const db = new DatabaseSync(path, { readOnly: true });
    try {
      // 600 receipts: 2 rows (500 a row); 300: 1 row; then 1
      expect(
        db
          .prepare("SELECT count FROM receipts ORDER BY id")
          .all()
          .map((r) => r["count"]),
      ).toEqual([500, 100, 300, 1]);
      expect(db.prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name LIKE 'receipt%'").all()).toEqual([]);
      expect(
        db
          .prepare("SELECT message_id FROM receipt_orphans")
          .all()
          .map((r) => r["message_id"]),
      ).toEqual(["never-stored"]);
    } finally {
      db.close();
    }
    for (const [i, id] of ids.entries()) {
      expect(s.receiptsForMessage(id)).toEqual([published[2 * i], published[2 * i + 1], acked[i]]);
    }
    expect(s.receiptsForMessage("never-stored")).toEqual(rejected);
    const all = [...published, ...acked, ...rejected];
    expect(s.receiptsAfter(0, 10_000)).toEqual(all);
    for (const k of [1, 499, 500, 501, 600, 601, 899, 900]) expect(s.receiptsAfter(all[k - 1]?.id as number, 2)).toEqual(all.slice(k, k + 2));
    s.close();
  });

  it("prunes by walking rows in id order: old rows whole, a row partly old rewritten with its receipts' ids, orphan entries with their rows", () => {
    const path = freshPath();
    const s = openSqliteStore(path);
    const old = s.commit({ receipts: [receipt("gone", "d", { at: 100, state: "rejected" }), receipt("gone", "d", { at: 150, state: "rejected" })] });
    // a row whose newest receipt (its last id) is old and whose middle one is not
    const mixed = s.commit({
      messages: [message("m", { expiresAt: 50 })],
      receipts: [receipt("m", "d", { at: 100 }), receipt("m", "d", { at: 300, state: "sent", seq: 1 }), receipt("m", "e", { at: 100 })],
    });
    const recent = s.commit({ receipts: [receipt("m", "d", { at: 400, state: "delivered", seq: 1 })] });
    expect(s.prune(200)).toBe(1);
    const left = [mixed[1], ...recent];
    expect(s.receiptsAfter(0, 100)).toEqual(left);
    // resuming from any id gives the next receipt, also past the row whose last receipt is gone
    expect(s.receiptsAfter(mixed[1]?.id as number, 1)).toEqual(recent);
    expect(s.receiptsAfter(mixed[0]?.id as number, 1)).toEqual([mixed[1]]);
    // m was deleted; its receipts left are found by message id
    expect(s.getMessage("m")).toBeUndefined();
    expect(s.receiptsForMessage("m")).toEqual(left);
    expect(s.receiptsForMessage("gone")).toEqual([]);
    const orphans = (): unknown[] => {
      const db = new DatabaseSync(path, { readOnly: true });
      try {
        return db
          .prepare("SELECT message_id FROM receipt_orphans ORDER BY message_id")
          .all()
          .map((r) => r["message_id"]);
      } finally {
        db.close();
      }
    };
    // the orphan entry of "gone" went with its rows
    expect(orphans()).toEqual(["m"]);
    expect(old).toHaveLength(2);
    expect(s.prune(1_000)).toBe(0);
    expect(s.receiptsAfter(0, 100)).toEqual([]);
    expect(orphans()).toEqual([]);
    s.close();
  });

  it("commits a topic fan-out of 10 000 deliveries and receipts well under a second", () => {
    const s = openSqliteStore(freshPath());
    const N = 10_000;
    const devices = Array.from({ length: N }, (_, i) => `device-${String(i).padStart(5, "0")}`);
    const batch = {
      messages: [message("fan", { payload: new Uint8Array(512) })],
      deliveries: devices.map((d, i) => delivery(d, "fan", i)),
      receipts: devices.map((d) => receipt("fan", d)),
    };
    const t0 = performance.now();
    const receipts = s.commit(batch);
    const ms = performance.now() - t0;
    expect(receipts).toHaveLength(N);
    expect(ms).toBeLessThan(1_000);
    const state = s.loadDeliveryState();
    expect(state.deliveries).toHaveLength(N);
    expect(state.deliveries[N - 1]?.device).toBe(devices[N - 1]);
    s.close();
  });
});
