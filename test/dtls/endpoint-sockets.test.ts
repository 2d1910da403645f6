import { createSocket } from "node:dgram";
import { describe, expect, it } from "vitest";
import { connect, DEFAULT_SERVER_SOCKETS, listen } from "../../src/dtls/index.ts";
import { echoServers, KEY, nextData } from "./echo-server.ts";

const server = echoServers();

const linux = process.platform === "linux";

describe("server sockets sharing one port (SO_REUSEPORT)", () => {
  it("uses several sockets by default on Linux, one elsewhere", async () => {
    expect(DEFAULT_SERVER_SOCKETS).toBe(linux ? 4 : 1);
    const s = await server();
    expect(s.socketCount).toBe(DEFAULT_SERVER_SOCKETS);
  });

  it.runIf(linux)("serves peers whose datagrams the kernel hands to any of the sockets", async () => {
    // 40 clients from 40 ports: the kernel spreads them over the 4 sockets by address hash, so
    // a socket whose datagrams went unread would leave some client without a handshake
    const s = await server({ sockets: 4 });
    expect(s.socketCount).toBe(4);
    const { port } = s.address();
    const clients = await Promise.all(
      Array.from({ length: 40 }, () => connect({ host: "127.0.0.1", port, psk: { identity: "dev", key: KEY }, timeoutMs: 5000 })),
    );
    expect(s.sessions()).toBe(40);
    const answers = await Promise.all(
      clients.map((c, i) => {
        const p = nextData(c);
        c.send(Buffer.from(`n${i}`));
        return p;
      }),
    );
    expect(answers).toEqual(clients.map((_c, i) => `echo:n${i}`));
    for (const c of clients) c.close();
  });

  it.runIf(linux)("refuses a port another server of this user already shares (no silent split of its traffic)", async () => {
    const s = await server({ sockets: 4 });
    const { port } = s.address();
    await expect(listen({ host: "127.0.0.1", port, sockets: 4, psk: { keys: new Map() } })).rejects.toMatchObject({ code: "listen_failed" });
    await expect(listen({ host: "127.0.0.1", port, sockets: 1, psk: { keys: new Map() } })).rejects.toMatchObject({ code: "listen_failed" });
    // the first server still answers
    const c = await connect({ host: "127.0.0.1", port, psk: { identity: "dev", key: KEY }, timeoutMs: 5000 });
    const answer = nextData(c);
    c.send(Buffer.from("still"));
    expect(await answer).toBe("echo:still");
    c.close();
  });

  it("refuses a port a plain UDP socket holds", async () => {
    const plain = createSocket("udp4");
    await new Promise<void>((r) => plain.bind(0, "127.0.0.1", r));
    try {
      await expect(listen({ host: "127.0.0.1", port: plain.address().port, sockets: 4, psk: { keys: new Map() } })).rejects.toMatchObject({
        code: "listen_failed",
        message: expect.stringContaining(`127.0.0.1:${plain.address().port}`),
      });
    } finally {
      plain.close();
    }
  });

  it("releases every socket at close: the port can be listened on again", async () => {
    const s = await listen({ host: "127.0.0.1", port: 0, sockets: 3, psk: { keys: new Map([["dev", KEY]]) } });
    const { port } = s.address();
    await s.close();
    const again = await server({ port, sockets: 1 });
    expect(again.address().port).toBe(port);
  });

  it("refuses a socket count out of range", async () => {
    for (const sockets of [0, 17, 1.5]) {
      await expect(listen({ host: "127.0.0.1", port: 0, sockets, psk: { keys: new Map() } })).rejects.toMatchObject({
        code: "bad_option",
        message: expect.stringContaining("sockets must be an integer from 1 to 16"),
      });
    }
  });
});
