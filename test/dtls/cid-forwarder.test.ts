/**
 * Forwarding by Connection ID between two servers sharing one port
 * (SO_REUSEPORT, as `serve --workers 2` runs them), real sockets: a session
 * on one server, then the client's NAT gives it source ports until the kernel
 * sends its records to the other server, which forwards them by the CID's
 * prefix to the owner; the owner answers from the shared port, with no new
 * handshake. Also: an unknown prefix, the rate cap, and datagrams on the
 * forwarding socket from a stranger are dropped and counted.
 */
import { createSocket } from "node:dgram";
import { afterEach, describe, expect, it } from "vitest";
import { CidForwarder, connect, listen, type DtlsConnection, type DtlsServer } from "../../src/dtls/index.ts";
import { ManualClock } from "../../src/util/clock.ts";
import { RebindingProxy } from "./udp-proxy.ts";
import { until } from "../support/until.ts";

const KEY = Buffer.from("00112233445566778899aabbccddeeff", "hex");
const PSK = { identity: "dev", key: KEY };
const closers: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

/** Source ports tried at most to find one the kernel sends to the other server (each has about even odds). */
const MAX_REBINDS = 40;

interface Pair {
  servers: [DtlsServer, DtlsServer];
  forwarders: [CidForwarder, CidForwarder];
  port: number;
}

async function pair(o: { maxPerSecond?: number; clock?: ManualClock } = {}): Promise<Pair> {
  const forwarders: CidForwarder[] = [];
  for (const k of [0, 1]) {
    const f = await CidForwarder.open({ prefix: Uint8Array.of(k), ...o });
    closers.push(() => f.close());
    forwarders.push(f);
  }
  const [f0, f1] = forwarders as [CidForwarder, CidForwarder];
  const peers = [
    { prefix: Uint8Array.of(0), port: f0.port },
    { prefix: Uint8Array.of(1), port: f1.port },
  ];
  f0.setPeers(peers);
  f1.setPeers(peers);
  const base = { host: "127.0.0.1", sockets: 1, psk: { keys: new Map([["dev", KEY]]) } };
  const a = await listen({ ...base, port: 0, portSharing: "open", forwarder: f0 });
  closers.push(() => a.close());
  const port = a.address().port;
  const b = await listen({ ...base, port, portSharing: "join", forwarder: f1 });
  closers.push(() => b.close());
  return { servers: [a, b], forwarders: [f0, f1], port };
}

describe("CID forwarding between servers sharing a port", () => {
  it("a rebound client whose records reach the other server continues its session on the owner, answered from the shared port", async () => {
    const p = await pair();
    const proxy = await RebindingProxy.start(p.port);
    closers.push(() => proxy.close());
    const sessions: DtlsConnection[] = [];
    for (const s of p.servers) s.on("session", (c) => sessions.push(c));
    const client = await connect({ host: "127.0.0.1", port: proxy.port, psk: PSK });
    closers.push(() => client.close());
    await until(() => sessions.length === 1, "the session");
    const session = sessions[0] as DtlsConnection;
    const owner: 0 | 1 = p.servers[0].sessions() === 1 ? 0 : 1;
    const other: 0 | 1 = owner === 0 ? 1 : 0;
    const atServer: string[] = [];
    const atClient: string[] = [];
    session.on("data", (d) => atServer.push(d.toString()));
    client.on("data", (d) => atClient.push(Buffer.from(d).toString()));
    let n = 0;
    const exchange = async (): Promise<void> => {
      n++;
      client.send(Buffer.from(`up${n}`));
      await until(() => atServer.includes(`up${n}`), `up${n} at the owner`);
      session.send(Buffer.from(`down${n}`));
      await until(() => atClient.includes(`down${n}`), `down${n} at the client`);
    };
    await exchange();
    let tries = 0;
    while (p.forwarders[other].stats.forwarded === 0) {
      expect(++tries, "a source port the kernel sends to the other server").toBeLessThanOrEqual(MAX_REBINDS);
      await proxy.rebind("127.0.0.1");
      await exchange();
    }
    // the rebinding that reached the other server was forwarded, moved the session on the owner, and both ways flow
    const forwardedBefore = p.forwarders[other].stats.forwarded;
    await exchange();
    expect(p.forwarders[other].stats.forwarded).toBeGreaterThan(forwardedBefore);
    expect(p.forwarders[owner].stats.received).toBe(p.forwarders[other].stats.forwarded);
    expect(session.info.peer).toEqual(proxy.source);
    expect(p.servers[owner].sessions()).toBe(1);
    expect(p.servers[other].sessions()).toBe(0);
    expect(p.servers[0].stats.handshakesStarted + p.servers[1].stats.handshakesStarted).toBe(1);
    expect(p.servers[other].stats.unknownConnectionIds).toBe(0);
    expect(p.forwarders[other].stats.dropped).toEqual({ unknown_prefix: 0, rate_limit: 0, bad_forward: 0, not_owner: 0 });
  });

  it("a CID prefix of no live server is dropped and counted (unknown_prefix); over the rate cap too (rate_limit)", async () => {
    const clock = new ManualClock(0);
    const p = await pair({ maxPerSecond: 10, clock });
    // a tls12_cid record header with prefix 7 (no such server), then with the other server's prefix
    const record = (prefix: number): Buffer => Buffer.from([25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, prefix, 1, 2, 3, 4, 5, 0, 4, 9, 9, 9, 9]);
    const sender = createSocket("udp4");
    closers.push(() => sender.close());
    await new Promise<void>((r) => sender.bind({ address: "127.0.0.1", port: 0 }, () => r()));
    const send = (d: Buffer): Promise<void> => new Promise((r) => sender.send(d, p.port, "127.0.0.1", () => r()));
    const dropped = (cause: "unknown_prefix" | "rate_limit"): number => p.forwarders[0].stats.dropped[cause] + p.forwarders[1].stats.dropped[cause];
    await send(record(7));
    await until(() => dropped("unknown_prefix") === 1, "the unknown prefix dropped");
    // whichever server the kernel picks for this sender forwards the record of the other's prefix: 1 token a 100 ms burst
    const picked = await new Promise<0 | 1>((resolve) => {
      void send(record(0));
      void send(record(1));
      void until(() => p.forwarders[0].stats.forwarded + p.forwarders[1].stats.forwarded === 1, "one forward").then(() =>
        resolve(p.forwarders[0].stats.forwarded === 1 ? 0 : 1),
      );
    });
    for (let i = 0; i < 3; i++) await send(record(picked === 0 ? 1 : 0));
    await until(() => dropped("rate_limit") === 3, "three over the cap");
    clock.advance(1000);
    await send(record(picked === 0 ? 1 : 0));
    await until(() => p.forwarders[picked].stats.forwarded === 2, "forwarded again a second later");
  });

  it("a datagram on a forwarding socket from a stranger, or not a tls12_cid record, is dropped (bad_forward)", async () => {
    const p = await pair();
    const stranger = createSocket("udp4");
    closers.push(() => stranger.close());
    await new Promise<void>((r) => stranger.bind({ address: "127.0.0.1", port: 0 }, () => r()));
    const fake = Buffer.from([0xd7, 1, 9, ...Buffer.from("127.0.0.9"), 0x10, 0x00, 25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3, 4, 5]);
    await new Promise<void>((r) => stranger.send(fake, p.forwarders[0].port, "127.0.0.1", () => r()));
    await until(() => p.forwarders[0].stats.dropped.bad_forward === 1, "the stranger's datagram dropped");
    expect(p.forwarders[0].stats.received).toBe(0);
  });
});
