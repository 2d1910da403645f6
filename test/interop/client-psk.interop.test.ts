/**
 * Interop: OUR DTLS 1.2 PSK client (src/dtls `connect`) against real servers:
 * openssl s_server -dtls1_2 -nocert -psk, and gnutls-serv --udp --echo (PSK).
 *
 * Each case checks the negotiated suite (conn.info.suite, and s_server's
 * "CIPHER is ..."), data both ways and a clean close.
 */
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { connect, SUITE_NAMES, type CloseReason, type DtlsConnection } from "../../src/dtls/index.ts";
import {
  gnutlsPskPriority,
  killAllPeers,
  livePeerCount,
  loopbackV6Available,
  opensslCipherList,
  opensslServerHandshake,
  peerAvailable,
  PSK_SUITES,
  startGnutlsServer,
  startOpensslServer,
  type PskCreds,
  type PskSuiteName,
} from "./peers.ts";

const OPENSSL = peerAvailable("openssl");
const GNUTLS = peerAvailable("gnutls");
const V6 = await loopbackV6Available();

const T = 20_000; // per-test ceiling
const WAIT = 8_000; // any single wait inside a test

const psk: PskCreds = { identity: "interop-device-2", key: randomBytes(16) };

type Conn = DtlsConnection;

/** A connection with its events recorded and bounded waits. */
class ClientUnderTest {
  readonly data: Buffer[] = [];
  readonly errors: Error[] = [];
  readonly closed: Promise<CloseReason>;

  readonly conn: Conn;

  constructor(conn: Conn) {
    this.conn = conn;
    open.add(this);
    conn.on("data", (d: Buffer) => this.data.push(d));
    conn.on("error", (e: Error) => this.errors.push(e));
    this.closed = new Promise<CloseReason>((resolve) =>
      conn.on("close", (r: CloseReason) => {
        open.delete(this);
        resolve(r);
      }),
    );
  }

  static async connect(port: number, suites?: PskSuiteName[], host: "127.0.0.1" | "::1" = "127.0.0.1") {
    const conn = await connect({
      host,
      port,
      psk: { identity: psk.identity, key: psk.key },
      ...(suites ? { suites } : {}),
      timeoutMs: 10_000,
    });
    return new ClientUnderTest(conn);
  }

  async receivedText(text: string, timeoutMs = WAIT): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!Buffer.concat(this.data).toString().includes(text)) {
      if (Date.now() > deadline) {
        throw new Error(`client did not receive ${JSON.stringify(text)}; got ${JSON.stringify(Buffer.concat(this.data).toString())}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async close(): Promise<CloseReason> {
    this.conn.close();
    return bounded(this.closed, WAIT, "the connection's 'close' after conn.close()");
  }
}

const open = new Set<ClientUnderTest>();

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

afterEach(async () => {
  for (const c of [...open]) {
    try {
      c.conn.close();
    } catch {
      // already closed
    }
  }
  await Promise.allSettled([...open].map((c) => bounded(c.closed, 3_000, "close")));
  open.clear();
  await killAllPeers();
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

describe.skipIf(!OPENSSL)("our client -> openssl s_server -dtls1_2 -nocert -psk", () => {
  it.each(ALL_PSK)(
    "%s: suite, data both ways, close_notify",
    async (suite) => {
      const srv = await startOpensslServer({ psk, cipher: PSK_SUITES[suite].openssl });
      const c = await ClientUnderTest.connect(srv.port, [suite]);
      expect(c.conn.info.suite).toBe(suite);
      expect(c.conn.info.identity).toBe(psk.identity);
      expect(await opensslServerHandshake(srv.proc, WAIT)).toBe(suite);

      c.conn.send(Buffer.from(`hello-from-dtlspush-${suite}\n`));
      await srv.proc.waitFor(`hello-from-dtlspush-${suite}`, WAIT);
      srv.proc.write("reply-from-openssl\n"); // s_server sends its stdin lines to the client
      await c.receivedText("reply-from-openssl\n");

      const mark = srv.proc.mark();
      await c.close();
      await srv.proc.waitFor(/^DONE$/m, WAIT, mark); // s_server got our close_notify
      expect(c.errors).toEqual([]);
    },
    T,
  );

  it(
    "s_server offering all PSK suites (client preference) picks our first offered suite",
    async () => {
      const srv = await startOpensslServer({ psk, cipher: opensslCipherList(ALL_PSK) });
      const c = await ClientUnderTest.connect(srv.port);
      const offered = new Set<string>(ALL_PSK);
      const expected = SUITE_NAMES.find((s) => offered.has(s));
      expect(c.conn.info.suite).toBe(expected);
      expect(await opensslServerHandshake(srv.proc, WAIT)).toBe(expected);
      expect(c.conn.info.extendedMasterSecret).toBe(true);
    },
    T,
  );

  it.skipIf(!V6)(
    "over IPv6 loopback: s_server -accept [::1]:PORT",
    async () => {
      const srv = await startOpensslServer({ host: "::1", psk, cipher: "PSK-AES128-GCM-SHA256" });
      const c = await ClientUnderTest.connect(srv.port, ["TLS_PSK_WITH_AES_128_GCM_SHA256"], "::1");
      expect(c.conn.info.suite).toBe("TLS_PSK_WITH_AES_128_GCM_SHA256");
      c.conn.send(Buffer.from("hello-over-v6\n"));
      await srv.proc.waitFor("hello-over-v6", WAIT);
      srv.proc.write("reply-over-v6\n");
      await c.receivedText("reply-over-v6\n");
      const mark = srv.proc.mark();
      await c.close();
      await srv.proc.waitFor(/^DONE$/m, WAIT, mark);
    },
    T,
  );

  it(
    "wrong key: the handshake fails with a DtlsError (s_server drops our undecryptable Finished)",
    async () => {
      const srv = await startOpensslServer({ psk, cipher: "PSK-AES128-GCM-SHA256" });
      const err: unknown = await connect({
        host: "127.0.0.1",
        port: srv.port,
        psk: { identity: psk.identity, key: randomBytes(16) },
        suites: ["TLS_PSK_WITH_AES_128_GCM_SHA256"],
        timeoutMs: 3_000,
      }).then(
        (conn) => {
          conn.close();
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(Error);
      expect((err as { code?: string }).code).toMatch(/^(timeout|decrypt_error|bad_record_mac|alert_received)$/);
    },
    T,
  );
});

// ---------------------------------------------------------------------------

describe.skipIf(!GNUTLS)("our client -> gnutls-serv --udp --echo (PSK)", () => {
  it.each(ALL_PSK)(
    "%s: suite, data both ways (echo), close_notify",
    async (suite) => {
      const srv = await startGnutlsServer({ psk, priority: gnutlsPskPriority([suite]) });
      const c = await ClientUnderTest.connect(srv.port, [suite]);
      expect(c.conn.info.suite).toBe(suite);
      expect(c.conn.info.extendedMasterSecret).toBe(true);

      const line = `hello-from-dtlspush-${suite}`;
      c.conn.send(Buffer.from(line));
      await srv.proc.waitFor(line, WAIT); // gnutls-serv logs what it received
      await c.receivedText(line); // and echoes it back

      await c.close();
      expect(c.errors).toEqual([]);
    },
    T,
  );

  it(
    "gnutls-serv with %SERVER_PRECEDENCE preferring CCM: our offer GCM, CCM -> the server's choice is accepted",
    async () => {
      const srv = await startGnutlsServer({
        psk,
        // GnuTLS servers follow the client's order unless %SERVER_PRECEDENCE is set.
        priority: `${gnutlsPskPriority(["TLS_PSK_WITH_AES_128_CCM", "TLS_PSK_WITH_AES_128_GCM_SHA256"])}:%SERVER_PRECEDENCE`,
      });
      const c = await ClientUnderTest.connect(srv.port, ["TLS_PSK_WITH_AES_128_GCM_SHA256", "TLS_PSK_WITH_AES_128_CCM"]);
      expect(c.conn.info.suite).toBe("TLS_PSK_WITH_AES_128_CCM");
      c.conn.send(Buffer.from("ping"));
      await c.receivedText("ping");
    },
    T,
  );

  it(
    "unknown identity: gnutls-serv fakes a key, the handshake fails with a DtlsError",
    async () => {
      const srv = await startGnutlsServer({ psk, priority: gnutlsPskPriority(["TLS_PSK_WITH_AES_128_GCM_SHA256"]) });
      const err: unknown = await connect({
        host: "127.0.0.1",
        port: srv.port,
        psk: { identity: "no-such-device", key: psk.key },
        suites: ["TLS_PSK_WITH_AES_128_GCM_SHA256"],
        timeoutMs: 3_000,
      }).then(
        (conn) => {
          conn.close();
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(Error);
      expect((err as { code?: string }).code).toMatch(/^(timeout|decrypt_error|bad_record_mac|alert_received|unknown_psk_identity)$/);
    },
    T,
  );
});
