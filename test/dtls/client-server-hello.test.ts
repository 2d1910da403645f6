/**
 * Our client against a crafted server on a UDP socket: a ServerHello may
 * answer any extension the client offered (wolfSSL echoes ec_point_formats
 * while choosing a plain PSK suite) and nothing else.
 */
import { createSocket, type Socket } from "node:dgram";
import { afterEach, describe, expect, it } from "vitest";
import { connect } from "../../src/dtls/index.ts";
import { AlertDescription, ContentType, ExtensionType, HandshakeType, ProtocolVersion } from "../../src/dtls/constants.ts";
import { encodeHandshake, parseHandshakeFragments } from "../../src/dtls/handshake-codec.ts";
import {
  decodeClientHello,
  EC_POINT_FORMATS_UNCOMPRESSED,
  EMPTY,
  EMPTY_RENEGOTIATION_INFO,
  encodeServerHello,
  type Extension,
} from "../../src/dtls/messages.ts";
import { encodePlainRecord, parseRecords } from "../../src/dtls/record.ts";
import { concatBytes } from "../../src/util/bytes.ts";
import { KEY } from "./echo-server.ts";

const PSK_AES128_GCM = 0x00a8;
let sockets: Socket[] = [];
afterEach(() => {
  for (const s of sockets) s.close();
  sockets = [];
});

/**
 * A server that answers the first ClientHello (no cookie round) with
 * ServerHello(extensions) + ServerHelloDone for TLS_PSK_WITH_AES_128_GCM_SHA256,
 * then reports the client's next datagram: its flight 3, or an alert.
 */
async function craftedServer(extensions: (offered: readonly Extension[]) => Extension[]) {
  const socket = createSocket("udp4");
  sockets.push(socket);
  await new Promise<void>((resolve) => socket.bind({ address: "127.0.0.1", port: 0 }, resolve));
  let offered: readonly number[] = [];
  const answer = new Promise<{ handshakeTypes: number[]; alerts: number[][] }>((resolve) => {
    let step = 0;
    socket.on("message", (m, rinfo) => {
      const records = parseRecords(new Uint8Array(m));
      if (step++ === 0) {
        const frag = parseHandshakeFragments(records[0]!.body)[0]!;
        const hello = decodeClientHello(frag.body);
        offered = (hello.extensions ?? []).map((e) => e.type);
        const sh = encodeServerHello({
          version: ProtocolVersion.DTLS1_2,
          random: new Uint8Array(32).fill(3),
          sessionId: EMPTY,
          cipherSuite: PSK_AES128_GCM,
          compressionMethod: 0,
          extensions: extensions(hello.extensions ?? []),
        });
        const flight = concatBytes([
          encodePlainRecord(ContentType.handshake, ProtocolVersion.DTLS1_2, 0, 0, encodeHandshake(HandshakeType.server_hello, 0, sh)),
          encodePlainRecord(ContentType.handshake, ProtocolVersion.DTLS1_2, 0, 1, encodeHandshake(HandshakeType.server_hello_done, 1, EMPTY)),
        ]);
        socket.send(flight, rinfo.port, rinfo.address);
        return;
      }
      resolve({
        handshakeTypes: records
          .filter((r) => r.type === ContentType.handshake && r.epoch === 0)
          .flatMap((r) => parseHandshakeFragments(r.body).map((f) => f.msgType)),
        alerts: records.filter((r) => r.type === ContentType.alert).map((r) => [...r.body]),
      });
    });
  });
  return { port: socket.address().port, answer, offered: () => offered };
}

function client(port: number) {
  // an ECDHE_PSK suite next to the plain one: the client offers supported_groups and ec_point_formats
  const c = connect({
    host: "127.0.0.1",
    port,
    psk: { identity: "dev", key: KEY },
    suites: ["TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256", "TLS_PSK_WITH_AES_128_GCM_SHA256"],
    timeoutMs: 1000,
  });
  c.catch(() => undefined); // the crafted server never finishes the handshake
  return c;
}

describe("ServerHello extensions (our client, crafted server)", () => {
  it("accepts ec_point_formats echoed with a plain PSK suite (and the other offered extensions) and goes on to ClientKeyExchange", async () => {
    const srv = await craftedServer(() => [
      { type: ExtensionType.ec_point_formats, data: EC_POINT_FORMATS_UNCOMPRESSED },
      { type: ExtensionType.extended_master_secret, data: EMPTY },
      { type: ExtensionType.renegotiation_info, data: EMPTY_RENEGOTIATION_INFO },
    ]);
    void client(srv.port); // never completes against the crafted server; client() handles its rejection
    const a = await srv.answer;
    expect(srv.offered()).toContain(ExtensionType.ec_point_formats);
    expect(a.alerts).toEqual([]);
    expect(a.handshakeTypes).toContain(HandshakeType.client_key_exchange);
  });

  it("refuses an extension it did not offer with unsupported_extension (110)", async () => {
    const srv = await craftedServer(() => [{ type: ExtensionType.encrypt_then_mac, data: EMPTY }]);
    const c = client(srv.port);
    const a = await srv.answer;
    expect(a.alerts).toEqual([[2, AlertDescription.unsupported_extension]]);
    await expect(c).rejects.toMatchObject({ code: "unsupported_extension" });
  });
});
