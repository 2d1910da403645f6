/**
 * kill -9 durability of the SQLite store: a child process commits batches in a
 * loop and reports each one after commit returns; we SIGKILL it mid-stream and
 * check that every reported batch is in the file, complete, and that no batch
 * is there in part.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { openSqliteStore } from "../../src/store/index.ts";

const FIXTURE = fileURLToPath(new URL("./fixtures/commit-loop.ts", import.meta.url));
const DEVICES = ["dev-0", "dev-1", "dev-2"];
const KILL_AFTER = 300;

const dir = mkdtempSync(join(tmpdir(), "dtlspush-durability-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  reported: number[];
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Runs the commit loop on `path` and SIGKILLs it once `killAfter` more batches were reported. */
function runAndKill(path: string, synchronous: "normal" | "full", killAfter: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    // Bounded in count and time even if the kill never came.
    const child = spawn(process.execPath, [FIXTURE, path, "200000", "20000", synchronous], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let lines = 0;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the commit loop reported only ${lines} batches in 15 s\nstderr:\n${stderr}`));
    }, 15_000);
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      stdout += s;
      lines += s.split("\n").length - 1;
      if (lines >= killAfter && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    });
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    child.on("error", reject);
    child.on("close", (_code, signal) => {
      clearTimeout(timer);
      // Only whole lines count: a number is reported once its newline is out.
      const reported = stdout.split("\n").slice(0, -1).map(Number);
      resolve({ reported, signal, stderr });
    });
  });
}

/** Checks batches 1..k are all there and complete and nothing of batch k+1 exists; returns k. */
function checkBatches(path: string, lastReported: number): number {
  const store = openSqliteStore(path);
  try {
    const state = store.loadDeliveryState();
    const k = state.counters.find((c) => c.device === "dev-0")?.lastSeq ?? 0;
    // every reported batch; at most one more (killed between commit and print)
    expect(k).toBeGreaterThanOrEqual(lastReported);
    expect(k).toBeLessThanOrEqual(lastReported + 1);

    expect(state.messages).toHaveLength(k);
    expect(state.deliveries).toHaveLength(3 * k);
    expect(state.subscriptions).toHaveLength(k);
    const receipts = store.receiptsAfter(0, 10 * k + 10);
    expect(receipts).toHaveLength(3 * k);
    const byDevice = new Map<string, number[]>();
    for (const d of state.deliveries) byDevice.set(d.device, [...(byDevice.get(d.device) ?? []), d.order]);
    const all = Array.from({ length: k }, (_, i) => i + 1);
    for (const device of DEVICES) expect(byDevice.get(device)).toEqual(all);
    for (let n = 1; n <= k; n++) {
      const m = store.getMessage(`m-${n}`);
      expect(m?.payload).toEqual(new Uint8Array(64).fill(n & 0xff));
      expect(store.receiptsForMessage(`m-${n}`).map((r) => r.device)).toEqual(DEVICES);
    }
    expect(store.getMessage(`m-${k + 1}`)).toBeUndefined();
    expect(state.counters).toEqual([{ device: "dev-0", lastSeq: k, ackedSeq: k - 1 }]);
    return k;
  } finally {
    store.close();
  }
}

describe("sqlite store durability", () => {
  for (const synchronous of ["normal", "full"] as const) {
    it(`keeps every commit that returned when the process is killed with SIGKILL (synchronous ${synchronous})`, async () => {
      const path = join(dir, synchronous, "push.db");

      const first = await runAndKill(path, synchronous, KILL_AFTER);
      expect(first.signal, first.stderr).toBe("SIGKILL");
      expect(first.reported.length).toBeGreaterThanOrEqual(KILL_AFTER);
      expect(first.reported).toEqual(first.reported.map((_, i) => i + 1));
      const k1 = checkBatches(path, first.reported.at(-1) as number);

      // The killed file opens, and the loop carries on from where it was.
      const second = await runAndKill(path, synchronous, 100);
      expect(second.signal, second.stderr).toBe("SIGKILL");
      expect(second.reported[0]).toBe(k1 + 1);
      const k2 = checkBatches(path, second.reported.at(-1) as number);
      expect(k2).toBeGreaterThan(k1);

      // and still takes ordinary commits
      const store = openSqliteStore(path);
      const receipts = store.commit({ receipts: [{ messageId: "m-1", device: "dev-0", state: "delivered", at: 1, reason: "", seq: 1, topic: "t" }] });
      expect(receipts[0]?.id).toBe(3 * k2 + 1);
      store.close();
    });
  }
});
