/**
 * A device claiming received_seq 2^53-1, against the real daemon (`dtlspush serve` as a process,
 * bin/dtlspush.js over dist/: run `npm run build` first). A registered device
 * speaking the protocol by hand over a real DTLS session says Hello with
 * received_seq 2^53-1; before the fix the engine stored it, the next publish
 * to that device overflowed the seq range, the commit failed and the daemon
 * exited 1, and again after every restart (a crash loop). Now: the Hello is
 * refused with SEQ_AHEAD, the publish is answered 202 and delivered, another
 * device keeps receiving, and a daemon restarted over a store that an earlier
 * version left poisoned (counters at 2^53-1) stays up.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { issuePublisherToken } from "../../src/auth/index.ts";
import { connect, memoryStateStore, type DtlspushClient } from "../../src/client/index.ts";
import { loadConfig, openDataDir } from "../../src/daemon/config/index.ts";
import { connect as dtlsConnect, type DtlsConnection } from "../../src/dtls/index.ts";
import { decodeFrame, encodeFrame, ErrorCode, type FrameBody, type FrameInit, type UnknownFrameBody } from "../../src/wire/index.ts";
import { BIN, collect, waitFor, type Collected } from "../cli/cli-process.ts";

const MAX = Number.MAX_SAFE_INTEGER;
const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const KEY = Buffer.from(KEY_HEX, "hex");

const daemons = new Set<ChildProcessWithoutNullStreams>();
const clients: DtlspushClient[] = [];
const conns: DtlsConnection[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const c of conns.splice(0)) c.close();
  for (const c of clients.splice(0)) await c.close();
  for (const d of daemons) d.kill("SIGKILL");
  daemons.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface Daemon {
  readonly child: ChildProcessWithoutNullStreams;
  readonly out: Collected;
  readonly dtlsPort: number;
  readonly api: string;
  readonly token: string;
}

/** `dtlspush serve` on free ports with its data in dir/data; an admin token minted from that data. */
async function startDaemon(dir: string): Promise<Daemon> {
  const dataDir = join(dir, "data");
  const child = spawn(process.execPath, [BIN, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", dataDir], {
    cwd: dir,
    env: { ...process.env, DTLSPUSH_DEBUG: "" },
  });
  daemons.add(child);
  child.on("exit", () => daemons.delete(child));
  const out = collect(child);
  const m = await waitFor(out.stderr, child, /DTLS \(UDP\)\s+127\.0\.0\.1:(\d+)[\s\S]*HTTP API\s+(http:\/\/127\.0\.0\.1:\d+)/, 15_000);
  const data = await openDataDir(await loadConfig({ flags: { dataDir }, env: {} }));
  const { token } = await issuePublisherToken(data.publisherKeys, { subject: "attack-test", scopes: ["admin"], now: Date.now(), ttlSeconds: 600 });
  await data.close();
  return { child, out, dtlsPort: Number(m[1]), api: m[2] as string, token };
}

async function call(d: Daemon, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${d.api}${path}`, {
    method,
    headers: { authorization: `Bearer ${d.token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

async function until(cond: () => boolean, what: string, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The attacker: a registered device's real DTLS session, frames written by hand. */
async function handmade(d: Daemon, identity: string): Promise<{ send: (f: FrameInit) => void; frames: (FrameBody | UnknownFrameBody)[] }> {
  const conn = await dtlsConnect({ host: "127.0.0.1", port: d.dtlsPort, psk: { identity, key: KEY }, timeoutMs: 5000 });
  conns.push(conn);
  const frames: (FrameBody | UnknownFrameBody)[] = [];
  conn.on("data", (b) => frames.push(decodeFrame(b)));
  return { send: (f) => conn.send(encodeFrame(f)), frames };
}

/** An honest SDK device; returns the texts it received. */
async function honest(d: Daemon, id: string): Promise<string[]> {
  const client = await connect({ host: "127.0.0.1", port: d.dtlsPort, psk: { identity: id, key: KEY }, stateStore: memoryStateStore() });
  clients.push(client);
  const got: string[] = [];
  client.on("message", (m) => got.push(m.text()));
  return got;
}

function metric(text: string, name: string, label: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${label}}`));
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(" ") + 1));
}

async function alive(d: Daemon): Promise<void> {
  expect(d.child.exitCode).toBeNull();
  expect((await fetch(`${d.api}/healthz`)).status).toBe(200);
}

describe("a registered device that claims received_seq 2^53-1", () => {
  it("cannot stop the daemon: refused with SEQ_AHEAD, its publish answered 202 and delivered, others keep receiving, a restart stays up", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dtlspush-hostile-"));
    dirs.push(dir);
    let d = await startDaemon(dir);
    for (const id of ["liar", "other"]) expect((await call(d, "PUT", `/v1/devices/${id}`, { psk: { keyHex: KEY_HEX } })).status).toBe(201);
    const other = await honest(d, "other");

    const liar = await handmade(d, "liar");
    liar.send({ kind: "hello", hello: { version: 1, receivedSeq: MAX, client: "attacker" } });
    await until(() => liar.frames.length > 0, "the answer to the Hello");
    expect(liar.frames[0]).toMatchObject({ kind: "error", error: { code: ErrorCode.SEQ_AHEAD } });
    expect(liar.frames.some((f) => f.kind === "welcome")).toBe(false);

    // the publish that used to stop the daemon
    const toLiar = await call(d, "POST", "/v1/devices/liar/messages", { payload: "to the liar" });
    expect(toLiar.status).toBe(202);
    expect((await call(d, "POST", "/v1/devices/other/messages", { payload: "to the other" })).status).toBe(202);
    await until(() => other.includes("to the other"), "the other device's message");
    await alive(d);
    // the liar, honest now, gets its message with seq 1: nothing of the lie was stored
    liar.send({ kind: "hello", hello: { version: 1, receivedSeq: 0 } });
    await until(() => liar.frames.some((f) => f.kind === "push"), "the liar's push");
    expect(liar.frames.find((f) => f.kind === "push")).toMatchObject({ push: { seq: 1, messageId: toLiar.json["id"] } });
    const metrics = await (await fetch(`${d.api}/metrics`, { headers: { authorization: `Bearer ${d.token}` } })).text();
    expect(metric(metrics, "dtlspush_device_frames_refused_total", 'cause="hello_seq_ahead"')).toBe(1);
    expect(metric(metrics, "dtlspush_engine_failures_total", 'cause="device"')).toBe(0);

    // stop cleanly; then poison the store as an earlier version left it (the lie stored), and start again
    d.child.kill("SIGTERM");
    expect((await d.out.done).code).toBe(0);
    const data = await openDataDir(await loadConfig({ flags: { dataDir: join(dir, "data") }, env: {} }));
    await data.store.commit({ counters: [{ device: "liar", lastSeq: MAX, ackedSeq: MAX }] });
    await data.close();
    d = await startDaemon(dir);
    const other2 = await honest(d, "other");
    for (let round = 0; round < 2; round++) {
      // the device reconnects (the moment the old daemon died again) and says the same Hello
      const again = await handmade(d, "liar");
      again.send({ kind: "hello", hello: { version: 1, receivedSeq: MAX } });
      await until(() => again.frames.some((f) => f.kind === "welcome"), "the Welcome after the restart");
      const refused = await call(d, "POST", "/v1/devices/liar/messages", { payload: `after restart ${round}` });
      expect(refused).toMatchObject({ status: 409, json: { error: { code: "sequence_exhausted" } } });
      expect((await call(d, "POST", "/v1/devices/other/messages", { payload: `other ${round}` })).status).toBe(202);
      await until(() => other2.includes(`other ${round}`), "the other device's message after the restart");
      await alive(d);
    }
    d.child.kill("SIGTERM");
    expect((await d.out.done).code).toBe(0);
  }, 40_000);
});
