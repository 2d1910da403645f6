import { beforeAll, describe, expect, it } from "vitest";
import { verifyChain } from "../../src/dtls/cert-verify.ts";
import { parseCertificate, pemCertificates, type Certificate } from "../../src/crypto/index.ts";
import { ContentType, HandshakeType } from "../../src/dtls/constants.ts";
import { encodeHandshake } from "../../src/dtls/handshake-codec.ts";
import { ServerCore } from "../../src/dtls/server-core.ts";
import { CLIENT_PEER, Pipe, PSK_ID, PSK_KEY, serverConfig, suites } from "./harness.ts";
import { credential, makeTestPki, type TestPki } from "./test-certs.ts";

let pki: TestPki;
beforeAll(async () => {
  pki = await makeTestPki();
}, 60_000);

const PSK_GCM = suites("TLS_PSK_WITH_AES_128_GCM_SHA256");
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

describe("server stats: handshakes by suite and failures by code", () => {
  it("protected records aimed at a session that are replayed or do not authenticate are dropped unread and counted by cause", () => {
    const p = new Pipe({}, { suites: PSK_GCM });
    p.startClient({ suites: PSK_GCM });
    expect(p.runUntilEstablished()).toBe(true);
    let captured: Uint8Array | undefined;
    p.tamperToServer = (d) => {
      captured ??= d.slice();
      return d;
    };
    p.client.send(text("once"));
    p.run(1000);
    expect(p.serverData.map((d) => new TextDecoder().decode(d))).toEqual(["once"]);
    const record = captured as Uint8Array;
    // the same datagram again: a replay
    p.server.receive(CLIENT_PEER, record.slice(), p.now);
    // a later sequence number (inside the window) on the same sealed body: the AEAD's additional data no longer matches
    const forged = record.slice();
    forged[10] = ((forged[10] as number) + 7) & 0xff;
    p.server.receive(CLIENT_PEER, forged, p.now);
    expect(p.serverData).toHaveLength(1);
    expect(p.server.stats.recordsDropped).toEqual({ replayed: 1, unauthenticated: 1, cid_mismatch: 0, cid_missing: 0, bad_inner_plaintext: 0 });
    expect(p.serverSession?.connection.state).toBe("established");
  });

  it("counts a completed handshake under its suite", () => {
    const p = new Pipe({}, { suites: PSK_GCM });
    p.startClient({ suites: PSK_GCM });
    expect(p.runUntilEstablished()).toBe(true);
    const stats = p.server.stats;
    expect(stats.handshakesCompleted).toBe(1);
    expect(stats.handshakesBySuite).toEqual({ TLS_PSK_WITH_AES_128_GCM_SHA256: 1 });
    expect(stats.handshakeFailures).toEqual({});
  });

  it("an unknown PSK identity: failure unknown_psk_identity, and that alert sent", () => {
    const p = new Pipe({}, { suites: PSK_GCM });
    p.startClient({ suites: PSK_GCM }, { identity: "nobody", key: PSK_KEY });
    p.run(5000);
    expect(p.serverErrors.map((e) => e.code)).toEqual(["unknown_psk_identity"]);
    expect(p.server.stats.handshakeFailures).toEqual({ unknown_psk_identity: 1 });
    expect(p.server.stats.alertsSent).toEqual({ unknown_psk_identity: 1 });
    expect(p.server.stats.handshakesBySuite).toEqual({});
  });

  it("a wrong PSK: failure and alert bad_record_mac", () => {
    const p = new Pipe({}, { suites: PSK_GCM });
    p.startClient({ suites: PSK_GCM }, { identity: PSK_ID, key: new Uint8Array(16).fill(9) });
    p.run(5000);
    expect(p.server.stats.handshakeFailures).toEqual({ bad_record_mac: 1 });
    expect(p.server.stats.alertsSent).toEqual({ bad_record_mac: 1 });
  });

  it("a client that refuses the server certificate: its fatal alert counted as received, the failure as alert_received", () => {
    const cert = suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
    const p = new Pipe({}, { psk: undefined, suites: cert, certificates: [credential(pki.foreign)] });
    const anchors = pemCertificates(pki.caPem).map(parseCertificate);
    p.startClient({ suites: cert }, undefined, (c: readonly Certificate[]) => verifyChain(c, { anchors, servername: "localhost" }, new Date()));
    p.run(5000);
    expect(p.server.stats.alertsReceived).toEqual({ unknown_ca: 1 });
    expect(p.server.stats.handshakeFailures).toEqual({ alert_received: 1 });
    expect(p.server.stats.alertsSent).toEqual({});
  });

  it("ClientHellos refused over capacity count as over_capacity failures", () => {
    const p = new Pipe({}, { suites: PSK_GCM, maxHandshakes: 0 });
    p.startClient({ suites: PSK_GCM, retransmit: { initialMs: 1000, maxMs: 2000, maxRetransmits: 2 } });
    p.run(20_000);
    expect(p.server.stats.refusedOverCapacity).toBeGreaterThan(0);
    expect(p.server.stats.handshakeFailures).toEqual({ over_capacity: p.server.stats.refusedOverCapacity });
    expect(p.server.stats.handshakesFailed).toBe(0);
  });
});

describe("server stats: alerts", () => {
  it("close_notify from an established client: received, and answered (sent)", () => {
    const p = new Pipe({}, { suites: PSK_GCM });
    p.startClient({ suites: PSK_GCM });
    expect(p.runUntilEstablished()).toBe(true);
    p.client.close();
    p.run(100);
    expect(p.serverClosed).toBeUndefined();
    expect(p.server.stats.alertsReceived).toEqual({ close_notify: 1 });
    expect(p.server.stats.alertsSent).toEqual({ close_notify: 1 });
  });

  it("the server closing every session: one close_notify sent per session", () => {
    const p = new Pipe({}, { suites: PSK_GCM });
    p.startClient({ suites: PSK_GCM });
    expect(p.runUntilEstablished()).toBe(true);
    p.server.closeAll();
    expect(p.server.stats.alertsSent).toEqual({ close_notify: 1 });
  });

  it("a renegotiation attempt on an established session: no_renegotiation sent", () => {
    const p = new Pipe({}, { suites: PSK_GCM });
    p.startClient({ suites: PSK_GCM });
    expect(p.runUntilEstablished()).toBe(true);
    // A ClientHello inside the protected epoch, through the client's record writer.
    const conn = p.client as unknown as { writer: { record(type: number, epoch: number, body: Uint8Array): Uint8Array } };
    const ch = encodeHandshake(HandshakeType.client_hello, 9, new Uint8Array(0));
    p.server.receive(CLIENT_PEER, conn.writer.record(ContentType.handshake, 1, ch), p.now);
    expect(p.server.stats.alertsSent).toEqual({ no_renegotiation: 1 });
  });

  it("application data leaves every counter as it was", () => {
    const p = new Pipe({}, { suites: PSK_GCM });
    p.startClient({ suites: PSK_GCM });
    expect(p.runUntilEstablished()).toBe(true);
    const before = JSON.stringify(p.server.stats);
    for (let i = 0; i < 200; i++) p.client.send(text(`m${i}`));
    p.run(100);
    expect(p.serverData).toHaveLength(200);
    expect(JSON.stringify(p.server.stats)).toBe(before);
  });

  it("counters start empty", () => {
    const s = new ServerCore(serverConfig(), { send: () => {}, established: () => {}, handshakeFailed: () => {} }, 0);
    expect(s.stats).toMatchObject({ handshakesBySuite: {}, handshakeFailures: {}, alertsSent: {}, alertsReceived: {} });
  });
});
