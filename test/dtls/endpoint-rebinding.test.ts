/**
 * NAT rebinding with Connection IDs (RFC 9146 6) through real sockets: our
 * client and our server, a proxy between them that changes the client's
 * source address and port mid-session, and a third party that replays or
 * forges the client's records from other addresses.
 */
import { afterEach, describe, expect, it } from "vitest";
import { connect, listen, type DtlsConnection, type DtlsServer } from "../../src/dtls/index.ts";
import { RebindingProxy } from "./udp-proxy.ts";
import { until } from "../support/until.ts";

const KEY = Buffer.from("00112233445566778899aabbccddeeff", "hex");
const PSK = { identity: "dev", key: KEY };
const closers: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

interface World {
  server: DtlsServer;
  proxy: RebindingProxy;
  client: DtlsConnection;
  session: DtlsConnection;
  atServer: string[];
  atClient: string[];
}

async function world(connectionId = true): Promise<World> {
  const server = await listen({ host: "127.0.0.1", port: 0, sockets: 1, psk: { keys: new Map([["dev", KEY]]) } });
  closers.push(() => server.close());
  const proxy = await RebindingProxy.start(server.address().port);
  closers.push(() => proxy.close());
  const seen = new Promise<DtlsConnection>((r) => server.once("session", r));
  const client = await connect({ host: "127.0.0.1", port: proxy.port, psk: PSK, connectionId });
  closers.push(() => client.close());
  const session = await seen;
  const atServer: string[] = [];
  const atClient: string[] = [];
  session.on("data", (d) => atServer.push(d.toString()));
  client.on("data", (d) => atClient.push(Buffer.from(d).toString()));
  return { server, proxy, client, session, atServer, atClient };
}

/** One record each way, waited for. */
async function exchange(w: World, up: string, down: string): Promise<void> {
  w.client.send(Buffer.from(up));
  await until(() => w.atServer.includes(up), `"${up}" at the server`);
  w.session.send(Buffer.from(down));
  await until(() => w.atClient.includes(down), `"${down}" at the client`);
}

describe("NAT rebinding with a Connection ID, real sockets", () => {
  it("after the port and address change, data flows both ways with no new handshake; the old address gets nothing more", async () => {
    const w = await world();
    await exchange(w, "a", "b");
    const before = w.proxy.source;
    expect(w.session.info.peer).toEqual(before);
    await w.proxy.rebind("127.0.0.2");
    await exchange(w, "c", "d");
    expect(w.session.info.peer).toEqual(w.proxy.source);
    expect(w.session.info.peer.address).toBe("127.0.0.2");
    await w.proxy.rebind("127.0.0.1"); // a second move, back to the first address on a new port
    await exchange(w, "e", "f");
    expect(w.session.info.peer).toEqual(w.proxy.source);
    expect(w.server.stats.addressChanges).toBe(2);
    expect(w.server.stats.handshakesStarted).toBe(1);
    expect(w.server.sessions()).toBe(1);
    expect([...w.proxy.lateArrivals.values()]).toEqual([0, 0]);
  });

  it("a session resumed with the abbreviated handshake gets a CID too and follows a rebinding", async () => {
    const server = await listen({ host: "127.0.0.1", port: 0, sockets: 1, psk: { keys: new Map([["dev", KEY]]) } });
    closers.push(() => server.close());
    const proxy = await RebindingProxy.start(server.address().port);
    closers.push(() => proxy.close());
    const first = await connect({ host: "127.0.0.1", port: proxy.port, psk: PSK });
    const saved = first.session;
    expect(saved).toBeDefined();
    first.close();
    const seen = new Promise<DtlsConnection>((r) => server.once("session", r));
    const client = await connect({ host: "127.0.0.1", port: proxy.port, psk: PSK, session: saved });
    closers.push(() => client.close());
    const session = await seen;
    expect(client.info.resumed).toBe(true);
    const atServer: string[] = [];
    const atClient: string[] = [];
    session.on("data", (d) => atServer.push(d.toString()));
    client.on("data", (d) => atClient.push(Buffer.from(d).toString()));
    const w: World = { server, proxy, client, session, atServer, atClient };
    await exchange(w, "a", "b");
    // the client's records to the server carry the CID (tls12_cid, content type 25)
    expect(proxy.toServer.some((d) => d[0] === 25)).toBe(true);
    await proxy.rebind("127.0.0.2");
    await exchange(w, "c", "d");
    expect(session.info.peer.address).toBe("127.0.0.2");
    expect(server.stats.addressChanges).toBe(1);
    expect(server.stats.handshakesResumed).toBe(1);
    expect(server.stats.handshakesStarted).toBe(2);
  });

  it("a replayed old record, or a forged one, from a third address does not move the session", async () => {
    const w = await world();
    await exchange(w, "a", "b");
    const old = w.proxy.toServer.at(-1) as Uint8Array;
    await w.proxy.rebind("127.0.0.2");
    await exchange(w, "c", "d");
    const here = w.proxy.source;
    const latest = w.proxy.toServer.at(-1) as Uint8Array;

    const replayFrom = await w.proxy.sendFrom("127.0.0.3", old);
    await until(() => w.server.stats.addressChangesRefused.unauthenticated === 1, "the replay refused");
    expect(w.server.stats.recordsDropped.replayed).toBe(1);

    const forged = Uint8Array.from(latest);
    forged[forged.length - 1] = forged[forged.length - 1]! ^ 0x01; // the tag's last byte
    forged[10] = forged[10]! + 1; // and a newer sequence number
    const forgedFrom = await w.proxy.sendFrom("127.0.0.4", forged);
    await until(() => w.server.stats.addressChangesRefused.unauthenticated === 2, "the forgery refused");
    expect(w.server.stats.recordsDropped.unauthenticated).toBe(1);

    // the session stays where the client is, and traffic goes on there
    await exchange(w, "e", "f");
    expect(w.session.info.peer).toEqual(here);
    expect(w.server.stats.addressChanges).toBe(1);
    expect(w.atServer).toEqual(["a", "c", "e"]);
    expect(w.proxy.lateArrivals.get(replayFrom)).toBe(0);
    expect(w.proxy.lateArrivals.get(forgedFrom)).toBe(0);
  });

  it("a client without CID (connectionId: false) is served by address as before: its records are plain", async () => {
    const w = await world(false);
    await exchange(w, "a", "b");
    expect(w.proxy.toServer.at(-1)![0]).toBe(23);
    // rebinding without a CID: the server cannot know it is the same client (no move; a new handshake is its way back)
    await w.proxy.rebind("127.0.0.2");
    w.client.send(Buffer.from("lost"));
    await until(() => w.server.stats.datagramsDropped >= 1, "the record from the unknown address dropped");
    expect(w.server.stats.addressChanges).toBe(0);
    expect(w.atServer).toEqual(["a"]);
  });
});
