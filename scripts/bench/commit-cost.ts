/**
 * What a commit costs the MAIN thread: the SQLite store inline (every
 * statement on the caller's thread) versus the worker store (the batch is
 * cloned to the store's thread; the answer builds the receipts). Not a test:
 * run it by hand, `node scripts/bench/commit-cost.ts [--json]`.
 *
 * A batch of N pushes holds what publishing N unicast pushes writes in one
 * turn: N messages (100-byte payload, a detached JWS), N deliveries, N queued
 * receipts. For each N it reports, per batch:
 * - inline: the wall time of SyncStore.commit (all of it on the main thread);
 * - worker, awaited one at a time: the main thread's busy time (event-loop
 *   utilization: posting, the answer, settling the promise), the wall time to
 *   durable, and the CPU of the whole process (both threads);
 * - worker, N-push batches issued without awaiting (pipelined): main-thread
 *   busy time and wall time per batch, and the batches per transaction.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { openSqliteStore, openWorkerStore, type WriteBatch } from "../../src/store/index.ts";

const SIGNATURE = `eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0..${"A".repeat(86)}`;
const json = process.argv.includes("--json");
const dir = mkdtempSync(join(tmpdir(), "dtlspush-commit-cost-"));

let serial = 0;
function batchOf(pushes: number): WriteBatch {
  const messages = [];
  const deliveries = [];
  const receipts = [];
  for (let i = 0; i < pushes; i++) {
    const id = `msg-${++serial}`;
    const device = `dev-${serial % 5000}`;
    messages.push({
      id,
      topic: "",
      device,
      payload: new Uint8Array(100).fill(serial & 0xff),
      contentType: "application/octet-stream",
      createdAt: 1_700_000_000_000 + serial,
      expiresAt: 1_700_086_400_000 + serial,
      priority: 5,
      collapseKey: "",
      publisher: "bench",
      signature: SIGNATURE,
    });
    deliveries.push({ device, messageId: id, order: serial, seq: 0, tombstone: false });
    receipts.push({ messageId: id, device, state: "queued" as const, at: 1_700_000_000_000 + serial, reason: "", seq: 0, topic: "" });
  }
  return { messages, deliveries, receipts };
}

const us = (ms: number): number => Math.round(ms * 1000 * 10) / 10;

async function measure(pushes: number): Promise<Record<string, number>> {
  const rounds = Math.max(20, Math.min(500, Math.round(4000 / pushes)));
  const batches = (): WriteBatch[] => Array.from({ length: rounds }, () => batchOf(pushes));

  // inline
  const sync = openSqliteStore(join(dir, `inline-${pushes}.db`));
  sync.commit(batchOf(pushes));
  let inlineMs = 0;
  for (const b of batches()) {
    const t = performance.now();
    sync.commit(b);
    inlineMs += performance.now() - t;
  }
  sync.close();

  // worker, one at a time
  const store = await openWorkerStore(join(dir, `worker-${pushes}.db`));
  await store.commit(batchOf(pushes));
  let callMs = 0;
  const awaited = batches();
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (const b of awaited) {
    const t = performance.now();
    const p = store.commit(b);
    callMs += performance.now() - t;
    await p;
  }
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0);

  // worker, pipelined
  const piped = batches();
  const tx0 = store.stats.transactions;
  const elu1 = performance.eventLoopUtilization();
  const t1 = performance.now();
  await Promise.all(piped.map((b) => store.commit(b)));
  const pipedWallMs = performance.now() - t1;
  const pipedElu = performance.eventLoopUtilization(elu1);
  const transactions = store.stats.transactions - tx0;
  await store.close();

  return {
    pushes,
    rounds,
    inlineMainUs: us(inlineMs / rounds),
    workerCallUs: us(callMs / rounds),
    workerMainUs: us(elu.active / rounds),
    workerWallUs: us(wallMs / rounds),
    workerProcessCpuUs: Math.round((cpu.user + cpu.system) / rounds),
    pipelinedMainUs: us(pipedElu.active / rounds),
    pipelinedWallUs: us(pipedWallMs / rounds),
    batchesPerTransaction: Math.round((rounds / transactions) * 10) / 10,
  };
}

try {
  const results = [];
  for (const pushes of [1, 100, 1000]) results.push(await measure(pushes));
  if (json) {
    console.log(JSON.stringify(results));
  } else {
    console.log("µs per batch (main = main-thread busy time)");
    console.table(results);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
