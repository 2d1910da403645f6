/**
 * Interop: OUR DTLS 1.2 PSK server (src/dtls) against real clients:
 * openssl s_client, gnutls-cli, node-dtls-client 2.x and @nodertc/dtls.
 *
 * Each case checks the negotiated suite (from our "session" event and, where the
 * peer prints or exposes it, from the peer), application data both ways (the
 * peer sends a line, our server answers "dtlspush:" + line) and a clean close.
 */
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import {
  listen,
  SUITE_NAMES,
  type CloseReason,
  type DtlsConnection,
  type DtlsError,
  type DtlsServer,
  type PeerAddress,
  type SuiteName,
} from "../../src/dtls/index.ts";
import { closeAllClients, connectNodeDtlsClient, connectNodertc, type NdcCipher, type NodertcSuite } from "./clients.ts";
import {
  delay,
  gnutlsClientHandshake,
  gnutlsPskPriority,
  killAllPeers,
  livePeerCount,
  loopbackV6Available,
  opensslCipherList,
  opensslClientHandshake,
  peerAvailable,
  PSK_SUITES,
  startGnutlsClient,
  startOpensslClient,
  type PskCreds,
  type PskSuiteName,
} from "./peers.ts";

const OPENSSL = peerAvailable("openssl");
const GNUTLS = peerAvailable("gnutls");
const V6 = await loopbackV6Available();

const T = 20_000; // per-test ceiling
const WAIT = 8_000; // any single wait inside a test

const psk: PskCreds = { identity: "interop-device-1", key: randomBytes(16) };

type Server = DtlsServer;
type Conn = DtlsConnection;

/** Everything one established connection did, recorded for assertions. */
interface SessionLog {
  conn: Conn;
  data: Buffer[];
  errors: Error[];
  closed: Promise<CloseReason>;
}

interface HandshakeFailure {
  peer: PeerAddress;
  error: DtlsError;
}

/** A server on 127.0.0.1:0 that answers every record with "dtlspush:" + record. */
class TestServer {
  readonly sessions: SessionLog[] = [];
  readonly handshakeErrors: HandshakeFailure[] = [];
  private sessionWaiters: Array<(s: SessionLog) => void> = [];
  private errorWaiters: Array<(e: HandshakeFailure) => void> = [];

  readonly server: Server;
  readonly port: number;

  private constructor(server: Server, port: number) {
    this.server = server;
    this.port = port;
  }

  static async start(
    suites?: SuiteName[],
    extra: { requireExtendedMasterSecret?: boolean; host?: "127.0.0.1" | "::1"; keys?: PskCreds[] } = {},
  ): Promise<TestServer> {
    const { host = "127.0.0.1", keys = [psk], ...rest } = extra;
    const server = await listen({
      host,
      port: 0,
      psk: { keys: new Map(keys.map((k) => [k.identity, k.key])) },
      ...(suites ? { suites } : {}),
      ...rest,
    });
    const ts = new TestServer(server, server.address().port);
    running.add(ts);
    server.on("session", (conn: Conn) => ts.onSession(conn));
    server.on("handshakeError", (e: HandshakeFailure) => {
      ts.handshakeErrors.push(e);
      ts.errorWaiters.shift()?.(e);
    });
    return ts;
  }

  private onSession(conn: Conn): void {
    const log: SessionLog = {
      conn,
      data: [],
      errors: [],
      closed: new Promise<CloseReason>((resolve) => conn.on("close", (r: CloseReason) => resolve(r))),
    };
    conn.on("error", (e: Error) => log.errors.push(e));
    conn.on("data", (d: Buffer) => {
      log.data.push(d);
      try {
        conn.send(Buffer.concat([Buffer.from("dtlspush:"), d]));
      } catch (e) {
        log.errors.push(e instanceof Error ? e : new Error(String(e)));
      }
    });
    this.sessions.push(log);
    this.sessionWaiters.shift()?.(log);
  }

  private sessionsTaken = 0;
  private errorsTaken = 0;

  /** The next session not yet returned by this method (waits for it, bounded). */
  nextSession(timeoutMs = WAIT): Promise<SessionLog> {
    const done = this.sessions[this.sessionsTaken];
    if (done) {
      this.sessionsTaken++;
      return Promise.resolve(done);
    }
    return bounded(
      new Promise<SessionLog>((r) => this.sessionWaiters.push(r)).then((s) => {
        this.sessionsTaken++;
        return s;
      }),
      timeoutMs,
      "a 'session' event",
    );
  }

  /** The next handshakeError not yet returned by this method (waits for it, bounded). */
  nextHandshakeError(timeoutMs = WAIT): Promise<HandshakeFailure> {
    const done = this.handshakeErrors[this.errorsTaken];
    if (done) {
      this.errorsTaken++;
      return Promise.resolve(done);
    }
    return bounded(
      new Promise<HandshakeFailure>((r) => this.errorWaiters.push(r)).then((e) => {
        this.errorsTaken++;
        return e;
      }),
      timeoutMs,
      "a 'handshakeError' event",
    );
  }

  async close(): Promise<void> {
    running.delete(this);
    await bounded(this.server.close(), 5_000, "server.close()");
  }
}

const running = new Set<TestServer>();

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** Waits until `data` (as text) has arrived on the session. */
async function receivedText(s: SessionLog, text: string, timeoutMs = WAIT): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!Buffer.concat(s.data).toString().includes(text)) {
    if (Date.now() > deadline) {
      throw new Error(`server did not receive ${JSON.stringify(text)}; got ${JSON.stringify(Buffer.concat(s.data).toString())}`);
    }
    await delay(20);
  }
}

afterEach(async () => {
  closeAllClients();
  await killAllPeers();
  await Promise.allSettled([...running].map((s) => s.close()));
  expect(livePeerCount()).toBe(0);
});

const ALL_PSK: PskSuiteName[] = [
  "TLS_PSK_WITH_AES_128_CCM_8",
  "TLS_PSK_WITH_AES_128_CCM",
  "TLS_PSK_WITH_AES_128_GCM_SHA256",
  "TLS_PSK_WITH_AES_256_GCM_SHA384",
  "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256",
];

// ---------------------------------------------------------------------------

describe.skipIf(!OPENSSL)("our server <- openssl s_client -dtls1_2 -psk", () => {
  it.each(ALL_PSK)(
    "%s: suite, data both ways, close_notify",
    async (suite) => {
      const srv = await TestServer.start([suite]);
      const cli = startOpensslClient({ port: srv.port, psk, cipher: PSK_SUITES[suite].openssl });
      const session = await srv.nextSession();
      expect(await opensslClientHandshake(cli, WAIT)).toBe(suite);
      expect(session.conn.info.suite).toBe(suite);
      expect(session.conn.info.identity).toBe(psk.identity);
      expect(session.conn.info.peer.address).toBe("127.0.0.1");
      expect(session.conn.info.extendedMasterSecret).toBe(true); // s_client offers EMS

      const line = `hello-from-openssl-${suite}`;
      cli.write(`${line}\n`);
      await receivedText(session, `${line}\n`);
      await cli.waitFor(`dtlspush:${line}`, WAIT);

      cli.endInput(); // s_client sends close_notify and exits
      expect((await cli.waitExit(WAIT)).code).toBe(0);
      await bounded(session.closed, WAIT, "the connection's 'close' after the peer's close_notify");
      expect(session.errors).toEqual([]);
    },
    T,
  );

  it(
    "server preference wins: client offers GCM then CCM_8, server prefers CCM_8",
    async () => {
      const srv = await TestServer.start(["TLS_PSK_WITH_AES_128_CCM_8", "TLS_PSK_WITH_AES_128_GCM_SHA256"]);
      const cli = startOpensslClient({
        port: srv.port,
        psk,
        cipher: opensslCipherList(["TLS_PSK_WITH_AES_128_GCM_SHA256", "TLS_PSK_WITH_AES_128_CCM_8"]),
      });
      const session = await srv.nextSession();
      expect(await opensslClientHandshake(cli, WAIT)).toBe("TLS_PSK_WITH_AES_128_CCM_8");
      expect(session.conn.info.suite).toBe("TLS_PSK_WITH_AES_128_CCM_8");
    },
    T,
  );

  it.skipIf(!V6)(
    "over IPv6 loopback: server on ::1, s_client -connect [::1]:PORT",
    async () => {
      const srv = await TestServer.start(["TLS_PSK_WITH_AES_128_CCM_8"], { host: "::1" });
      const cli = startOpensslClient({ host: "::1", port: srv.port, psk, cipher: "PSK-AES128-CCM8" });
      const session = await srv.nextSession();
      expect(await opensslClientHandshake(cli, WAIT)).toBe("TLS_PSK_WITH_AES_128_CCM_8");
      expect(session.conn.info.peer.address).toBe("::1");
      cli.write("hello-over-v6\n");
      await cli.waitFor("dtlspush:hello-over-v6", WAIT);
      cli.endInput();
      expect((await cli.waitExit(WAIT)).code).toBe(0);
      await bounded(session.closed, WAIT, "close");
    },
    T,
  );

  it(
    "unknown PSK identity is refused: handshakeError unknown_psk_identity, s_client fails",
    async () => {
      const srv = await TestServer.start(["TLS_PSK_WITH_AES_128_GCM_SHA256"]);
      const cli = startOpensslClient({
        port: srv.port,
        psk: { identity: "no-such-device", key: psk.key },
        cipher: "PSK-AES128-GCM-SHA256",
      });
      const failure = await srv.nextHandshakeError();
      expect(failure.error.code).toBe("unknown_psk_identity");
      const exit = await cli.waitExit(WAIT);
      expect(exit.code).not.toBe(0);
      expect(cli.output).toMatch(/unknown psk identity|alert number 115/i);
      expect(srv.sessions).toHaveLength(0);
      expect(srv.server.sessions()).toBe(0);
    },
    T,
  );
});

// ---------------------------------------------------------------------------

describe.skipIf(!GNUTLS)("our server <- gnutls-cli --udp (PSK)", () => {
  it.each(ALL_PSK)(
    "%s: suite, data both ways, close_notify",
    async (suite) => {
      const srv = await TestServer.start([suite]);
      const cli = startGnutlsClient({ port: srv.port, psk, priority: gnutlsPskPriority([suite]) });
      const session = await srv.nextSession();
      expect(await gnutlsClientHandshake(cli, WAIT)).toBe(suite);
      expect(session.conn.info.suite).toBe(suite);
      expect(session.conn.info.identity).toBe(psk.identity);
      expect(session.conn.info.extendedMasterSecret).toBe(true); // GnuTLS offers EMS

      const line = `hello-from-gnutls-${suite}`;
      cli.write(`${line}\n`);
      await receivedText(session, `${line}\n`);
      await cli.waitFor(`dtlspush:${line}`, WAIT);

      cli.endInput(); // gnutls-cli sends close_notify, waits for ours, exits 0
      await bounded(session.closed, WAIT, "the connection's 'close' after the peer's close_notify");
      await cli.waitFor("Peer has closed the GnuTLS connection", WAIT); // our answering close_notify
      expect((await cli.waitExit(WAIT)).code).toBe(0);
      expect(session.errors).toEqual([]);
    },
    T,
  );

  it(
    "unknown PSK identity is refused",
    async () => {
      const srv = await TestServer.start(["TLS_PSK_WITH_AES_128_GCM_SHA256"]);
      const cli = startGnutlsClient({
        port: srv.port,
        psk: { identity: "no-such-device", key: psk.key },
        priority: gnutlsPskPriority(["TLS_PSK_WITH_AES_128_GCM_SHA256"]),
      });
      const failure = await srv.nextHandshakeError();
      expect(failure.error.code).toBe("unknown_psk_identity");
      const exit = await cli.waitExit(WAIT);
      expect(exit.code).not.toBe(0);
      expect(cli.output).toMatch(/Handshake has failed|Fatal error/i);
      expect(srv.sessions).toHaveLength(0);
    },
    T,
  );
});

// ---------------------------------------------------------------------------

describe("our server <- node-dtls-client 2.x", () => {
  const NDC_SUITES: Array<PskSuiteName & NdcCipher> = [
    "TLS_PSK_WITH_AES_128_CCM_8",
    "TLS_PSK_WITH_AES_128_CCM",
    "TLS_PSK_WITH_AES_128_GCM_SHA256",
    "TLS_PSK_WITH_AES_256_GCM_SHA384",
  ];

  it.each(NDC_SUITES)(
    "%s: suite, data both ways, client close_notify",
    async (suite) => {
      const srv = await TestServer.start([suite]);
      const c = await connectNodeDtlsClient({ port: srv.port, psk, ciphers: [suite] });
      const session = await srv.nextSession();
      expect(session.conn.info.suite).toBe(suite);
      expect(c.suite).toBe(suite);
      expect(session.conn.info.identity).toBe(psk.identity);
      expect(session.conn.info.extendedMasterSecret).toBe(false); // no extensions at all

      await c.send("hello-from-node-dtls-client");
      expect((await c.messages.next(WAIT)).toString()).toBe("dtlspush:hello-from-node-dtls-client");
      expect(Buffer.concat(session.data).toString()).toBe("hello-from-node-dtls-client");

      await c.close();
      await bounded(session.closed, WAIT, "the connection's 'close' after the peer's close_notify");
      expect(session.errors).toEqual([]);
    },
    T,
  );

  it(
    "default offer, default server suites, 1 s client timeout: the server's first preference the client offers; server-side close",
    async () => {
      const srv = await TestServer.start();
      // the library's default whole-handshake timeout (1 s), as real deployments use it
      const c = await connectNodeDtlsClient({ port: srv.port, psk, timeoutMs: 1_000 });
      const session = await srv.nextSession();
      const offered = new Set<string>(NDC_SUITES);
      const expected = SUITE_NAMES.find((s) => offered.has(s));
      expect(session.conn.info.suite).toBe(expected);
      expect(c.suite).toBe(expected);

      await c.send("ping");
      expect((await c.messages.next(WAIT)).toString()).toBe("dtlspush:ping");

      session.conn.close(); // our close_notify: node-dtls-client answers by closing
      await c.waitClosed(WAIT);
      await bounded(session.closed, WAIT, "the connection's 'close' after conn.close()");
      expect(c.errors).toEqual([]);
    },
    T,
  );

  it(
    "requireExtendedMasterSecret: node-dtls-client (no extensions, so no EMS) is refused",
    async () => {
      const srv = await TestServer.start(["TLS_PSK_WITH_AES_128_CCM_8"], { requireExtendedMasterSecret: true });
      const attempt = connectNodeDtlsClient({ port: srv.port, psk, ciphers: ["TLS_PSK_WITH_AES_128_CCM_8"], timeoutMs: 5_000 });
      const failure = await srv.nextHandshakeError();
      expect(failure.error.code).toBe("handshake_failure");
      await expect(attempt).rejects.toThrow(/handshake_failure/);
      expect(srv.sessions).toHaveLength(0);
    },
    T,
  );

  it(
    "unknown PSK identity is refused",
    async () => {
      const srv = await TestServer.start(["TLS_PSK_WITH_AES_128_CCM_8"]);
      const attempt = connectNodeDtlsClient({
        port: srv.port,
        psk: { identity: "no-such-device", key: psk.key },
        ciphers: ["TLS_PSK_WITH_AES_128_CCM_8"],
        timeoutMs: 5_000,
      });
      const failure = await srv.nextHandshakeError();
      expect(failure.error.code).toBe("unknown_psk_identity");
      await expect(attempt).rejects.toThrow(/unknown_psk_identity/);
      expect(srv.sessions).toHaveLength(0);
    },
    T,
  );
});

// ---------------------------------------------------------------------------

describe("our server <- @nodertc/dtls (PSK, extended master secret)", () => {
  const NODERTC_SUITES: Array<PskSuiteName & NodertcSuite> = [
    "TLS_PSK_WITH_AES_128_GCM_SHA256",
    "TLS_PSK_WITH_AES_256_GCM_SHA384",
    "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256",
  ];

  it.each(NODERTC_SUITES)(
    "%s: EMS, suite, data both ways, server close_notify",
    async (suite) => {
      const srv = await TestServer.start([suite]);
      const c = await connectNodertc({ port: srv.port, psk, cipherSuites: [suite] });
      const session = await srv.nextSession();
      expect(session.conn.info.suite).toBe(suite);
      expect(c.suite).toBe(suite);
      expect(session.conn.info.extendedMasterSecret).toBe(true);

      c.send("hello-from-nodertc");
      expect((await c.messages.next(WAIT)).toString()).toBe("dtlspush:hello-from-nodertc");
      expect(Buffer.concat(session.data).toString()).toBe("hello-from-nodertc");

      // @nodertc/dtls never sends close_notify, so close from our side. It cannot read our
      // close_notify properly (it never decrypts alert records, see clients.ts), so only
      // check that an alert record reached it.
      session.conn.close();
      await c.waitAlert(undefined, WAIT);
      await bounded(session.closed, WAIT, "the connection's 'close' after conn.close()");
      expect(session.errors).toEqual([]);
    },
    T,
  );

  it(
    "requireExtendedMasterSecret: @nodertc/dtls (which always offers EMS) still connects",
    async () => {
      const srv = await TestServer.start(["TLS_PSK_WITH_AES_128_GCM_SHA256"], { requireExtendedMasterSecret: true });
      const c = await connectNodertc({ port: srv.port, psk });
      const session = await srv.nextSession();
      expect(session.conn.info.extendedMasterSecret).toBe(true);
      c.send("x");
      expect((await c.messages.next(WAIT)).toString()).toBe("dtlspush:x");
    },
    T,
  );
});

// ---------------------------------------------------------------------------

describe.skipIf(!OPENSSL || !GNUTLS)("our server with several different peers at once", () => {
  it(
    "s_client, gnutls-cli, node-dtls-client and @nodertc/dtls concurrently, two identities, independent sessions",
    async () => {
      const other: PskCreds = { identity: "interop-device-2", key: randomBytes(32) };
      const srv = await TestServer.start(undefined, { keys: [psk, other] });
      const sc = startOpensslClient({ port: srv.port, psk, cipher: opensslCipherList(ALL_PSK) });
      const gc = startGnutlsClient({ port: srv.port, psk: other, priority: gnutlsPskPriority(ALL_PSK) });
      const [ndcClient, rtc] = await Promise.all([
        connectNodeDtlsClient({ port: srv.port, psk: other, ciphers: ["TLS_PSK_WITH_AES_128_CCM_8"] }),
        connectNodertc({ port: srv.port, psk, cipherSuites: ["TLS_PSK_WITH_AES_128_GCM_SHA256"] }),
        opensslClientHandshake(sc, WAIT),
        gnutlsClientHandshake(gc, WAIT),
      ]);
      for (let i = 0; i < 4; i++) await srv.nextSession();
      expect(srv.server.sessions()).toBe(4);
      const identities = srv.sessions.map((s) => s.conn.info.identity).sort();
      expect(identities).toEqual([psk.identity, psk.identity, other.identity, other.identity].sort());

      sc.write("from-sclient\n");
      gc.write("from-gnutls\n");
      await ndcClient.send("from-ndc");
      rtc.send("from-nodertc");
      await sc.waitFor("dtlspush:from-sclient", WAIT);
      await gc.waitFor("dtlspush:from-gnutls", WAIT);
      expect((await ndcClient.messages.next(WAIT)).toString()).toBe("dtlspush:from-ndc");
      expect((await rtc.messages.next(WAIT)).toString()).toBe("dtlspush:from-nodertc");
      // each session saw only its own peer's data
      for (const s of srv.sessions) expect(s.data).toHaveLength(1);

      for (const s of srv.sessions) s.conn.close(); // close_notify to everyone
      expect((await sc.waitExit(WAIT)).code).toBe(0);
      await gc.waitFor("Peer has closed the GnuTLS connection", WAIT);
      await ndcClient.waitClosed(WAIT);
      await rtc.waitAlert(undefined, WAIT);
      for (const s of srv.sessions) {
        await bounded(s.closed, WAIT, "close");
        expect(s.errors).toEqual([]);
      }
      expect(srv.server.sessions()).toBe(0);
    },
    T,
  );

  // Regression: server.close() used to close the UDP socket in the same tick as the
  // close_notify send()s (node:dgram sends are asynchronous), so every alert was dropped.
  it(
    "server.close() sends close_notify to every established peer",
    async () => {
      const srv = await TestServer.start();
      const sc = startOpensslClient({ port: srv.port, psk, cipher: opensslCipherList(ALL_PSK) });
      const gc = startGnutlsClient({ port: srv.port, psk, priority: gnutlsPskPriority(ALL_PSK) });
      const [ndcClient] = await Promise.all([
        connectNodeDtlsClient({ port: srv.port, psk }),
        opensslClientHandshake(sc, WAIT),
        gnutlsClientHandshake(gc, WAIT),
      ]);
      for (let i = 0; i < 3; i++) await srv.nextSession();

      await srv.close();
      const QUICK = 3_000; // loopback: the alert arrives in milliseconds
      await Promise.all([
        sc.waitFor(/^closed$/m, QUICK), // s_client prints "closed" on close_notify, then exits 0
        gc.waitFor("Peer has closed the GnuTLS connection", QUICK),
        ndcClient.waitClosed(QUICK),
      ]);
    },
    T,
  );
});
