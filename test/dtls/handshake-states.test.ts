/**
 * Every state of both handshake drivers, given a message it does not expect:
 * the driver fails with unexpected_message, and the error names what the
 * state expects and what came. The drivers are driven directly (they return
 * steps and hold no connection), against each other: the real server's
 * flights to the client, the real client's to the server, a wrong message
 * put in at the state under test. Then the same through the real connections
 * and server core: the alert goes out on the wire.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { AlertDescription, HandshakeType } from "../../src/dtls/constants.ts";
import type { HandshakeStep } from "../../src/dtls/connection.ts";
import { DtlsError } from "../../src/dtls/errors.ts";
import { ClientHandshake, type ClientAuth, type ClientResumption } from "../../src/dtls/handshake-client.ts";
import { ServerHandshake, type ServerAuth } from "../../src/dtls/handshake-server.ts";
import { decodeClientHello, EMPTY } from "../../src/dtls/messages.ts";
import type { ConnectionConfig } from "../../src/dtls/options.ts";
import type { HandshakeMessage } from "../../src/dtls/reassembly.ts";
import { parseRecords, type RawRecord } from "../../src/dtls/record.ts";
import { newResumptionRefusalCounts, serverResumption } from "../../src/dtls/resumption.ts";
import type { SavedSession } from "../../src/dtls/resumption-options.ts";
import { decodeSavedSession } from "../../src/dtls/saved-session.ts";
import { createCertificateAuthority, issueDeviceCertificate, type IssuedCertificate } from "../../src/pki/index.ts";
import { connectionConfig, Pipe, PSK_ID, PSK_KEY, suites } from "./harness.ts";
import { concatBytes } from "../../src/util/bytes.ts";
import { credential, makeTestPki, type TestPki } from "./test-certs.ts";

let pki: TestPki;
let device: IssuedCertificate;

beforeAll(async () => {
  pki = await makeTestPki();
  const { ca } = await createCertificateAuthority({ commonName: "device CA" });
  device = await issueDeviceCertificate(ca, { id: "sensor-7" });
}, 60_000);

const PSK = suites("TLS_PSK_WITH_AES_128_GCM_SHA256");
const ECDHE_PSK = suites("TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256");
const ECDSA = suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");

interface Setup {
  readonly config: ConnectionConfig;
  readonly client: ClientAuth;
  readonly server: ServerAuth;
  readonly resumption?: Omit<ClientResumption, "onSession"> | undefined;
}

function pskSetup(config: ConnectionConfig, hint?: string): Setup {
  return {
    config,
    client: { psk: { identity: PSK_ID, key: PSK_KEY }, verifyServer: undefined },
    server: serverAuth({ psk: { lookup: (id) => (id === PSK_ID ? PSK_KEY : undefined), hint } }),
  };
}

function certificateSetup(clientAuth: ServerAuth["clientAuth"] = "none"): Setup {
  return {
    config: connectionConfig({ suites: ECDSA }),
    client: { psk: undefined, verifyServer: () => undefined, certificate: credential(device) },
    server: serverAuth({ psk: undefined, certificates: [credential(pki.p256)], clientAuth, verifyClient: () => ({ identity: "sensor-7" }) }),
  };
}

function serverAuth(over: Partial<ServerAuth>): ServerAuth {
  return {
    psk: undefined,
    certificates: [],
    legacySha1Signatures: false,
    clientAuth: "none",
    clientCaNames: [],
    verifyClient: undefined,
    reauthorizeClient: undefined,
    resumption: undefined,
    ...over,
  };
}

/** The handshake messages of a step's flight as the peer reassembles them (the ChangeCipherSpec is no handshake message). */
function messagesOf(step: HandshakeStep): HandshakeMessage[] {
  const out: HandshakeMessage[] = [];
  for (const item of step.flight?.items ?? []) {
    if (item.kind === "handshake") out.push({ msgType: item.msgType, messageSeq: item.messageSeq, body: item.body, epoch: item.epoch });
  }
  return out;
}

/** A client and a server driver talking directly: the client's ClientHello (with the cookie already checked) started the server. */
class Talk {
  readonly client: ClientHandshake;
  readonly server: ServerHandshake;
  /** The server's first flight. */
  readonly serverFlight: HandshakeMessage[];

  constructor(setup: Setup) {
    const resumption: ClientResumption | undefined = setup.resumption === undefined ? undefined : { ...setup.resumption, onSession: () => undefined };
    this.client = new ClientHandshake({ config: setup.config }, setup.client, 0, resumption);
    const hello = messagesOf(this.client.start())[0];
    if (hello === undefined) throw new Error("no ClientHello");
    this.server = new ServerHandshake(setup.config, setup.server, decodeClientHello(hello.body), hello.messageSeq, hello.body, 0, {
      resumptionsRefused: newResumptionRefusalCounts(),
    });
    this.serverFlight = messagesOf(this.server.start());
  }

  /** The server's first flight up to (not including) its message of type `before` into the client; the last step. */
  clientTakes(before?: number): HandshakeStep {
    let step: HandshakeStep = {};
    for (const m of this.serverFlight) {
      if (m.msgType === before) break;
      step = this.client.onMessage(m);
    }
    return step;
  }

  /** The client's second flight (after the whole server flight), up to (not including) its message of type `before`, into the server. */
  serverTakes(before?: number): { readonly clientFlight: HandshakeMessage[]; readonly last: HandshakeStep } {
    const clientFlight = messagesOf(this.clientTakes());
    let last: HandshakeStep = {};
    for (const m of clientFlight) {
      if (m.msgType === before) break;
      last = this.server.onMessage(m);
    }
    return { clientFlight, last };
  }
}

function wrong(msgType: number, epoch = 0): HandshakeMessage {
  return { msgType, messageSeq: 99, body: EMPTY, epoch };
}

/** `f` fails with unexpected_message, its message naming what was expected and what came. */
function expectUnexpected(f: () => unknown, message: string): void {
  let error: unknown;
  try {
    f();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(DtlsError);
  const e = error as DtlsError;
  expect(e.code).toBe("unexpected_message");
  expect(e.alert).toBe(AlertDescription.unexpected_message);
  expect(e.message).toBe(message);
}

/** A first full handshake with resumption on, to the client's saved session; the server's resumption settings for the next. */
function savedSession(wall: { now: number }): { setup: Setup; session: SavedSession } {
  const base = pskSetup(connectionConfig({ suites: PSK }));
  const server = serverAuth({ ...base.server, resumption: serverResumption({ ticketLifetimeMs: 10_000, wallClock: () => wall.now }) });
  const setup: Setup = { ...base, server, resumption: { offer: undefined, server: "test:1", wallClock: () => wall.now } };
  const t = new Talk(setup);
  const { last } = t.serverTakes();
  let session: SavedSession | undefined;
  for (const m of messagesOf(last)) session = t.client.onMessage(m).session ?? session;
  if (session === undefined) throw new Error("no session saved");
  return { setup, session };
}

function resumeTalk(setup: Setup, session: SavedSession): Talk {
  const t = new Talk({ ...setup, resumption: { offer: decodeSavedSession(session), server: "test:1", wallClock: () => 0 } });
  expect(t.serverFlight.map((m) => m.msgType)).toContain(HandshakeType.finished);
  return t;
}

describe("client states, each given a message it does not expect", () => {
  it("await_server_hello", () => {
    const t = new Talk(pskSetup(connectionConfig({ suites: PSK })));
    expectUnexpected(
      () => t.client.onMessage(wrong(HandshakeType.server_hello_done)),
      "expected ServerHello or HelloVerifyRequest, got ServerHelloDone (14)",
    );
  });

  it("await_certificate (certificate suites)", () => {
    const t = new Talk(certificateSetup());
    t.clientTakes(HandshakeType.certificate);
    expectUnexpected(() => t.client.onMessage(wrong(HandshakeType.server_key_exchange)), "expected Certificate, got ServerKeyExchange (12)");
  });

  it("await_server_key_exchange (certificate suites, after the Certificate)", () => {
    const t = new Talk(certificateSetup());
    t.clientTakes(HandshakeType.server_key_exchange);
    expectUnexpected(() => t.client.onMessage(wrong(HandshakeType.server_hello_done)), "expected ServerKeyExchange, got ServerHelloDone (14)");
  });

  it("await_ecdhe_psk_server_key_exchange", () => {
    const t = new Talk(pskSetup(connectionConfig({ suites: ECDHE_PSK })));
    t.clientTakes(HandshakeType.server_key_exchange);
    expectUnexpected(() => t.client.onMessage(wrong(HandshakeType.server_hello_done)), "expected ServerKeyExchange, got ServerHelloDone (14)");
  });

  it("await_psk_hint_or_done", () => {
    const t = new Talk(pskSetup(connectionConfig({ suites: PSK })));
    t.clientTakes(HandshakeType.server_hello_done);
    expectUnexpected(
      () => t.client.onMessage(wrong(HandshakeType.certificate)),
      "expected ServerKeyExchange or ServerHelloDone, got Certificate (11)",
    );
  });

  it("await_certificate_request_or_done", () => {
    const t = new Talk(certificateSetup("request"));
    t.clientTakes(HandshakeType.certificate_request);
    expectUnexpected(
      () => t.client.onMessage(wrong(HandshakeType.certificate)),
      "expected CertificateRequest or ServerHelloDone, got Certificate (11)",
    );
  });

  it("await_server_hello_done: after a PSK hint, after ECDHE_PSK parameters, after a CertificateRequest", () => {
    for (const setup of [
      pskSetup(connectionConfig({ suites: PSK }), "hint"),
      pskSetup(connectionConfig({ suites: ECDHE_PSK })),
      certificateSetup("request"),
    ]) {
      const t = new Talk(setup);
      t.clientTakes(HandshakeType.server_hello_done);
      expectUnexpected(() => t.client.onMessage(wrong(HandshakeType.server_key_exchange)), "expected ServerHelloDone, got ServerKeyExchange (12)");
    }
  });

  it("await_new_session_ticket (the server announced a ticket)", () => {
    const wall = { now: 1_000_000 };
    const { setup } = savedSession(wall);
    const t = new Talk(setup);
    const serverLast = messagesOf(t.serverTakes().last);
    expect(serverLast.map((m) => m.msgType)).toEqual([HandshakeType.new_session_ticket, HandshakeType.finished]);
    expectUnexpected(() => t.client.onMessage(serverLast[1] as HandshakeMessage), "expected NewSessionTicket, got Finished (20)");
  });

  it("await_finished: another message, and the Finished unprotected", () => {
    for (const [msg, message] of [
      [wrong(HandshakeType.new_session_ticket, 1), "expected Finished, got NewSessionTicket (4)"],
      [wrong(HandshakeType.server_hello_done, 0), "expected Finished, got ServerHelloDone (14)"],
      [wrong(HandshakeType.finished, 0), "Finished arrived unprotected"],
    ] as const) {
      const t = new Talk(pskSetup(connectionConfig({ suites: PSK })));
      t.serverTakes();
      expectUnexpected(() => t.client.onMessage(msg), message);
    }
  });

  it("await_resumed_ticket (the server renews the ticket)", () => {
    const wall = { now: 1_000_000 };
    const { setup, session } = savedSession(wall);
    wall.now += 6_000; // past half the ticket's lifetime: renewed
    const t = resumeTalk(setup, session);
    expect(t.serverFlight.map((m) => m.msgType)).toEqual([HandshakeType.server_hello, HandshakeType.new_session_ticket, HandshakeType.finished]);
    t.clientTakes(HandshakeType.new_session_ticket);
    expectUnexpected(() => t.client.onMessage(t.serverFlight[2] as HandshakeMessage), "expected NewSessionTicket, got Finished (20)");
  });

  it("await_resumed_finished", () => {
    const wall = { now: 1_000_000 };
    const { setup, session } = savedSession(wall);
    const t = resumeTalk(setup, session);
    expect(t.serverFlight.map((m) => m.msgType)).toEqual([HandshakeType.server_hello, HandshakeType.finished]);
    const keys = t.clientTakes(HandshakeType.finished);
    expect(keys.keys).toBeDefined();
    expectUnexpected(() => t.client.onMessage(wrong(HandshakeType.server_hello_done, 1)), "expected Finished, got ServerHelloDone (14)");
    expectUnexpected(
      () => resumeTalk(setup, session).client.onMessage(wrong(HandshakeType.certificate, 0)),
      "expected ServerHello or HelloVerifyRequest, got Certificate (11)",
    );
  });

  it("before start, and started twice: internal_error", () => {
    const setup = pskSetup(connectionConfig({ suites: PSK }));
    const c = new ClientHandshake({ config: setup.config }, setup.client, 0);
    expect(() => c.onMessage(wrong(HandshakeType.server_hello))).toThrow(/not started/);
    c.start();
    expect(() => c.start()).toThrow(/started twice/);
  });
});

describe("server states, each given a message it does not expect", () => {
  it("await_client_certificate (we asked for one)", () => {
    const t = new Talk(certificateSetup("request"));
    t.serverTakes(HandshakeType.certificate);
    expectUnexpected(
      () => t.server.onMessage(wrong(HandshakeType.client_key_exchange)),
      "expected Certificate (we asked for one), got ClientKeyExchange (16)",
    );
  });

  it("await_client_key_exchange: PSK, ECDHE_PSK, certificates with and without a client Certificate", () => {
    for (const setup of [
      pskSetup(connectionConfig({ suites: PSK })),
      pskSetup(connectionConfig({ suites: ECDHE_PSK })),
      certificateSetup(),
      certificateSetup("request"),
    ]) {
      const t = new Talk(setup);
      t.serverTakes(HandshakeType.client_key_exchange);
      expectUnexpected(() => t.server.onMessage(wrong(HandshakeType.finished, 1)), "expected ClientKeyExchange, got Finished (20)");
    }
  });

  it("await_certificate_verify (the client sent a certificate)", () => {
    const t = new Talk(certificateSetup("require"));
    const { clientFlight } = t.serverTakes(HandshakeType.certificate_verify);
    expect(clientFlight.map((m) => m.msgType)).toContain(HandshakeType.certificate_verify);
    expectUnexpected(() => t.server.onMessage(wrong(HandshakeType.finished, 1)), "expected CertificateVerify, got Finished (20)");
  });

  it("await_finished: another message, and the Finished unprotected", () => {
    for (const [msg, message] of [
      [wrong(HandshakeType.client_key_exchange, 0), "expected Finished, got ClientKeyExchange (16)"],
      [wrong(HandshakeType.certificate_verify, 1), "expected Finished, got CertificateVerify (15)"],
      [wrong(HandshakeType.finished, 0), "Finished arrived unprotected"],
    ] as const) {
      const t = new Talk(pskSetup(connectionConfig({ suites: PSK })));
      const { last } = t.serverTakes(HandshakeType.finished);
      expect(last.keys).toBeDefined();
      expectUnexpected(() => t.server.onMessage(msg), message);
    }
  });

  it("await_resumed_finished", () => {
    const wall = { now: 1_000_000 };
    const { setup, session } = savedSession(wall);
    const t = resumeTalk(setup, session);
    expectUnexpected(() => t.server.onMessage(wrong(HandshakeType.client_key_exchange, 0)), "expected Finished, got ClientKeyExchange (16)");
    expectUnexpected(() => resumeTalk(setup, session).server.onMessage(wrong(HandshakeType.finished, 0)), "Finished arrived unprotected");
  });

  it("a message type no handshake has is named by its number", () => {
    const t = new Talk(pskSetup(connectionConfig({ suites: PSK })));
    expectUnexpected(() => t.server.onMessage(wrong(77)), "expected ClientKeyExchange, got handshake message type 77");
  });
});

describe("the steps, in the order the connection applies them", () => {
  it("full PSK handshake with a ticket: flights, keys before the protected Finished, session before established", () => {
    const wall = { now: 1_000_000 };
    const { setup } = savedSession(wall);
    const t = new Talk(setup);
    const clientSecond = t.clientTakes();
    expect(clientSecond.keys).toBeDefined();
    expect(clientSecond.flight?.role).toBe("expects_reply");
    expect(clientSecond.flight?.items.map((i) => (i.kind === "ccs" ? "ccs" : i.msgType))).toEqual([
      HandshakeType.client_key_exchange,
      "ccs",
      HandshakeType.finished,
    ]);
    const msgs = messagesOf(clientSecond);
    expect(t.server.onMessage(msgs[0] as HandshakeMessage).keys).toBeDefined();
    const last = t.server.onMessage(msgs[1] as HandshakeMessage);
    expect(last.flight?.role).toBe("last");
    expect(last.established?.identity).toBe(PSK_ID);
    const [nst, fin] = messagesOf(last);
    expect(t.client.onMessage(nst as HandshakeMessage)).toEqual({});
    const done = t.client.onMessage(fin as HandshakeMessage);
    expect(done.session).toBeDefined();
    expect(done.established).toMatchObject({ identity: PSK_ID, resumed: false });
    expect(done.flight).toBeUndefined();
  });

  it("abbreviated handshake: the server's flight awaits a reply, the client's is the last", () => {
    const wall = { now: 1_000_000 };
    const { setup, session } = savedSession(wall);
    const t = resumeTalk(setup, session);
    const final = t.clientTakes();
    expect(final.flight?.role).toBe("last");
    expect(final.session).toBeDefined();
    expect(final.established).toMatchObject({ identity: PSK_ID, resumed: true });
    const done = t.server.onMessage(messagesOf(final)[0] as HandshakeMessage);
    expect(done.established).toMatchObject({ identity: PSK_ID, resumed: true });
  });
});

describe("through the connections and the server core: the alert goes out", () => {
  /** Rewrites the message type of the epoch-0 handshake records of type `from` in a datagram to `to`. */
  const retype =
    (from: number, to: number) =>
    (d: Uint8Array): Uint8Array => {
      const copy = new Uint8Array(d);
      for (const rec of parseRecords(copy)) {
        if (rec.type === 22 && rec.epoch === 0 && rec.body[0] === from) rec.body[0] = to;
      }
      return copy;
    };

  it("server in await_client_key_exchange given a CertificateVerify: unexpected_message alert, the client hears it", () => {
    const p = new Pipe();
    p.tamperToServer = retype(HandshakeType.client_key_exchange, HandshakeType.certificate_verify);
    p.startClient({ suites: PSK });
    p.run(5_000);
    expect(p.serverErrors.map((e) => e.message)).toEqual(["expected ClientKeyExchange, got CertificateVerify (15)"]);
    expect(p.server.stats.alertsSent.unexpected_message).toBe(1);
    expect(p.clientClosed?.code).toBe("alert_received");
    expect(p.clientClosed?.alert).toBe(AlertDescription.unexpected_message);
  });

  it("client in await_psk_hint_or_done given a CertificateRequest: unexpected_message alert, the server hears it", () => {
    const p = new Pipe();
    p.tamperToClient = retype(HandshakeType.server_hello_done, HandshakeType.certificate_request);
    p.startClient({ suites: PSK });
    p.run(5_000);
    expect(p.clientClosed?.code).toBe("unexpected_message");
    expect(p.clientClosed?.message).toBe("expected ServerKeyExchange or ServerHelloDone, got CertificateRequest (13)");
    expect(p.server.stats.alertsReceived.unexpected_message).toBe(1);
  });
});

describe("a Finished that comes before the keys is read once the step installs them (no retransmission)", () => {
  /** A datagram with a protected record whose epoch-0 handshake records are moved behind the rest (CCS and Finished first). */
  let reordered = 0;
  const finishedFirst = (d: Uint8Array): Uint8Array => {
    const records = parseRecords(d);
    const moved = records.some((r) => r.epoch === 1);
    if (moved) reordered++;
    if (!moved) return d;
    const late = (r: RawRecord): boolean => r.epoch === 0 && r.type === 22;
    const order = [...records.filter((r) => !late(r)), ...records.filter(late)];
    return concatBytes(order.flatMap((r) => [r.header, r.body]));
  };

  it("server, full handshake: the client's CCS and Finished before its ClientKeyExchange", () => {
    const p = new Pipe();
    p.tamperToServer = finishedFirst;
    // no CID: the client's Finished goes as a plain protected record, which finishedFirst can move
    p.startClient({ suites: PSK, connectionId: false });
    expect(p.runUntilEstablished()).toBe(true);
    expect(p.now).toBeLessThan(1000); // no retransmission was needed
    expect(p.datagrams.toServer).toBe(3); // ClientHello, ClientHello(cookie), the client's second flight once
    expect(reordered).toBe(1);
  });

  it("client, abbreviated handshake: the server's CCS and Finished before its ServerHello", () => {
    const res = serverResumption({});
    const first = new Pipe({}, { resumption: res });
    first.startClient({ suites: PSK }, undefined, undefined, undefined, { offer: undefined, server: "test:1", wallClock: Date.now });
    expect(first.runUntilEstablished()).toBe(true);
    const saved = first.clientSession;
    if (saved === undefined) throw new Error("no session saved");
    const p = new Pipe({}, { resumption: res });
    reordered = 0;
    p.tamperToClient = finishedFirst;
    p.startClient({ suites: PSK }, undefined, undefined, undefined, { offer: decodeSavedSession(saved), server: "test:1", wallClock: Date.now });
    expect(p.runUntilEstablished()).toBe(true);
    expect(p.clientInfo?.resumed).toBe(true);
    expect(p.now).toBeLessThan(1000);
    expect(p.datagrams.toClient).toBe(2); // HelloVerifyRequest, the server's flight once
    expect(reordered).toBe(1);
  });
});
