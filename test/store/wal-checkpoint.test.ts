/**
 * The worker store checkpoints its WAL on a thread of its own
 * (src/store/checkpoint-worker.ts), not inside a commit: commits well below
 * SQLite's own autocheckpoint threshold (1000 pages) reach the database file
 * while the store is open, and closing still leaves the file complete.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openSqliteStore, openWorkerStore } from "../../src/store/index.ts";
import { message } from "./contract.ts";

const dir = mkdtempSync(join(tmpdir(), "dtlspush-wal-checkpoint-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const PAYLOAD = 3_000; // about one 4 KiB page per message
const MESSAGES = 300; // about 300 WAL pages: below the 1000 of a commit's own checkpoint

describe("worker store: WAL checkpoints off the commit path", () => {
  it("copies committed pages into the database file while open, without a commit crossing 1000 WAL pages", async () => {
    const path = join(dir, "a", "push.db");
    const store = await openWorkerStore(path);
    try {
      await store.commit({ messages: [message("first")] });
      const before = statSync(path).size;
      for (let b = 0; b < MESSAGES / 20; b++) {
        const messages = Array.from({ length: 20 }, (_, i) => message(`m-${b}-${i}`, { payload: new Uint8Array(PAYLOAD).fill(i) }));
        await store.commit({ messages });
      }
      // the checkpointer runs every 100 ms while commits come in: bounded wait for the file to grow
      let after = statSync(path).size;
      for (let i = 0; i < 50 && after < before + MESSAGES * PAYLOAD; i++) {
        await new Promise((r) => setTimeout(r, 100));
        after = statSync(path).size;
      }
      expect(after).toBeGreaterThanOrEqual(before + MESSAGES * PAYLOAD);
    } finally {
      await store.close();
    }
    // closed: everything is in the file, and it opens again with every message
    expect(existsSync(`${path}-wal`) ? statSync(`${path}-wal`).size : 0).toBe(0);
    const again = openSqliteStore(path);
    try {
      expect(again.getMessage("m-14-19")?.payload.length).toBe(PAYLOAD);
      expect(again.existingMessageIds(["first", "m-0-0", "m-14-19"]).size).toBe(3);
    } finally {
      again.close();
    }
  });
});
