/**
 * NAT rebinding against `dtlspush serve` as a real process (bin/dtlspush.js,
 * needs `npm run build`): a device (the SDK, on our DTLS client, which offers
 * a Connection ID) behind a proxy whose source address and port change while
 * pushes are in flight. Every push arrives exactly once, in order, and the
 * daemon did one handshake: the session followed the device.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { issuePublisherToken } from "../../src/auth/index.ts";
import { connect, memoryStateStore, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { loadConfig, openDataDir } from "../../src/daemon/config/index.ts";
import { parseRecords } from "../../src/dtls/record.ts";
import { BIN, collect, waitFor } from "../cli/cli-process.ts";
import { RebindingProxy } from "../dtls/udp-proxy.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const closers: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `dtlspush serve` on free ports, heartbeats every second (the device's keep-alive is what tells the daemon it moved). */
async function serve(): Promise<{ child: ChildProcessWithoutNullStreams; dtlsPort: number; api: string; token: string }> {
  const dir = mkdtempSync(join(tmpdir(), "dtlspush-rebind-"));
  closers.push(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "d.toml"), "[delivery]\nheartbeat_seconds = 1\n");
  const child = spawn(
    process.execPath,
    [BIN, "serve", "--config", join(dir, "d.toml"), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", join(dir, "data")],
    { cwd: dir, env: { ...process.env, DTLSPUSH_DEBUG: "" } },
  );
  closers.push(() => {
    child.kill("SIGKILL");
    return new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(undefined) : child.once("exit", r)));
  });
  const out = collect(child);
  const m = await waitFor(out.stderr, child, /DTLS \(UDP\)\s+127\.0\.0\.1:(\d+)[\s\S]*HTTP API\s+(http:\/\/127\.0\.0\.1:\d+)/, 30_000);
  const config = await loadConfig({ flags: { dataDir: join(dir, "data") }, env: {} });
  const data = await openDataDir(config);
  const { token } = await issuePublisherToken(data.publisherKeys, { subject: "test", scopes: ["admin"], now: Date.now(), ttlSeconds: 600 });
  await data.close();
  return { child, dtlsPort: Number(m[1]), api: m[2] as string, token };
}

describe("a device whose NAT rebinds, against the real daemon", () => {
  it("pushes in flight when the address and port change all arrive exactly once, in order, with no new handshake", async () => {
    const d = await serve();
    const call = async (method: string, path: string, body?: unknown): Promise<Response> =>
      fetch(`${d.api}${path}`, {
        method,
        headers: { authorization: `Bearer ${d.token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const metric = async (name: string): Promise<number> => {
      const text = await (await call("GET", "/metrics")).text();
      let sum = 0;
      for (const line of text.split("\n")) if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
      return sum;
    };
    const push = async (from: number, to: number): Promise<void> => {
      for (let i = from; i <= to; i++) expect((await call("POST", "/v1/devices/dev-1/messages", { payload: `m${i}` })).status).toBe(202);
    };
    expect((await call("PUT", "/v1/devices/dev-1", { psk: { keyHex: KEY_HEX } })).status).toBe(201);

    const proxy = await RebindingProxy.start(d.dtlsPort);
    closers.push(() => proxy.close());
    const client: DtlspushClient = await connect({
      host: "127.0.0.1",
      port: proxy.port,
      psk: { identity: "dev-1", key: Buffer.from(KEY_HEX, "hex") },
      stateStore: memoryStateStore(),
    });
    closers.push(() => client.close());
    const got: ReceivedMessage[] = [];
    client.on("message", (m) => got.push(m));

    await push(1, 10);
    await until(() => got.length === 10, "the first 10 pushes");

    // the NAT changes its mapping: what the daemon sends meanwhile is lost, the device comes back from elsewhere
    proxy.hold = true;
    await push(11, 20);
    const heldRecords = (): number => proxy.heldToClient.reduce((n, dg) => n + parseRecords(dg).filter((r) => r.type === 23).length, 0);
    await until(() => heldRecords() >= 10, "pushes 11-20 sent to the old address and lost");
    const oldSource = proxy.source;
    await proxy.rebind("127.0.0.2");
    proxy.hold = false;
    // polled: a scrape that races the server closing an idle keep-alive connection counts as "not yet"
    await until(async () => (await metric("dtlspush_dtls_address_changes_total").catch(() => 0)) === 1, "the daemon to move the session");
    const oldKey = `${oldSource.address}:${oldSource.port}`;
    const lateAtMove = proxy.lateArrivals.get(oldKey) ?? 0;
    await push(21, 30);
    await until(() => got.length >= 30, "all 30 pushes");

    expect(got.map((m) => m.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(got.map((m) => m.text())).toEqual(Array.from({ length: 30 }, (_, i) => `m${i + 1}`));
    expect(await metric("dtlspush_handshakes_total")).toBe(1);
    expect(await metric("dtlspush_dtls_address_changes_total")).toBe(1);
    expect(proxy.lateArrivals.get(oldKey)).toBe(lateAtMove); // nothing more to the old address after the move
    expect(client.connected).toBe(true);
  }, 60_000);
});
