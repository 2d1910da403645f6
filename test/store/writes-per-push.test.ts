/**
 * Write amplification of the SQLite store: the statements and rows one push
 * costs across its whole life (publish, send, ack), through the real delivery
 * engine on the real SQLite store. Every statement node:sqlite runs is counted
 * (transaction control and savepoints apart) with the rows it changed; the bounds below are
 * the documented figures of docs/store.md, so the amplification cannot creep back.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync, StatementSync, type SQLInputValue } from "node:sqlite";
import { inlineStore, openSqliteStore } from "../../src/store/index.ts";
import { World, type SimDevice } from "../messaging/world.ts";
import { connected, enc, publishTo, untilDelivered } from "../messaging/helpers.ts";

interface Tally {
  statements: number;
  rows: number;
}

const tally: Tally = { statements: 0, rows: 0 };
const originalRun = StatementSync.prototype.run;

beforeEach(() => {
  StatementSync.prototype.run = function (this: StatementSync, ...args: SQLInputValue[]) {
    const result = (originalRun as (...a: SQLInputValue[]) => ReturnType<StatementSync["run"]>).apply(this, args);
    if (!/^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b/i.test(this.sourceSQL)) {
      tally.statements++;
      tally.rows += Number(result.changes);
    }
    return result;
  } as StatementSync["run"];
});

afterEach(() => {
  StatementSync.prototype.run = originalRun;
});

/** The statements and rows `fn` made the store run. */
async function measured(fn: () => Promise<void>): Promise<Tally> {
  const before = { ...tally };
  await fn();
  return { statements: tally.statements - before.statements, rows: tally.rows - before.rows };
}

async function world(devices: number): Promise<{ w: World; ds: SimDevice[] }> {
  const w = await World.create({ store: inlineStore(openSqliteStore(":memory:")) });
  const ds: SimDevice[] = [];
  for (let i = 0; i < devices; i++) ds.push(w.addDevice(`dev-${i}`, ["news"]));
  for (const d of ds) await connected(w, d);
  await w.run(1_000);
  return { w, ds };
}

const PUSHES = 20;

describe("writes per push on the SQLite store", () => {
  it("a unicast push, one at a time, publish to ack", async () => {
    const { w, ds } = await world(1);
    const d = ds[0] as SimDevice;
    const t = await measured(async () => {
      for (let i = 1; i <= PUSHES; i++) {
        await publishTo(w, d.id, `m${i}`);
        await untilDelivered(w, d, i);
        await w.run(200, () => w.engine.deviceStatus(d.id).queueDepth === 0);
        expect(w.engine.deviceStatus(d.id).queueDepth).toBe(0);
      }
    });
    const perPush = { statements: t.statements / PUSHES, rows: t.rows / PUSHES };
    console.log(`unicast: ${perPush.statements} statements, ${perPush.rows} rows per push`);
    expect(perPush.statements).toBeLessThanOrEqual(UNICAST.statements);
    expect(perPush.rows).toBeLessThanOrEqual(UNICAST.rows);
    w.store.close();
  });

  it("a topic fan-out, per recipient, publish to ack", async () => {
    const N = 40;
    const { w, ds } = await world(N);
    const t = await measured(async () => {
      for (let i = 1; i <= 3; i++) {
        await w.publish({ target: { topic: "news" }, payload: enc(`t${i}`), publisher: "test" });
        for (const d of ds) await untilDelivered(w, d, i);
        await w.run(200, () => ds.every((d) => w.engine.deviceStatus(d.id).queueDepth === 0));
        for (const d of ds) expect(w.engine.deviceStatus(d.id).queueDepth).toBe(0);
      }
    });
    const perRecipient = { statements: t.statements / (3 * N), rows: t.rows / (3 * N) };
    console.log(`fan-out: ${perRecipient.statements} statements, ${perRecipient.rows} rows per recipient`);
    expect(perRecipient.statements).toBeLessThanOrEqual(FANOUT.statements);
    expect(perRecipient.rows).toBeLessThanOrEqual(FANOUT.rows);
    w.store.close();
  });

  it("indexes only what the documented schema indexes (every index is one more b-tree write per row)", () => {
    const dir = mkdtempSync(join(tmpdir(), "dtlspush-writes-"));
    try {
      const path = join(dir, "push.db");
      openSqliteStore(path).close();
      const db = new DatabaseSync(path, { readOnly: true });
      const indexes = db
        .prepare("SELECT tbl_name, name, sql FROM sqlite_schema WHERE type = 'index' ORDER BY tbl_name, name")
        .all()
        .map((r) => `${String(r["tbl_name"])}: ${r["sql"] === null ? "(key or unique)" : String(r["sql"]).replace(/^CREATE INDEX \S+ ON \S+ /, "")}`);
      db.close();
      expect(indexes).toEqual(INDEXES);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Bounds from the measured figures (docs/store.md, "Writes per push"). A unicast
 * push to an online device writes 7 rows: the message; its delivery, written
 * once with its seq (queued and sent in the same turn: the turn's batch keeps
 * one row per delivery), deleted at the ack; queued/sent/delivered receipts;
 * the counters once, at the ack (the seq on the delivery row keeps it taken
 * until then). When each push has the engine to itself that is 6 statements
 * (the rows of one kind in one turn are one multi-row statement). In a fan-out
 * the inserts and upserts of one turn are one statement per kind whatever the
 * number of recipients; the ack's delivery removal stays one statement per row
 * (cheaper than a multi-row DELETE); the recipients' receipts of one state
 * share a row (up to 500 a row), so a recipient costs its delivery (2 rows, or
 * 3 when its push starts in a later turn than the publish) and counters (1).
 * Before: 9 statements and 9 rows per unicast push, 8 of each per fan-out
 * recipient; then 6/8 and 1.2/7.0, then 6/8 and 1.2/4.1.
 */
const UNICAST = { statements: 6, rows: 7 };
const FANOUT = { statements: 1.2, rows: 3.4 };

/**
 * The indexes besides the WITHOUT ROWID tables' keys (schema version 2): none keyed by a random value but
 * the message id's own (a random key dirties a random page of a large index
 * per row); receipts are found by message through `msg`, an increasing integer.
 */
const INDEXES = [
  "deliveries: (message_id)",
  "devices: (key or unique)",
  "devices: (key or unique)",
  "devices: (key or unique)",
  "messages: (expires_at)",
  "messages: (key or unique)",
  "receipts: (at)",
  "receipts: (msg) WHERE msg IS NOT NULL",
  "receipts: (message_id) WHERE msg IS NULL",
];
