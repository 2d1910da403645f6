import { createSocket } from "node:dgram";
import { describe, expect, it } from "vitest";
import { connect, DtlsError, listen, type CloseReason, type ConnectionReceiver, type DtlsConnection, type DtlsServer } from "../../src/dtls/index.ts";
import { echoServers, KEY, nextData } from "./echo-server.ts";

const server = echoServers();

describe("UDP endpoint on 127.0.0.1", () => {
  it("serves many clients on one socket, each with its own session", async () => {
    const s = await server();
    const { port } = s.address();
    const clients = await Promise.all(Array.from({ length: 20 }, () => connect({ host: "127.0.0.1", port, psk: { identity: "dev", key: KEY } })));
    expect(s.sessions()).toBe(20);
    const answers = await Promise.all(
      clients.map((c, i) => {
        const p = nextData(c);
        c.send(Buffer.from(`n${i}`));
        return p;
      }),
    );
    expect(answers).toEqual(clients.map((_c, i) => `echo:n${i}`));
    for (const c of clients) c.close();
    await new Promise((r) => setTimeout(r, 50));
    expect(s.sessions()).toBe(0);
  });

  it("reports peer, identity and suite on both sides", async () => {
    const s = await server({ suites: ["TLS_PSK_WITH_CHACHA20_POLY1305_SHA256"] });
    const seen = new Promise<DtlsConnection>((r) => s.once("session", r));
    const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "dev", key: KEY } });
    const sc = await seen;
    expect(c.info).toMatchObject({ identity: "dev", suite: "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256", extendedMasterSecret: true });
    expect(sc.info).toMatchObject({ identity: "dev", suite: "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256", peer: { address: "127.0.0.1" } });
    expect(sc.info.peer.port).toBeGreaterThan(0);
    c.close();
  });

  it("setReceiver: records and the end go to one object's methods first, then to the listeners there are", async () => {
    const s = await server({ idleTimeoutMs: 300 }); // its "data" listener echoes
    const records: string[] = [];
    const ends: CloseReason[] = [];
    const receiver: ConnectionReceiver = {
      data: (d) => records.push(Buffer.from(d).toString()),
      closed: (reason) => ends.push(reason),
    };
    const events: string[] = [];
    const sessions: DtlsConnection[] = [];
    s.on("session", (conn) => {
      conn.setReceiver(receiver);
      conn.on("close", () => events.push("close"));
      conn.on("error", (e) => events.push(`error:${e.code}`));
      sessions.push(conn);
    });
    // two sessions: one the client closes, one the server closes for idleness
    const c1 = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "dev", key: KEY } });
    const c2 = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "dev", key: KEY } });
    let echoed = 0;
    c1.on("data", () => echoed++);
    c1.send(Buffer.from("one"));
    c1.send(Buffer.from("two"));
    await until(() => records.length === 2);
    expect(records).toEqual(["one", "two"]);
    // the info a server connection reports is a plain address, not the server's session object
    expect(Object.keys(sessions[0]?.info.peer ?? {})).toEqual(["address", "port"]);
    c1.close();
    await until(() => ends.length === 1);
    expect(ends[0]).toEqual({ code: "closed", message: "closed" });
    await until(() => ends.length === 2, 3000); // c2 says nothing: the server ends it after 300 ms
    expect(ends[1]?.code).toBe("idle_timeout");
    expect(events).toEqual(["close", "error:idle_timeout", "close"]); // the listeners heard it all too
    expect(echoed).toBe(2);
    c2.close();
  });

  it("a server connection without a receiver still emits to listeners added at any time", async () => {
    const s = await server();
    const seen = new Promise<DtlsConnection>((r) => s.once("session", r));
    const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "dev", key: KEY } });
    const sc = await seen;
    const p = nextData(c);
    c.send(Buffer.from("x"));
    expect(await p).toBe("echo:x");
    const closed = new Promise<CloseReason>((r) => sc.once("close", r));
    c.close();
    expect(await closed).toEqual({ code: "closed", message: "closed" });
  });

  it("packs several records into one datagram with sendBatch", async () => {
    const s = await server();
    const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "dev", key: KEY } });
    const got: string[] = [];
    const all = new Promise<void>((r) =>
      c.on("data", (d) => {
        got.push(d.toString());
        if (got.length === 10) r();
      }),
    );
    c.sendBatch(Array.from({ length: 10 }, (_v, i) => Buffer.from(`b${i}`)));
    await all;
    expect(got.sort()).toEqual(Array.from({ length: 10 }, (_v, i) => `echo:b${i}`).sort());
    c.close();
  });

  it("rejects connect with the server's alert for an unknown identity, and reports it on the server", async () => {
    const s = await server();
    const failed = new Promise<{ error: DtlsError }>((r) => s.once("handshakeError", r));
    await expect(connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "nobody", key: KEY } })).rejects.toMatchObject({
      code: "alert_received",
      alert: 115,
    });
    expect((await failed).error.code).toBe("unknown_psk_identity");
  });

  it("times out connecting to a port where nobody answers", async () => {
    const silent = createSocket("udp4");
    await new Promise<void>((r) => silent.bind(0, "127.0.0.1", () => r()));
    const t0 = Date.now();
    await expect(
      connect({ host: "127.0.0.1", port: silent.address().port, psk: { identity: "dev", key: KEY }, timeoutMs: 700 }),
    ).rejects.toMatchObject({ code: "timeout" });
    expect(Date.now() - t0).toBeLessThan(3000);
    silent.close();
  });

  it("asks for large socket buffers (a fan-out's acks arrive in a burst), as far as the kernel allows", async () => {
    const { readFileSync } = await import("node:fs");
    const max = (name: string): number => Number(readFileSync(`/proc/sys/net/core/${name}`, "utf8"));
    const s = await server({ recvBufferBytes: 1024 * 1024, sendBufferBytes: 512 * 1024 });
    const b = s.socketBuffers();
    // Linux reports twice what it keeps for bookkeeping, after capping the request at the sysctl maximum
    expect(b.recv).toBeGreaterThanOrEqual(Math.min(1024 * 1024, max("rmem_max")));
    expect(b.send).toBeGreaterThanOrEqual(Math.min(512 * 1024, max("wmem_max")));
  });

  it("stopAccepting: sessions go on, new clients get no handshake", async () => {
    const s = await server();
    const port = s.address().port;
    const c = await connect({ host: "127.0.0.1", port, psk: { identity: "dev", key: KEY } });
    s.stopAccepting();
    await expect(connect({ host: "127.0.0.1", port, psk: { identity: "dev", key: KEY }, timeoutMs: 700 })).rejects.toMatchObject({ code: "timeout" });
    const reply = nextData(c);
    c.send(Buffer.from("still here"));
    expect(await reply).toBe("echo:still here");
    c.close();
  });

  it("server close sends close_notify: clients see an orderly close", async () => {
    const s = await server();
    const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "dev", key: KEY } });
    const closed = new Promise((r) => c.once("close", r));
    await s.close();
    expect(await closed).toEqual({ code: "closed", message: "closed" });
    expect(() => c.send(Buffer.from("x"))).toThrow(DtlsError);
  });

  it("closes idle sessions", async () => {
    const s = await server({ idleTimeoutMs: 300 });
    const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "dev", key: KEY } });
    const closed = new Promise((r) => c.once("close", r));
    expect(await closed).toMatchObject({ code: "closed" });
    expect(s.sessions()).toBe(0);
  });

  it("refuses bad options with clear errors", async () => {
    await expect(listen({ port: 0, psk: { keys: new Map() }, mtu: 20 })).rejects.toMatchObject({ code: "bad_option" });
    await expect(listen({ port: 0, psk: {} })).rejects.toMatchObject({ code: "bad_option" });
    const s = await server();
    await expect(listen({ host: "127.0.0.1", port: s.address().port, psk: { keys: new Map() } })).rejects.toMatchObject({ code: "listen_failed" });
  });

  it("works over IPv6 loopback", async () => {
    let s: DtlsServer;
    try {
      s = await server({ host: "::1" });
    } catch (e) {
      console.warn(`IPv6 loopback unavailable here, skipping: ${(e as Error).message}`);
      return;
    }
    const c = await connect({ host: "::1", port: s.address().port, psk: { identity: "dev", key: KEY } });
    const p = nextData(c);
    c.send(Buffer.from("six"));
    expect(await p).toBe("echo:six");
    c.close();
  });
});

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}
