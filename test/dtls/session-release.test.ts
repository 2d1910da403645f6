/**
 * Memory comes back when sessions end: thousands of short sessions
 * (handshake, one record each way, close_notify) through the server core,
 * then nothing of them is reachable (no ServerSession, Connection or listener
 * kept by the scheduler, the maps or the per-host counts) and the heap after
 * GC is back where it was. The full-size figure (30 000 sessions over UDP)
 * is scripts/bench/handshake-memory.ts --mode churn.
 */
import { describe, expect, it } from "vitest";
import { copyBytes } from "../../src/util/bytes.ts";
import { Connection } from "../../src/dtls/connection.ts";
import { ClientHandshake } from "../../src/dtls/handshake-client.ts";
import { ServerCore, peerKey, type Peer } from "../../src/dtls/server-core.ts";
import { collectGarbage } from "../util/gc.ts";
import { connectionConfig, PSK_ID, PSK_KEY, serverConfig } from "./harness.ts";

interface Datagram {
  readonly toServer: boolean;
  readonly peer: Peer;
  readonly data: Uint8Array;
}

/** A server core and a synchronous network of short-lived clients. */
function churn() {
  const queue: Datagram[] = [];
  const clients = new Map<string, Connection>();
  const refs: WeakRef<object>[] = [];
  let echoed = 0;
  let failures = 0;
  const server = new ServerCore(
    serverConfig({ maxHandshakes: 100, maxSessions: 100_000, idleTimeoutMs: 300_000, maxSessionsPerHost: 100_000 }),
    {
      send: (peer, data) => queue.push({ toServer: false, peer, data: copyBytes(data) }),
      established: (s) => {
        refs.push(new WeakRef(s), new WeakRef(s.connection));
        const listener = { deliver: (d: Uint8Array) => s.connection.send(d), ended: () => undefined };
        refs.push(new WeakRef(listener));
        s.listener = listener;
      },
      handshakeFailed: () => failures++,
    },
    0,
  );
  const pump = (now: number): void => {
    for (let guard = 0; guard < 1000 && queue.length > 0; guard++) {
      const d = queue.shift() as Datagram;
      if (d.toServer) server.receive(d.peer, d.data, now);
      else clients.get(peerKey(d.peer))?.receive(d.data, now);
    }
  };
  /** One session from `peer`: handshake, one record echoed, close_notify. */
  const session = (peer: Peer, now: number): void => {
    const client = new Connection(
      "client",
      connectionConfig(),
      {
        sendDatagram: (data) => queue.push({ toServer: true, peer, data: copyBytes(data) }),
        established: () => undefined,
        data: () => echoed++,
        closed: () => undefined,
      },
      now,
    );
    clients.set(peerKey(peer), client);
    client.attach(new ClientHandshake(client, { psk: { identity: PSK_ID, key: PSK_KEY }, verifyServer: undefined }, now));
    pump(now);
    client.send(new Uint8Array([1, 2, 3]));
    pump(now);
    client.close();
    pump(now);
    clients.delete(peerKey(peer));
  };
  const run = (from: number, n: number): void => {
    for (let i = from; i < from + n; i++) session({ address: `10.1.${(i >> 8) & 255}.${i & 255}`, port: 10_000 + (i % 50_000) }, i * 10);
  };
  return { server, refs, run, stats: () => ({ echoed, failures }) };
}

function heapUsed(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

describe("closed sessions are released", () => {
  it("2 500 sessions opened and closed leave nothing reachable and the heap where it was", async () => {
    const c = churn();
    c.run(0, 500); // warm-up: code compiled, maps grown
    c.refs.length = 0;
    await collectGarbage();
    const start = heapUsed();
    c.run(500, 2500);
    expect(c.stats()).toEqual({ echoed: 3000, failures: 0 });
    expect(c.server.stats.handshakesCompleted).toBe(3000);
    expect(c.server.size).toBe(0);
    expect(c.server.handshakesInProgress).toBe(0);
    expect(c.server.hostCountSize).toBe(0);
    expect(c.server.stats.handshakeMemoryBytes).toBe(0);
    await collectGarbage();
    const alive = c.refs.filter((r) => r.deref() !== undefined).length;
    expect(alive).toBe(0);
    expect(c.server.nextTimeout()).toBeUndefined(); // (asked only now: it must not be what lets go of them)
    const end = heapUsed();
    console.log(
      `heap+arrayBuffers after GC: ${start} bytes before, ${end} bytes after 2 500 sessions (${(((end - start) / start) * 100).toFixed(1)} %)`,
    );
    expect(end).toBeLessThan(start * 1.1);
  });
});
