/**
 * The handshake's first retransmission timeout: 1 s by default (RFC 6347),
 * `handshakeRetransmitMs` on the transport, and on an SDK reconnect the RTO
 * the device measured with the server (liveness), so every flight lost on a
 * lossy path costs the path's RTO rather than a second. A relay between the
 * device and an in-process push server drops the first ClientHello it sees
 * and times the next one.
 */
import { afterEach, describe, expect, it } from "vitest";
import { connect, openTransport, TransportError, type DtlspushClient, type Transport } from "../../src/client/index.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { openMemoryStore } from "../../src/store/index.ts";
import { until } from "../support/until.ts";
import { CLIENT_HELLO, handshakeType, startUdpRelay, type UdpRelay } from "../support/udp-relay.ts";

const KEY = Buffer.from("000102030405060708090a0b0c0d0e0f", "hex");
const servers: PushServer[] = [];
const clients: DtlspushClient[] = [];
const transports: Transport[] = [];
const relays: UdpRelay[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const t of transports.splice(0)) await t.close();
  for (const s of servers.splice(0)) await s.close();
  for (const r of relays.splice(0)) r.close();
});

interface Relay {
  readonly port: number;
  /** arrival times (performance.now) of the device's ClientHello datagrams */
  readonly hellos: number[];
  /** drop everything from now on, except that the second ClientHello after the cut (and all after it) passes */
  cut(): void;
}

/** A relay to `port` that drops the first ClientHello it sees (and, after `cut`, everything until the next one). */
async function relay(port: number): Promise<Relay> {
  let cutAt: number | undefined;
  const hellos: number[] = [];
  const r = await startUdpRelay(port, {
    toServer: (d) => {
      if (handshakeType(d) === CLIENT_HELLO) {
        hellos.push(performance.now());
        // one ClientHello lost, at the start and after a cut: the next comes after the retransmission timeout
        const sinceCut = cutAt === undefined ? hellos : hellos.filter((t) => t >= (cutAt as number));
        if (sinceCut.length === 1) return false;
        cutAt = undefined;
      }
      return cutAt === undefined;
    },
    toDevice: () => cutAt === undefined,
  });
  relays.push(r);
  return { port: r.port, hellos, cut: () => (cutAt = performance.now()) };
}

async function server(): Promise<PushServer> {
  const s = await startPushServer({ store: openMemoryStore(), dtls: { host: "127.0.0.1", port: 0 } });
  servers.push(s);
  await s.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
  return s;
}

/** The gap between the first two ClientHellos from `from` on: the handshake's first retransmission timeout. */
const firstGap = (hellos: readonly number[], from = 0): number => (hellos[from + 1] as number) - (hellos[from] as number);

describe("the handshake's first retransmission timeout", () => {
  it("is 1 s by default and handshakeRetransmitMs on the dtlspush transport", async () => {
    const s = await server();
    const slow = await relay(s.address().port);
    transports.push(await openTransport("dtlspush", { host: "127.0.0.1", port: slow.port, psk: { identity: "d1", key: KEY } }));
    const fast = await relay(s.address().port);
    transports.push(
      await openTransport("dtlspush", { host: "127.0.0.1", port: fast.port, psk: { identity: "d1", key: KEY }, handshakeRetransmitMs: 100 }),
    );
    expect(firstGap(slow.hellos)).toBeGreaterThanOrEqual(950);
    expect(firstGap(fast.hellos)).toBeGreaterThanOrEqual(90);
    expect(firstGap(fast.hellos)).toBeLessThan(700);
  });

  it("refuses values outside 10..1000 ms", async () => {
    for (const bad of [0, 9, 1001, 2.5, Number.NaN]) {
      await expect(
        openTransport("dtlspush", { host: "127.0.0.1", port: 9, psk: { identity: "d1", key: KEY }, handshakeRetransmitMs: bad }),
      ).rejects.toThrow(TransportError);
    }
  });

  it("is the RTO the SDK measured with the server when it reconnects", { timeout: 20_000 }, async () => {
    const s = await server();
    const r = await relay(s.address().port);
    // round trips (Ping/Pong every 200 ms of silence) give an RTO at its 100 ms floor on loopback
    const liveness = { idleMs: 200, probes: 1, minRtoMs: 100, maxRtoMs: 100 };
    const client = await connect({
      host: "127.0.0.1",
      port: r.port,
      psk: { identity: "d1", key: KEY },
      liveness,
      reconnect: { initialDelayMs: 10, maxDelayMs: 10 },
    });
    clients.push(client);
    client.on("error", () => undefined);
    // the first handshake knew no round trip: 1 s
    expect(firstGap(r.hellos)).toBeGreaterThanOrEqual(950);
    let ups = 0;
    client.on("connected", () => ups++);
    await new Promise((res) => setTimeout(res, 700)); // a few Ping/Pong samples
    const before = r.hellos.length;
    r.cut(); // the session looks dead after idleMs + (probes + 1) x RTO; the reconnect's first ClientHello is lost
    await until(() => ups === 1, "the reconnect", 10_000);
    const gap = firstGap(r.hellos, before);
    expect(gap).toBeGreaterThanOrEqual(90);
    expect(gap).toBeLessThan(700);
  });
});
