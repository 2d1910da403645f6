/**
 * Failover over several servers with real daemons (`dtlspush serve`,
 * bin/dtlspush.js: `npm run build` first): the SDK given [A, B] connects to A;
 * A killed with SIGKILL, it is on B within the documented bound and receives
 * what B holds; A back and B killed, it is on A again, resuming A's DTLS
 * session (kept per server while it was on B).
 *
 * Two independent daemons stand in for two nodes of one cluster: a cluster
 * shares the device's messages, seqs and what it was sent; here each message
 * is published on every daemon that is up (so both number it alike), and a
 * daemon the device is about to fail over to first hands that message to a
 * short-lived connection of the same device (so it knows the seq was sent).
 * The session token is refused by the other daemon (its own key ring; a
 * cluster shares it): the SDK goes on with a new one.
 */
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { connect, memoryStateStore, type DtlspushClient, type LivenessOptions, type ReceivedMessage } from "../../src/client/index.ts";
import { adminToken, api, cleanUpDaemons, serve as serveIn, tempDir, until, type Daemon } from "./daemon-process.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const clients: DtlspushClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  cleanUpDaemons();
});

const serve = (dir: string, dtlsPort = 0, httpPort = 0): Promise<Daemon> => serveIn(dir, join(dir, "data"), dtlsPort, httpPort);

/** probes soon and gives up fast: a killed server is noticed in idleMs + (probes + 1) x RTO */
const LIVENESS = { idleMs: 500, probes: 1, minRtoMs: 300, maxRtoMs: 300 } satisfies LivenessOptions;
const RECONNECT = { initialDelayMs: 200, maxDelayMs: 1000 };
/** the documented bound: detection, then the first backoff delay (at most initialDelayMs), then a handshake */
const FAILOVER_BOUND = LIVENESS.idleMs + (LIVENESS.probes + 1) * LIVENESS.maxRtoMs + RECONNECT.initialDelayMs;
/** the handshake and Hello on loopback, and a busy shared machine */
const SLACK = 4000;

async function node(): Promise<{ dir: string; daemon: Daemon; token: string }> {
  const dir = tempDir("dtlspush-failover-");
  const daemon = await serve(dir);
  const token = await adminToken(join(dir, "data"));
  expect(await api(daemon, token, "PUT", "/v1/devices/d1", { psk: { keyHex: KEY_HEX } })).toBe(201);
  return { dir, daemon, token };
}

async function kill9(d: Daemon): Promise<void> {
  d.child.kill("SIGKILL");
  await d.exited;
}

/** The daemon sends and sees acked the message `id` (the next one it holds for d1): another connection of d1, closed after. */
async function prime(d: Daemon, id: string): Promise<void> {
  const c = await connect({ host: "127.0.0.1", port: d.dtlsPort, psk: { identity: "d1", key: Buffer.from(KEY_HEX, "hex") }, liveness: LIVENESS });
  try {
    const got: ReceivedMessage[] = [];
    c.on("message", (m) => got.push(m));
    await until(
      () => got.length === 1 && c.highWaterMark === got[0]?.seq,
      5000,
      () => `${id} primed`,
    );
    expect(got.map((m) => m.text())).toEqual([id]);
  } finally {
    await c.close();
  }
}

const publish = async (d: Daemon, token: string, id: string): Promise<void> => {
  expect(await api(d, token, "POST", "/v1/devices/d1/messages", { id, payload: id })).toBe(202);
};

describe("the SDK fails over between servers in order", () => {
  it("[A, B]: on A; A killed -> on B within the bound; A back, B killed -> on A again, resumed", { timeout: 40_000 }, async () => {
    const a = await node();
    const b = await node();
    await publish(a.daemon, a.token, "m1");
    await publish(b.daemon, b.token, "m1");
    await prime(b.daemon, "m1");
    const client = await connect({
      servers: [
        { host: "127.0.0.1", port: a.daemon.dtlsPort },
        { host: "127.0.0.1", port: b.daemon.dtlsPort },
      ],
      psk: { identity: "d1", key: Buffer.from(KEY_HEX, "hex") },
      stateStore: memoryStateStore(),
      liveness: LIVENESS,
      reconnect: RECONNECT,
    });
    clients.push(client);
    const log: string[] = [];
    client.on("error", (e) => log.push(`error ${e.message}`)); // failed attempts while a node is down are expected
    client.on("warning", (w) => log.push(`warning ${w.message}`));
    client.on("disconnected", (e) => log.push(`disconnected ${e?.message ?? ""}`));
    const got: ReceivedMessage[] = [];
    client.on("message", (m) => got.push(m));
    const connectedTo: number[] = [];
    client.on("connected", () => connectedTo.push(client.server.port));
    expect(client.server.port).toBe(a.daemon.dtlsPort);

    await until(
      () => got.length === 1 && client.highWaterMark === 1,
      5000,
      () => `m1 (got ${got.length})`,
    );

    let killedAt = Date.now();
    await kill9(a.daemon);
    await publish(b.daemon, b.token, "m2");
    await until(
      () => got.length === 2,
      FAILOVER_BOUND + SLACK,
      () => `m2 from B (connected to ${JSON.stringify(connectedTo)} ${JSON.stringify(log)} got ${got.map((m) => m.text()).join()})`,
    );
    const toB = Date.now() - killedAt;
    expect(client.server.port).toBe(b.daemon.dtlsPort);
    expect(connectedTo).toEqual([b.daemon.dtlsPort]);
    await until(
      () => client.highWaterMark === 2,
      5000,
      () => "m2 acked",
    );

    const restarted = await serve(a.dir, a.daemon.dtlsPort, a.daemon.httpPort);
    await publish(restarted, a.token, "m2");
    await prime(restarted, "m2");
    await publish(restarted, a.token, "m3");
    killedAt = Date.now();
    await kill9(b.daemon);
    await until(
      () => got.length === 3,
      FAILOVER_BOUND + SLACK,
      () => `m3 from A (connected to ${JSON.stringify(connectedTo)} ${JSON.stringify(log)} got ${got.map((m) => m.text()).join()})`,
    );
    const toA = Date.now() - killedAt;
    expect(client.server.port).toBe(a.daemon.dtlsPort);
    expect(connectedTo).toEqual([b.daemon.dtlsPort, a.daemon.dtlsPort]);
    // A's DTLS session outlived the time on B: an abbreviated handshake
    expect(client.resumed).toBe(true);
    expect(got.map((m) => m.text())).toEqual(["m1", "m2", "m3"]);
    console.log(`failover A->B ${toB} ms, B->A ${toA} ms (bound ${FAILOVER_BOUND} ms + handshake)`);
  });

  it("a single host/port works as before, and servers with host/port is refused", async () => {
    const a = await node();
    const client = await connect({
      host: "127.0.0.1",
      port: a.daemon.dtlsPort,
      psk: { identity: "d1", key: Buffer.from(KEY_HEX, "hex") },
      liveness: LIVENESS,
    });
    clients.push(client);
    expect(client.server).toEqual({ host: "127.0.0.1", port: a.daemon.dtlsPort });
    const got: string[] = [];
    client.on("message", (m) => got.push(m.text()));
    await publish(a.daemon, a.token, "one");
    await until(
      () => got.length === 1,
      5000,
      () => "the message",
    );
    expect(got).toEqual(["one"]);
    await expect(
      connect({ host: "127.0.0.1", port: 1, servers: [{ host: "127.0.0.1", port: 2 }], psk: { identity: "d1", key: Buffer.from(KEY_HEX, "hex") } }),
    ).rejects.toMatchObject({ code: "bad_option" });
    await expect(connect({ servers: [], psk: { identity: "d1", key: Buffer.from(KEY_HEX, "hex") } })).rejects.toMatchObject({ code: "bad_option" });
  });
});
