/**
 * Fuzz, real sockets: the DTLS server from listen() on 127.0.0.1 port 0, and
 * an attacker that is our client engine on its own UDP socket with one of its
 * datagrams mutated (test/support/dtls-mutations.ts). A smaller run than the
 * sans-I/O one (test/dtls/server.fuzz.test.ts), for what only the endpoint
 * does: sockets, send coalescing, the real timer. After each case: the process
 * is alive (nothing thrown), an established session still echoes, a new
 * client still connects and echoes, and the server sent no internal_error.
 */
import { createSocket, type Socket } from "node:dgram";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Connection } from "../../src/dtls/connection.ts";
import { ClientHandshake } from "../../src/dtls/handshake-client.ts";
import { connect, listen, type DtlsConnection, type DtlsServer } from "../../src/dtls/index.ts";
import { mutate, mutation, type Mutation } from "../support/dtls-mutations.ts";
import { fcShared, fuzzAssert, fuzzSeed } from "../support/fuzz.ts";
import { connectionConfig, suites } from "./harness.ts";
import { KEY, nextData } from "./echo-server.ts";

let server: DtlsServer;
let port = 0;
let victim: DtlsConnection;

beforeAll(async () => {
  server = await listen({ host: "127.0.0.1", port: 0, psk: { keys: new Map([["dev", KEY]]) } });
  server.on("session", (c) => c.on("data", (d) => c.send(Buffer.concat([Buffer.from("echo:"), d]))));
  port = server.address().port;
  victim = await connect({ host: "127.0.0.1", port, psk: { identity: "dev", key: KEY } });
});

afterAll(async () => {
  victim?.close();
  await server?.close();
});

const CLIENT_SUITES = ["TLS_PSK_WITH_AES_128_CCM_8", "TLS_PSK_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256"] as const;

/** Our client engine on a real UDP socket, its `stage`-th datagram mutated; resolves when it is established, closed, or 1 s passed. */
async function attacker(m: Mutation, suite: (typeof CLIENT_SUITES)[number]): Promise<void> {
  const socket: Socket = createSocket("udp4");
  await new Promise<void>((r) => socket.bind(0, "127.0.0.1", r));
  const now = (): number => performance.now();
  let n = 0;
  let done = false;
  const conn = new Connection(
    "client",
    connectionConfig({ suites: suites(suite), retransmit: { initialMs: 100, maxMs: 400, maxRetransmits: 3 } }),
    {
      sendDatagram: (d) => {
        const out = n++ === m.stage ? mutate(new Uint8Array(d), m) : [d];
        for (const x of out) socket.send(x, port, "127.0.0.1");
      },
      established: () => {
        conn.send(new TextEncoder().encode("after"));
      },
      data: () => {
        done = true;
      },
      closed: () => {
        done = true;
      },
    },
    now(),
  );
  socket.on("message", (d) => {
    try {
      conn.receive(new Uint8Array(d), now());
    } catch {
      done = true; // our client's own robustness is not under test here
    }
  });
  conn.attach(new ClientHandshake(conn, { psk: { identity: "dev", key: new Uint8Array(KEY) }, verifyServer: undefined }, now()));
  const end = now() + 1_000;
  while (!done && now() < end) {
    await new Promise((r) => setTimeout(r, 10));
    conn.timeout(now());
  }
  if (conn.state !== "closed") conn.close();
  await new Promise((r) => setTimeout(r, 5));
  socket.close();
}

describe("DTLS endpoint on 127.0.0.1 under mutated flights", () => {
  it("real sockets: the server lives on, other sessions keep working", async () => {
    let n = 0;
    await fuzzAssert(
      fc.asyncProperty(mutation, fc.constantFrom(...CLIENT_SUITES), async (m, suite) => {
        const label = `case ${++n}, ${suite}, datagram ${m.stage}, ${m.op} (seed ${fuzzSeed()})`;
        const alertsBefore = server.stats.alertsSent["internal_error"] ?? 0;
        await attacker(m, suite);
        expect(server.stats.alertsSent["internal_error"] ?? 0, `${label}: the server sent internal_error`).toBe(alertsBefore);
        const echoed = nextData(victim);
        victim.send(Buffer.from(`victim-${n}`));
        expect(await echoed, `${label}: the established session`).toBe(`echo:victim-${n}`);
        const honest = await connect({ host: "127.0.0.1", port, psk: { identity: "dev", key: KEY }, timeoutMs: 5_000 });
        const reply = nextData(honest);
        honest.send(Buffer.from(`honest-${n}`));
        expect(await reply, `${label}: a new client`).toBe(`echo:honest-${n}`);
        honest.close();
      }),
      fcShared(30, 200),
    );
  });
});
