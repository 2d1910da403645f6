/**
 * Session resumption through the real endpoint on 127.0.0.1 (both roles
 * ours): PSK and ECDHE_ECDSA with mutual certificates, by ticket and by
 * session ID; every refusal cause sends the client through a full handshake
 * (never an alert) and is counted; a refused authorization cannot resume; the
 * session-ID cache keeps its bound; a resumed session has the original identity.
 */
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  connect,
  listen,
  type ConnectOptions,
  type DtlsConnection,
  type DtlsServer,
  type ListenOptions,
  type SavedSession,
} from "../../src/dtls/index.ts";
import { decodeSavedSession, encodeSavedSession } from "../../src/dtls/saved-session.ts";
import type { TicketKeySource } from "../../src/dtls/resumption-options.ts";
import { RotatingTicketKeys } from "../../src/dtls/ticket-keys.ts";
import { createCertificateAuthority, issueDeviceCertificate, type IssuedCertificate } from "../../src/pki/index.ts";
import { makeTestPki, type TestPki } from "./test-certs.ts";

const KEY = Buffer.from("00112233445566778899aabbccddeeff", "hex");
const OTHER_KEY = Buffer.from("ffeeddccbbaa99887766554433221100", "hex");
/** Issues no tickets: clients resume by session ID. */
const NO_TICKETS: TicketKeySource = { current: () => undefined, byName: () => undefined };

let servers: DtlsServer[] = [];
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});

/** A server on 127.0.0.1 whose sessions are kept (and answered: "echo:" + record). */
async function server(opts: Partial<ListenOptions>): Promise<{ s: DtlsServer; port: number; sessions: DtlsConnection[] }> {
  const s = await listen({ host: "127.0.0.1", port: 0, sockets: 1, ...opts });
  servers.push(s);
  const sessions: DtlsConnection[] = [];
  s.on("session", (c) => {
    sessions.push(c);
    c.on("data", (d) => c.send(Buffer.concat([Buffer.from("echo:"), d])));
  });
  return { s, port: s.address().port, sessions };
}

/** Connects, checks one record goes both ways, closes; returns the connection (its info and session). */
async function roundTrip(o: ConnectOptions): Promise<DtlsConnection> {
  const c = await connect({ timeoutMs: 5000, ...o });
  const echoed = new Promise<string>((resolve) => c.once("data", (d) => resolve(d.toString())));
  c.send(Buffer.from("ping"));
  expect(await echoed).toBe("echo:ping");
  c.close();
  return c;
}

/** A mutable wall clock for the server's ticket checks. */
function wall(): { now: number; clock: () => number } {
  const w = { now: Date.now(), clock: () => w.now };
  return w;
}

describe("PSK resumption", () => {
  const keys = new Map([["dev", KEY]]);
  const psk = { identity: "dev", key: KEY };

  for (const mode of ["ticket", "session ID"] as const) {
    it(`resumes by ${mode}: abbreviated handshake, the original identity, counted; the session is given again`, async () => {
      const { s, port, sessions } = await server({ psk: { keys }, resumption: mode === "ticket" ? {} : { ticketKeys: NO_TICKETS } });
      const first = await roundTrip({ host: "127.0.0.1", port, psk });
      expect(first.info.resumed).toBe(false);
      const saved = first.session;
      expect(saved).toBeDefined();
      const decoded = decodeSavedSession(saved as SavedSession);
      // key name, nonce, sealed state and tag; or no ticket at all
      expect((decoded?.ticket.length ?? 0) > 16 + 12 + 16).toBe(mode === "ticket");
      expect(decoded?.sessionId.length).toBe(mode === "ticket" ? 0 : 32);
      const second = await roundTrip({ host: "127.0.0.1", port, psk, session: saved });
      expect(second.info).toMatchObject({ resumed: true, identity: "dev", suite: first.info.suite, extendedMasterSecret: true });
      expect(sessions.map((c) => [c.info.resumed, c.info.identity])).toEqual([
        [false, "dev"],
        [true, "dev"],
      ]);
      expect(s.stats.handshakesResumed).toBe(1);
      expect(s.stats.handshakesCompleted).toBe(2);
      expect(second.session).toBeDefined();
      const third = await roundTrip({ host: "127.0.0.1", port, psk, session: second.session });
      expect(third.info.resumed).toBe(true);
    });
  }

  it("the 'session' event gives the saved session after connect", async () => {
    const { port } = await server({ psk: { keys } });
    const c = await connect({ host: "127.0.0.1", port, psk });
    const got = await new Promise<SavedSession>((resolve) => c.once("session", resolve));
    expect(got).toBe(c.session);
    c.close();
  });

  it("a saved session is not offered to another server, or with another identity", async () => {
    const both = new Map([
      ["dev", KEY],
      ["dev2", KEY],
    ]);
    const a = await server({ psk: { keys: both } });
    const b = await server({ psk: { keys: both } });
    const saved = (await roundTrip({ host: "127.0.0.1", port: a.port, psk })).session;
    expect((await roundTrip({ host: "127.0.0.1", port: b.port, psk, session: saved })).info.resumed).toBe(false);
    expect((await roundTrip({ host: "127.0.0.1", port: a.port, psk: { identity: "dev2", key: KEY }, session: saved })).info.resumed).toBe(false);
    // nothing was offered, so nothing was refused
    expect(Object.values(b.s.stats.resumptionsRefused).every((n) => n === 0)).toBe(true);
    expect(a.s.stats.resumptionsRefused.unknown_key + a.s.stats.resumptionsRefused.bad_ticket).toBe(0);
  });

  it("garbage in ConnectOptions.session is not offered: a full handshake", async () => {
    const { port } = await server({ psk: { keys } });
    expect((await roundTrip({ host: "127.0.0.1", port, psk, session: new Uint8Array([1, 2, 3]) })).info.resumed).toBe(false);
  });
});

describe("ticket renewal and key rotation", () => {
  const psk = { identity: "dev", key: KEY };
  const keys = new Map([["dev", KEY]]);

  it("a ticket past half its lifetime resumes and is renewed (NewSessionTicket in the abbreviated handshake); the session's age is kept", async () => {
    const w = wall();
    const { s, port } = await server({ psk: { keys }, resumption: { ticketLifetimeMs: 60_000, maxSessionAgeMs: 100_000, wallClock: w.clock } });
    const first = await roundTrip({ host: "127.0.0.1", port, psk });
    w.now += 31_000;
    const second = await roundTrip({ host: "127.0.0.1", port, psk, session: first.session });
    expect(second.info.resumed).toBe(true);
    const a = decodeSavedSession(first.session as SavedSession);
    const b = decodeSavedSession(second.session as SavedSession);
    expect(b?.ticket).not.toEqual(a?.ticket);
    expect(b?.createdAt).toBe(a?.createdAt);
    // the renewed ticket lives on past the first one's lifetime...
    w.now += 40_000;
    const third = await roundTrip({ host: "127.0.0.1", port, psk, session: second.session });
    expect(third.info.resumed).toBe(true);
    // ...but not past the session's maximum age, counted from the full handshake
    w.now += 30_000;
    expect((await roundTrip({ host: "127.0.0.1", port, psk, session: third.session })).info.resumed).toBe(false);
    expect(s.stats.resumptionsRefused.session_too_old).toBe(1);
  });

  it("after the key rotates, a ticket of the previous key still resumes and comes back sealed with the new key", async () => {
    const w = wall();
    const { port } = await server({ psk: { keys }, resumption: { ticketLifetimeMs: 60_000, wallClock: w.clock } });
    const first = await roundTrip({ host: "127.0.0.1", port, psk });
    w.now += 50_000;
    // a full handshake after the key's notAfter: the source makes a new key
    w.now += 11_000;
    const other = await roundTrip({ host: "127.0.0.1", port, psk: { identity: "dev", key: KEY } });
    const newKeyName = decodeSavedSession(other.session as SavedSession)?.ticket.subarray(0, 16);
    w.now -= 2_000; // the first ticket back within its lifetime (59 s old)
    const second = await roundTrip({ host: "127.0.0.1", port, psk, session: first.session });
    expect(second.info.resumed).toBe(true);
    const renewed = decodeSavedSession(second.session as SavedSession)?.ticket.subarray(0, 16);
    expect(renewed).toEqual(newKeyName);
    expect(renewed).not.toEqual(decodeSavedSession(first.session as SavedSession)?.ticket.subarray(0, 16));
  });

  it("RotatingTicketKeys: one key until its notAfter, the previous one opens tickets until it retires", () => {
    const keysSource = new RotatingTicketKeys(1000);
    const k1 = keysSource.current(0);
    expect(keysSource.current(999)).toBe(k1);
    const k2 = keysSource.current(1000);
    expect(k2).not.toBe(k1);
    expect(k2?.name).not.toEqual(k1?.name);
    expect(keysSource.byName(k1?.name ?? new Uint8Array(16), 1999)).toBe(k1);
    expect(keysSource.byName(k1?.name ?? new Uint8Array(16), 2000)).toBeUndefined();
    expect(keysSource.byName(k2?.name ?? new Uint8Array(16), 2000)).toBe(k2);
    expect(keysSource.byName(new Uint8Array(16), 0)).toBeUndefined();
  });
});

describe("refusals fall back to a full handshake, counted by cause", () => {
  const psk = { identity: "dev", key: KEY };

  async function refusal(
    opts: Partial<ListenOptions>,
    between: (saved: SavedSession) => SavedSession | void,
    cause: string,
    second: Partial<ConnectOptions> = {},
  ): Promise<{ s: DtlsServer; port: number; again: DtlsConnection }> {
    const { s, port, sessions } = await server(opts);
    const saved = (await roundTrip({ host: "127.0.0.1", port, psk })).session as SavedSession;
    const offered = between(saved) ?? saved;
    const again = await roundTrip({ host: "127.0.0.1", port, psk, session: offered, ...second });
    expect(again.info.resumed).toBe(false);
    expect(sessions.map((c) => c.info.resumed)).toEqual([false, false]);
    expect(s.stats.handshakesResumed).toBe(0);
    expect(s.stats.resumptionsRefused).toMatchObject({ [cause]: 1 });
    expect(Object.values(s.stats.resumptionsRefused).reduce((a, b) => a + b, 0)).toBe(1);
    expect(s.stats.handshakesFailed).toBe(0);
    return { s, port, again };
  }

  it("a ticket sealed with a retired key (after two key lifetimes); the full handshake's new session replaces it and resumes", async () => {
    const w = wall();
    const { s, port, again } = await refusal(
      { psk: { keys: new Map([["dev", KEY]]) }, resumption: { ticketLifetimeMs: 60_000, wallClock: w.clock } },
      () => {
        w.now += 121_000;
      },
      "unknown_key",
    );
    expect((await roundTrip({ host: "127.0.0.1", port, psk, session: again.session })).info.resumed).toBe(true);
    expect(s.stats.handshakesResumed).toBe(1);
  });

  it("a ticket older than ticketLifetimeMs (its key not yet retired)", async () => {
    const w = wall();
    await refusal(
      { psk: { keys: new Map([["dev", KEY]]) }, resumption: { ticketLifetimeMs: 60_000, wallClock: w.clock } },
      () => {
        w.now += 61_000;
      },
      "ticket_expired",
    );
  });

  it("a session older than maxSessionAgeMs, however fresh its ticket", async () => {
    const w = wall();
    await refusal(
      { psk: { keys: new Map([["dev", KEY]]) }, resumption: { ticketLifetimeMs: 600_000, maxSessionAgeMs: 60_000, wallClock: w.clock } },
      () => {
        w.now += 61_000;
      },
      "session_too_old",
    );
  });

  it("a tampered ticket", async () => {
    await refusal(
      { psk: { keys: new Map([["dev", KEY]]) } },
      (saved) => {
        const s = decodeSavedSession(saved);
        if (s === undefined) throw new Error("saved session does not decode");
        const ticket = new Uint8Array(s.ticket);
        ticket[40] = (ticket[40] as number) ^ 1;
        return encodeSavedSession({ ...s, ticket });
      },
      "bad_ticket",
    );
  });

  it("the PSK identity removed (its device deleted): a full handshake, which fails", async () => {
    const keys = new Map([["dev", KEY]]);
    const { s, port } = await server({ psk: { keys } });
    const saved = (await roundTrip({ host: "127.0.0.1", port, psk })).session;
    keys.delete("dev");
    await expect(connect({ host: "127.0.0.1", port, psk, session: saved, timeoutMs: 5000 })).rejects.toMatchObject({ code: "alert_received" });
    expect(s.stats.resumptionsRefused.psk_unknown).toBe(1);
    expect(s.stats.handshakesResumed).toBe(0);
  });

  it("the identity's PSK changed: a full handshake with the new key", async () => {
    const keys = new Map([["dev", KEY]]);
    await refusal(
      { psk: { keys } },
      () => {
        keys.set("dev", OTHER_KEY);
      },
      "psk_changed",
      { psk: { identity: "dev", key: OTHER_KEY } },
    );
  });

  it("extended master secret: a session without EMS is not resumed by a hello with it (RFC 7627 5.3)", async () => {
    // a session made without EMS, as a client that did not offer it would hold: its ticket sealed here by the server
    const keys = new Map([["dev", KEY]]);
    const { s, port } = await server({ psk: { keys }, requireExtendedMasterSecret: false });
    const made = await roundTrip({ host: "127.0.0.1", port, psk });
    // our client always offers EMS, so make the server's ticket say "no EMS": seal one with the server's own key source
    const w = decodeSavedSession(made.session as SavedSession);
    if (w === undefined) throw new Error("no session");
    const ticketKeys = keySource();
    const { s: s2, port: port2 } = await server({ psk: { keys }, resumption: { ticketKeys } });
    const { sealTicket, pskDigest } = await import("../../src/dtls/resumption.ts");
    const { defaultCrypto } = await import("../../src/crypto/index.ts");
    const key = ticketKeys.current(Date.now());
    if (key === undefined) throw new Error("no key");
    const ticket = sealTicket(defaultCrypto, key, { ...w, ems: false, issuedAt: Date.now(), pskDigest: pskDigest(defaultCrypto.digest, KEY) });
    const offered = encodeSavedSession({ ...w, server: `127.0.0.1:${port2}`, ticket, ems: false });
    const again = await roundTrip({ host: "127.0.0.1", port: port2, psk, session: offered });
    expect(again.info.resumed).toBe(false);
    expect(s2.stats.resumptionsRefused.ems_mismatch).toBe(1);
    // and the same ticket with EMS resumes: the refusal was the EMS flag alone
    const good = sealTicket(defaultCrypto, key, { ...w, issuedAt: Date.now(), pskDigest: pskDigest(defaultCrypto.digest, KEY) });
    const ok = await roundTrip({
      host: "127.0.0.1",
      port: port2,
      psk,
      session: encodeSavedSession({ ...w, server: `127.0.0.1:${port2}`, ticket: good }),
    });
    expect(ok.info.resumed).toBe(true);
    expect(s.stats.handshakesResumed).toBe(0);
  });

  it("the session-ID cache keeps at most sessionCacheSize sessions, least recently used out", async () => {
    const { s, port } = await server({ psk: { keys: new Map([["dev", KEY]]) }, resumption: { ticketKeys: NO_TICKETS, sessionCacheSize: 2 } });
    const saved: SavedSession[] = [];
    for (let i = 0; i < 3; i++) saved.push((await roundTrip({ host: "127.0.0.1", port, psk })).session as SavedSession);
    expect(s.stats.sessionCacheSize).toBe(2);
    expect((await roundTrip({ host: "127.0.0.1", port, psk, session: saved[0] })).info.resumed).toBe(false);
    expect(s.stats.resumptionsRefused.unknown_session_id).toBe(1);
    expect((await roundTrip({ host: "127.0.0.1", port, psk, session: saved[2] })).info.resumed).toBe(true);
    expect(s.stats.sessionCacheSize).toBe(2);
  });

  it("resumption off: no ticket, no session ID, nothing to offer", async () => {
    const { port } = await server({ psk: { keys: new Map([["dev", KEY]]) }, resumption: { enabled: false } });
    expect((await roundTrip({ host: "127.0.0.1", port, psk })).session).toBeUndefined();
  });
});

/** A ticket key source the test can reach (one fixed key). */
function keySource(): TicketKeySource {
  const key = {
    name: new Uint8Array(16).fill(7),
    secret: new Uint8Array(32).fill(9),
    notBefore: 0,
    notAfter: Number.MAX_SAFE_INTEGER,
    retiresAt: Number.MAX_SAFE_INTEGER,
  };
  return { current: () => key, byName: (name) => (name.every((b, i) => b === key.name[i]) ? key : undefined) };
}

describe("ECDHE_ECDSA with client certificates", () => {
  let pki: TestPki;
  let device: IssuedCertificate;
  let deviceCaPem = "";
  beforeAll(async () => {
    pki = await makeTestPki();
    const { ca } = await createCertificateAuthority({ commonName: "device CA" });
    device = await issueDeviceCertificate(ca, { id: "sensor-7" });
    deviceCaPem = ca.certPem;
  }, 60_000);

  function certServer(mode: "ticket" | "session ID", refused: Set<string>) {
    return server({
      certificates: [{ cert: pki.p256.chainPem, key: pki.p256.keyPem }],
      clientAuth: "require",
      clientCa: deviceCaPem,
      authorizeClient: (identity) => (refused.has(identity) ? { code: "certificate_revoked", message: `${identity} is revoked` } : undefined),
      ...(mode === "ticket" ? {} : { resumption: { ticketKeys: NO_TICKETS } }),
    });
  }

  const clientOpts = (port: number): ConnectOptions => ({
    host: "127.0.0.1",
    port,
    ca: pki.caPem,
    servername: "localhost",
    cert: device.chainPem,
    key: device.keyPem,
    suites: ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
  });

  for (const mode of ["ticket", "session ID"] as const) {
    it(`resumes by ${mode} with the original certificate identity, subject and fingerprint`, async () => {
      const { s, port, sessions } = await certServer(mode, new Set());
      const first = await roundTrip(clientOpts(port));
      const second = await roundTrip({ ...clientOpts(port), session: first.session });
      expect(second.info.resumed).toBe(true);
      expect(second.info.peerCertificate).toEqual(first.info.peerCertificate);
      const [a, b] = sessions;
      expect(a?.info.resumed).toBe(false);
      expect(b?.info).toMatchObject({ resumed: true, identity: a?.info.identity, peerCertificate: a?.info.peerCertificate, group: a?.info.group });
      expect(b?.info.peerCertificate?.fingerprint256).toBe(device.fingerprint.hex);
      expect(s.stats.handshakesResumed).toBe(1);
    });
  }

  it("a device revoked since (authorizeClient refuses) cannot resume: refused, then its full handshake fails", async () => {
    const refused = new Set<string>();
    const { s, port } = await certServer("ticket", refused);
    const first = await roundTrip(clientOpts(port));
    refused.add("sensor-7");
    await expect(connect({ ...clientOpts(port), session: first.session, timeoutMs: 5000 })).rejects.toMatchObject({ code: "alert_received" });
    expect(s.stats.resumptionsRefused.client_refused).toBe(1);
    expect(s.stats.handshakesResumed).toBe(0);
    expect(s.stats.handshakeFailures).toMatchObject({ certificate_revoked: 1 });
  });
});
