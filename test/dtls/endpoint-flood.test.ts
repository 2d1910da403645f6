/**
 * A spoofed ClientHello flood against the real endpoint on 127.0.0.1: the
 * "spoofed" peers are UDP sockets bound to other loopback addresses, which is
 * what a flood with forged sources looks like to the server. The server's
 * clock is frozen, so the HelloVerifyRequest budget is exact (no refill).
 */
import { createSocket, type Socket } from "node:dgram";
import { afterEach, describe, expect, it } from "vitest";
import { connect, type DtlsConnection, type DtlsServer } from "../../src/dtls/index.ts";
import { parseRecords } from "../../src/dtls/record.ts";
import { ManualClock } from "../../src/util/clock.ts";
import { echoServers, KEY } from "./echo-server.ts";

const server = echoServers();
let sockets: Socket[] = [];
afterEach(() => {
  for (const s of sockets) s.close();
  sockets = [];
});

async function bound(address: string): Promise<Socket> {
  const s = createSocket("udp4");
  sockets.push(s);
  await new Promise<void>((r) => s.bind(0, address, () => r()));
  return s;
}

/** A real first ClientHello (no cookie), as our client sends it. */
async function firstClientHello(): Promise<Buffer> {
  const sink = await bound("127.0.0.1");
  const got = new Promise<Buffer>((r) => sink.once("message", (m) => r(m)));
  const attempt = connect({ host: "127.0.0.1", port: sink.address().port, psk: { identity: "dev", key: KEY }, timeoutMs: 200 }).catch(
    () => undefined,
  );
  const hello = await got;
  await attempt;
  return hello;
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Sockets on `count` loopback addresses of 127.0.<net>.0/24, counting the datagrams each receives. */
async function spoofers(net: number, count: number): Promise<{ sockets: Socket[]; received: () => number }> {
  const list = await Promise.all(Array.from({ length: count }, (_v, i) => bound(`127.0.${net}.${i + 1}`)));
  let received = 0;
  for (const s of list) s.on("message", () => received++);
  return { sockets: list, received: () => received };
}

/** An established session whose echoes are counted. */
async function session(s: DtlsServer): Promise<{ c: DtlsConnection; echoes: string[] }> {
  const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "dev", key: KEY }, timeoutMs: 5000 });
  const echoes: string[] = [];
  c.on("data", (d) => echoes.push(d.toString()));
  return { c, echoes };
}

describe("ClientHello flood from other addresses", () => {
  it("answers at most the global HelloVerifyRequest budget, counts the drops, and serves the established session in the same turns", async () => {
    const s = await server({ clock: new ManualClock(1000), helloVerifyRatePerSecond: 50, helloVerifyRatePerPrefix: 0, sockets: 1 });
    const { port } = s.address();
    const hello = await firstClientHello();
    const { c, echoes } = await session(s); // its own handshake took 1 of the 5 held (a tenth of a second of 50/s)
    const hvr0 = s.stats.helloVerifyRequestsSent;
    expect(hvr0).toBe(1);
    const flood = await spoofers(3, 40);
    for (const [i, sock] of flood.sockets.entries()) {
      sock.send(hello, port, "127.0.0.1");
      if (i % 2 === 0) c.send(Buffer.from(`r${i}`));
    }
    const stats = s.stats;
    await until(() => echoes.length === 20 && stats.helloVerifyRequestsSent - hvr0 + stats.clientHellosDropped.global_limit === 40, "the burst");
    await until(() => flood.received() === stats.helloVerifyRequestsSent - hvr0, "the HelloVerifyRequests");
    expect(stats.helloVerifyRequestsSent - hvr0).toBe(4);
    expect(flood.received()).toBe(4);
    expect(stats.clientHellosDropped).toEqual({ global_limit: 36, prefix_limit: 0, duplicate: 0, turn_limit: 0 });
    expect(echoes.sort()).toEqual(Array.from({ length: 20 }, (_v, i) => `echo:r${2 * i}`).sort());
    expect(s.sessions()).toBe(1); // no state for the flood
    c.close();
  });

  it("limits each source prefix (/24) on its own", async () => {
    const s = await server({ clock: new ManualClock(1000), helloVerifyRatePerSecond: 0, helloVerifyRatePerPrefix: 30, sockets: 1 });
    const { port } = s.address();
    const hello = await firstClientHello();
    const a = await spoofers(4, 10);
    const b = await spoofers(5, 10);
    for (let i = 0; i < 10; i++) {
      (a.sockets[i] as Socket).send(hello, port, "127.0.0.1");
      (b.sockets[i] as Socket).send(hello, port, "127.0.0.1");
    }
    const stats = s.stats;
    await until(() => stats.helloVerifyRequestsSent + stats.clientHellosDropped.prefix_limit === 20, "the burst");
    await until(() => a.received() + b.received() === 6, "the HelloVerifyRequests");
    expect([a.received(), b.received()]).toEqual([3, 3]);
    expect(stats.clientHellosDropped.prefix_limit).toBe(14);
    // a device from a quiet network still connects
    const { c, echoes } = await session(s);
    c.send(Buffer.from("hi"));
    await until(() => echoes.length === 1, "the echo");
    c.close();
  });

  it("answers two identical ClientHellos read in one turn with one HelloVerifyRequest datagram of one record", async () => {
    const { s, port, hello, peer, got } = await onePeer("127.0.6.1");
    peer.send(hello, port, "127.0.0.1");
    peer.send(hello, port, "127.0.0.1"); // its retransmission, read in the same turn
    await until(() => got.length >= 1, "the HelloVerifyRequest");
    await probe(peer, hello, port, got);
    expect(got.map((d) => parseRecords(d).map((r) => ({ type: r.type, msg: r.body[0], seq: r.seq })))).toEqual([
      [{ type: 22, msg: 3, seq: 0 }], // hello_verify_request, once
      [{ type: 22, msg: 3, seq: 7 }],
    ]);
    expect(s.stats.helloVerifyRequestsSent).toBe(2);
    expect(s.stats.clientHellosDropped.duplicate).toBe(1);
  });

  it("answers a peer with a handshake in progress at most once per turn too (a restarted client's ClientHello read twice)", async () => {
    const { s, port, hello, peer, got } = await onePeer("127.0.8.1");
    const hvrs = (): { seq: number; records: number }[] =>
      got
        .filter((d) => parseRecords(d).some((r) => r.type === 22 && r.body[0] === 3))
        .map((d) => ({ seq: parseRecords(d)[0]?.seq ?? -1, records: parseRecords(d).length }));
    // cookie exchange: the server then holds a handshake for this address and port
    peer.send(hello, port, "127.0.0.1");
    await until(() => hvrs().length === 1, "the HelloVerifyRequest");
    peer.send(withCookie(hello, cookieOf(got[0] as Buffer)), port, "127.0.0.1");
    await until(() => s.stats.handshakesStarted === 1, "the handshake");
    // the client starts over (a new random), and its ClientHello is read twice in one turn
    const restart = Buffer.from(hello);
    restart[30] = (restart[30] as number) ^ 0xff;
    peer.send(restart, port, "127.0.0.1");
    peer.send(restart, port, "127.0.0.1");
    await until(() => hvrs().length >= 2, "the second HelloVerifyRequest");
    await probe(peer, restart, port, got);
    expect(hvrs()).toEqual([
      { seq: 0, records: 1 },
      { seq: 0, records: 1 }, // the restart's, once
      { seq: 7, records: 1 },
    ]);
    expect(s.stats.clientHellosDropped.duplicate).toBe(1);
  });
});

/** A server with one socket, a first ClientHello, and one peer socket collecting what it receives. */
async function onePeer(address: string): Promise<{ s: DtlsServer; port: number; hello: Buffer; peer: Socket; got: Buffer[] }> {
  const s = await server({ sockets: 1 });
  const hello = await firstClientHello();
  const peer = await bound(address);
  const got: Buffer[] = [];
  peer.on("message", (m) => got.push(m));
  return { s, port: s.address().port, hello, peer, got };
}

/**
 * Sends `hello` again in a later turn with record sequence number 7, which its
 * HelloVerifyRequest repeats, and waits for that answer: once it is here,
 * everything the server sent the peer before it is here too.
 */
async function probe(peer: Socket, hello: Buffer, port: number, got: Buffer[]): Promise<void> {
  const p = Buffer.from(hello);
  p[10] = 7;
  peer.send(p, port, "127.0.0.1");
  await until(() => got.some((d) => parseRecords(d).some((r) => r.seq === 7 && r.type === 22 && r.body[0] === 3)), "the probe's HelloVerifyRequest");
}

/** The cookie of a HelloVerifyRequest datagram (record header 13, handshake header 12, server_version 2). */
function cookieOf(hvr: Buffer): Buffer {
  const at = 13 + 12 + 2;
  return hvr.subarray(at + 1, at + 1 + (hvr[at] as number));
}

/** A first ClientHello with the cookie filled in (message and record sequence 1), as the client's second ClientHello. */
function withCookie(hello: Buffer, cookie: Buffer): Buffer {
  const cookieLengthAt = 13 + 12 + 2 + 32 + 1 + (hello[59] as number);
  const out = Buffer.concat([hello.subarray(0, cookieLengthAt), Buffer.from([cookie.length]), cookie, hello.subarray(cookieLengthAt + 1)]);
  out.writeUInt16BE(out.readUInt16BE(11) + cookie.length, 11); // record length
  out.writeUIntBE(out.readUIntBE(14, 3) + cookie.length, 14, 3); // handshake length
  out.writeUIntBE(out.readUIntBE(22, 3) + cookie.length, 22, 3); // fragment length
  out.writeUInt16BE(1, 17); // message_seq
  out[10] = 1; // record sequence number
  return out;
}
