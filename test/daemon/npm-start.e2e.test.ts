/**
 * `npm start` as docker stop, systemd and CI runners stop it: SIGTERM to the
 * npm process only. The daemon must get the signal, drain, exit and free its
 * ports (npm forwards the signal to the script's process, which must be the
 * daemon itself, not a shell around it). Needs `npm run build`.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { afterEach, expect, it } from "vitest";
import { collect, ROOT, waitFor } from "../cli/cli-process.ts";

const dirs: string[] = [];
const pids = new Set<number>();
const children = new Set<ChildProcessWithoutNullStreams>();

afterEach(() => {
  for (const c of children) c.kill("SIGKILL");
  children.clear();
  // a daemon the fix failed to stop: it was started by this test, end it by its pid
  for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
  pids.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

function tcpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen({ host: "127.0.0.1", port, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createSocket({ type: "udp4", reuseAddr: false });
    s.once("error", () => resolve(false));
    s.bind({ address: "127.0.0.1", port, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

it("SIGTERM to `npm start` drains and stops the daemon and frees its ports", async () => {
  const dir = mkdtempSync(join(tmpdir(), "dtlspush-npm-start-"));
  dirs.push(dir);
  const npm = spawn(
    "npm",
    ["start", "--", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", join(dir, "data"), "--log-level", "info"],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        // the repo's Node first, as `npm test` runs
        PATH: `${join(ROOT, "node_modules", ".bin")}${delimiter}${process.env["PATH"] ?? ""}`,
        DTLSPUSH_DTLS_CERTS_DIR: join(dir, "certs"),
        DTLSPUSH_DEBUG: "",
      },
    },
  );
  children.add(npm);
  const out = collect(npm);
  const m = await waitFor(out.stdout, npm, /^(\{.*"msg":"dtlspush started".*\})$/m, 30_000);
  const started = JSON.parse(m[1] as string) as { pid: number; dtls: { port: number }; http: { port: number } };
  pids.add(started.pid);
  expect(started.pid).not.toBe(npm.pid);
  expect(alive(started.pid)).toBe(true);
  expect(await tcpFree(started.http.port)).toBe(false);

  const npmExited = new Promise<void>((resolve) => npm.once("exit", () => resolve()));
  npm.kill("SIGTERM");
  await npmExited;
  expect(await until(() => !alive(started.pid), 10_000), `daemon pid ${started.pid} still runs after SIGTERM to npm`).toBe(true);
  expect(out.stdout()).toMatch(/"msg":"draining: /);
  expect(out.stdout()).toMatch(/"clean":true,"msg":"stopped"/);
  expect(await tcpFree(started.http.port)).toBe(true);
  expect(await udpFree(started.dtls.port)).toBe(true);
}, 45_000);
