/**
 * The one reason the daemon exits on its own: its store fails. `dtlspush
 * serve` (bin/dtlspush.js runs dist/: `npm run build` first) keeps its data
 * directory on a small tmpfs of its own; the test fills that file system and
 * publishes until a commit fails. The daemon must say that the store failed
 * (stderr names it) and exit 1, having answered 202 only for what was durable:
 * after the disk has room again and the daemon is restarted, every 202'd
 * message is there.
 *
 * Mounting a tmpfs needs root (CAP_SYS_ADMIN), as the project's CI has; where
 * the mount is refused the test is skipped and says why.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { adminToken, api, cleanUpDaemons, serve, tempDir } from "../client/daemon-process.ts";

const mounts: string[] = [];

afterEach(() => {
  // lazily: a daemon still running keeps its files open until cleanUpDaemons kills it
  for (const m of mounts.splice(0)) spawnSync("umount", ["-l", m]);
  cleanUpDaemons();
});

/** A tmpfs of `bytes` at a new directory, or a reason it cannot be mounted. */
function smallDisk(bytes: number): { dir: string } | { refused: string } {
  const dir = tempDir("dtlspush-full-");
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${bytes}`, "tmpfs", dir], { encoding: "utf8" });
  if (r.status !== 0) return { refused: (r.stderr || r.error?.message || `exit ${r.status}`).trim() };
  mounts.push(dir);
  return { dir };
}

/** Writes a file until the file system has no room left. */
function fill(dir: string): void {
  const chunk = Buffer.alloc(16 * 1024, 0x5a);
  for (let i = 0; i < 4096; i++) {
    try {
      writeFileSync(join(dir, `filler-${i}`), chunk);
    } catch {
      // ENOSPC: a last small one takes the remaining blocks
      try {
        writeFileSync(join(dir, "filler-last"), Buffer.alloc(512));
      } catch {
        /* full */
      }
      return;
    }
  }
  throw new Error("the file system did not fill up");
}

describe("the store fails (disk full)", () => {
  it("the daemon says the store failed and exits 1; every 202'd publish is in the store after a restart", { timeout: 60_000 }, async (ctx) => {
    const disk = smallDisk(8 * 1024 * 1024);
    if ("refused" in disk) {
      ctx.skip(`a tmpfs cannot be mounted here (${disk.refused}); this test needs root`);
      return;
    }
    const work = tempDir("dtlspush-full-work-");
    const data = join(disk.dir, "data");
    mkdirSync(data);
    const d = await serve(work, data);
    let stderr = "";
    d.child.stderr.on("data", (s: string) => (stderr += s));
    const token = await adminToken(data);
    expect(await api(d, token, "PUT", "/v1/devices/d1", { psk: { keyHex: "000102030405060708090a0b0c0d0e0f" } })).toBe(201);

    const accepted: string[] = [];
    for (let i = 0; i < 5; i++) {
      expect(await api(d, token, "POST", "/v1/devices/d1/messages", { id: `before${i}`, payload: "x".repeat(700) })).toBe(202);
      accepted.push(`before${i}`);
    }
    fill(disk.dir);
    const refused: number[] = [];
    for (let i = 0; i < 5000 && d.child.exitCode === null; i++) {
      let status: number;
      try {
        status = await api(d, token, "POST", "/v1/devices/d1/messages", { id: `m${i}`, payload: "x".repeat(700) });
      } catch {
        break; // the daemon closed the API on its way out
      }
      if (status === 202) accepted.push(`m${i}`);
      else refused.push(status);
    }
    await d.exited;
    console.log(
      `store full: ${accepted.length} publishes answered 202, then ${refused.length} refused (${[...new Set(refused)].join(", ")}) before the daemon exited`,
    );
    expect(d.child.exitCode).toBe(1);
    expect(stderr).toMatch(/the store \(.*dtlspush\.db\) failed: /);
    // a publish whose commit failed is never 202: it is a 5xx (or the connection closed as the daemon left)
    for (const s of refused) expect(s).toBeGreaterThanOrEqual(500);

    // room again: the restarted daemon has every message it accepted
    for (const f of ["filler-last", ...Array.from({ length: 4096 }, (_, i) => `filler-${i}`)]) rmSync(join(disk.dir, f), { force: true });
    const again = await serve(work, data);
    for (const id of accepted) {
      const res = await fetch(`http://127.0.0.1:${again.httpPort}/v1/messages/${id}`, { headers: { authorization: `Bearer ${token}` } });
      await res.arrayBuffer();
      expect(res.status, `message ${id} was answered 202 before the disk filled`).toBe(200);
    }
  });
});
