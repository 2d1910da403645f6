/**
 * The WAL checkpointer of the worker store: a thread of its own, started by
 * the store's thread (sqlite-worker.ts), with its own connection to the file.
 *
 * Why: SQLite checkpoints the WAL into the database file inside the commit
 * that crosses wal_autocheckpoint pages (1000 by default); that commit copies
 * the pages and syncs the file, and every commit queued behind it waits. At
 * 3 000 unicast publishes/s that was one commit in a hundred taking 3-6 ms
 * instead of 0.1 ms (the store thread's commit p99 fell from 2.9 ms to 0.8 ms
 * without it). A PASSIVE checkpoint on another connection does the same work
 * without blocking the writer: the writer goes on appending to the WAL, and
 * starts it over from its beginning once a checkpoint has copied all of it.
 *
 * The store thread counts its commits in `control[COMMITS]`; this thread
 * checkpoints every CHECKPOINT_INTERVAL_MS while that count moved. The writer
 * keeps an autocheckpoint at a higher threshold as a safety net (this thread
 * failing or falling behind bounds the WAL, it does not grow without end).
 * Nothing depends on this thread for durability: a commit is durable in the
 * WAL, and a crash at any moment of a checkpoint is one SQLite recovers from.
 */
import { workerData } from "node:worker_threads";

/** Indexes into the shared control array. */
export const COMMITS = 0;
/** set to 1 by the store thread: close the connection and end */
export const STOP = 1;
/** set to 1 by this thread once its connection is closed (or never opened) */
export const STOPPED = 2;
/** checkpoints done (for tests and diagnostics) */
export const CHECKPOINTS = 3;
/** checkpoints that failed (e.g. SQLITE_BUSY while another connection checkpoints) */
export const FAILURES = 4;
export const CONTROL_SLOTS = 5;

/** How often the WAL is checkpointed while commits come in. */
export const CHECKPOINT_INTERVAL_MS = 100;

export interface CheckpointerData {
  readonly path: string;
  readonly control: Int32Array;
}

function run(data: CheckpointerData): void {
  const { path, control } = data;
  try {
    const sqlite = process.getBuiltinModule("node:sqlite") as typeof import("node:sqlite") | undefined;
    if (sqlite === undefined) return;
    const db = new sqlite.DatabaseSync(path, { timeout: 0 });
    try {
      const checkpoint = db.prepare("PRAGMA wal_checkpoint(PASSIVE)");
      // what was committed before this thread started is checkpointed at its first round
      let seen = -1;
      while (Atomics.load(control, STOP) === 0) {
        Atomics.wait(control, STOP, 0, CHECKPOINT_INTERVAL_MS);
        if (Atomics.load(control, STOP) !== 0) break;
        const commits = Atomics.load(control, COMMITS);
        if (commits === seen) continue;
        seen = commits;
        try {
          checkpoint.get();
          Atomics.add(control, CHECKPOINTS, 1);
        } catch {
          // the writer's own autocheckpoint is the safety net; try again next time
          Atomics.add(control, FAILURES, 1);
        }
      }
    } finally {
      db.close();
    }
  } catch {
    // cannot open: the writer's autocheckpoint does the work
    Atomics.add(control, FAILURES, 1);
  } finally {
    Atomics.store(control, STOPPED, 1);
    Atomics.notify(control, STOPPED);
  }
}

if (workerData !== null && typeof workerData === "object" && "control" in workerData) run(workerData as CheckpointerData);
