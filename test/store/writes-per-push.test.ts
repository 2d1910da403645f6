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
import { delivery, message, receipt } from "./contract.ts";
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
    await w.store.close();
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
    await w.store.close();
  });

  it("unicast pushes, 100 per commit, as the engine's turns write them (publish and send in one commit, the ack in another)", () => {
    const s = openSqliteStore(":memory:");
    const N = 100;
    const ROUNDS = 3;
    const before = { ...tally };
    for (let round = 0; round < ROUNDS; round++) {
      const pushes = Array.from({ length: N }, (_, i) => ({ id: `r${round}-m${i}`, device: `dev-${i}`, seq: round + 1 }));
      s.commit({
        messages: pushes.map((p) => message(p.id)),
        deliveries: pushes.map((p, i) => delivery(p.device, p.id, round * N + i + 1, { seq: p.seq })),
        receipts: pushes.flatMap((p) => [receipt(p.id, p.device), receipt(p.id, p.device, { state: "sent", seq: p.seq })]),
      });
      s.commit({
        removeDeliveries: pushes.map((p) => ({ device: p.device, messageId: p.id })),
        counters: pushes.map((p) => ({ device: p.device, lastSeq: p.seq, ackedSeq: p.seq })),
        receipts: pushes.map((p) => receipt(p.id, p.device, { state: "delivered", seq: p.seq })),
      });
    }
    const perPush = { statements: (tally.statements - before.statements) / (N * ROUNDS), rows: (tally.rows - before.rows) / (N * ROUNDS) };
    console.log(`unicast, ${N} per commit: ${perPush.statements} statements, ${perPush.rows} rows per push`);
    expect(s.receiptsAfter(0, 10_000)).toHaveLength(3 * N * ROUNDS);
    expect(perPush.statements).toBeLessThanOrEqual(UNICAST_100.statements);
    expect(perPush.rows).toBeLessThanOrEqual(UNICAST_100.rows);
    s.close();
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
 * push to an online device, alone in its turns, writes 7 rows in 7 statements:
 * the message; its delivery, written once with its seq (queued and sent in the
 * same turn: the turn's batch keeps one row per delivery), deleted at the ack;
 * the counters once, at the ack (the seq on the delivery row keeps it taken
 * until then); one receipts row per commit (schema 3: the receipts of a commit
 * share rows whatever their messages, so queued and sent are one row), and at
 * the ack the message's list of receipts rows (the delivered receipt's row id
 * appended: it is how the message finds its receipts without an index).
 * Receipts no longer write any index entry (schema 2: 2 a receipts row).
 * At 100 pushes per commit the receipts rows are amortized: 5.02 rows and 2.05
 * statements a push (the message and the delivery removal are one statement a
 * row; the rest one statement per kind and commit).
 * In a fan-out the inserts and upserts of one turn are one statement per kind
 * whatever the number of recipients; the ack's delivery removal stays one
 * statement per row (cheaper than a multi-row DELETE); a recipient costs its
 * delivery (2 rows, or 3 when its push starts in a later turn than the
 * publish) and counters (1).
 * Before: 9 statements and 9 rows per unicast push, 8 of each per fan-out
 * recipient; then 6/8 and 1.2/7.0, then 6/8 and 1.2/4.1, then 6/7 and 1.2/3.3.
 */
const UNICAST = { statements: 7, rows: 7 };
const UNICAST_100 = { statements: 2.05, rows: 5.02 };
const FANOUT = { statements: 1.25, rows: 3.4 };

/**
 * The indexes besides the WITHOUT ROWID tables' keys (schema version 3): none keyed by a random value but
 * the message id's own (a random key dirties a random page of a large index
 * per row), and none over receipts: a message keeps the ids of its receipts
 * rows, prune walks them in id order, and receipt_orphans (receipts of a message
 * not stored) is a WITHOUT ROWID table keyed by message id, written only for those.
 */
const INDEXES = [
  "deliveries: (message_id)",
  "devices: (key or unique)",
  "devices: (key or unique)",
  "devices: (key or unique)",
  "messages: (expires_at)",
  "messages: (key or unique)",
];
