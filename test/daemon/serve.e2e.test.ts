/**
 * `dtlspush serve` as a real process (bin/dtlspush.js, needs `npm run build`):
 * configuration errors, SIGTERM under load, SIGHUP certificate and registry
 * reload, metrics that move with traffic.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server as NetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { issuePublisherToken, DeviceRegistry } from "../../src/auth/index.ts";
import { connect, memoryStateStore, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { loadConfig, openDataDir } from "../../src/daemon/config/index.ts";
import { connect as dtlsConnect } from "../../src/dtls/index.ts";
import { BIN, collect, killChildren, run, waitFor, type Collected } from "../cli/cli-process.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const KEY = Buffer.from(KEY_HEX, "hex");
const dirs: string[] = [];
const clients: DtlspushClient[] = [];

const daemons = new Set<ChildProcessWithoutNullStreams>();

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  killChildren();
  for (const d of daemons) d.kill("SIGKILL");
  daemons.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "dtlspush-serve-"));
  dirs.push(d);
  return d;
}

interface Running {
  child: ChildProcessWithoutNullStreams;
  out: Collected;
  dtlsPort: number;
  api: string;
  dir: string;
  token: string;
}

/** Starts `dtlspush serve` on free ports in `dir` (data/ and certs/ inside), with an admin token minted from its data dir. */
async function serve(dir: string, extra: readonly string[] = []): Promise<Running> {
  // cwd: relative defaults (certs/) resolve against it, so they stay in the test's directory
  const child = spawn(
    process.execPath,
    [BIN, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", join(dir, "data"), ...extra],
    {
      cwd: dir,
      env: { ...process.env, DTLSPUSH_DEBUG: "" },
    },
  );
  daemons.add(child);
  child.on("exit", () => daemons.delete(child));
  const out = collect(child);
  const m = await waitFor(out.stderr, child, /DTLS \(UDP\)\s+127\.0\.0\.1:(\d+)[\s\S]*HTTP API\s+(http:\/\/127\.0\.0\.1:\d+)/, 30_000);
  const config = await loadConfig({ flags: { dataDir: join(dir, "data") }, env: {} });
  const data = await openDataDir(config);
  const { token } = await issuePublisherToken(data.publisherKeys, { subject: "test", scopes: ["admin"], now: Date.now(), ttlSeconds: 600 });
  await data.close();
  return { child, out, dtlsPort: Number(m[1]), api: m[2] as string, dir, token };
}

async function api(r: Running, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${r.api}${path}`, {
    method,
    headers: { authorization: `Bearer ${r.token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

async function addDevice(r: Running, id: string): Promise<void> {
  const res = await api(r, "PUT", `/v1/devices/${id}`, { psk: { keyHex: KEY_HEX } });
  expect(res.status).toBe(201);
}

async function device(r: Running, id: string, state = memoryStateStore()): Promise<{ client: DtlspushClient; got: ReceivedMessage[] }> {
  const client = await connect({
    host: "127.0.0.1",
    port: r.dtlsPort,
    psk: { identity: id, key: KEY },
    stateStore: state,
    reconnect: { initialDelayMs: 100, maxDelayMs: 500 },
  });
  clients.push(client);
  const got: ReceivedMessage[] = [];
  client.on("message", (m) => got.push(m));
  return { client, got };
}

async function until(cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

function metric(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

describe("dtlspush serve: configuration errors stop it with one line naming the setting", () => {
  const cases: { name: string; setup: (dir: string) => { args: string[]; env?: Record<string, string> }; message: RegExp }[] = [
    {
      name: "an unknown key in the file",
      setup: (dir) => {
        writeFileSync(join(dir, "bad.toml"), '[dtls]\nlisen = "127.0.0.1:5684"\n');
        return { args: ["--config", join(dir, "bad.toml")] };
      },
      message: /unknown setting dtls\.lisen in .*bad\.toml/,
    },
    {
      name: "a wrong type in the file",
      setup: (dir) => {
        writeFileSync(join(dir, "bad.toml"), '[delivery]\nwindow = "many"\n');
        return { args: ["--config", join(dir, "bad.toml")] };
      },
      message: /delivery\.window \(in .*bad\.toml\): expected an integer/,
    },
    {
      name: "a bad address flag",
      setup: () => ({ args: ["--http", "8080"] }),
      message: /http\.listen \(from --http\): expected HOST:PORT, got "8080"/,
    },
    {
      name: "an unreadable certificate",
      setup: (dir) => {
        writeFileSync(
          join(dir, "c.toml"),
          `[dtls]\ncertificate = "${join(dir, "missing.pem")}"\nkey = "${join(dir, "missing.key")}"\nclient_auth = "none"\n`,
        );
        return { args: ["--config", join(dir, "c.toml")] };
      },
      message: /dtls\.certificate \(in .*c\.toml\): cannot read .*missing\.pem/,
    },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const dir = tmp();
      const { args } = c.setup(dir);
      const r = await run(["serve", "--data-dir", join(dir, "data"), ...args]);
      expect(r.code).toBe(1);
      const lines = r.stderr.trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(c.message);
    });
  }

  it("a key that does not belong to its certificate", async () => {
    const dir = tmp();
    const a = join(dir, "a");
    const b = join(dir, "b");
    expect((await run(["certs", "init", "--dir", a])).code).toBe(0);
    expect((await run(["certs", "init", "--dir", b])).code).toBe(0);
    writeFileSync(
      join(dir, "c.toml"),
      `[dtls]\ncertificate = "${join(a, "server-p256.pem")}"\nkey = "${join(b, "server-p256.key")}"\nclient_auth = "none"\n`,
    );
    const r = await run(["serve", "--data-dir", join(dir, "data"), "--config", join(dir, "c.toml")]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/dtls\.key \(in .*c\.toml\): the private key in .*server-p256\.key does not belong to the certificate/);
  });

  it("a port in use", async () => {
    const dir = tmp();
    const blocker: NetServer = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const r = await run(["serve", "--data-dir", join(dir, "data"), "--listen", "127.0.0.1:0", "--http", `127.0.0.1:${port}`]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toContain(`http.listen (from --http): TCP 127.0.0.1:${port} is already in use by another process`);
    } finally {
      blocker.close();
    }
  });
});

describe("dtlspush serve: lifecycle", () => {
  it("SIGTERM under load: every publish answered 202 reaches the device after a restart, once; exit 0", async () => {
    const dir = tmp();
    const first = await serve(dir);
    await addDevice(first, "d1");
    const state = memoryStateStore();
    const d1 = await device(first, "d1", state);
    const accepted: string[] = [];
    let refused = 0;
    let stop = false;
    const publisher = async (w: number): Promise<void> => {
      for (let i = 0; !stop && i < 1000; i++) {
        try {
          const res = await api(first, "POST", "/v1/devices/d1/messages", { payload: `w${w}-${i}` });
          if (res.status === 202) accepted.push(res.json["id"] as string);
          else refused++;
        } catch {
          refused++; // connection refused or reset: the daemon is gone
          return;
        }
      }
    };
    const publishers = [0, 1, 2, 3].map(publisher);
    await until(() => accepted.length >= 100);
    first.child.kill("SIGTERM");
    const exit = await first.out.done;
    stop = true;
    await Promise.all(publishers);
    expect(exit.code, exit.stdout.split("\n").slice(-8).join("\n") + exit.stderr).toBe(0);
    expect(exit.stdout).toMatch(/"msg":"stopped"/);
    // the same data dir again: whatever was accepted and not yet delivered is still queued
    await d1.client.close();
    clients.splice(clients.indexOf(d1.client), 1);
    const second = await serve(dir);
    const d1b = await device(second, "d1", state);
    await until(() => new Set([...d1.got, ...d1b.got].map((m) => m.id)).size >= accepted.length, 30_000);
    const ids = [...d1.got, ...d1b.got].map((m) => m.id);
    expect(new Set(ids).size).toBe(ids.length); // nothing twice
    for (const id of accepted) expect(ids).toContain(id);
    expect(refused).toBeLessThan(10); // only what was in flight at the SIGTERM
    second.child.kill("SIGTERM");
    expect((await second.out.done).code).toBe(0);
  }, 90_000);

  it("SIGHUP swaps the certificate without dropping sessions, and picks up devices written to the store by another process", async () => {
    const dir = tmp();
    const a = join(dir, "a");
    const b = join(dir, "b");
    expect((await run(["certs", "init", "--dir", a])).code).toBe(0);
    expect((await run(["certs", "init", "--dir", b])).code).toBe(0);
    const live = join(dir, "live");
    mkdirSync(live);
    copyFileSync(join(a, "server-p256.pem"), join(live, "server.pem"));
    copyFileSync(join(a, "server-p256.key"), join(live, "server.key"));
    writeFileSync(join(dir, "d.toml"), `[dtls]\ncertificate = "live/server.pem"\nkey = "live/server.key"\nclient_auth = "none"\n`);
    const r = await serve(dir, ["--config", join(dir, "d.toml")]);
    await addDevice(r, "d1");
    const d1 = await device(r, "d1");

    const fingerprint = async (ca: string): Promise<string | undefined> => {
      const conn = await dtlsConnect({ host: "127.0.0.1", port: r.dtlsPort, ca: readFileSync(ca), servername: "localhost", timeoutMs: 5000 });
      const fp = conn.info.peerCertificate?.fingerprint256;
      conn.close();
      return fp;
    };
    const before = await fingerprint(join(a, "ca.pem"));

    copyFileSync(join(b, "server-p256.pem"), join(live, "server.pem"));
    copyFileSync(join(b, "server-p256.key"), join(live, "server.key"));
    // a device registered behind the daemon's back (as `device add` does when the API is unreachable)
    const config = await loadConfig({ flags: { dataDir: join(dir, "data") }, env: {} });
    const data = await openDataDir(config);
    await (await DeviceRegistry.open(data.store, { now: () => Date.now() })).add({ id: "d2", psk: { identity: "d2", key: KEY } });
    await data.close();
    expect((await api(r, "POST", "/v1/devices/d2/messages", { payload: "x" })).status).toBe(404);

    r.child.kill("SIGHUP");
    await waitFor(r.out.stdout, r.child, /reloaded certificates and device registry/, 10_000);
    const after = await fingerprint(join(b, "ca.pem"));
    expect(after).toBeDefined();
    expect(after).not.toBe(before);
    await expect(
      dtlsConnect({ host: "127.0.0.1", port: r.dtlsPort, ca: readFileSync(join(a, "ca.pem")), servername: "localhost", timeoutMs: 3000 }),
    ).rejects.toThrow();

    // the session from before the swap is still up and gets a push
    expect(d1.client.connected).toBe(true);
    expect((await api(r, "POST", "/v1/devices/d1/messages", { payload: "after reload" })).status).toBe(202);
    await until(() => d1.got.some((m) => m.text() === "after reload"));
    expect((await api(r, "POST", "/v1/devices/d2/messages", { payload: "x" })).status).toBe(202);
  }, 90_000);

  it("metrics move when traffic flows", async () => {
    const dir = tmp();
    const r = await serve(dir);
    const scrape = async (): Promise<string> => {
      const res = await fetch(`${r.api}/metrics`, { headers: { authorization: `Bearer ${r.token}` } });
      expect(res.status).toBe(200);
      return res.text();
    };
    const before = await scrape();
    await addDevice(r, "m1");
    const m1 = await device(r, "m1");
    for (let i = 0; i < 5; i++) expect((await api(r, "POST", "/v1/devices/m1/messages", { payload: `m${i}` })).status).toBe(202);
    await until(() => m1.got.length === 5);
    let after = "";
    const end = Date.now() + 10_000;
    do {
      after = await scrape();
    } while (metric(after, "dtlspush_pushes_acked_total") < 5 && Date.now() < end);
    expect(metric(before, "dtlspush_pushes_acked_total")).toBe(0);
    expect(metric(after, "dtlspush_pushes_acked_total")).toBe(5);
    expect(metric(after, "dtlspush_published_total")).toBe(5);
    expect(metric(after, "dtlspush_push_to_ack_seconds_count")).toBe(5);
    expect(metric(after, "dtlspush_sessions")).toBe(1);
    expect(after).toMatch(/dtlspush_handshakes_total\{result="ok",suite="TLS_[A-Z0-9_]+"\} 1/);
    expect(metric(after, "dtlspush_store_commit_seconds_count")).toBeGreaterThan(0);
    const unauthorized = await fetch(`${r.api}/metrics`);
    expect(unauthorized.status).toBe(401);
  }, 60_000);
});
