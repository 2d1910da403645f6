/**
 * Dead-server detection with a real restart: `dtlspush serve` (bin/dtlspush.js,
 * needs `npm run build`) is killed with SIGKILL and started again on the same
 * ports and data directory. The restarted daemon has no DTLS session for the
 * device and drops its records without a word; the SDK must notice by its
 * probes within the documented bound (not after three missed 30 s heartbeats),
 * re-handshake, and receive what was published meanwhile exactly once.
 */
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { connect, LIVENESS_DEFAULTS, memoryStateStore, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { openMemoryStore } from "../../src/store/index.ts";
import { adminToken, api, cleanUpDaemons, serve as serveIn, tempDir, until, type Daemon } from "./daemon-process.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const clients: DtlspushClient[] = [];
const servers: PushServer[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const s of servers.splice(0)) await s.close();
  cleanUpDaemons();
});

/** `dtlspush serve` with its data in dir/data. */
const serve = (dir: string, dtlsPort = 0, httpPort = 0): Promise<Daemon> => serveIn(dir, join(dir, "data"), dtlsPort, httpPort);

async function kill9(d: Daemon): Promise<void> {
  d.child.kill("SIGKILL");
  await d.exited;
  expect(d.child.signalCode).toBe("SIGKILL");
}

/** A running daemon with device "d1" connected (liveness options as given), one message delivered and acked. */
async function setUp(liveness: { idleMs: number }) {
  const dir = tempDir("dtlspush-dead-");
  const first = await serve(dir);
  const token = await adminToken(join(dir, "data"));
  expect(await api(first, token, "PUT", "/v1/devices/d1", { psk: { keyHex: KEY_HEX } })).toBe(201);
  const state = memoryStateStore();
  const client = await connect({
    host: "127.0.0.1",
    port: first.dtlsPort,
    psk: { identity: "d1", key: Buffer.from(KEY_HEX, "hex") },
    stateStore: state,
    liveness,
  });
  clients.push(client);
  const got: ReceivedMessage[] = [];
  const events: { at: number; what: string }[] = [];
  client.on("message", (m) => got.push(m));
  client.on("disconnected", (e) => events.push({ at: Date.now(), what: `disconnected ${(e as { code?: string } | undefined)?.code ?? ""}` }));
  client.on("connected", () => events.push({ at: Date.now(), what: "connected" }));
  client.on("error", () => undefined); // failed reconnects while the daemon is down are expected
  expect(await api(first, token, "POST", "/v1/devices/d1/messages", { id: "before", payload: "before the kill" })).toBe(202);
  await until(
    () => got.length === 1 && state.state?.hwm === 1,
    10_000,
    () => `the first message (got ${got.length})`,
  );
  return { dir, first, token, state, client, got, events };
}

describe("the SDK notices a restarted (dead) server by its probes", () => {
  it(
    "an idle device re-handshakes after kill -9 and a restart, and receives what was published meanwhile exactly once",
    { timeout: 40_000 },
    async () => {
      const IDLE_MS = 1000;
      const { dir, first, token, state, client, got, events } = await setUp({ idleMs: IDLE_MS });
      const killedAt = Date.now();
      await kill9(first);
      const second = await serve(dir, first.dtlsPort, first.httpPort);
      expect(await api(second, token, "POST", "/v1/devices/d1/messages", { id: "after", payload: "after the restart" })).toBe(202);

      // documented bound: idleMs + (probes + 1) x RTO after the last record heard; RTO sits at its
      // 1 s floor on loopback. Slack for the reconnect delay, the handshake and a busy machine.
      const detectBound = IDLE_MS + (LIVENESS_DEFAULTS.probes + 1) * LIVENESS_DEFAULTS.minRtoMs;
      await until(
        () => got.length >= 2,
        detectBound + 7000,
        () => `the message published after the restart (events ${JSON.stringify(events.map((e) => `${e.what} +${e.at - killedAt} ms`))})`,
      );
      const down = events.find((e) => e.what.startsWith("disconnected"));
      // unanswered probes; or, when a probe went out while the daemon was down, the port's ICMP refusal
      expect(["disconnected server_unresponsive", "disconnected connection_lost"]).toContain(down?.what);
      expect((down?.at ?? Infinity) - killedAt).toBeLessThanOrEqual(detectBound + 1500);
      expect(client.connected).toBe(true);

      await new Promise((r) => setTimeout(r, 500)); // a duplicate would arrive now, if at all
      expect(got.map((m) => [m.id, m.seq])).toEqual([
        ["before", 1],
        ["after", 2],
      ]);
      await until(
        () => state.state?.hwm === 2,
        2000,
        () => `hwm 2 persisted (is ${state.state?.hwm})`,
      );
    },
  );

  it(
    "a device's uplink publish unanswered by the restarted server makes it re-handshake; the publish completes once",
    { timeout: 40_000 },
    async () => {
      // no idle probe in this test's time: only the unanswered Publish can reveal the dead session
      const { dir, first, token, client, events } = await setUp({ idleMs: 600_000 });
      await kill9(first);
      const second = await serve(dir, first.dtlsPort, first.httpPort);
      const publishedAt = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const tooLate = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the publish was not answered within 12 s (events ${JSON.stringify(events)})`)), 12_000);
      });
      const id = await Promise.race([client.publish("t/dead-server", "uplink across a restart"), tooLate]).finally(() => clearTimeout(timer));
      expect(events.map((e) => e.what)).toEqual(["disconnected server_unresponsive", "connected"]);
      const down = events[0]?.at ?? Infinity;
      // (probes + 1) x RTO after the Publish went out unanswered, RTO at its floor on loopback
      expect(down - publishedAt).toBeLessThanOrEqual((LIVENESS_DEFAULTS.probes + 1) * LIVENESS_DEFAULTS.minRtoMs + 1500);
      const res = await fetch(`http://127.0.0.1:${second.httpPort}/v1/messages/${encodeURIComponent(id)}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(res.status).toBe(200);
    },
  );

  it("a live server that answers the probes is never taken for dead", async () => {
    // probes every 200 ms of silence, dead after 2 x 100 ms unanswered: only answered Pings keep this session
    const server = await startPushServer({ store: openMemoryStore(), dtls: { host: "127.0.0.1", port: 0 } });
    servers.push(server);
    const key = Buffer.from(KEY_HEX, "hex");
    await server.registry.add({ id: "d1", psk: { identity: "d1", key } });
    const client = await connect({
      host: "127.0.0.1",
      port: server.address().port,
      psk: { identity: "d1", key },
      liveness: { idleMs: 200, probes: 1, minRtoMs: 100, maxRtoMs: 100 },
    });
    clients.push(client);
    const ended: unknown[] = [];
    client.on("disconnected", (e) => ended.push(e));
    const until = Date.now() + 1500;
    while (Date.now() < until && ended.length === 0) await new Promise((r) => setTimeout(r, 50));
    expect(ended).toEqual([]);
    expect(client.connected).toBe(true);
  });
});
