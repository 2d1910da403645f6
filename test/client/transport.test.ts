/**
 * The device-side transports end to end against the project's own DTLS
 * server on 127.0.0.1 (port 0): PSK for all three, X.509 and mutual X.509 for
 * dtlspush and nodertc, records both ways, several records per send, onClose
 * once for either side's close, failures with their codes. Plus the shared
 * TransportBase behaviour with a fake library, and dtlspush through the lossy
 * UDP proxy.
 */
import { createSocket } from "node:dgram";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { openTransport, TransportError, type Transport, type TransportName, type TransportOptions } from "../../src/client/transport.ts";
import { loadOptionalModule, TransportBase } from "../../src/client/transports/base.ts";
import { listen, type DtlsConnection, type DtlsError, type DtlsServer, type ListenOptions, type SuiteName } from "../../src/dtls/index.ts";
import { createCertificateAuthority, issueDeviceCertificate, type IssuedCertificate } from "../../src/pki/index.ts";
import { startLossyProxy, type LossyProxy } from "../support/lossy-udp-proxy.ts";
import { makeTestPki, type TestPki } from "../dtls/test-certs.ts";

/** What a tls12_cid record adds for the server's default 6-byte CID: the CID and the real content type. */
const CID_RECORD_OVERHEAD = 6 + 1;

const PSK = { identity: "device-1", key: Buffer.from("00112233445566778899aabbccddeeff", "hex") };
const WAIT = 5_000;
const T = 20_000;

let pki: TestPki;
let deviceCaPem: string;
let deviceP384: IssuedCertificate;

beforeAll(async () => {
  pki = await makeTestPki();
  const { ca } = await createCertificateAuthority({ commonName: "device CA" });
  deviceCaPem = ca.certPem;
  deviceP384 = await issueDeviceCertificate(ca, { id: "sensor-384", curve: "p384" });
}, 60_000);

// ---------------------------------------------------------------------------
// helpers

interface Session {
  conn: DtlsConnection;
  data: string[];
  closed: Promise<{ code: string }>;
}

interface TestServer {
  server: DtlsServer;
  port: number;
  sessions: Session[];
  nextSession(): Promise<Session>;
  handshakeErrors: DtlsError[];
}

const servers: DtlsServer[] = [];
const transports: Transport[] = [];
const proxies: LossyProxy[] = [];

afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/** A server that answers each record with "<" + the record (and records what it got). */
async function startServer(opts: Partial<ListenOptions>): Promise<TestServer> {
  const server = await listen({ host: "127.0.0.1", port: 0, ...opts });
  servers.push(server);
  const sessions: Session[] = [];
  const waiting: Array<(s: Session) => void> = [];
  let consumed = 0;
  const handshakeErrors: DtlsError[] = [];
  server.on("handshakeError", (e) => handshakeErrors.push(e.error));
  server.on("session", (conn) => {
    const data: string[] = [];
    const closed = new Promise<{ code: string }>((resolve) => conn.once("close", (r) => resolve(r)));
    conn.on("data", (d) => {
      data.push(d.toString());
      if (!conn.closed) conn.send(Buffer.concat([Buffer.from("<"), d]));
    });
    const s = { conn, data, closed };
    sessions.push(s);
    waiting.shift()?.(s);
  });
  return {
    server,
    port: server.address().port,
    sessions,
    handshakeErrors,
    /** The first session not yet returned by nextSession (waits for it). */
    nextSession: () => {
      const already = sessions[consumed++];
      if (already !== undefined) return Promise.resolve(already);
      return bounded(new Promise<Session>((resolve) => waiting.push(resolve)), WAIT, "a server session");
    },
  };
}

const pskServer = () => startServer({ psk: { keys: new Map([[PSK.identity, PSK.key]]) } });

/** A P-384 chain (the one @nodertc/dtls can use) with SHA-1 signatures allowed for clients without signature_algorithms. */
const certServer = (extra: Partial<ListenOptions> = {}) =>
  startServer({ certificates: [{ cert: pki.p384.chainPem, key: pki.p384.keyPem }], legacySha1Signatures: true, ...extra });

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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function open(name: TransportName, options: Omit<TransportOptions, "host"> & { host?: string }): Promise<Transport> {
  const t = await openTransport(name, { host: "127.0.0.1", ...options });
  transports.push(t);
  return t;
}

/** Collects a transport's records and its (single, checked) close. */
function observe(t: Transport) {
  const records: string[] = [];
  const closes: Array<Error | undefined> = [];
  const waiters: Array<() => void> = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  t.onRecord((r) => {
    expect(r).toBeInstanceOf(Uint8Array);
    records.push(Buffer.from(r).toString());
    wake();
  });
  t.onClose((e) => {
    closes.push(e);
    wake();
  });
  const until = (cond: () => boolean, what: string): Promise<void> =>
    bounded(
      new Promise<void>((resolve) => {
        const check = () => (cond() ? resolve() : waiters.push(check));
        check();
      }),
      WAIT,
      what,
    );
  return {
    records,
    closes,
    waitRecords: (n: number) => until(() => records.length >= n, `${n} records`),
    waitClosed: () => until(() => closes.length > 0, "onClose"),
  };
}

async function rejection(p: Promise<unknown>): Promise<TransportError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(TransportError);
    return e as TransportError;
  }
  throw new Error("expected a rejection");
}

/** Explicit nonce + tag of the suite (the record header is 13 bytes more). */
function suiteOverhead(suite: SuiteName): number {
  if (suite.endsWith("_CCM_8")) return 8 + 8;
  if (suite.includes("CHACHA20")) return 16;
  return 8 + 16;
}

async function closedUdpPort(): Promise<number> {
  const s = createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const ALL: TransportName[] = ["dtlspush", "node-dtls-client", "nodertc"];
const X509: TransportName[] = ["dtlspush", "nodertc"];

// ---------------------------------------------------------------------------

describe.each(ALL)("%s transport with a pre-shared key", (name) => {
  it(
    "connects; records both ways, several per send; description and maxRecordPayload from the negotiated suite",
    async () => {
      const srv = await pskServer();
      const t = await open(name, { port: srv.port, psk: PSK });
      const session = await srv.nextSession();
      const o = observe(t);
      const suite = session.conn.info.suite;
      expect(session.conn.info.identity).toBe(PSK.identity);
      expect(t.name).toBe(name);
      expect(t.description).toBe(`${name} ${suite} to 127.0.0.1:${srv.port}`);
      // our client's records carry the server's Connection ID (6 bytes) and the real content type (RFC 9146);
      // the third-party clients offer no CID and send plain records
      expect(t.maxRecordPayload).toBe(1200 - 13 - suiteOverhead(suite) - (name === "dtlspush" ? CID_RECORD_OVERHEAD : 0));

      t.send([Buffer.from("one")]);
      await o.waitRecords(1);
      expect(o.records).toEqual(["<one"]);
      t.send([Buffer.from("two"), Buffer.from("three"), Buffer.from("four")]);
      await o.waitRecords(4);
      expect(session.data).toEqual(["one", "two", "three", "four"]);
      expect(o.records).toEqual(["<one", "<two", "<three", "<four"]);

      // several records from the server at once
      session.conn.sendBatch([Buffer.from("a"), Buffer.from("b"), Buffer.from("c")]);
      await o.waitRecords(7);
      expect(o.records.slice(4)).toEqual(["a", "b", "c"]);

      // the largest record this session allows arrives whole; one byte more is refused before sending
      const big = Buffer.alloc(t.maxRecordPayload, 0x61);
      t.send([big]);
      await o.waitRecords(8);
      expect(session.data[4]).toBe(big.toString());
      const tooBig = (() => {
        try {
          t.send([Buffer.from("ok"), Buffer.alloc(t.maxRecordPayload + 1)]);
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(tooBig).toBeInstanceOf(TransportError);
      expect((tooBig as TransportError).code).toBe("too_large");
      await sleep(50);
      expect(session.data).toHaveLength(5); // nothing of the refused batch was sent
      expect(o.closes).toEqual([]);
    },
    T,
  );

  it(
    "server-side close: onClose once, with no error; send afterwards is 'closed'",
    async () => {
      const srv = await pskServer();
      const t = await open(name, { port: srv.port, psk: PSK });
      const session = await srv.nextSession();
      const o = observe(t);
      session.conn.close();
      await o.waitClosed();
      await sleep(100);
      expect(o.closes).toEqual([undefined]);
      expect(() => t.send([Buffer.from("late")])).toThrow(expect.objectContaining({ code: "closed" }));
      await t.close(); // after the peer's close: resolves, no second onClose
      expect(o.closes).toEqual([undefined]);
    },
    T,
  );

  it(
    "our close(): close_notify reaches the server, onClose once, idempotent",
    async () => {
      const srv = await pskServer();
      const t = await open(name, { port: srv.port, psk: PSK });
      const session = await srv.nextSession();
      const o = observe(t);
      await Promise.all([t.close(), t.close()]);
      await t.close();
      expect(o.closes).toEqual([undefined]);
      expect((await bounded(session.closed, WAIT, "the server session's close")).code).toBe("closed");
      expect(() => t.send([Buffer.from("late")])).toThrow(expect.objectContaining({ code: "closed" }));
      await sleep(50);
      expect(o.closes).toEqual([undefined]);
    },
    T,
  );

  it(
    "a wrong key: connect_failed, the library's error as cause",
    async () => {
      const srv = await pskServer();
      const e = await rejection(
        openTransport(name, { host: "127.0.0.1", port: srv.port, psk: { identity: PSK.identity, key: Buffer.alloc(16, 7) }, timeoutMs: 5_000 }),
      );
      expect(e.code).toBe("connect_failed");
      expect(e.cause).toBeInstanceOf(Error);
      expect(e.message).toContain(`127.0.0.1:${srv.port}`);
      expect(srv.sessions).toHaveLength(0);
      expect(srv.handshakeErrors.length).toBeGreaterThan(0);
    },
    T,
  );

  it(
    "nothing listening: fails within the timeout",
    async () => {
      const port = await closedUdpPort();
      const t0 = Date.now();
      const e = await rejection(openTransport(name, { host: "127.0.0.1", port, psk: PSK, timeoutMs: 1_500 }));
      const elapsed = Date.now() - t0;
      // our client sees the ICMP port-unreachable on its connected socket; the libraries' sockets are unconnected
      expect(e.code).toBe(name === "dtlspush" ? "connect_failed" : "timeout");
      expect(elapsed).toBeLessThan(1_500 + 1_000);
      if (e.code === "timeout") expect(elapsed).toBeGreaterThanOrEqual(1_400);
    },
    T,
  );
});

describe.each(X509)("%s transport with certificates", (name) => {
  it(
    "verifies the server's chain against ca (P-384, ECDHE_ECDSA); records both ways",
    async () => {
      const srv = await certServer();
      const t = await open(name, { port: srv.port, ca: pki.caPem });
      const session = await srv.nextSession();
      const o = observe(t);
      expect(session.conn.info.suite).toMatch(/^TLS_ECDHE_ECDSA_/);
      expect(t.description).toBe(`${name} ${session.conn.info.suite} to 127.0.0.1:${srv.port}`);
      expect(t.maxRecordPayload).toBe(1200 - 13 - suiteOverhead(session.conn.info.suite) - (name === "dtlspush" ? CID_RECORD_OVERHEAD : 0));
      t.send([Buffer.from("x1"), Buffer.from("x2")]);
      await o.waitRecords(2);
      expect(o.records).toEqual(["<x1", "<x2"]);
      await t.close();
      expect((await bounded(session.closed, WAIT, "the server session's close")).code).toBe("closed");
      expect(o.closes).toEqual([undefined]);
    },
    T,
  );

  it(
    "a pinned fingerprint instead of a CA; servername checked with a CA",
    async () => {
      const srv = await certServer();
      const t = await open(name, { port: srv.port, fingerprint: pki.p384.fingerprint.colon });
      const o = observe(t);
      t.send([Buffer.from("pinned")]);
      await o.waitRecords(1);
      expect(o.records).toEqual(["<pinned"]);
      const named = await open(name, { port: srv.port, ca: pki.caPem, servername: "localhost" });
      expect(named.description).toContain("ECDHE_ECDSA");
    },
    T,
  );

  it(
    "refuses a server whose chain does not lead to ca, one not issued for servername, one not pinned: connect_failed",
    async () => {
      const srv = await certServer();
      const cases: Array<[Partial<TransportOptions>, string]> = [
        [{ ca: pki.otherCaPem }, "unknown_ca"],
        [{ ca: pki.caPem, servername: "not-this-server.example" }, "bad_certificate"],
        [{ fingerprint: pki.p256.fingerprint.hex }, "bad_certificate"],
      ];
      for (const [trust, code] of cases) {
        const e = await rejection(openTransport(name, { host: "127.0.0.1", port: srv.port, timeoutMs: 5_000, ...trust }));
        expect(e.code).toBe("connect_failed");
        expect((e.cause as { code?: string }).code).toBe(code);
      }
      expect(srv.sessions).toHaveLength(0);
    },
    T,
  );

  it(
    "mutual X.509: the device certificate names the device on the server; without one a server that requires it refuses",
    async () => {
      const srv = await certServer({ clientAuth: "require", clientCa: deviceCaPem });
      const t = await open(name, { port: srv.port, ca: pki.caPem, cert: deviceP384.chainPem, key: deviceP384.keyPem });
      const session = await srv.nextSession();
      expect(session.conn.info.identity).toBe("sensor-384");
      expect(session.conn.info.peerCertificate?.fingerprint256).toBe(deviceP384.fingerprint.hex);
      const o = observe(t);
      t.send([Buffer.from("from-device")]);
      await o.waitRecords(1);
      expect(o.records).toEqual(["<from-device"]);

      const e = await rejection(openTransport(name, { host: "127.0.0.1", port: srv.port, ca: pki.caPem, timeoutMs: 5_000 }));
      expect(e.code).toBe("connect_failed");
      expect(srv.handshakeErrors.map((x) => x.code)).toContain("handshake_failure");
    },
    T,
  );
});

/**
 * A plain UDP relay for one client that can also send datagrams to the client as if from the
 * server (an off-path attacker who guessed the ports).
 */
async function injectingRelay(serverPort: number) {
  const listener = createSocket("udp4");
  const upstream = createSocket("udp4");
  let client: { address: string; port: number } | undefined;
  listener.on("message", (m, r) => {
    client = { address: r.address, port: r.port };
    upstream.send(m, serverPort, "127.0.0.1");
  });
  upstream.on("message", (m) => {
    if (client !== undefined) listener.send(m, client.port, client.address);
  });
  await new Promise<void>((r) => listener.bind(0, "127.0.0.1", () => r()));
  return {
    port: listener.address().port,
    inject(datagram: Buffer) {
      if (client === undefined) throw new Error("no client yet");
      listener.send(datagram, client.port, client.address);
    },
    close: () => Promise.all([listener, upstream].map((x) => new Promise<void>((r) => x.close(() => r())))),
  };
}

/** A DTLS 1.2 record in epoch 1 whose body is random bytes: it cannot authenticate. */
function forgedRecord(type: number, seq: number, bodyLength: number): Buffer {
  const header = Buffer.alloc(13);
  header[0] = type;
  header.writeUInt16BE(0xfefd, 1);
  header.writeUInt16BE(1, 3);
  header.writeUIntBE(seq, 5, 6);
  header.writeUInt16BE(bodyLength, 11);
  return Buffer.concat([header, Buffer.from(Array.from({ length: bodyLength }, (_, i) => (i * 37 + 11) & 0xff))]);
}

describe.each(ALL)("%s transport and records that do not authenticate", (name) => {
  it(
    "forged application data and a forged alert are dropped; the session goes on",
    async () => {
      const srv = await pskServer();
      const relay = await injectingRelay(srv.port);
      try {
        const t = await open(name, { port: relay.port, psk: PSK });
        const o = observe(t);
        t.send([Buffer.from("first")]);
        await o.waitRecords(1); // the server's epoch-1 records so far: Finished (0), this echo (1)
        // @nodertc/dtls's replay "window" moves its left edge to any accepted sequence number, so for it
        // the forgeries reuse the last one (anything higher would make it drop the server's next
        // records); the other clients keep a real window, where 1 would be a replay: use fresh numbers.
        const seq = name === "nodertc" ? 1 : 20;
        relay.inject(forgedRecord(23, seq, 40));
        relay.inject(forgedRecord(21, seq, 26));
        await sleep(100);
        t.send([Buffer.from("second")]);
        await o.waitRecords(2);
        expect(o.records).toEqual(["<first", "<second"]);
        expect(o.closes).toEqual([]);
      } finally {
        await relay.close();
      }
    },
    T,
  );
});

describe("transport selection and options", () => {
  it("node-dtls-client with certificates: transport_unsupported", async () => {
    const port = 5684; // never contacted
    for (const o of [{ ca: pki.caPem }, { fingerprint: pki.p384.fingerprint.hex }, { psk: PSK, cert: deviceP384.chainPem, key: deviceP384.keyPem }]) {
      const e = await rejection(openTransport("node-dtls-client", { host: "127.0.0.1", port, ...o }));
      expect(e.code).toBe("transport_unsupported");
    }
  });

  it("invalid options: bad_option, before any packet", async () => {
    const base = { host: "127.0.0.1", port: 5684, psk: PSK };
    const cases: Array<[TransportName, unknown]> = [
      ["carrier-pigeon" as TransportName, base],
      ["dtlspush", { host: "127.0.0.1", port: 5684 }], // no credentials
      ["dtlspush", { ...base, port: 0 }],
      ["dtlspush", { ...base, port: 70_000 }],
      ["dtlspush", { ...base, host: "" }],
      ["dtlspush", { ...base, psk: { identity: "", key: PSK.key } }],
      ["dtlspush", { ...base, psk: { identity: "x", key: new Uint8Array(0) } }],
      ["dtlspush", { ...base, cert: deviceP384.chainPem }], // cert without key
      ["dtlspush", { ...base, fingerprint: "abcd" }],
      ["dtlspush", { ...base, mtu: 50 }],
      ["dtlspush", { ...base, timeoutMs: 0 }],
      ["dtlspush", { ...base, ca: "no certificate here" }], // the engine's own check
      ["nodertc", { ...base, ca: "no certificate here" }],
    ];
    for (const [name, o] of cases) {
      const e = await rejection(openTransport(name, o as TransportOptions));
      expect(e.code, JSON.stringify(o)).toBe("bad_option");
    }
  });

  it("nodertc refuses what @nodertc/dtls cannot do: transport_unsupported", async () => {
    const e = await rejection(openTransport("nodertc", { host: "127.0.0.1", port: 5684, psk: PSK, mtu: 1500 }));
    expect(e.code).toBe("transport_unsupported");
  });

  it("a missing optional library: transport_unavailable naming the package", async () => {
    const e = await rejection(loadOptionalModule("dtlspush-test-no-such-package", "example"));
    expect(e.code).toBe("transport_unavailable");
    expect(e.message).toContain("dtlspush-test-no-such-package");
  });

  it(
    "a host name is resolved (nodertc takes only addresses)",
    async () => {
      const srv = await pskServer();
      for (const name of ALL) {
        const t = await open(name, { host: "localhost", port: srv.port, psk: PSK });
        const o = observe(t);
        t.send([Buffer.from(name)]);
        await o.waitRecords(1);
        expect(o.records).toEqual([`<${name}`]);
        expect(t.description).toContain(`to localhost:${srv.port}`);
      }
    },
    T,
  );
});

describe("dtlspush transport through a lossy link", () => {
  it("handshakes through loss, duplication and reordering; records that survive arrive whole", async () => {
    const srv = await pskServer();
    const proxy = await startLossyProxy({ target: { host: "127.0.0.1", port: srv.port }, drop: 0.15, duplicate: 0.05, reorder: 0.1, seed: 11 });
    proxies.push(proxy);
    const t = await open("dtlspush", { port: proxy.port, psk: PSK, timeoutMs: 15_000 });
    const o = observe(t);
    for (let i = 0; i < 40; i++) {
      t.send([Buffer.from(`m${i}`)]);
      await sleep(2);
    }
    await sleep(300);
    const session = srv.sessions[0] as Session;
    // each record arrives at most once (DTLS replay protection) and unaltered
    expect(new Set(session.data).size).toBe(session.data.length);
    expect(session.data.every((d) => /^m\d+$/.test(d))).toBe(true);
    expect(session.data.length).toBeGreaterThan(10);
    expect(o.records.every((r) => /^<m\d+$/.test(r))).toBe(true);
    expect(proxy.stats.forwarded).toBeGreaterThan(0);
  }, 30_000);
});

// ---------------------------------------------------------------------------
// TransportBase with a fake library

class FakeTransport extends TransportBase {
  readonly sent: Uint8Array[][] = [];
  shutdowns = 0;
  constructor() {
    super("dtlspush", 10, "fake");
  }
  protected transmit(records: readonly Uint8Array[]): void {
    this.sent.push([...records]);
  }
  protected shutdown(): Promise<void> {
    this.shutdowns++;
    return Promise.resolve();
  }
  deliver(r: Uint8Array): void {
    this.received(r);
  }
  end(e: Error | undefined): void {
    this.ended(e);
  }
}

describe("TransportBase", () => {
  it("keeps records that arrive before onRecord, copies them, then reports the close after them", async () => {
    const t = new FakeTransport();
    const buf = Buffer.from("abc");
    t.deliver(buf);
    buf[0] = 0x78; // the library reuses its buffer
    t.deliver(Buffer.from("def"));
    const err = new Error("gone");
    t.end(err);
    t.deliver(Buffer.from("after the end"));
    const events: string[] = [];
    t.onClose((e) => events.push(`close:${e?.message}`));
    t.onRecord((r) => events.push(Buffer.from(r).toString()));
    await sleep(0);
    expect(events).toEqual(["abc", "def", "close:gone"]);
    t.end(undefined);
    await t.close();
    expect(events).toEqual(["abc", "def", "close:gone"]);
    expect(t.shutdowns).toBe(0);
  });

  it("close() shuts the library down once and reports a clean end once; send checks size and state", async () => {
    const t = new FakeTransport();
    const closes: Array<Error | undefined> = [];
    t.onClose((e) => closes.push(e));
    t.send([]);
    t.send([Buffer.alloc(10), Buffer.alloc(3)]);
    expect(t.sent).toHaveLength(1);
    expect(() => t.send([Buffer.alloc(11)])).toThrow(expect.objectContaining({ code: "too_large" }));
    await Promise.all([t.close(), t.close()]);
    expect(t.shutdowns).toBe(1);
    expect(closes).toEqual([undefined]);
    expect(() => t.send([Buffer.alloc(1)])).toThrow(expect.objectContaining({ code: "closed" }));
    t.end(new Error("late"));
    expect(closes).toEqual([undefined]);
  });
});
