/**
 * NAT rebinding against `dtlspush serve` as a real process (bin/dtlspush.js,
 * needs `npm run build`): a device (the SDK, on our DTLS client, which offers
 * a Connection ID) behind a proxy whose source address and port change while
 * pushes are in flight. Every push arrives exactly once, in order, and the
 * daemon did one handshake: the session followed the device.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { connect, memoryStateStore, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { parseRecords } from "../../src/dtls/record.ts";
import { adminToken, api, cleanUpDaemons, serve, tempDir } from "../client/daemon-process.ts";
import { RebindingProxy } from "../dtls/udp-proxy.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const closers: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  cleanUpDaemons();
});

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("a device whose NAT rebinds, against the real daemon", () => {
  it("pushes in flight when the address and port change all arrive exactly once, in order, with no new handshake", async () => {
    // heartbeats every second: the device's keep-alive is what tells the daemon it moved
    const dir = tempDir("dtlspush-rebind-");
    writeFileSync(join(dir, "d.toml"), "[delivery]\nheartbeat_seconds = 1\n");
    const d = await serve(dir, join(dir, "data"), 0, 0, ["--config", join(dir, "d.toml")]);
    const token = await adminToken(join(dir, "data"));
    const metric = async (name: string): Promise<number> => {
      const res = await fetch(`http://127.0.0.1:${d.httpPort}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      const text = await res.text();
      let sum = 0;
      for (const line of text.split("\n"))
        if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
      return sum;
    };
    const push = async (from: number, to: number): Promise<void> => {
      for (let i = from; i <= to; i++) expect(await api(d, token, "POST", "/v1/devices/dev-1/messages", { payload: `m${i}` })).toBe(202);
    };
    expect(await api(d, token, "PUT", "/v1/devices/dev-1", { psk: { keyHex: KEY_HEX } })).toBe(201);

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
