import { describe, expect, it } from "vitest";
import { ContentType, ExtensionType, HandshakeType, ProtocolVersion } from "../../src/dtls/constants.ts";
import { COOKIE_LENGTH } from "../../src/dtls/cookie.ts";
import { Connection } from "../../src/dtls/connection.ts";
import { ClientHandshake } from "../../src/dtls/handshake-client.ts";
import { encodeHandshake, parseHandshakeFragments } from "../../src/dtls/handshake-codec.ts";
import { decodeHelloVerifyRequest, decodeServerHello, encodeClientHello, EMPTY, type ClientHello, type Extension } from "../../src/dtls/messages.ts";
import { encodePlainRecord, parseRecords } from "../../src/dtls/record.ts";
import { HANDSHAKE_STATE_BYTES, ServerCore, sourceHost, type Peer } from "../../src/dtls/server-core.ts";
import { CLIENT_PEER, connectionConfig, Pipe, PSK_ID, PSK_KEY, serverConfig } from "./harness.ts";

function hello(over: Partial<ClientHello> = {}): ClientHello {
  return {
    version: ProtocolVersion.DTLS1_2,
    random: new Uint8Array(32).fill(7),
    sessionId: EMPTY,
    cookie: EMPTY,
    cipherSuites: [0xc0a8, 0x00a8],
    compressionMethods: new Uint8Array([0]),
    extensions: undefined,
    ...over,
  };
}

function helloDatagram(h: ClientHello, opts: { recordVersion?: number; recordSeq?: number; messageSeq?: number } = {}): Uint8Array {
  const msg = encodeHandshake(HandshakeType.client_hello, opts.messageSeq ?? 0, encodeClientHello(h));
  return encodePlainRecord(ContentType.handshake, opts.recordVersion ?? ProtocolVersion.DTLS1_2, 0, opts.recordSeq ?? 0, msg);
}

/** A server core that records what it sends. */
function core(over: Parameters<typeof serverConfig>[0] = {}) {
  const sent: { peer: Peer; data: Uint8Array }[] = [];
  const failures: string[] = [];
  const s = new ServerCore(
    serverConfig(over),
    {
      send: (peer, data) => sent.push({ peer, data }),
      established: () => {},
      handshakeFailed: (_p, e) => failures.push(e.code),
    },
    0,
  );
  return { s, sent, failures };
}

function handshakeMessages(datagram: Uint8Array) {
  return parseRecords(datagram).flatMap((r) => (r.type === ContentType.handshake && r.epoch === 0 ? parseHandshakeFragments(r.body) : []));
}

describe("stateless cookie exchange", () => {
  it("answers a first ClientHello with a HelloVerifyRequest and keeps no state", () => {
    const { s, sent } = core();
    s.receive(CLIENT_PEER, helloDatagram(hello(), { recordSeq: 5, messageSeq: 0 }), 0);
    expect(s.size).toBe(0);
    expect(s.nextTimeout()).toBeUndefined();
    expect(sent).toHaveLength(1);
    const [rec] = parseRecords(sent[0]!.data);
    expect(rec!.seq).toBe(5); // RFC 6347 4.2.1: HVR reuses the ClientHello's record sequence number
    const [frag] = handshakeMessages(sent[0]!.data);
    expect(frag!.msgType).toBe(HandshakeType.hello_verify_request);
    expect(frag!.messageSeq).toBe(0);
    const hvr = decodeHelloVerifyRequest(frag!.body);
    expect(hvr.cookie.length).toBe(COOKIE_LENGTH);
    expect(hvr.cookie.length).toBeLessThanOrEqual(32);
  });

  it("keeps no state for thousands of ClientHellos with missing or forged cookies", () => {
    const { s, sent } = core();
    for (let i = 0; i < 2000; i++) {
      const peer = { address: `10.0.${i >> 8}.${i & 255}`, port: 1000 + i };
      const cookie = i % 2 === 0 ? EMPTY : new Uint8Array(COOKIE_LENGTH).fill(i & 255);
      s.receive(peer, helloDatagram(hello({ cookie })), i);
    }
    expect(s.size).toBe(0);
    expect(s.stats.helloVerifyRequestsSent).toBe(2000);
    expect(sent).toHaveLength(2000);
  });

  it("accepts its cookie only from the same address and port, and only for two rotation periods", () => {
    const { s, sent } = core({ cookieRotateMs: 10_000 });
    s.receive(CLIENT_PEER, helloDatagram(hello()), 0);
    const cookie = decodeHelloVerifyRequest(handshakeMessages(sent[0]!.data)[0]!.body).cookie;
    const other = { address: CLIENT_PEER.address, port: CLIENT_PEER.port + 1 };
    s.receive(other, helloDatagram(hello({ cookie }), { messageSeq: 1, recordSeq: 1 }), 1);
    expect(s.size).toBe(0);
    // Two rotations later the cookie is stale.
    s.receive(CLIENT_PEER, helloDatagram(hello({ cookie }), { messageSeq: 1, recordSeq: 1 }), 25_000);
    expect(s.size).toBe(0);
    // A fresh cookie from the same peer works, even one rotation later.
    s.receive(CLIENT_PEER, helloDatagram(hello()), 30_000);
    const fresh = decodeHelloVerifyRequest(handshakeMessages(sent.at(-1)!.data)[0]!.body).cookie;
    s.receive(CLIENT_PEER, helloDatagram(hello({ cookie: fresh }), { messageSeq: 1, recordSeq: 1 }), 39_000);
    expect(s.size).toBe(1);
  });

  it("binds the cookie to the hello: a changed random or suite list needs a new cookie", () => {
    const { s, sent } = core();
    s.receive(CLIENT_PEER, helloDatagram(hello()), 0);
    const cookie = decodeHelloVerifyRequest(handshakeMessages(sent[0]!.data)[0]!.body).cookie;
    s.receive(CLIENT_PEER, helloDatagram(hello({ cookie, random: new Uint8Array(32).fill(8) }), { messageSeq: 1 }), 1);
    s.receive(CLIENT_PEER, helloDatagram(hello({ cookie, cipherSuites: [0xc0a8] }), { messageSeq: 1 }), 1);
    expect(s.size).toBe(0);
  });
});

describe("ClientHello variants", () => {
  function cookieRound(h: ClientHello, recordVersion: number = ProtocolVersion.DTLS1_2) {
    const c = core();
    c.s.receive(CLIENT_PEER, helloDatagram(h, { recordVersion }), 0);
    const cookie = decodeHelloVerifyRequest(handshakeMessages(c.sent[0]!.data)[0]!.body).cookie;
    c.s.receive(CLIENT_PEER, helloDatagram({ ...h, cookie }, { recordVersion, messageSeq: 1, recordSeq: 1 }), 1);
    return c;
  }

  it("accepts a ClientHello with no extensions block and DTLS 1.0 record version; ServerHello then has no extensions", () => {
    const { s, sent } = cookieRound(hello({ extensions: undefined }), ProtocolVersion.DTLS1_0);
    expect(s.size).toBe(1);
    const flight = sent[1]!.data;
    const [first] = parseRecords(flight);
    expect(first!.seq).toBe(1); // continues at the second ClientHello's record number, never reusing the HVR's 0
    const msgs = handshakeMessages(flight);
    expect(msgs.map((m) => m.msgType)).toEqual([HandshakeType.server_hello, HandshakeType.server_hello_done]);
    expect(msgs[0]!.messageSeq).toBe(1);
    const sh = decodeServerHello(msgs[0]!.body);
    expect(sh.extensions).toBeUndefined();
    expect(sh.cipherSuite).toBe(0xc0a8);
  });

  it("echoes extended_master_secret and renegotiation_info only when offered", () => {
    const exts: Extension[] = [
      { type: ExtensionType.extended_master_secret, data: EMPTY },
      { type: ExtensionType.supported_groups, data: new Uint8Array([0, 2, 0, 29]) },
      { type: ExtensionType.encrypt_then_mac, data: EMPTY },
    ];
    const { sent } = cookieRound(hello({ extensions: exts }));
    const sh = decodeServerHello(handshakeMessages(sent[1]!.data)[0]!.body);
    expect(sh.extensions?.map((e) => e.type)).toEqual([ExtensionType.extended_master_secret]);
    const scsv = cookieRound(hello({ cipherSuites: [0xc0a8, 0x00ff] }));
    const sh2 = decodeServerHello(handshakeMessages(scsv.sent[1]!.data)[0]!.body);
    expect(sh2.extensions?.map((e) => e.type)).toEqual([ExtensionType.renegotiation_info]);
  });

  it("refuses a DTLS 1.0-only client with protocol_version and no shared suite with handshake_failure", () => {
    const old = cookieRound(hello({ version: ProtocolVersion.DTLS1_0 }));
    expect(old.failures).toEqual(["protocol_version"]);
    const alert = parseRecords(old.sent[1]!.data)[0]!;
    expect(alert.type).toBe(ContentType.alert);
    expect([...alert.body]).toEqual([2, 70]);
    const none = cookieRound(hello({ cipherSuites: [0x002f] }));
    expect(none.failures).toEqual(["handshake_failure"]);
    expect(none.s.size).toBe(0);
  });

  it("sends a PSK identity hint only when configured", () => {
    const p = new Pipe({}, { psk: { lookup: () => PSK_KEY, hint: "dtlspush" } });
    const types: number[] = [];
    const orig = p.enqueue.bind(p);
    p.enqueue = (to, d) => {
      if (to === "client") types.push(...handshakeMessages(d).map((m) => m.msgType));
      orig(to, d);
    };
    p.startClient();
    expect(p.runUntilEstablished()).toBe(true);
    expect(types).toContain(HandshakeType.server_key_exchange);
    const q = new Pipe();
    const types2: number[] = [];
    const orig2 = q.enqueue.bind(q);
    q.enqueue = (to, d) => {
      if (to === "client") types2.push(...handshakeMessages(d).map((m) => m.msgType));
      orig2(to, d);
    };
    q.startClient();
    expect(q.runUntilEstablished()).toBe(true);
    expect(types2).not.toContain(HandshakeType.server_key_exchange);
  });
});

describe("authentication failures", () => {
  it("refuses an unknown identity with unknown_psk_identity", () => {
    const p = new Pipe();
    p.startClient({}, { identity: "stranger", key: PSK_KEY });
    p.run(5000);
    expect(p.serverErrors.map((e) => e.code)).toEqual(["unknown_psk_identity"]);
    expect(p.clientClosed).toMatchObject({ code: "alert_received", alert: 115 });
    expect(p.server.size).toBe(0);
  });

  it("refuses a wrong key at once with bad_record_mac", () => {
    const p = new Pipe();
    p.startClient({}, { identity: PSK_ID, key: new Uint8Array(16).fill(1) });
    p.run(5000);
    expect(p.serverErrors.map((e) => e.code)).toEqual(["bad_record_mac"]);
    expect(p.clientClosed).toMatchObject({ code: "alert_received", alert: 20 });
    expect(p.now).toBeLessThan(1000);
  });

  it("requires extended master secret when configured", () => {
    const { s, sent, failures } = core({ requireExtendedMasterSecret: true });
    s.receive(CLIENT_PEER, helloDatagram(hello()), 0);
    const cookie = decodeHelloVerifyRequest(handshakeMessages(sent[0]!.data)[0]!.body).cookie;
    s.receive(CLIENT_PEER, helloDatagram(hello({ cookie }), { messageSeq: 1 }), 1);
    expect(failures).toEqual(["handshake_failure"]);
    const p = new Pipe({}, { requireExtendedMasterSecret: true });
    p.startClient();
    expect(p.runUntilEstablished()).toBe(true);
    expect(p.serverSession?.info.extendedMasterSecret).toBe(true);
  });
});

describe("records after the handshake", () => {
  function established() {
    const p = new Pipe();
    p.startClient();
    expect(p.runUntilEstablished()).toBe(true);
    const captured: Uint8Array[] = [];
    p.tamperToServer = (d) => {
      captured.push(d);
      return d;
    };
    return { p, captured };
  }

  it("drops replayed records", () => {
    const { p, captured } = established();
    p.client.send(new TextEncoder().encode("once"));
    p.run(10);
    for (let i = 0; i < 5; i++) p.server.receive(CLIENT_PEER, captured[0]!, p.now);
    expect(p.serverData.map((d) => Buffer.from(d).toString())).toEqual(["once"]);
  });

  it("drops tampered records silently and keeps the session", () => {
    const { p, captured } = established();
    p.tamperToServer = (d) => {
      captured.push(d);
      return undefined;
    };
    p.client.send(new TextEncoder().encode("original"));
    const good = captured[0]!;
    for (let i = 13; i < good.length; i++) {
      const bad = new Uint8Array(good);
      bad[i] = bad[i]! ^ 0x01;
      p.server.receive(CLIENT_PEER, bad, p.now);
    }
    for (const i of [0, 4, 10]) {
      const bad = new Uint8Array(good);
      bad[i] = bad[i]! ^ 0x01; // header bits are authenticated too (type, epoch, seq)
      p.server.receive(CLIENT_PEER, bad, p.now);
    }
    expect(p.serverData).toHaveLength(0);
    expect(p.server.establishedCount).toBe(1);
    p.server.receive(CLIENT_PEER, good, p.now);
    expect(p.serverData.map((d) => Buffer.from(d).toString())).toEqual(["original"]);
  });

  it("refuses renegotiation with a no_renegotiation warning and keeps the session", () => {
    const { p } = established();
    const replies: Uint8Array[] = [];
    const orig = p.enqueue.bind(p);
    p.enqueue = (to, d) => {
      if (to === "client") replies.push(d);
      orig(to, d);
    };
    // A ClientHello inside the protected epoch.
    const conn = p.client as unknown as { writer: { record(t: number, e: number, b: Uint8Array): Uint8Array } };
    const ch = encodeHandshake(HandshakeType.client_hello, 7, encodeClientHello(hello()));
    p.server.receive(CLIENT_PEER, conn.writer.record(ContentType.handshake, 1, ch), p.now);
    expect(replies).toHaveLength(1);
    expect(parseRecords(replies[0]!)[0]!.type).toBe(ContentType.alert);
    p.run(10);
    expect(p.server.establishedCount).toBe(1);
    expect(p.client.state).toBe("established");
  });

  it("closes idle sessions after idleTimeoutMs", () => {
    const p = new Pipe({}, { idleTimeoutMs: 30_000 });
    p.startClient();
    expect(p.runUntilEstablished()).toBe(true);
    const start = p.now;
    p.run(20_000);
    p.client.send(new TextEncoder().encode("keepalive"));
    p.run(20_000);
    expect(p.server.establishedCount).toBe(1);
    p.run(60_000);
    expect(p.serverClosed).toMatchObject({ code: "idle_timeout" });
    expect(p.now - start).toBeGreaterThanOrEqual(50_000);
    expect(p.clientClosed).toBeUndefined(); // the server said close_notify
  });

  it("replaces a session when the same address starts a new handshake", () => {
    const p = new Pipe();
    p.startClient();
    expect(p.runUntilEstablished()).toBe(true);
    const first = p.serverSession;
    p.serverSession = undefined;
    p.clientInfo = undefined;
    p.startClient();
    expect(p.runUntilEstablished()).toBe(true);
    expect(p.serverSession).not.toBe(first);
    expect(p.serverClosed).toMatchObject({ code: "replaced" });
    expect(p.server.size).toBe(1);
  });
});

describe("caps", () => {
  it("refuses handshakes beyond maxHandshakes", () => {
    const { s, sent, failures } = core({ maxHandshakes: 2 });
    for (let i = 0; i < 3; i++) {
      const peer = { address: "127.0.0.1", port: 2000 + i };
      s.receive(peer, helloDatagram(hello()), 0);
      const cookie = decodeHelloVerifyRequest(handshakeMessages(sent.at(-1)!.data)[0]!.body).cookie;
      s.receive(peer, helloDatagram(hello({ cookie }), { messageSeq: 1 }), 1);
    }
    expect(s.handshakesInProgress).toBe(2);
    expect(failures).toEqual(["over_capacity"]);
    // Abandoned handshakes reach the handshake deadline (before their retransmissions run out) and free their slots.
    for (let t = 0; t < 200_000 && s.nextTimeout() !== undefined;) {
      t = s.nextTimeout()!;
      s.timeout(t);
    }
    expect(s.handshakesInProgress).toBe(0);
    expect(s.size).toBe(0);
    expect(failures.filter((f) => f === "handshake_timeout")).toHaveLength(2);
  });

  /** The cookie exchange from `peer`: the core then holds a handshake for it (unless refused). */
  function cookieRound(c: ReturnType<typeof core>, peer: Peer, t = 1, h = hello()): void {
    c.s.receive(peer, helloDatagram(h), t);
    const cookie = decodeHelloVerifyRequest(handshakeMessages(c.sent.at(-1)!.data)[0]!.body).cookie;
    c.s.receive(peer, helloDatagram({ ...h, cookie }, { messageSeq: 1, recordSeq: 1 }), t);
  }

  it("refuses handshakes from a source over maxHandshakesPerHost; other sources go on", () => {
    const c = core({ maxHandshakes: 100, maxHandshakesPerHost: 3 });
    for (let i = 0; i < 5; i++) cookieRound(c, { address: "10.0.0.1", port: 3000 + i });
    expect(c.s.handshakesInProgress).toBe(3);
    expect(c.failures).toEqual(["host_handshakes_exceeded", "host_handshakes_exceeded"]);
    expect(c.s.stats.refusals).toEqual({ over_capacity: 0, host_handshakes_exceeded: 2, host_sessions_exceeded: 0, handshake_memory_exceeded: 0 });
    expect(c.s.stats.refusedOverCapacity).toBe(2);
    cookieRound(c, { address: "10.0.0.2", port: 3000 });
    expect(c.s.handshakesInProgress).toBe(4);
    expect(c.s.stats.handshakesInProgress).toBe(4);
    // the same address and port starting over replaces its own handshake: no refusal
    cookieRound(c, { address: "10.0.0.1", port: 3000 }, 2, hello({ random: new Uint8Array(32).fill(9) }));
    expect(c.failures).toEqual(["host_handshakes_exceeded", "host_handshakes_exceeded", "replaced"]);
    expect(c.s.stats.refusals.host_handshakes_exceeded).toBe(2);
    expect(c.s.handshakesInProgress).toBe(4);
  });

  it("refuses handshakes from a source over maxSessionsPerHost (handshakes count as sessions)", () => {
    const c = core({ maxHandshakesPerHost: 10, maxSessionsPerHost: 2 });
    for (let i = 0; i < 3; i++) cookieRound(c, { address: "10.0.0.1", port: 3000 + i });
    expect(c.failures).toEqual(["host_sessions_exceeded"]);
    expect(c.s.stats.refusals.host_sessions_exceeded).toBe(1);
  });

  it("refuses new handshakes when the handshake memory budget is spent, and takes them again once it is free", () => {
    const c = core({ handshakeMemoryBytes: 2 * HANDSHAKE_STATE_BYTES, handshakeTimeoutMs: 5000 });
    for (let i = 0; i < 3; i++) cookieRound(c, { address: `10.0.0.${i + 1}`, port: 3000 });
    expect(c.failures).toEqual(["handshake_memory_exceeded"]);
    expect(c.s.stats.handshakeMemoryBytes).toBe(2 * HANDSHAKE_STATE_BYTES);
    c.s.timeout(5001); // both reach the deadline
    expect(c.s.handshakesInProgress).toBe(0);
    expect(c.s.stats.handshakeMemoryBytes).toBe(0);
    expect(c.s.hostCountSize).toBe(0);
    cookieRound(c, { address: "10.0.0.3", port: 3000 }, 5002);
    expect(c.s.handshakesInProgress).toBe(1);
  });

  it("drops a handshake at the deadline, long before its retransmissions run out", () => {
    const c = core({ handshakeTimeoutMs: 4000 });
    cookieRound(c, CLIENT_PEER);
    expect(c.s.nextTimeout()).toBe(1001); // the flight's retransmission first
    for (let t = 0; t < 10_000 && c.s.handshakesInProgress > 0;) {
      t = c.s.nextTimeout()!;
      c.s.timeout(t);
    }
    expect(c.failures).toEqual(["handshake_timeout"]);
    expect(c.s.size).toBe(0);
    expect(c.s.nextTimeout()).toBeUndefined();
  });

  it("counts an IPv6 /64 as one source, an IPv4-mapped address as its IPv4 address", () => {
    expect(sourceHost("192.0.2.7")).toBe("192.0.2.7");
    expect(sourceHost("::ffff:192.0.2.7")).toBe("192.0.2.7");
    expect(sourceHost("2001:db8:0:1::5")).toBe("2001:db8:0:1::/64");
    expect(sourceHost("2001:0db8:0000:0001:ffff::9")).toBe("2001:db8:0:1::/64");
    expect(sourceHost("2001:db8::1")).toBe("2001:db8:0:0::/64");
    expect(sourceHost("fe80::1%eth0")).toBe("fe80:0:0:0::/64");
    expect(sourceHost("::1")).toBe("0:0:0:0::/64");
  });
});

describe("demultiplexing keys", () => {
  it("keeps the caller's own key for a session (not one made from the address), and counts the source once per session", () => {
    let toServer: Uint8Array[] = [];
    let toClient: Uint8Array[] = [];
    let established = 0;
    const failures: string[] = [];
    const server = new ServerCore(
      serverConfig({ maxHandshakesPerHost: 2 }),
      { send: (_p, d) => toClient.push(d), established: () => established++, handshakeFailed: (_p, e) => failures.push(e.code) },
      0,
    );
    // four clients from one address, each under a key of the caller's own: a third handshake at once would be refused
    for (let i = 0; i < 4; i++) {
      const peer = { address: "127.0.0.1", port: 2000 + i };
      const key = `device-${i}`;
      const client = new Connection(
        "client",
        connectionConfig(),
        { sendDatagram: (d) => toServer.push(d), established: () => undefined, data: () => undefined, closed: () => undefined },
        0,
      );
      client.attach(new ClientHandshake(client, { psk: { identity: PSK_ID, key: PSK_KEY }, verifyServer: undefined }, 0));
      for (let round = 0; round < 20 && (toServer.length > 0 || toClient.length > 0); round++) {
        const ins = toServer;
        toServer = [];
        for (const d of ins) server.receive(peer, d, 0, key);
        const outs = toClient;
        toClient = [];
        for (const d of outs) client.receive(d, 0);
      }
      expect(client.state).toBe("established");
      expect(server.hasSession(key)).toBe(true);
    }
    expect(failures).toEqual([]);
    expect(established).toBe(4);
    expect(server.establishedCount).toBe(4);
    expect(server.hostCountSize).toBe(1);
  });
});
