/**
 * Connection ID (RFC 9146), written from the RFC text: the extension, the
 * tls12_cid record layout (section 4), the AEAD additional data (section 5.3),
 * the DTLSInnerPlaintext with padding, parsing with the receiver's known CID
 * length, and the server's demultiplexing by CID and its address-move rule
 * (section 6) over the sans-I/O pipe. No peer on this machine speaks RFC 9146,
 * so the AEAD here is computed with node:crypto directly, not with ours.
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ContentType, ExtensionType } from "../../src/dtls/constants.ts";
import { cidString, decodeConnectionId, encodeConnectionId } from "../../src/dtls/connection-id.ts";
import { DtlsError } from "../../src/dtls/errors.ts";
import { serverCoreConfig } from "../../src/dtls/endpoint-config.ts";
import { decodeClientHello, decodeServerHello, findExtension } from "../../src/dtls/messages.ts";
import { parseHandshakeFragments } from "../../src/dtls/handshake-codec.ts";
import { parseRecords, splitInnerPlaintext } from "../../src/dtls/record.ts";
import { RecordProtection } from "../../src/dtls/record-protection.ts";
import { suiteByName } from "../../src/dtls/suites.ts";
import { Connection } from "../../src/dtls/connection.ts";
import { ClientHandshake } from "../../src/dtls/handshake-client.ts";
import { ServerCore, type Peer } from "../../src/dtls/server-core.ts";
import { CLIENT_PEER, connectionConfig, Pipe, serverConfig, suites } from "./harness.ts";

const PSK_GCM = suites("TLS_PSK_WITH_AES_128_GCM_SHA256");
const KEY = Buffer.from("00112233445566778899aabbccddeeff", "hex");
const SALT = Buffer.from("a0a1a2a3", "hex");
const CID = Buffer.from("c1c2c3c4c5c6", "hex");
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/** RFC 9146 5.3, byte by byte: 8 x 0xff, 25, cid_length, 25, version, epoch, sequence_number, cid, length_of_DTLSInnerPlaintext. */
function rfcAad(version: number, epoch: number, seq: number, cid: Uint8Array, innerLength: number): Buffer {
  const seqBytes = Buffer.alloc(6);
  seqBytes.writeUIntBE(seq, 0, 6);
  return Buffer.concat([
    Buffer.alloc(8, 0xff),
    Buffer.from([25, cid.length, 25, version >> 8, version & 0xff, epoch >> 8, epoch & 0xff]),
    seqBytes,
    cid,
    Buffer.from([innerLength >> 8, innerLength & 0xff]),
  ]);
}

/** A tls12_cid record sealed by hand with AES-128-GCM (RFC 5288 nonce: salt || explicit epoch||seq). */
function handSealed(epoch: number, seq: number, cid: Uint8Array, inner: Uint8Array, key = KEY, salt = SALT): Uint8Array {
  const explicit = Buffer.alloc(8);
  explicit.writeUInt16BE(epoch, 0);
  explicit.writeUIntBE(seq, 2, 6);
  const c = createCipheriv("aes-128-gcm", key, Buffer.concat([salt, explicit]));
  c.setAAD(rfcAad(0xfefd, epoch, seq, cid, inner.length));
  const body = Buffer.concat([explicit, c.update(inner), c.final(), c.getAuthTag()]);
  const header = Buffer.alloc(13 + cid.length);
  header[0] = 25;
  header.writeUInt16BE(0xfefd, 1);
  header.writeUInt16BE(epoch, 3);
  header.writeUIntBE(seq, 5, 6);
  Buffer.from(cid).copy(header, 11);
  header.writeUInt16BE(body.length, 11 + cid.length);
  return Buffer.concat([header, body]);
}

describe("connection_id extension (RFC 9146 3)", () => {
  it("is opaque cid<0..2^8-1>: a length byte, then the CID", () => {
    expect(hex(encodeConnectionId(""))).toBe("00");
    expect(hex(encodeConnectionId(cidString(CID)))).toBe("06c1c2c3c4c5c6");
    expect(decodeConnectionId(Buffer.from("06c1c2c3c4c5c6", "hex"))).toBe(cidString(CID));
    expect(decodeConnectionId(Buffer.from("00", "hex"))).toBe("");
  });

  it.each(["", "05c1c2", "01c1c2"])("refuses a malformed body %s with decode_error", (h) => {
    let error: unknown;
    try {
      decodeConnectionId(Buffer.from(h, "hex"));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(DtlsError);
    expect((error as DtlsError).alert).toBe(50); // decode_error
  });

  it("our client offers an empty CID, our server answers with its own, of the configured length and prefix", () => {
    const p = new Pipe({}, { suites: PSK_GCM, connectionIdLength: 9, connectionIdPrefix: new Uint8Array([0xab, 0xcd]) });
    const hellos: Uint8Array[] = [];
    p.tamperToServer = (d) => {
      hellos.push(Uint8Array.from(d));
      return d;
    };
    p.startClient({ suites: PSK_GCM });
    expect(p.runUntilEstablished()).toBe(true);
    const ch = parseRecords(hellos[0] as Uint8Array)[0]!;
    const hello = decodeClientHello(parseHandshakeFragments(ch.body)[0]!.body);
    expect(hex(findExtension(hello.extensions, ExtensionType.connection_id)!.data)).toBe("00");
    const sh = parseRecords(p.sentByServer.find((d) => d[0] === ContentType.handshake && d[13] === 2)!)[0]!;
    const serverHello = decodeServerHello(parseHandshakeFragments(sh.body)[0]!.body);
    const answer = findExtension(serverHello.extensions, ExtensionType.connection_id)!.data;
    expect(answer.length).toBe(10);
    expect(answer[0]).toBe(9);
    expect(hex(answer.subarray(1, 3))).toBe("abcd");
    expect(p.client.writeConnectionId).toBe(cidString(answer.subarray(1)));
    expect(p.client.readConnectionId).toBe("");
    expect(p.serverSession!.connection.readConnectionId).toBe(p.client.writeConnectionId);
    expect(p.server.sessionByConnectionId(p.client.writeConnectionId)).toBe(p.serverSession);
  });
});

describe("tls12_cid records (RFC 9146 4, 5.3)", () => {
  const suite = suiteByName("TLS_PSK_WITH_AES_128_GCM_SHA256");

  it("the additional data is the section 5.3 concatenation", () => {
    const ad = RecordProtection.cidAdditionalData(0xfefd, 1, 0x0102030405, cidString(CID), 0x0123);
    expect(hex(ad)).toBe("ffffffffffffffff" + "19" + "06" + "19" + "fefd" + "0001" + "000102030405" + "c1c2c3c4c5c6" + "0123");
    expect(hex(ad)).toBe(hex(rfcAad(0xfefd, 1, 0x0102030405, CID, 0x0123)));
  });

  it("a sealed record has the CID after the sequence number, and opens with the RFC's AAD over content || real type", () => {
    const rec = new RecordProtection(suite, KEY, SALT).sealCid(ContentType.application_data, 0xfefd, 1, 7, text("hello"), cidString(CID));
    // type 25, version, epoch 1, seq 7, the CID, then the length of what follows
    expect(hex(rec.subarray(0, 17))).toBe("19" + "fefd" + "0001" + "000000000007" + "c1c2c3c4c5c6");
    const length = (rec[17]! << 8) | rec[18]!;
    expect(length).toBe(rec.length - 19);
    expect(length).toBe(8 + 6 + 16); // explicit nonce, "hello" + the real type, tag
    const body = rec.subarray(19);
    const d = createDecipheriv("aes-128-gcm", KEY, Buffer.concat([SALT, body.subarray(0, 8)]));
    d.setAAD(rfcAad(0xfefd, 1, 7, CID, 6));
    d.setAuthTag(body.subarray(body.length - 16));
    const inner = Buffer.concat([d.update(body.subarray(8, body.length - 16)), d.final()]);
    expect(hex(inner)).toBe(hex(text("hello")) + "17");
  });

  it("parses with the receiver's known CID length; without one it cannot, and stops there", () => {
    const rec = handSealed(1, 3, CID, Buffer.from([1, 2, 3, 23]));
    const plain = Buffer.from("17fefd00010000000000010003aabbcc", "hex");
    const [r] = parseRecords(Buffer.concat([rec, plain]), 6);
    expect(r!.type).toBe(25);
    expect(r!.seq).toBe(3);
    expect(hex(r!.cid!)).toBe(hex(CID));
    expect(r!.header.length).toBe(19);
    expect(r!.body.length).toBe(rec.length - 19);
    expect(parseRecords(Buffer.concat([rec, plain]), 6)).toHaveLength(2);
    expect(parseRecords(Buffer.concat([plain, rec]))).toHaveLength(1); // the plain record before it is kept
    expect(parseRecords(rec)).toEqual([]);
  });

  it("opens a hand-sealed record, inner plaintext with padding zeros stripped", () => {
    const inner = Buffer.from([...text("hi"), ContentType.application_data, 0, 0, 0, 0]);
    const rec = parseRecords(handSealed(1, 9, CID, inner), 6)[0]!;
    const opened = new RecordProtection(suite, KEY, SALT).openCid(rec);
    expect(opened).not.toBeNull();
    const split = splitInnerPlaintext(opened!);
    expect(split?.type).toBe(23);
    expect(new TextDecoder().decode(split?.content)).toBe("hi");
    // a flipped CID byte changes the additional data: no longer authentic
    const forged = handSealed(1, 9, CID, inner);
    forged[12] = forged[12]! ^ 1;
    expect(new RecordProtection(suite, KEY, SALT).openCid(parseRecords(forged, 6)[0]!)).toBeNull();
  });

  it("an inner plaintext of zeros only, or empty, has no real type", () => {
    expect(splitInnerPlaintext(new Uint8Array([0, 0, 0]))).toBeUndefined();
    expect(splitInnerPlaintext(new Uint8Array(0))).toBeUndefined();
    expect(splitInnerPlaintext(new Uint8Array([22]))).toEqual({ type: 22, content: new Uint8Array(0) });
  });
});

describe("our client and server with CIDs (sans-I/O)", () => {
  function established(): Pipe {
    const p = new Pipe({}, { suites: PSK_GCM });
    p.startClient({ suites: PSK_GCM });
    expect(p.runUntilEstablished()).toBe(true);
    return p;
  }

  /** The next datagram the client sends, captured and kept from the server. */
  function capture(p: Pipe, send: () => void): Uint8Array {
    let got: Uint8Array | undefined;
    p.tamperToServer = (d) => {
      got = Uint8Array.from(d);
      return undefined;
    };
    send();
    p.run(10);
    p.tamperToServer = undefined;
    return got as Uint8Array;
  }

  it("the client's records are tls12_cid with the server's CID (its Finished too); the server's to it stay plain (the client asked for none)", () => {
    const toServer: Uint8Array[] = [];
    const p = new Pipe({}, { suites: PSK_GCM });
    p.tamperToServer = (d) => {
      toServer.push(Uint8Array.from(d));
      return d;
    };
    p.startClient({ suites: PSK_GCM });
    expect(p.runUntilEstablished()).toBe(true);
    p.client.send(text("up"));
    p.serverSession!.connection.send(text("down"));
    p.run(100);
    const cid = p.client.writeConnectionId;
    expect(cid.length).toBe(6);
    // the client's last flight: ClientKeyExchange, CCS (plain, epoch 0), then Finished as tls12_cid
    const flight = toServer.find((d) => d[0] === ContentType.handshake && parseRecords(d, 6).some((r) => r.type === ContentType.tls12_cid))!;
    const recs = parseRecords(flight, 6);
    expect(recs.map((r) => r.type)).toEqual([22, 20, 25]);
    expect(cidString(recs[2]!.cid!)).toBe(cid);
    const data = toServer.at(-1)!;
    expect(data[0]).toBe(ContentType.tls12_cid);
    expect(cidString(data.subarray(11, 17))).toBe(cid);
    expect(p.serverData.map((d) => new TextDecoder().decode(d))).toEqual(["up"]);
    expect(p.clientData.map((d) => new TextDecoder().decode(d))).toEqual(["down"]);
    expect(p.sentByServer.at(-1)![0]).toBe(ContentType.application_data);
  });

  it("without the extension (connectionId: false), or with the server's CID off, nothing changes: plain records", () => {
    for (const [client, server] of [
      [{ connectionId: false }, {}],
      [{}, { connectionIdLength: 0 }],
    ] as const) {
      const p = new Pipe({}, { suites: PSK_GCM, ...server });
      p.startClient({ suites: PSK_GCM, ...client });
      expect(p.runUntilEstablished()).toBe(true);
      expect(p.client.writeConnectionId).toBe("");
      expect(p.serverSession!.connection.readConnectionId).toBe("");
      const d = capture(p, () => p.client.send(text("x")));
      expect(d[0]).toBe(ContentType.application_data);
      p.server.receive(CLIENT_PEER, d, p.now);
      expect(p.serverData).toHaveLength(1);
    }
  });

  it("a record for an unknown CID is dropped and counted; one for ours from the same peer is read", () => {
    const p = established();
    const d = capture(p, () => p.client.send(text("x")));
    const wrong = Uint8Array.from(d);
    wrong[11] = wrong[11]! ^ 0xff;
    p.server.receive(CLIENT_PEER, wrong, p.now);
    expect(p.serverData).toHaveLength(0);
    expect(p.server.stats.unknownConnectionIds).toBe(1);
    p.server.receive(CLIENT_PEER, d, p.now);
    expect(p.serverData).toHaveLength(1);
  });

  it("a plain protected record where our CID is due is dropped and counted (cid_missing)", () => {
    const p = established();
    const d = capture(p, () => p.client.send(text("x")));
    expect(d[0]).toBe(25);
    // the same record re-framed without its CID: found by address, refused for the missing CID
    const len = (d[17]! << 8) | d[18]!;
    const asPlain = Buffer.concat([
      Buffer.from([ContentType.application_data]),
      d.subarray(1, 11),
      Buffer.from([len >> 8, len & 0xff]),
      d.subarray(19),
    ]);
    p.server.receive(CLIENT_PEER, asPlain, p.now);
    expect(p.serverData).toHaveLength(0);
    expect(p.server.stats.recordsDropped.cid_missing).toBe(1);
  });
});

describe("a connection reading hand-sealed tls12_cid records", () => {
  function reader(): { conn: Connection; data: string[]; dropped: string[] } {
    const data: string[] = [];
    const dropped: string[] = [];
    const conn = new Connection(
      "client",
      connectionConfig({ suites: PSK_GCM }),
      {
        sendDatagram: () => undefined,
        established: () => undefined,
        data: (d) => data.push(new TextDecoder().decode(d)),
        closed: () => undefined,
        recordDropped: (cause) => dropped.push(cause),
      },
      0,
    );
    const suite = suiteByName("TLS_PSK_WITH_AES_128_GCM_SHA256");
    conn.useConnectionIds({ read: cidString(CID), write: "" });
    conn.installKeys(new RecordProtection(suite, KEY, SALT), new RecordProtection(suite, KEY, SALT), 0);
    conn.establish({ identity: "", suite: suite.name, extendedMasterSecret: true, resumed: false }, 0);
    return { conn, data, dropped };
  }

  it("strips the padding, takes the real type, and drops an inner plaintext without one", () => {
    const { conn, data, dropped } = reader();
    conn.receive(handSealed(1, 1, CID, Buffer.from([...text("padded"), 23, 0, 0, 0, 0, 0, 0, 0])), 0);
    conn.receive(handSealed(1, 2, CID, Buffer.from([...text("bare"), 23])), 0);
    conn.receive(handSealed(1, 3, CID, Buffer.from([0, 0, 0, 0])), 0);
    conn.receive(handSealed(1, 4, CID, Buffer.alloc(0)), 0);
    expect(data).toEqual(["padded", "bare"]);
    expect(dropped).toEqual(["bad_inner_plaintext", "bad_inner_plaintext"]);
  });

  it("drops a record with another CID, an epoch-0 tls12_cid record, and a replay", () => {
    const { conn, data, dropped } = reader();
    const other = Buffer.from(CID);
    other[5] = other[5]! ^ 1;
    conn.receive(handSealed(1, 1, other, Buffer.from([...text("other"), 23])), 0);
    conn.receive(handSealed(0, 2, CID, Buffer.from([...text("epoch 0"), 23])), 0);
    const ok = handSealed(1, 3, CID, Buffer.from([...text("ok"), 23]));
    conn.receive(ok, 0);
    conn.receive(ok, 0);
    expect(data).toEqual(["ok"]);
    expect(dropped).toEqual(["cid_mismatch", "replayed"]);
  });
});

describe("NAT rebinding by CID (RFC 9146 6), sans-I/O", () => {
  const MOVED = { address: "198.51.100.7", port: 50001 };
  const THIRD = { address: "203.0.113.9", port: 40404 };

  function setup(): Pipe {
    const p = new Pipe({}, { suites: PSK_GCM });
    p.startClient({ suites: PSK_GCM });
    expect(p.runUntilEstablished()).toBe(true);
    return p;
  }

  function next(p: Pipe, s: string): Uint8Array {
    let got: Uint8Array | undefined;
    p.tamperToServer = (d) => {
      got = Uint8Array.from(d);
      return undefined;
    };
    p.client.send(text(s));
    p.run(10);
    p.tamperToServer = undefined;
    return got as Uint8Array;
  }

  it("a newer authenticated record from a new address moves the session; the address map and the sends follow", () => {
    const p = setup();
    const session = p.serverSession!;
    const d = next(p, "from the new port");
    p.server.receive(MOVED, d, p.now);
    expect(p.serverData.map((x) => new TextDecoder().decode(x))).toEqual(["from the new port"]);
    expect(session.address).toBe(MOVED.address);
    expect(session.port).toBe(MOVED.port);
    expect(p.server.session(MOVED)).toBe(session);
    expect(p.server.session(CLIENT_PEER)).toBeUndefined();
    expect(p.server.stats.addressChanges).toBe(1);
    expect(p.server.hostCountSize).toBe(1);
  });

  it("an older authentic record (reordered) from another address does not move it", () => {
    const p = setup();
    const session = p.serverSession!;
    const older = next(p, "older");
    const newer = next(p, "newer");
    p.server.receive(CLIENT_PEER, newer, p.now);
    p.server.receive(MOVED, older, p.now); // authentic, unseen, but below the highest: delivered, no move
    expect(p.serverData.map((x) => new TextDecoder().decode(x))).toEqual(["newer", "older"]);
    expect(session.address).toBe(CLIENT_PEER.address);
    expect(p.server.stats.addressChangesRefused.not_newer).toBe(1);
    expect(p.server.stats.addressChanges).toBe(0);
  });

  it("a replayed record or a forged one from a third address changes nothing", () => {
    const p = setup();
    const session = p.serverSession!;
    const d = next(p, "once");
    p.server.receive(CLIENT_PEER, d, p.now);
    p.server.receive(THIRD, d, p.now); // replay
    const forged = Uint8Array.from(next(p, "forged"));
    forged[forged.length - 1] = forged[forged.length - 1]! ^ 1;
    p.server.receive(THIRD, forged, p.now);
    expect(p.serverData.map((x) => new TextDecoder().decode(x))).toEqual(["once"]);
    expect(session.address).toBe(CLIENT_PEER.address);
    expect(session.port).toBe(CLIENT_PEER.port);
    expect(p.server.stats.addressChangesRefused.unauthenticated).toBe(2);
    expect(p.server.stats.recordsDropped.replayed).toBe(1);
    expect(p.server.stats.recordsDropped.unauthenticated).toBe(1);
    expect(p.server.stats.addressChanges).toBe(0);
  });
});

describe("NAT rebinding refusals that need a second session or an ending one", () => {
  /** One ServerCore and several of our clients, each at its own address; datagrams delivered at once, in order. */
  function net(peers: readonly Peer[]): { server: ServerCore; clients: Connection[]; toServer: (i: number) => Uint8Array[] } {
    const outbox: { to: string; d: Uint8Array }[] = [];
    const server = new ServerCore(
      serverConfig({ suites: PSK_GCM }),
      {
        send: (peer, d) => outbox.push({ to: `${peer.address}|${peer.port}`, d: Uint8Array.from(d) }),
        established: () => undefined,
        handshakeFailed: () => undefined,
      },
      0,
    );
    const sent: Uint8Array[][] = peers.map(() => []);
    const clients = peers.map(
      (_, i) =>
        new Connection(
          "client",
          connectionConfig({ suites: PSK_GCM }),
          { sendDatagram: (d) => sent[i]!.push(Uint8Array.from(d)), established: () => undefined, data: () => undefined, closed: () => undefined },
          0,
        ),
    );
    const pump = (): void => {
      for (let guard = 0; guard < 100; guard++) {
        let moved = false;
        for (const [i, peer] of peers.entries()) {
          for (const d of sent[i]!.splice(0)) {
            server.receive(peer, d, 0);
            moved = true;
          }
          for (const o of outbox.splice(0).filter((o) => o.to === `${peer.address}|${peer.port}`)) {
            clients[i]!.receive(o.d, 0);
            moved = true;
          }
        }
        if (!moved) return;
      }
    };
    for (const c of clients)
      c.attach(
        new ClientHandshake(
          c,
          { psk: { identity: "device-1", key: Buffer.from("000102030405060708090a0b0c0d0e0f", "hex") }, verifyServer: undefined },
          0,
        ),
      );
    pump();
    return { server, clients, toServer: (i) => sent[i]!.splice(0) };
  }

  it("a session does not take an address another live session holds (address_in_use)", () => {
    const A = { address: "192.0.2.10", port: 1000 };
    const B = { address: "192.0.2.11", port: 2000 };
    const { server, clients, toServer } = net([A, B]);
    expect(server.establishedCount).toBe(2);
    const a = server.session(A)!;
    clients[0]!.send(text("from B's address"));
    const [d] = toServer(0);
    server.receive(B, d!, 0);
    expect(server.stats.addressChangesRefused.address_in_use).toBe(1);
    expect(server.session(A)).toBe(a);
    expect(server.session(B)).not.toBe(a);
  });

  it("a close_notify from a new address closes the session and moves nothing (not_established)", () => {
    const p = new Pipe({}, { suites: PSK_GCM });
    p.startClient({ suites: PSK_GCM });
    expect(p.runUntilEstablished()).toBe(true);
    let closing: Uint8Array | undefined;
    p.tamperToServer = (d) => {
      closing = Uint8Array.from(d);
      return undefined;
    };
    p.client.close();
    p.server.receive({ address: "198.51.100.1", port: 9 }, closing!, p.now);
    expect(p.serverSession!.connection.state).toBe("closed");
    // the closed session's CID is free again: the map holds live sessions only
    expect(p.server.sessionByConnectionId(p.client.writeConnectionId)).toBeUndefined();
    expect(p.server.stats.addressChangesRefused.not_established).toBe(1);
    expect(p.server.stats.addressChanges).toBe(0);
  });
});

describe("CID settings", () => {
  const base = { psk: { keys: new Map([["a", new Uint8Array(16)]]) } };
  it.each([
    [{ connectionIdLength: 3 }, /at least 4/],
    [{ connectionIdLength: 6, connectionIdPrefix: new Uint8Array(3) }, /at least 4/],
    [{ connectionIdLength: 256 }, /0 to 255/],
    [{ connectionIdLength: 1.5 }, /0 to 255/],
  ])("%o is refused with bad_option", (over, message) => {
    expect(() => serverCoreConfig({ ...base, ...over })).toThrow(message);
  });
  it("0 turns CID off; a prefix leaving 4 random bytes is accepted", () => {
    expect(serverCoreConfig({ ...base, connectionIdLength: 0 }).connectionIdLength).toBe(0);
    expect(serverCoreConfig({ ...base, connectionIdLength: 8, connectionIdPrefix: new Uint8Array(4) }).connectionIdLength).toBe(8);
    expect(serverCoreConfig(base).connectionIdLength).toBe(6);
  });
});
