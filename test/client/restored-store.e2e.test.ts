/**
 * A daemon whose store is restored from an older backup: `dtlspush serve`
 * (bin/dtlspush.js, needs `npm run build`) is stopped, its data directory
 * replaced by a copy taken before the device received its messages (SQLite
 * file with -wal/-shm, copied while the daemon was stopped), and started
 * again on the same ports. The device's persisted high-water mark is now
 * above the last seq the server knows: its Hello is refused with SEQ_AHEAD.
 * The SDK must reset the mark to 0 (persisted, "warning" seq_reset), say
 * Hello again, and receive what is published now, whose seq it had already
 * seen before the restore.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { issuePublisherToken } from "../../src/auth/index.ts";
import { connect, memoryStateStore, type ClientWarning, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { loadConfig, openDataDir } from "../../src/daemon/config/index.ts";
import { BIN, waitFor } from "../cli/cli-process.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const dirs: string[] = [];
const clients: DtlspushClient[] = [];
const daemons = new Set<ChildProcessWithoutNullStreams>();

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const d of daemons) d.kill("SIGKILL");
  daemons.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface Daemon {
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<unknown>;
  readonly dtlsPort: number;
  readonly httpPort: number;
}

/** `dtlspush serve` on the given ports (0: any), data in `dataDir`. */
async function serve(dir: string, dataDir: string, dtlsPort = 0, httpPort = 0): Promise<Daemon> {
  const argv = [BIN, "serve", "--listen", `127.0.0.1:${dtlsPort}`, "--http", `127.0.0.1:${httpPort}`, "--data-dir", dataDir];
  const child = spawn(process.execPath, argv, { cwd: dir, env: { ...process.env, DTLSPUSH_DEBUG: "" } });
  daemons.add(child);
  child.on("exit", () => daemons.delete(child));
  // (not cli-process's collect: that kills a process still running after 15 s)
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  child.stdout.resume();
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const m = await waitFor(() => stderr, child, /DTLS \(UDP\)\s+127\.0\.0\.1:(\d+)[\s\S]*HTTP API\s+http:\/\/127\.0\.0\.1:(\d+)/, 30_000);
  return { child, exited, dtlsPort: Number(m[1]), httpPort: Number(m[2]) };
}

/** SIGTERM (the drain), then the process is gone and its files are closed. */
async function stop(d: Daemon): Promise<void> {
  d.child.kill("SIGTERM");
  await d.exited;
  expect(d.child.exitCode).toBe(0);
}

async function adminToken(dataDir: string): Promise<string> {
  const data = await openDataDir(await loadConfig({ flags: { dataDir }, env: {} }));
  try {
    return (await issuePublisherToken(data.publisherKeys, { subject: "test", scopes: ["admin"], now: Date.now(), ttlSeconds: 600 })).token;
  } finally {
    data.close();
  }
}

async function api(d: Daemon, token: string, method: string, path: string, body: unknown): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${d.httpPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  await res.arrayBuffer();
  return res.status;
}

async function until(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("a store restored from an older backup", () => {
  it("the device resets its high-water mark (seq_reset), says Hello again and receives the new message", { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "dtlspush-restore-"));
    dirs.push(dir);
    const data = join(dir, "data");
    const backup = join(dir, "backup");

    // the backup: the device is registered, nothing was published to it yet
    const first = await serve(dir, data);
    const token = await adminToken(data);
    expect(await api(first, token, "PUT", "/v1/devices/d1", { psk: { keyHex: KEY_HEX } })).toBe(201);
    await stop(first);
    cpSync(data, backup, { recursive: true });

    const second = await serve(dir, data, first.dtlsPort, first.httpPort);
    const state = memoryStateStore();
    const client = await connect({
      host: "127.0.0.1",
      port: second.dtlsPort,
      psk: { identity: "d1", key: Buffer.from(KEY_HEX, "hex") },
      stateStore: state,
      reconnect: { initialDelayMs: 100, maxDelayMs: 400 },
      liveness: { idleMs: 500 },
    });
    clients.push(client);
    const got: ReceivedMessage[] = [];
    const warnings: ClientWarning[] = [];
    const errors: string[] = [];
    const downs: string[] = [];
    client.on("disconnected", (e) => downs.push((e as { code?: string } | undefined)?.code ?? "clean"));
    client.on("message", (m) => got.push(m));
    client.on("warning", (w) => warnings.push(w));
    client.on("error", (e) => errors.push(`${(e as { code?: string }).code ?? ""}: ${e.message}`));
    for (const id of ["m1", "m2", "m3"]) expect(await api(second, token, "POST", "/v1/devices/d1/messages", { id, payload: id })).toBe(202);
    await until(() => got.length === 3 && state.state?.hwm === 3, 10_000, () => `three messages (got ${got.length}, hwm ${state.state?.hwm})`);
    await stop(second);
    // the drain's Bye reached the device (not only its liveness probes)
    await until(() => downs.length > 0, 1000, () => "disconnected after SIGTERM");
    expect(downs[0]).toBe("shutting_down");

    // the operator restores the backup: the server's store knows no seq for d1
    rmSync(data, { recursive: true, force: true });
    cpSync(backup, data, { recursive: true });
    const third = await serve(dir, data, first.dtlsPort, first.httpPort);
    expect(await api(third, token, "POST", "/v1/devices/d1/messages", { id: "after", payload: "after the restore" })).toBe(202);

    await until(
      () => got.length === 4,
      15_000,
      () => `the message published after the restore (got ${JSON.stringify(got.map((m) => m.id))}; warnings ${JSON.stringify(warnings)}; errors ${JSON.stringify(errors.slice(-3))})`,
    );
    // its seq (1) is one the device had seen before the restore: handed over all the same
    expect(got.map((m) => [m.id, m.seq])).toEqual([
      ["m1", 1],
      ["m2", 2],
      ["m3", 3],
      ["after", 1],
    ]);
    expect(warnings).toEqual([{ code: "seq_reset", message: expect.stringContaining("high-water mark 3"), previousHwm: 3, hwm: 0 }]);
    expect(warnings[0]?.message).toContain("above the last seq this server sent device d1 (0)");
    expect(client.connected).toBe(true);
    await until(() => state.state?.hwm === 1, 2000, () => `hwm 1 persisted (is ${state.state?.hwm})`);
    // the server saw its message acknowledged
    const res = await fetch(`http://127.0.0.1:${third.httpPort}/v1/messages/after`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(JSON.stringify(await res.json())).toContain("delivered");
    await stop(third);
  });
});
