/**
 * `npm run bench:restart`: what a daemon restart costs its devices, on
 * loopback. The real daemon (`dtlspush serve`, bin/dtlspush.js: `npm run
 * build` first) runs as a child process on a temporary data directory; N
 * devices (the SDK over our DTLS client, PSK or --cert certificates) live in
 * this process. Each gets a push; the daemon is stopped with SIGTERM (it saves
 * its sessions: dtls.keep_sessions_on_restart) and started again on the same
 * port and data directory; then one push per device.
 *
 * Prints: handshakes after the restart (daemon metrics), devices that noticed
 * (disconnected), the time from the new daemon's spawn to the first push
 * arriving at a device and to all of them, the saved file's size per session
 * and the save and load times (the daemon's log lines).
 *
 *   node scripts/bench/restart.ts [--devices N] [--cert] [--no-keep] [--json]
 *
 * --no-keep: the baseline, dtls.keep_sessions_on_restart = false (devices get
 * Bye on the stop, reconnect and resume their sessions).
 *
 * Not a test: prints figures, never fails on a threshold. Bounded in count and
 * time (N <= 5000, every wait bounded); traffic stays on 127.0.0.1.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, memoryStateStore, type ConnectOptions, type DtlspushClient } from "../../src/client/index.ts";
import { issuePublisherToken } from "../../src/auth/index.ts";
import { loadConfig } from "../../src/daemon/config/index.ts";
import { openDataDir } from "../../src/daemon/data-dir.ts";
import { issueDeviceCertificate, loadCertificateAuthority } from "../../src/pki/index.ts";

const BIN = fileURLToPath(new URL("../../bin/dtlspush.js", import.meta.url));
const argv = process.argv.slice(2);
const arg = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i < 0 ? undefined : argv[i + 1];
};
const DEVICES = Math.min(5000, Math.max(1, Number(arg("--devices") ?? 1000)));
const CERT = argv.includes("--cert");
const JSON_OUT = argv.includes("--json");
/** the baseline: dtls.keep_sessions_on_restart = false (Bye on stop; devices reconnect and resume) */
const NO_KEEP = argv.includes("--no-keep");
const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const KEY = Buffer.from(KEY_HEX, "hex");
const WAIT_MS = 120_000;

interface Daemon {
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<void>;
  readonly dtlsPort: number;
  readonly httpPort: number;
  readonly spawnedAt: number;
  /** the daemon's JSON log lines (stdout) */
  readonly logs: Record<string, unknown>[];
}

async function serve(cwd: string, dataDir: string, dtlsPort = 0): Promise<Daemon> {
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, [BIN, "serve", "--listen", `127.0.0.1:${dtlsPort}`, "--http", "127.0.0.1:0", "--data-dir", dataDir], {
    cwd,
    env: { ...process.env, DTLSPUSH_DEBUG: "" },
  });
  const logs: Record<string, unknown>[] = [];
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => {
    out += s;
    let nl: number;
    while ((nl = out.indexOf("\n")) >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    }
  });
  let err = "";
  child.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const re = /DTLS \(UDP\)\s+127\.0\.0\.1:(\d+)[\s\S]*HTTP API\s+http:\/\/127\.0\.0\.1:(\d+)/;
  const end = Date.now() + 30_000;
  let m: RegExpMatchArray | null = null;
  while ((m = re.exec(err)) === null) {
    if (Date.now() > end || child.exitCode !== null) throw new Error(`the daemon did not start:\n${err}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return { child, exited, dtlsPort: Number(m[1]), httpPort: Number(m[2]), spawnedAt, logs };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + WAIT_MS;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function pool(n: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, concurrency) }, async () => {
      while (next < n) await task(next++);
    }),
  );
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

async function metric(d: Daemon, token: string, name: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${d.httpPort}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  let sum = 0;
  for (const line of (await res.text()).split("\n")) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

function logEvent(d: Daemon, event: string): Record<string, unknown> | undefined {
  return d.logs.find((l) => l["event"] === event);
}

const dir = mkdtempSync(join(tmpdir(), "dtlspush-bench-restart-"));
const data = join(dir, "data");
const clients: DtlspushClient[] = [];
const daemons: Daemon[] = [];
try {
  if (NO_KEEP) writeFileSync(join(dir, "dtlspush.toml"), "[dtls]\nkeep_sessions_on_restart = false\n");
  const first = await serve(dir, data);
  daemons.push(first);
  const tokenData = await openDataDir(await loadConfig({ flags: { dataDir: data }, env: {} }));
  const token = (await issuePublisherToken(tokenData.publisherKeys, { subject: "bench", scopes: ["admin"], now: Date.now(), ttlSeconds: 3600 }))
    .token;
  await tokenData.close();

  const ids = Array.from({ length: DEVICES }, (_, i) => `dev-${i}`);
  const options: ConnectOptions[] = new Array<ConnectOptions>(DEVICES);
  const base = {
    host: "127.0.0.1",
    port: first.dtlsPort,
    liveness: { idleMs: 600_000 },
    timeoutMs: 30_000,
    reconnect: { initialDelayMs: 200, maxDelayMs: 2000 },
  };
  if (CERT) {
    const ca = await loadCertificateAuthority(readFileSync(join(dir, "certs", "ca.pem"), "utf8"), readFileSync(join(dir, "certs", "ca.key"), "utf8"));
    const trust = readFileSync(join(dir, "certs", "ca.pem"));
    await pool(DEVICES, 4, async (i) => {
      const made = await issueDeviceCertificate(ca, { id: ids[i] as string });
      options[i] = { ...base, cert: made.certPem, key: made.keyPem, ca: trust };
    });
  } else {
    for (let i = 0; i < DEVICES; i++) options[i] = { ...base, psk: { identity: ids[i] as string, key: KEY } };
  }
  await pool(DEVICES, 32, async (i) => {
    const body = CERT ? { certificate: { identity: ids[i] } } : { psk: { keyHex: KEY_HEX } };
    const status = await api(first, token, "PUT", `/v1/devices/${ids[i]}`, body);
    if (status !== 201) throw new Error(`registering ${ids[i]}: HTTP ${status}`);
  });

  const got = new Array<number>(DEVICES).fill(0);
  let disconnects = 0;
  let firstArrival = Number.NaN;
  await pool(DEVICES, 16, async (i) => {
    const c = await connect({ ...(options[i] as ConnectOptions), stateStore: memoryStateStore() });
    clients[i] = c;
    c.on("message", () => {
      got[i] = (got[i] ?? 0) + 1;
      if (Number.isNaN(firstArrival) && (got[i] ?? 0) === 2) firstArrival = performance.now();
    });
    c.on("disconnected", () => disconnects++);
    c.on("error", () => undefined);
  });
  await pool(DEVICES, 32, async (i) => {
    await api(first, token, "POST", `/v1/devices/${ids[i]}/messages`, { id: `a-${i}`, payload: "before" });
  });
  await until(() => got.every((n) => n >= 1), "the pushes before the restart");

  first.child.kill("SIGTERM");
  await first.exited;
  const saved = logEvent(first, "sessions_saved");

  const second = await serve(dir, data, first.dtlsPort);
  daemons.push(second);
  const upMs = performance.now() - second.spawnedAt;
  const loaded = logEvent(second, "session_snapshot_loaded");
  await pool(DEVICES, 32, async (i) => {
    await api(second, token, "POST", `/v1/devices/${ids[i]}/messages`, { id: `b-${i}`, payload: "after" });
  });
  await until(() => got.every((n) => n >= 2), "the pushes after the restart");
  const allArrived = performance.now();
  const figures = {
    devices: DEVICES,
    credential: CERT ? "certificate" : "psk",
    sessionsKept: !NO_KEEP,
    sessionsSaved: saved?.["sessions"],
    snapshotBytes: saved?.["bytes"],
    bytesPerSession: saved?.["bytesPerSession"],
    saveMs: saved?.["saveMs"],
    loadMs: loaded?.["loadMs"],
    sessionsRestored: await metric(second, token, "dtlspush_dtls_sessions_restored_total"),
    handshakesAfterRestart: await metric(second, token, "dtlspush_handshakes_total"),
    resumedAfterRestart: await metric(second, token, "dtlspush_dtls_handshakes_resumed_total"),
    devicesThatNoticed: disconnects,
    daemonUpMs: Math.round(upMs),
    spawnToFirstPushMs: Math.round(firstArrival - second.spawnedAt),
    spawnToAllPushesMs: Math.round(allArrived - second.spawnedAt),
  };
  if (JSON_OUT) process.stdout.write(`${JSON.stringify(figures)}\n`);
  else {
    process.stdout.write(`daemon restart with ${DEVICES} ${figures.credential} devices (SIGTERM, sessions ${NO_KEEP ? "not kept" : "kept"})\n`);
    for (const [k, v] of Object.entries(figures)) process.stdout.write(`  ${k.padEnd(24)} ${String(v)}\n`);
  }
} finally {
  await Promise.all(clients.filter((c) => c !== undefined).map((c) => c.close()));
  for (const d of daemons) {
    if (d.child.exitCode === null && d.child.signalCode === null) d.child.kill("SIGKILL");
    await d.exited;
  }
  rmSync(dir, { recursive: true, force: true });
}
