/**
 * `npm run bench:store [-- --sync normal|full] [--pushes N] [--seconds S] [--fanout N] [--batches 1,10,...] [--ids random|ordered]`:
 * the CPU the SQLite store spends per push, alone (no engine, no network).
 * Not a test: prints figures, never fails on a threshold. Bounded in count
 * (at most --pushes pushes per case, default 20 000) and time (--seconds per
 * case, default 3).
 *
 * Each case opens a new SQLite store file in a temporary directory (WAL, the
 * given synchronous setting) and drives it through the commits of real pushes,
 * three per round, as the delivery engine writes them:
 *  - publish: the message, its delivery (seq 0), a `queued` receipt;
 *  - send:    the delivery again with its seq, a `sent` receipt;
 *  - ack:     the delivery removed, the device's counters, a `delivered` receipt.
 * A round carries N pushes (N = 1, 10, 100, 1000: one commit per phase however
 * many pushes, as a busy engine turn or a group commit does) to N different
 * devices of 10 000. The fan-out case publishes one topic message to 1000
 * recipients per round and sends and acknowledges it for all of them.
 *
 * CPU is this thread's (process.threadCpuUsage: user + system, so the WAL
 * writes count), divided by the pushes (recipients). The reference, measured
 * in the same run for each N: the same bytes per push (message id, device,
 * payload, signature and the other message fields) inserted as one row per push
 * into a one-table rowid database without indexes, one transaction per round,
 * same journal and synchronous settings. The ratio store/reference says how far
 * the store is from "just write the bytes once".
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomId } from "../../src/crypto/index.ts";
import { DatabaseSync } from "node:sqlite";
import { openSqliteStore } from "../../src/store/index.ts";
import type { DeliveryRecord, MessageRecord, ReceiptInput, SyncStore } from "../../src/store/index.ts";

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i < 0 ? def : (process.argv[i + 1] ?? def);
}
const SYNC = arg("--sync", "normal") === "full" ? "full" : "normal";
const MAX_PUSHES = Number(arg("--pushes", "20000"));
const SECONDS = Number(arg("--seconds", "3"));
const FANOUT = Number(arg("--fanout", "1000"));
const BATCHES = arg("--batches", "1,10,100,1000").split(",").map(Number);
const ORDERED_IDS = arg("--ids", "random") === "ordered";
const DEVICES = 10_000;
/** rounds run first and not counted: the file and the statement cache warm up */
const WARMUP_ROUNDS = 3;

const payload = new Uint8Array(100).fill(0x61);
// a detached compact JWS as the engine stores it: header..signature (Ed25519, base64url)
const signature = `eyJhbGciOiJFZERTQSIsImtpZCI6ImMxIiwiYjY0IjpmYWxzZSwiY3JpdCI6WyJiNjQiXX0..${"A".repeat(86)}`;
const deviceId = (i: number): string => `device-${String(i % DEVICES).padStart(5, "0")}`;
let ids = 0;
/** a message id: random, or increasing with every call (the same length and form) */
const newId = (): string => (ORDERED_IDS ? `${(++ids).toString(16).padStart(8, "0")}${randomId().slice(8)}` : randomId());

const dir = mkdtempSync(join(tmpdir(), "dtlspush-bench-store-"));
let files = 0;
const freshPath = (): string => join(dir, `case-${++files}.db`);

function cpuMicros(): number {
  const u = process.threadCpuUsage();
  return u.user + u.system;
}

function message(id: string, device: string, topic: string, now: number): MessageRecord {
  return {
    id,
    topic,
    device,
    payload,
    contentType: "application/octet-stream",
    createdAt: now,
    expiresAt: now + 86_400_000,
    priority: 5,
    collapseKey: "",
    publisher: "bench",
    signature,
  };
}

function receipt(m: MessageRecord, device: string, state: ReceiptInput["state"], seq: number, at: number): ReceiptInput {
  return { messageId: m.id, device, state, at, reason: "", seq, topic: m.topic };
}

interface Figures {
  /** pushes (or recipients) measured */
  count: number;
  /** CPU µs per push, all three phases */
  total: number;
  publish: number;
  send: number;
  ack: number;
}

/** One push of a round: a message to one device, with the seq it gets at the send. */
interface Push {
  readonly m: MessageRecord;
  readonly device: string;
  readonly seq: number;
  readonly order: number;
}

/**
 * Runs rounds of `perRound` pushes (`makeRound` builds one) through the
 * publish, send and ack commits until MAX_PUSHES or SECONDS; CPU per push by phase.
 */
function drive(perRound: number, makeRound: (round: number, now: number) => Push[]): Figures {
  const store: SyncStore = openSqliteStore(freshPath(), { synchronous: SYNC });
  const cpu = { publish: 0, send: 0, ack: 0 };
  let count = 0;
  const deadline = performance.now() + SECONDS * 1000;
  for (let round = 0; count + perRound <= MAX_PUSHES && performance.now() < deadline; round++) {
    const now = Date.now();
    const pushes = makeRound(round, now);
    const messages = [...new Set(pushes.map((p) => p.m))];
    const delivery = (p: Push, seq: number): DeliveryRecord => ({ device: p.device, messageId: p.m.id, order: p.order, seq, tombstone: false });
    const c0 = cpuMicros();
    store.commit({
      messages,
      deliveries: pushes.map((p) => delivery(p, 0)),
      receipts: pushes.map((p) => receipt(p.m, p.device, "queued", 0, now)),
    });
    const c1 = cpuMicros();
    store.commit({
      deliveries: pushes.map((p) => delivery(p, p.seq)),
      receipts: pushes.map((p) => receipt(p.m, p.device, "sent", p.seq, now)),
    });
    const c2 = cpuMicros();
    store.commit({
      removeDeliveries: pushes.map((p) => ({ device: p.device, messageId: p.m.id })),
      counters: pushes.map((p) => ({ device: p.device, lastSeq: p.seq, ackedSeq: p.seq })),
      receipts: pushes.map((p) => receipt(p.m, p.device, "delivered", p.seq, now)),
    });
    const c3 = cpuMicros();
    if (round < WARMUP_ROUNDS) continue;
    cpu.publish += c1 - c0;
    cpu.send += c2 - c1;
    cpu.ack += c3 - c2;
    count += perRound;
  }
  store.close();
  return perCount(count, cpu);
}

/** `perRound` unicast pushes a round, each to the next of DEVICES devices. */
function unicast(perRound: number): Figures {
  const seqs = new Map<string, number>();
  let order = 0;
  let next = 0;
  return drive(perRound, (_round, now) =>
    Array.from({ length: perRound }, () => {
      const device = deviceId(next++);
      const seq = (seqs.get(device) ?? 0) + 1;
      seqs.set(device, seq);
      return { m: message(newId(), device, "", now), device, seq, order: ++order };
    }),
  );
}

/** One topic message to `recipients` devices a round; CPU per recipient. */
function fanout(recipients: number): Figures {
  const devices = Array.from({ length: recipients }, (_, i) => deviceId(i));
  return drive(recipients, (round, now) => {
    const m = message(newId(), "", "news", now);
    return devices.map((device) => ({ m, device, seq: round + 1, order: round + 1 }));
  });
}

/** The reference: one row per push holding the push's bytes, no index, one transaction per round. */
function reference(perRound: number): number {
  const db = new DatabaseSync(freshPath());
  db.exec("PRAGMA journal_mode = WAL");
  db.exec(`PRAGMA synchronous = ${SYNC === "full" ? "FULL" : "NORMAL"}`);
  db.exec(
    "CREATE TABLE pushes (id TEXT NOT NULL, device TEXT NOT NULL, payload BLOB NOT NULL, content_type TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, publisher TEXT NOT NULL, signature TEXT NOT NULL) STRICT",
  );
  const insert = db.prepare("INSERT INTO pushes VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
  const begin = db.prepare("BEGIN IMMEDIATE");
  const commit = db.prepare("COMMIT");
  let next = 0;
  let cpu = 0;
  let count = 0;
  const deadline = performance.now() + SECONDS * 1000;
  for (let round = 0; count + perRound <= MAX_PUSHES && performance.now() < deadline; round++) {
    const now = Date.now();
    const rows = Array.from({ length: perRound }, () => message(newId(), deviceId(next++), "", now));
    const c0 = cpuMicros();
    begin.run();
    for (const m of rows) insert.run(m.id, m.device, m.payload, m.contentType, m.createdAt, m.expiresAt, m.publisher, m.signature);
    commit.run();
    const c1 = cpuMicros();
    if (round < WARMUP_ROUNDS) continue;
    cpu += c1 - c0;
    count += perRound;
  }
  db.close();
  return cpu / Math.max(1, count);
}

function perCount(count: number, cpu: { publish: number; send: number; ack: number }): Figures {
  const n = Math.max(1, count);
  return { count, total: (cpu.publish + cpu.send + cpu.ack) / n, publish: cpu.publish / n, send: cpu.send / n, ack: cpu.ack / n };
}

const f1 = (x: number): string => x.toFixed(1).padStart(7);

try {
  console.log(
    `SQLite store, CPU µs per push (synchronous ${SYNC}, ${ORDERED_IDS ? "ordered" : "random"} message ids; each case at most ${MAX_PUSHES} pushes or ${SECONDS} s)`,
  );
  console.log("case                      pushes   total publish    send     ack  reference  ratio");
  for (const n of BATCHES) {
    const f = unicast(n);
    const ref = reference(n);
    console.log(
      `unicast, ${String(n).padStart(4)} per commit ${String(f.count).padStart(8)} ${f1(f.total)} ${f1(f.publish)} ${f1(f.send)} ${f1(f.ack)}    ${f1(ref)} ${f1(f.total / ref)}`,
    );
  }
  const f = fanout(FANOUT);
  const ref = reference(FANOUT);
  console.log(
    `fan-out, ${String(FANOUT).padStart(4)} recipients  ${String(f.count).padStart(8)} ${f1(f.total)} ${f1(f.publish)} ${f1(f.send)} ${f1(f.ack)}    ${f1(ref)} ${f1(f.total / ref)}   (per recipient)`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
