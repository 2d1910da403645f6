/**
 * Datagrams per push on the real thing: a push server (real DTLS endpoint on 127.0.0.1, port 0), the
 * SDK connected through a counting UDP relay. A burst of pushes to one device published in one turn
 * must leave the server in few datagrams (the outbox coalesces a turn's records per peer), and the
 * device must acknowledge them in few datagrams too (delayed cumulative acks), each push handed to the
 * application exactly once, in order. The figures are printed (ACK_BENCH=1) for docs/client-sdk.md.
 */
import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { setTimeout as delay } from "node:timers/promises";
import { join } from "node:path";
import { connect, fileStateStore, type ConnectOptions, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { openMemoryStore } from "../../src/store/index.ts";
import { UdpProxy } from "../dtls/udp-proxy.ts";
import { until } from "./daemon-process.ts";

const KEY = Buffer.from("000102030405060708090a0b0c0d0e0f", "hex");
const clients: DtlspushClient[] = [];
const servers: PushServer[] = [];
const proxies: UdpProxy[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const s of servers.splice(0)) await s.close();
  for (const p of proxies.splice(0)) p.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface Counts {
  toServer: number;
  toDevice: number;
}

/** A server, a relay that counts datagrams each way, and device d1 connected through it with `ackOptions`. */
async function setUp(extra: Partial<ConnectOptions> = {}) {
  const server = await startPushServer({ store: openMemoryStore(), dtls: { host: "127.0.0.1", port: 0 } });
  servers.push(server);
  await server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
  const counts: Counts = { toServer: 0, toDevice: 0 };
  const proxy = await UdpProxy.start(server.address().port, {
    toServer: (d) => {
      counts.toServer++;
      return d;
    },
    toClient: (d) => {
      counts.toDevice++;
      return d;
    },
  });
  proxies.push(proxy);
  const client = await connect({ host: "127.0.0.1", port: proxy.port, psk: { identity: "d1", key: KEY }, ...extra });
  clients.push(client);
  const got: ReceivedMessage[] = [];
  client.on("message", (m) => got.push(m));
  return { server, client, counts, got };
}

/** Publishes `n` pushes to d1 in one turn; resolves when all are acked on the server. Returns the datagrams counted meanwhile. */
async function burst(h: Awaited<ReturnType<typeof setUp>>, n: number, from = 1): Promise<Counts> {
  h.counts.toServer = 0;
  h.counts.toDevice = 0;
  const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      h.server.publish({ target: { device: "d1" }, payload: enc(`m${from + i}`), publisher: "t", id: `m${from + i}` }),
    ),
  );
  const last = from + n - 1;
  await until(
    () => h.server.engine.deviceStatus("d1").ackedSeq === last,
    10_000,
    () => `acks up to ${last} (at ${h.server.engine.deviceStatus("d1").ackedSeq})`,
  );
  return { ...h.counts };
}

/** Publishes `n` pushes to d1 one after the other, about 1 ms apart; resolves when all are acked on the server. */
async function stream(h: Awaited<ReturnType<typeof setUp>>, n: number): Promise<Counts> {
  h.counts.toServer = 0;
  h.counts.toDevice = 0;
  const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
  // one publish a millisecond (most pushes leave in datagrams of their own), none waiting for the last one's ack
  const published: Promise<unknown>[] = [];
  for (let i = 1; i <= n; i++) {
    published.push(h.server.publish({ target: { device: "d1" }, payload: enc(`m${i}`), publisher: "t", id: `m${i}` }));
    await delay(1);
  }
  await Promise.all(published);
  await until(
    () => h.server.engine.deviceStatus("d1").ackedSeq === n,
    10_000,
    () => `acks up to ${n} (at ${h.server.engine.deviceStatus("d1").ackedSeq})`,
  );
  return { ...h.counts };
}

describe("acks on the wire (real endpoint, counting relay)", () => {
  it("a burst of 32 pushes to one device: few datagrams each way, every push handed over once, in order", async () => {
    const h = await setUp();
    const n = 32;
    const c = await burst(h, n);
    if (process.env.ACK_BENCH === "1") {
      console.log(
        `burst of ${n}: server->device ${c.toDevice} datagrams, device->server ${c.toServer} datagrams (${(c.toServer / n).toFixed(3)} per push)`,
      );
    }
    expect(h.got.map((m) => m.text())).toEqual(Array.from({ length: n }, (_, i) => `m${i + 1}`));
    expect(c.toDevice).toBeLessThanOrEqual(n / 2);
    expect(c.toServer).toBeLessThanOrEqual(Math.ceil(n / 4) + 1);
  });

  it("a stream of 64 pushes about 1 ms apart, state saved to a file: acks cover 4 pushes each, not one", async () => {
    const n = 64;
    const run = async (ack: { ackDelayMs?: number; ackEvery?: number }): Promise<Counts> => {
      const dir = mkdtempSync(join(tmpdir(), "dtlspush-acks-"));
      dirs.push(dir);
      const h = await setUp({ stateStore: fileStateStore(join(dir, "state.json")), ...ack });
      const c = await stream(h, n);
      // exactly once, in order
      expect(h.got.map((m) => m.text())).toEqual(Array.from({ length: n }, (_, i) => `m${i + 1}`));
      for (const cl of clients.splice(0)) await cl.close();
      for (const sv of servers.splice(0)) await sv.close();
      return c;
    };
    const runs = [
      ["one ack per turn (ackDelayMs 0)", await run({ ackDelayMs: 0 })],
      ["delayed acks (defaults: 5 ms, 4 pushes)", await run({})],
      ["delayed acks bounded by count alone (200 ms, 4 pushes)", await run({ ackDelayMs: 200, ackEvery: 4 })],
    ] as const;
    if (process.env.ACK_BENCH === "1") {
      for (const [name, c] of runs) {
        console.log(
          `stream of ${n}, ${name}: server->device ${c.toDevice} datagrams, device->server ${c.toServer} (${(c.toServer / n).toFixed(3)} per push)`,
        );
      }
    }
    const [, byCount] = runs[2];
    // the pushes came spread out (most in datagrams of their own), yet the acks went one per 4 pushes
    expect(byCount.toDevice).toBeGreaterThanOrEqual(n / 2);
    expect(byCount.toServer).toBeLessThanOrEqual(n / 4 + 2);
  });
});
