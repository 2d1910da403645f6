/** connect({ localAddress, localPort }): the client socket is bound where asked before the handshake. */
import { createSocket } from "node:dgram";
import { afterEach, describe, expect, it } from "vitest";
import { connect, DtlsError, listen, type DtlsConnection, type DtlsServer } from "../../src/dtls/index.ts";

const KEY = Buffer.from("00112233445566778899aabbccddeeff", "hex");
const PSK = { identity: "dev", key: KEY };
let servers: DtlsServer[] = [];
let clients: DtlsConnection[] = [];

async function server(): Promise<DtlsServer> {
  const s = await listen({ host: "127.0.0.1", port: 0, psk: { keys: new Map([["dev", KEY]]) } });
  servers.push(s);
  return s;
}

/** A UDP port free on 127.0.0.3 right now. */
async function freePort(): Promise<number> {
  const sock = createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.3", r));
  const { port } = sock.address();
  await new Promise<void>((r) => sock.close(r));
  return port;
}

async function rejection(p: Promise<unknown>): Promise<DtlsError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(DtlsError);
  return e as DtlsError;
}

afterEach(async () => {
  for (const c of clients) c.close();
  clients = [];
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});

describe("connect with a local address (Linux: all of 127.0.0.0/8 is loopback)", () => {
  it("a connection from 127.0.0.2 is seen by the server with peer address 127.0.0.2", async () => {
    const s = await server();
    const seen = new Promise<DtlsConnection>((r) => s.once("session", r));
    const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: PSK, localAddress: "127.0.0.2" });
    clients.push(c);
    const sc = await seen;
    expect(sc.info.peer.address).toBe("127.0.0.2");
    // and data flows both ways over it
    const got = new Promise<string>((r) => c.once("data", (d) => r(Buffer.from(d).toString())));
    sc.send(Buffer.from("hi"));
    expect(await got).toBe("hi");
  });

  it("without a local address the peer is 127.0.0.1, as before", async () => {
    const s = await server();
    const seen = new Promise<DtlsConnection>((r) => s.once("session", r));
    clients.push(await connect({ host: "127.0.0.1", port: s.address().port, psk: PSK }));
    expect((await seen).info.peer.address).toBe("127.0.0.1");
  });

  it("binds localPort too", async () => {
    const s = await server();
    const port = await freePort();
    const seen = new Promise<DtlsConnection>((r) => s.once("session", r));
    clients.push(await connect({ host: "127.0.0.1", port: s.address().port, psk: PSK, localAddress: "127.0.0.3", localPort: port }));
    expect((await seen).info.peer).toEqual({ address: "127.0.0.3", port });
  });

  it("clients on different local addresses may use the same port number", async () => {
    const s = await server();
    const port = await freePort();
    const peers: string[] = [];
    s.on("session", (sc) => peers.push(`${sc.info.peer.address}:${sc.info.peer.port}`));
    for (const localAddress of ["127.0.0.3", "127.0.0.4"]) {
      clients.push(await connect({ host: "127.0.0.1", port: s.address().port, psk: PSK, localAddress, localPort: port }));
    }
    expect(peers).toEqual([`127.0.0.3:${port}`, `127.0.0.4:${port}`]);
    expect(s.sessions()).toBe(2);
  });

  it("refuses a local address that is no IP address, or of the other family, before any datagram", async () => {
    const s = await server();
    const port = s.address().port;
    const notIp = await rejection(connect({ host: "127.0.0.1", port, psk: PSK, localAddress: "localhost" }));
    expect(notIp.code).toBe("bad_option");
    expect(notIp.message).toContain("localAddress must be an IPv4 or IPv6 address");
    const family = await rejection(connect({ host: "127.0.0.1", port, psk: PSK, localAddress: "::1" }));
    expect(family.code).toBe("bad_option");
    expect(family.message).toBe("localAddress ::1 is IPv6 but host 127.0.0.1 is IPv4");
    for (const localPort of [-1, 65536, 1.5]) {
      const bad = await rejection(connect({ host: "127.0.0.1", port, psk: PSK, localAddress: "127.0.0.2", localPort }));
      expect(bad.code).toBe("bad_option");
      expect(bad.message).toContain("localPort must be an integer from 0 to 65535");
    }
    expect(s.stats.helloVerifyRequestsSent + s.stats.datagramsDropped).toBe(0);
  });

  it("rejects with connect_failed when the address cannot be bound", async () => {
    const s = await server();
    // TEST-NET-1: on no interface of this machine
    const e = await rejection(connect({ host: "127.0.0.1", port: s.address().port, psk: PSK, localAddress: "192.0.2.1", timeoutMs: 5000 }));
    expect(e.code).toBe("connect_failed");
    expect(e.message).toMatch(/^cannot bind the client socket to 192\.0\.2\.1 port 0: .*EADDRNOTAVAIL/);
  });

  it("rejects with connect_failed when the local port is taken", async () => {
    const s = await server();
    const taken = createSocket("udp4");
    await new Promise<void>((r) => taken.bind(0, "127.0.0.2", r));
    try {
      const port = taken.address().port;
      const e = await rejection(connect({ host: "127.0.0.1", port: s.address().port, psk: PSK, localAddress: "127.0.0.2", localPort: port }));
      expect(e.code).toBe("connect_failed");
      expect(e.message).toMatch(new RegExp(`^cannot bind the client socket to 127\\.0\\.0\\.2 port ${port}: .*EADDRINUSE`));
    } finally {
      await new Promise<void>((r) => taken.close(r));
    }
  });
});
