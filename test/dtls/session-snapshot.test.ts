/**
 * Session snapshots (session-snapshot.ts): an established session exported
 * by one server and taken over by another on the same port, through real
 * sockets: the client notices nothing (no handshake), data flows both ways,
 * the replay window came along, and what does not fit is refused and counted.
 */
import { createSocket } from "node:dgram";
import { afterEach, describe, expect, it } from "vitest";
import { connect, listen, type DtlsConnection, type DtlsServer } from "../../src/dtls/index.ts";
import { decodeSessionSnapshot, encodeSessionSnapshot, RESTORE_SEQUENCE_MARGIN } from "../../src/dtls/session-snapshot.ts";
import { RebindingProxy } from "./udp-proxy.ts";
import { until } from "../support/until.ts";

const KEY = Buffer.from("00112233445566778899aabbccddeeff", "hex");
const PSK = { identity: "dev", key: KEY };
const closers: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

function server(port = 0, suites?: ("TLS_PSK_WITH_AES_128_CCM_8" | "TLS_PSK_WITH_AES_128_GCM_SHA256")[]): Promise<DtlsServer> {
  return listen({ host: "127.0.0.1", port, sockets: 1, psk: { keys: new Map([["dev", KEY]]) }, ...(suites === undefined ? {} : { suites }) });
}

/** Resolves once a datagram to the port came back refused (ICMP port unreachable) on a socket of our own, after the turn's sends left. */
async function refusedAt(port: number): Promise<void> {
  await new Promise((r) => setTimeout(r, 0));
  const probe = createSocket("udp4");
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no ICMP error from the closed port")), 2000);
      probe.on("error", () => {
        clearTimeout(timer);
        resolve();
      });
      probe.connect(port, "127.0.0.1", () => probe.send(Buffer.from("x")));
    });
    await new Promise((r) => setImmediate(r));
  } finally {
    probe.close();
  }
}

interface Device {
  client: DtlsConnection;
  proxy: RebindingProxy;
  got: string[];
}

/** A client behind a proxy (so a third party can replay its datagrams), its server-side session. */
async function device(a: DtlsServer, connectionId: boolean): Promise<{ d: Device; session: DtlsConnection }> {
  const proxy = await RebindingProxy.start(a.address().port);
  closers.push(() => proxy.close());
  const seen = new Promise<DtlsConnection>((r) => a.once("session", r));
  const client = await connect({ host: "127.0.0.1", port: proxy.port, psk: PSK, connectionId });
  closers.push(() => client.close());
  const got: string[] = [];
  client.on("data", (b) => got.push(Buffer.from(b).toString()));
  return { d: { client, proxy, got }, session: await seen };
}

/** Sessions keyed by what the client sent on them, with what they received. */
function collect(s: DtlsServer): Map<DtlsConnection, string[]> {
  const m = new Map<DtlsConnection, string[]>();
  s.on("session", (c) => {
    const got: string[] = [];
    m.set(c, got);
    c.on("data", (b) => got.push(b.toString()));
  });
  return m;
}

describe("session snapshots through real sockets", () => {
  it("a new server on the same port takes over CID and plain sessions: no handshake (a CID one from a new address too), data both ways, old records stay replays", async () => {
    const a = await server();
    const port = a.address().port;
    const withCid = await device(a, true);
    const plain = await device(a, false);
    // a client straight at the server's port (no proxy between): the kernel answers its records with ICMP port unreachable while nobody listens
    const directSeen = new Promise<DtlsConnection>((r) => a.once("session", r));
    const direct = await connect({ host: "127.0.0.1", port, psk: PSK, connectionId: false });
    closers.push(() => direct.close());
    const directAtA = await directSeen;
    const atA = new Map<DtlsConnection, string[]>();
    for (const s of [withCid.session, plain.session]) {
      const got: string[] = [];
      atA.set(s, got);
      s.on("data", (b) => got.push(b.toString()));
    }
    withCid.d.client.send(Buffer.from("before-1"));
    plain.d.client.send(Buffer.from("before-2"));
    await until(() => [...atA.values()].every((g) => g.length === 1), "the first records at A");
    withCid.session.send(Buffer.from("down-a"));
    await until(() => withCid.d.got.includes("down-a"), "A's record at the client");

    const snaps = a.exportSessions((c) => Buffer.from(c === withCid.session ? "cid" : c === directAtA ? "direct" : "plain"));
    expect(snaps).toHaveLength(3);
    expect(a.stats.sessionsExported).toBe(3);
    expect(() => withCid.session.send(Buffer.from("late"))).toThrow(/closed/); // retired: nothing more is sealed
    await a.close({ notify: false });
    direct.send(Buffer.from("while-down")); // lost, and an ICMP error comes back: no reason to end the session
    await refusedAt(port); // the direct client's socket has had its ICMP error by now

    const b = await server(port);
    closers.push(() => b.close());
    const atB = collect(b);
    const result = b.restoreSessions(snaps);
    expect(result).toEqual({ restored: 3, refused: {} });
    expect(b.stats.sessionsRestored).toBe(3);
    expect(b.sessions()).toBe(3);
    const byTag = new Map([...atB.keys()].map((c) => [Buffer.from(c.restored ?? []).toString(), c]));
    const cidAtB = byTag.get("cid") as DtlsConnection;
    const plainAtB = byTag.get("plain") as DtlsConnection;
    expect(cidAtB.info.identity).toBe("dev");
    expect(plainAtB.info.peer).toEqual(plain.session.info.peer);

    // the CID device's NAT gave it a new address and port while the server restarted: its session follows it
    await withCid.d.proxy.rebind("127.0.0.2");
    withCid.d.client.send(Buffer.from("after-1"));
    plain.d.client.send(Buffer.from("after-2"));
    await until(() => atB.get(cidAtB)?.includes("after-1") === true && atB.get(plainAtB)?.includes("after-2") === true, "the clients' records at B");
    cidAtB.send(Buffer.from("down-b1"));
    plainAtB.send(Buffer.from("down-b2"));
    await until(() => withCid.d.got.includes("down-b1") && plain.d.got.includes("down-b2"), "B's records at the clients");
    const directAtB = byTag.get("direct") as DtlsConnection;
    direct.send(Buffer.from("after-3"));
    await until(() => atB.get(directAtB)?.includes("after-3") === true, "the direct client's record at B");
    expect(direct.closed).toBe(false);
    expect(cidAtB.info.peer.address).toBe("127.0.0.2");
    expect(b.stats.addressChanges).toBe(1);
    expect(b.stats.handshakesStarted).toBe(0);
    expect(b.stats.helloVerifyRequestsSent).toBe(0);

    // the client's first record (from before the restart), replayed from another address: the window came along
    const first = withCid.d.proxy.toServer.find((d) => d[0] === 25) as Uint8Array;
    await withCid.d.proxy.sendFrom("127.0.0.3", first);
    await until(() => b.stats.recordsDropped.replayed === 1, "the replay dropped");
    expect(atB.get(cidAtB)).toEqual(["after-1"]);
    expect(cidAtB.info.peer).toEqual(withCid.d.proxy.source);
  });

  it("a snapshot that does not fit the new server is refused and counted, the others are taken over", async () => {
    const a = await server();
    const port = a.address().port;
    await device(a, true);
    await device(a, false);
    const snaps = a.exportSessions(() => new Uint8Array(0));
    await a.close({ notify: false });
    const damaged = Uint8Array.from(snaps[0] as Uint8Array).subarray(0, 40);
    const otherVersion = Uint8Array.from(snaps[0] as Uint8Array);
    otherVersion[0] = 2;
    const b = await server(port);
    closers.push(() => b.close());
    // the second snapshot's address is already taken when it comes again
    expect(b.restoreSessions([damaged, otherVersion, snaps[1] as Uint8Array, snaps[1] as Uint8Array])).toEqual({
      restored: 1,
      refused: { damaged: 2, address_in_use: 1 },
    });
    expect(b.stats.restoresRefused.damaged).toBe(2);
    // a server that no longer has the session's suite refuses it
    const c = await server(0, ["TLS_PSK_WITH_AES_128_GCM_SHA256"]);
    closers.push(() => c.close());
    expect(c.restoreSessions([snaps[0] as Uint8Array]).refused).toEqual({ suite_not_configured: 1 });
  });

  it("the encoding round-trips and stays small; a restored session seals above the saved sequence number plus the margin", async () => {
    const a = await server();
    const port = a.address().port;
    const { d } = await device(a, true);
    const [bytes] = a.exportSessions(() => new Uint8Array(0));
    await a.close({ notify: false });
    const snap = decodeSessionSnapshot(bytes as Uint8Array);
    expect(encodeSessionSnapshot(snap)).toEqual(bytes);
    expect(snap.readCid.length).toBe(6);
    expect(snap.writeCid).toBe("");
    expect(snap.nextWriteSeq).toBeGreaterThan(0);
    expect((bytes as Uint8Array).length).toBeLessThan(140);
    const b = await server(port);
    closers.push(() => b.close());
    const restored = new Promise<DtlsConnection>((r) => b.once("session", r));
    b.restoreSessions([bytes as Uint8Array]);
    d.proxy.hold = true; // what B sends is kept here, not delivered
    (await restored).send(Buffer.from("x"));
    await until(() => d.proxy.heldToClient.length === 1, "B's record");
    const rec = d.proxy.heldToClient[0] as Uint8Array;
    const seq = Buffer.from(rec).readUIntBE(5, 6);
    expect(seq).toBe(snap.nextWriteSeq + RESTORE_SEQUENCE_MARGIN);
  });
});
