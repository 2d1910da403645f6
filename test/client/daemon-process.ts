/**
 * A long-lived `dtlspush serve` process for SDK tests (bin/dtlspush.js runs
 * dist/: `npm run build` first). Not cli-process's `collect`, which kills a
 * process still running after 15 s.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { issuePublisherToken } from "../../src/auth/index.ts";
import { loadConfig, openDataDir } from "../../src/daemon/config/index.ts";
import { BIN, waitFor } from "../cli/cli-process.ts";

export interface Daemon {
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<unknown>;
  readonly dtlsPort: number;
  readonly httpPort: number;
}

const daemons = new Set<ChildProcessWithoutNullStreams>();
const dirs: string[] = [];

/** A new temporary directory, removed by `cleanUpDaemons`. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

/** For afterEach: SIGKILL to every daemon still running, temporary directories removed. */
export function cleanUpDaemons(): void {
  for (const d of daemons) d.kill("SIGKILL");
  daemons.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** `dtlspush serve` with the default heartbeat (30 s) on the given ports (0: any), its data in `dataDir`, run in `cwd`; `extra` arguments after. */
export async function serve(cwd: string, dataDir: string, dtlsPort = 0, httpPort = 0, extra: readonly string[] = []): Promise<Daemon> {
  const argv = [BIN, "serve", "--listen", `127.0.0.1:${dtlsPort}`, "--http", `127.0.0.1:${httpPort}`, "--data-dir", dataDir, ...extra];
  const child = spawn(process.execPath, argv, { cwd, env: { ...process.env, DTLSPUSH_DEBUG: "" } });
  daemons.add(child);
  child.on("exit", () => daemons.delete(child));
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  child.stdout.resume();
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const m = await waitFor(() => stderr, child, /DTLS \(UDP\)\s+127\.0\.0\.1:(\d+)[\s\S]*HTTP API\s+http:\/\/127\.0\.0\.1:(\d+)/, 30_000);
  return { child, exited, dtlsPort: Number(m[1]), httpPort: Number(m[2]) };
}

/** A publisher token with the admin scope, minted from the daemon's data directory. */
export async function adminToken(dataDir: string): Promise<string> {
  const data = await openDataDir(await loadConfig({ flags: { dataDir }, env: {} }));
  try {
    return (await issuePublisherToken(data.publisherKeys, { subject: "test", scopes: ["admin"], now: Date.now(), ttlSeconds: 600 })).token;
  } finally {
    await data.close();
  }
}

/** An API call with a JSON body; the status. */
export async function api(d: Daemon, token: string, method: string, path: string, body: unknown): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${d.httpPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  await res.arrayBuffer();
  return res.status;
}

/** Polls `cond` every 20 ms for at most `ms`; the error names what was awaited. */
export async function until(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
