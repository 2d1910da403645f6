/**
 * The SQLite store on its worker thread (src/store/worker-store.ts): the async
 * Store contract (also run against the inline stores, as the reference), group
 * commit (grouping, a failing batch in the middle of a group, the bounds),
 * errors crossing the thread unchanged, thread failure, liveness of the
 * process, and kill -9 durability with a real child process.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { createMemoryStore, inlineStore, openSqliteStore, openWorkerStore, StoreError } from "../../src/store/index.ts";
import type { Store, WorkerStore, WriteBatch } from "../../src/store/index.ts";
import { delivery, device, message, receipt } from "./contract.ts";
import { describeAsyncStoreContract, pushBatch, rejection } from "./store-contract.ts";

const sqlite = process.getBuiltinModule("node:sqlite") as typeof import("node:sqlite") | undefined;
if (sqlite === undefined)
  throw new Error(`the worker store tests need node:sqlite, which Node.js ${process.version} lacks; run them with the project's Node 24`);

const FIXTURE = fileURLToPath(new URL("./fixtures/worker-commit-loop.ts", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "dtlspush-worker-store-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const freshPath = (): string => join(dir, `store-${++n}`, "push.db");

describeAsyncStoreContract("worker (SQLite on a thread)", { open: () => openWorkerStore(freshPath()) });
describeAsyncStoreContract("inline sqlite", { open: () => Promise.resolve(inlineStore(openSqliteStore(freshPath()))) });
describeAsyncStoreContract("inline memory", { open: () => Promise.resolve(inlineStore(createMemoryStore())) });

/** The code and message of what `p` rejects with (the store's path replaced), or "ok". */
async function outcome(p: Promise<unknown>, path: string): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (!(e instanceof StoreError)) return `not a StoreError: ${String(e)}`;
    return `${e.code}: ${e.message.replaceAll(path, "<path>")}`;
  }
}

describe("worker store: errors cross the thread unchanged", () => {
  it("answers every failing call with the StoreError the SQLite store throws inline: same class, code and message", async () => {
    const script = async (s: Store, path: string): Promise<string[]> => {
      const out: string[] = [];
      const rec = async (p: Promise<unknown>): Promise<void> => void out.push(await outcome(p, path));
      await rec(s.putDevice(device("dev-1", { psk: { identity: "shared", key: new Uint8Array([1]) }, certIdentity: "c1" })));
      await rec(s.putDevice(device("dev-2", { psk: { identity: "shared", key: new Uint8Array([2]) } })));
      await rec(s.putDevice(device("dev-3", { certIdentity: "c1" })));
      await rec(s.putDevice(device("d", { createdAt: Number.NaN })));
      await rec(s.putSetting("", "x"));
      await rec(s.commit(pushBatch(1)));
      await rec(s.commit({ messages: [message("m2")], deliveries: [delivery("dev", "ghost", 1)] }));
      await rec(s.commit({ messages: [message("m-1")] }));
      await rec(s.commit({ receipts: [receipt("m-1", "d", { state: "lost" as "sent" })] }));
      await rec(s.getDevice("dev-1"));
      await s.close();
      await rec(s.getDevice("dev-1"));
      await rec(s.commit({}));
      return out;
    };
    const workerPath = freshPath();
    const inlinePath = freshPath();
    const viaWorker = await script(await openWorkerStore(workerPath), workerPath);
    const inline = await script(inlineStore(openSqliteStore(inlinePath)), inlinePath);
    expect(viaWorker).toEqual(inline);
    // and the script did meet each kind of error
    expect(viaWorker.map((o) => o.split(":")[0])).toEqual([
      "ok",
      "identity_in_use",
      "identity_in_use",
      "invalid_record",
      "invalid_record",
      "ok",
      "commit_failed",
      "store_failed",
      "store_failed",
      "ok",
      "store_closed",
      "store_closed",
    ]);
  });

  it("rejects the open with the error openSqliteStore throws: not a database, a newer schema, a path under a file", async () => {
    const notDb = join(dir, "not-a-db");
    writeFileSync(notDb, "hello, this is not SQLite ".repeat(100));
    const newer = join(dir, "newer.db");
    const db = new (sqlite as typeof import("node:sqlite")).DatabaseSync(newer);
    db.exec("PRAGMA user_version = 99");
    db.close();
    const underFile = join(notDb, "push.db");
    for (const [path, code] of [
      [notDb, "store_open_failed"],
      [newer, "store_version"],
      [underFile, "store_open_failed"],
    ] as const) {
      const inline = await rejection(Promise.resolve().then(() => openSqliteStore(path)));
      const viaWorker = await rejection(openWorkerStore(path));
      expect(viaWorker.code).toBe(code);
      expect(viaWorker.code).toBe(inline.code);
      expect(viaWorker.message).toBe(inline.message);
      expect(viaWorker.message).toContain(path);
    }
  });
});

describe("worker store: a batch that cannot be sent", () => {
  it("refuses a batch structured clone cannot copy with commit_failed, then every later commit (prefix rule)", async () => {
    const s = await openWorkerStore(freshPath());
    await s.commit(pushBatch(1));
    const bad = { ...pushBatch(2), extra: () => 0 } as unknown as WriteBatch;
    const e = await rejection(s.commit(bad));
    expect(e.code).toBe("commit_failed");
    expect(e.message).toContain("Cannot send the batch");
    expect((await rejection(s.commit(pushBatch(3)))).code).toBe("store_failed");
    expect(await s.existingMessageIds(["m-1", "m-2", "m-3"])).toEqual(new Set(["m-1"]));
    await s.close();
  });
});

describe("worker store: group commit", () => {
  it("applies commits that queue up while the thread is busy in one transaction, each with its own receipts", async () => {
    const path = freshPath();
    const s = await openWorkerStore(path);
    await s.commit(pushBatch(0, { messages: [message("m-0")], deliveries: [], receipts: [receipt("m-0", "")] }));
    const before = { ...s.stats };
    const release = s.hold();
    const commits = Array.from({ length: 100 }, (_, i) => s.commit(pushBatch(i + 1)));
    release();
    const results = await Promise.all(commits);
    expect(s.stats.commits - before.commits).toBe(100);
    expect(s.stats.transactions - before.transactions).toBe(1);
    expect(s.stats.largestGroup).toBe(100);
    // receipt ids: batch i has ids 2i, 2i+1 (receipt 1 is m-0's), in its own input order
    results.forEach((r, i) => {
      expect(r.map((x) => [x.id, x.messageId, x.device])).toEqual([
        [2 * i + 2, `m-${i + 1}`, "dev-a"],
        [2 * i + 3, `m-${i + 1}`, "dev-b"],
      ]);
    });
    expect(await s.receiptsAfter(1, 1_000)).toEqual(results.flat());
    await s.close();
  });

  it("bounds a group: 300 queued commits take two transactions (256 + 44)", async () => {
    const s = await openWorkerStore(freshPath());
    const release = s.hold();
    const commits = Array.from({ length: 300 }, (_, i) => s.commit({ subscribe: [{ device: "d", topic: `t-${i}` }] }));
    release();
    await Promise.all(commits);
    expect(s.stats).toEqual({ commits: 300, transactions: 2, largestGroup: 256 });
    await s.close();
  });

  it("bounds a group by rows: a batch that would take a group past 50,000 rows starts the next one", async () => {
    const s = await openWorkerStore(freshPath());
    // removals of absent rows: cheap statements, counted as rows all the same
    const rows = (k: number, from: number): WriteBatch => ({
      unsubscribe: Array.from({ length: k }, (_, i) => ({ device: "d", topic: `t-${from + i}` })),
    });
    const release = s.hold();
    const commits = [s.commit(rows(30_000, 0)), s.commit(rows(10_000, 1e6)), s.commit(rows(10_001, 2e6)), s.commit(rows(1, 3e6))];
    release();
    await Promise.all(commits);
    // 30,000 + 10,000 fit; 10,001 more would make 50,001: it and the next batch form a second group
    expect(s.stats).toEqual({ commits: 4, transactions: 2, largestGroup: 2 });
    await s.close();
  });

  it("a failing batch in the middle of a group: those before it are stored, it and all after it are absent", async () => {
    const path = freshPath();
    const s: WorkerStore = await openWorkerStore(path);
    const release = s.hold();
    const commits = Array.from({ length: 10 }, (_, i) =>
      // batch 5 adds m-5 (and its rows) first, then repeats m-2: a duplicate found half way through the batch
      s.commit(i + 1 === 5 ? pushBatch(5, { messages: [message("m-5"), message("m-2")] }) : pushBatch(i + 1)),
    );
    const read = s.existingMessageIds(["m-1", "m-4", "m-5", "m-6"]);
    const after = rejection(s.commit(pushBatch(11)));
    release();
    const outcomes = await Promise.allSettled(commits);
    expect(s.stats.transactions).toBe(1);
    expect(outcomes.slice(0, 4).map((o) => o.status)).toEqual(["fulfilled", "fulfilled", "fulfilled", "fulfilled"]);
    const fifth = outcomes[4] as PromiseRejectedResult;
    expect(fifth.reason).toBeInstanceOf(StoreError);
    expect(fifth.reason).toMatchObject({
      code: "duplicate_message",
      message: 'Message id "m-2" is already stored; nothing of the batch was applied.',
    });
    for (const o of outcomes.slice(5)) {
      expect(o.status).toBe("rejected");
      expect((o as PromiseRejectedResult).reason).toMatchObject({ code: "store_failed" });
    }
    // the read called after the group sees its committed prefix; later commits are refused
    expect(await read).toEqual(new Set(["m-1", "m-4"]));
    expect((await after).code).toBe("store_failed");
    const stored = (await Promise.all(commits.slice(0, 4))).flat();
    await s.close();

    // what is on disk, through a fresh connection
    const file = openSqliteStore(path);
    try {
      const state = file.loadDeliveryState();
      expect(state.messages.map((m) => m.id)).toEqual(["m-1", "m-2", "m-3", "m-4"]);
      expect(state.deliveries.map((d) => `${d.device}:${d.messageId}`).sort()).toEqual(
        ["1", "2", "3", "4"].flatMap((k) => [`dev-a:m-${k}`, `dev-b:m-${k}`]).sort(),
      );
      expect(state.counters).toEqual([{ device: "dev-a", lastSeq: 4, ackedSeq: 0 }]);
      expect(file.getMessage("m-5")).toBeUndefined();
      expect(file.receiptsForMessage("m-5")).toEqual([]);
      expect(file.receiptsAfter(0, 100)).toEqual(stored);
      expect(stored.map((r) => r.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      // the file takes commits again after a restart; no receipt id was used up by the refused batches
      expect(file.commit({ receipts: [receipt("m-1", "x")] })[0]?.id).toBe(9);
    } finally {
      file.close();
    }
  });
});

describe("worker store: thread failure", () => {
  for (const how of ["throw", "terminate"] as const) {
    it(`rejects pending and later operations with store_failed when the thread ends (${how})`, async () => {
      const s = await openWorkerStore(freshPath());
      await s.commit(pushBatch(1));
      const release = s.hold();
      // "throw": the crash is queued first, the operations after it reach the thread and wait behind it
      const thrown = how === "throw" ? s.crash("throw") : undefined;
      const pending = [s.commit(pushBatch(2)), s.getMessage("m-1"), s.commit(pushBatch(3))].map((p) => rejection(p));
      const crashed = thrown ?? s.crash("terminate");
      release();
      await crashed;
      for (const e of await Promise.all(pending)) {
        expect(e.code).toBe("store_failed");
        expect(e.message).toContain(how === "throw" ? "uncaught error" : "exited");
      }
      for (const call of [() => s.commit(pushBatch(4)), () => s.getMessage("m-1"), () => s.putSetting("k", "v")]) {
        expect((await rejection(call())).code).toBe("store_failed");
      }
      await s.close();
      expect((await rejection(s.getMessage("m-1"))).code).toBe("store_closed");
      release();
    });
  }

  it("applies what was called before the crash: the thread fails after them, not before", async () => {
    const path = freshPath();
    const s = await openWorkerStore(path);
    const release = s.hold();
    const before = [s.commit(pushBatch(1)), s.commit(pushBatch(2))];
    const crashed = s.crash("throw");
    const afterCrash = rejection(s.commit(pushBatch(3)));
    release();
    await crashed;
    expect((await Promise.all(before)).flat()).toHaveLength(4);
    expect((await afterCrash).code).toBe("store_failed");
    const file = openSqliteStore(path);
    expect(file.existingMessageIds(["m-1", "m-2", "m-3"])).toEqual(new Set(["m-1", "m-2"]));
    file.close();
  });
});

interface ChildRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  lines: number[];
  stderr: string;
}

/** Runs the fixture; SIGKILLs it once `killAfter` lines were printed (if given); fails after `limitMs`. */
function runFixture(args: string[], killAfter: number | undefined, limitMs: number): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FIXTURE, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let lines = 0;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the fixture did not end within ${limitMs} ms (${lines} lines)\nstderr:\n${stderr}`));
    }, limitMs);
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      stdout += s;
      lines += s.split("\n").length - 1;
      if (killAfter !== undefined && lines >= killAfter && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    });
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, lines: stdout.split("\n").slice(0, -1).map(Number), stderr });
    });
  });
}

/** Checks batches 1..k of the fixture are in the file, complete, and nothing after; returns k. */
function storedBatches(path: string): number {
  const file = openSqliteStore(path);
  try {
    const state = file.loadDeliveryState();
    const k = state.counters.find((c) => c.device === "dev-0")?.lastSeq ?? 0;
    expect(state.messages.map((m) => m.id)).toEqual(Array.from({ length: k }, (_, i) => `m-${i + 1}`).sort());
    expect(state.deliveries).toHaveLength(3 * k);
    expect(state.subscriptions).toHaveLength(k);
    expect(state.counters).toEqual(k === 0 ? [] : [{ device: "dev-0", lastSeq: k, ackedSeq: k - 1 }]);
    const receipts = file.receiptsAfter(0, 10 * k + 10);
    expect(receipts.map((r) => `${r.id}:${r.messageId}`)).toEqual(Array.from({ length: 3 * k }, (_, i) => `${i + 1}:m-${Math.floor(i / 3) + 1}`));
    expect(file.getMessage(`m-${k + 1}`)).toBeUndefined();
    return k;
  } finally {
    file.close();
  }
}

describe("worker store: the process", () => {
  it("keeps every commit it reported resolved when killed with SIGKILL at random moments, nothing partial", async () => {
    const path = freshPath();
    mkdirSync(join(path, ".."), { recursive: true });
    let k = 0;
    for (const synchronous of ["normal", "full", "normal"]) {
      const killAfter = 20 + Math.floor(Math.random() * 200);
      const run = await runFixture(["loop", path, synchronous, "15000"], killAfter, 20_000);
      expect(run.signal, run.stderr).toBe("SIGKILL");
      expect(run.lines.length).toBeGreaterThanOrEqual(killAfter);
      // reported in order, continuing from what the file held
      expect(run.lines).toEqual(run.lines.map((_, i) => k + i + 1));
      const last = run.lines.at(-1) as number;
      const stored = storedBatches(path);
      // every reported commit is there; at most the commits in flight (8) more
      expect(stored).toBeGreaterThanOrEqual(last);
      expect(stored).toBeLessThanOrEqual(last + 8);
      k = stored;
    }
  });

  it("stays alive until commits called without awaiting are durable, then exits by itself (no close)", async () => {
    const path = freshPath();
    const run = await runFixture(["fire", path, "500"], undefined, 15_000);
    expect(run.code, run.stderr).toBe(0);
    expect(storedBatches(path)).toBe(500);
  });

  it("does not keep the process alive while the store is idle", async () => {
    const path = freshPath();
    const run = await runFixture(["idle", path], undefined, 15_000);
    expect(run.code, run.stderr).toBe(0);
    expect(storedBatches(path)).toBe(0);
  });

  it("exits after close() with every commit called before it stored", async () => {
    const path = freshPath();
    const run = await runFixture(["close", path, "200"], undefined, 15_000);
    expect(run.code, run.stderr).toBe(0);
    expect(storedBatches(path)).toBe(200);
  });
});
