/**
 * Fuzz: the DTLS server (sans-I/O ServerCore, fake clock) with our client's
 * real flights mutated at every handshake stage: the first ClientHello, the
 * ClientHello with its cookie, flight 3 (ClientKeyExchange, ChangeCipherSpec,
 * Finished; with a client Certificate and CertificateVerify for the
 * certificate suite) and the first application record. Bytes flipped or set,
 * record and handshake header fields (type, version, epoch, sequence number,
 * length, message_seq, fragment offset and length) set to other values,
 * records dropped, duplicated, reordered, datagrams truncated or replayed.
 *
 * After each case: nothing escaped the server, an established session still
 * echoes, a new honest client still completes a handshake and echoes, every
 * alert the server sent is a known one and never internal_error (docs/dtls-engine.md:
 * malformed input is decode_error), and no handshake is left behind.
 */
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { verifyChain } from "../../src/dtls/cert-verify.ts";
import { parseCertificate, pemCertificates, type Certificate } from "../../src/dtls/crypto.ts";
import { subjectNameDer } from "../../src/dtls/der.ts";
import type { ClientAuth } from "../../src/dtls/handshake-client.ts";
import type { ConnectionConfig } from "../../src/dtls/options.ts";
import type { ServerCoreConfig } from "../../src/dtls/server-core.ts";
import { createCertificateAuthority, issueDeviceCertificate } from "../../src/pki/index.ts";
import { DtlsNet, recordRanges, type NetClient } from "../support/dtls-net.ts";
import { fcShared, fuzzAssert, fuzzSeed } from "../support/fuzz.ts";
import { connectionConfig, PSK_ID, PSK_KEY, serverConfig, suites } from "./harness.ts";
import { credential, makeTestPki } from "./test-certs.ts";

interface Setup {
  readonly name: string;
  readonly server: ServerCoreConfig;
  readonly client: ConnectionConfig;
  readonly auth: ClientAuth;
}

const setups: Setup[] = [];

beforeAll(async () => {
  const psk = { psk: { identity: PSK_ID, key: PSK_KEY }, verifyServer: undefined };
  for (const suite of ["TLS_PSK_WITH_AES_128_CCM_8", "TLS_PSK_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256"] as const) {
    setups.push({ name: suite, server: serverConfig(), client: connectionConfig({ suites: suites(suite) }), auth: psk });
  }
  const pki = await makeTestPki();
  const { ca } = await createCertificateAuthority({ commonName: "device CA" });
  const device = await issueDeviceCertificate(ca, { id: "sensor-7" });
  const chain = (pem: string): Certificate[] => pemCertificates(pem).map(parseCertificate);
  const anchors = chain(ca.certPem);
  const suite = suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
  setups.push({
    name: "ECDHE_ECDSA with a client certificate",
    server: serverConfig({
      psk: undefined,
      suites: suite,
      certificates: [credential(pki.p256)],
      clientAuth: "require",
      clientCaNames: anchors.map((a) => subjectNameDer(a.der)),
      verifyClient: (c) => verifyChain(c, { anchors }, new Date(), "client") ?? { identity: "sensor-7" },
    }),
    client: connectionConfig({ suites: suite }),
    auth: {
      psk: undefined,
      certificate: credential(device),
      verifyServer: (c) => verifyChain(c, { anchors: chain(pki.caPem), servername: "localhost" }, new Date()),
    },
  });
}, 60_000);

// ---- mutations ----

const OPS = [
  "flip byte",
  "set byte",
  "truncate",
  "record type",
  "record version",
  "record epoch",
  "record sequence",
  "record length",
  "handshake type",
  "handshake length",
  "message_seq",
  "fragment offset",
  "fragment length",
  "drop record",
  "duplicate record",
  "swap records",
  "insert bytes",
  "duplicate datagram",
  "extensions byte",
  "extension length",
] as const;
type Op = (typeof OPS)[number];

interface Mutation {
  /** which datagram of the client: 0 first ClientHello, 1 with cookie, 2.. flight 3 (and on), then data */
  readonly stage: number;
  readonly op: Op;
  /** random numbers the op picks positions and values from */
  readonly a: number;
  readonly b: number;
  readonly v: number;
}

const EDGE16 = [0, 1, 0xfefd, 0xfeff, 0x0303, 0x7fff, 0xffff];
const pick = <T>(xs: readonly T[], n: number): T => xs[n % xs.length]!;

function put(d: Uint8Array, at: number, width: number, value: number): void {
  for (let i = width - 1; i >= 0; i--) {
    if (at + i < d.length) d[at + i] = value & 0xff;
    value = Math.floor(value / 256);
  }
}

/** The datagram after the mutation (several datagrams for a duplicate). */
function mutate(d: Uint8Array, m: Mutation): Uint8Array[] {
  const recs = recordRanges(d);
  const r = recs.length > 0 ? pick(recs, m.a) : ([0, d.length] as [number, number]);
  const out = new Uint8Array(d);
  const hs = r[0] + 13; // handshake header, when the record is an epoch-0 handshake record
  const edge = (width: number): number => (m.v % 3 === 0 ? pick(EDGE16, m.v) : m.v % 2 ** (8 * Math.min(width, 4)));
  switch (m.op) {
    case "flip byte": {
      const i = m.b % out.length;
      out[i] = out[i]! ^ (1 + (m.v % 255));
      return [out];
    }
    case "set byte":
      out[m.b % out.length] = m.v & 0xff;
      return [out];
    case "truncate":
      return [out.subarray(0, m.b % out.length)];
    case "record type":
      out[r[0]] = pick([20, 21, 22, 23, 24, 25, 0, 255], m.v);
      return [out];
    case "record version":
      put(out, r[0] + 1, 2, edge(2));
      return [out];
    case "record epoch":
      put(out, r[0] + 3, 2, pick([0, 1, 2, 0xffff], m.v));
      return [out];
    case "record sequence":
      put(out, r[0] + 5, 6, pick([0, 1, 2, 63, 64, 2 ** 48 - 1, m.v], m.b));
      return [out];
    case "record length":
      put(out, r[0] + 11, 2, edge(2));
      return [out];
    case "handshake type":
      out[hs] = pick([0, 1, 2, 3, 11, 12, 13, 14, 15, 16, 20, 255], m.v);
      return [out];
    case "handshake length":
      put(out, hs + 1, 3, pick([0, 1, 0xffff, 0x10000, 0xffffff, m.v & 0xffffff], m.b));
      return [out];
    case "message_seq":
      put(out, hs + 4, 2, edge(2));
      return [out];
    case "fragment offset":
      put(out, hs + 6, 3, pick([0, 1, 0xffff, 0xffffff, m.v & 0xffffff], m.b));
      return [out];
    case "fragment length":
      put(out, hs + 9, 3, pick([0, 1, 0xffff, 0xffffff, m.v & 0xffffff], m.b));
      return [out];
    case "drop record":
      return [new Uint8Array([...d.subarray(0, r[0]), ...d.subarray(r[1])])];
    case "duplicate record":
      return [new Uint8Array([...d.subarray(0, r[1]), ...d.subarray(r[0], r[1]), ...d.subarray(r[1])])];
    case "swap records": {
      if (recs.length < 2) return [out];
      const s = pick(recs, m.b);
      const [x, y] = r[0] < s[0] ? [r, s] : [s, r];
      if (x === y) return [out];
      return [new Uint8Array([...d.subarray(0, x[0]), ...d.subarray(y[0], y[1]), ...d.subarray(x[1], y[0]), ...d.subarray(x[0], x[1]), ...d.subarray(y[1])])];
    }
    case "insert bytes": {
      const at = m.b % (d.length + 1);
      const junk = Array.from({ length: 1 + (m.v % 40) }, (_, i) => (m.v * (i + 7)) & 0xff);
      return [new Uint8Array([...d.subarray(0, at), ...junk, ...d.subarray(at)])];
    }
    case "duplicate datagram":
      return [out, new Uint8Array(d)];
    case "extensions byte":
    case "extension length": {
      const ext = clientHelloExtensions(out, r[0]);
      if (ext === undefined) return [out];
      const [start, end] = ext;
      if (m.op === "extensions byte") out[start + (m.b % (end - start))] = m.v & 0xff;
      else {
        // the block's length, or the length of the extension at a random index
        const lengths = [start - 2];
        for (let at = start; at + 4 <= end; at += 4 + ((out[at + 2]! << 8) | out[at + 3]!)) lengths.push(at + 2);
        put(out, pick(lengths, m.b), 2, edge(2));
      }
      return [out];
    }
  }
}

/** [start, end) of the extensions in a ClientHello record at `rec` (after the block's 2-byte length), if any. */
function clientHelloExtensions(d: Uint8Array, rec: number): [number, number] | undefined {
  if (d[rec] !== 22 || d[rec + 13] !== 1) return undefined;
  let at = rec + 13 + 12 + 2 + 32; // record header, handshake header, version, random
  const skip = (lenBytes: number): void => {
    let n = 0;
    for (let i = 0; i < lenBytes; i++) n = n * 256 + (d[at + i] ?? 0);
    at += lenBytes + n;
  };
  skip(1); // session id
  skip(1); // cookie
  skip(2); // suites
  skip(1); // compression methods
  if (at + 2 > d.length) return undefined;
  const len = (d[at]! << 8) | d[at + 1]!;
  const start = at + 2;
  const end = Math.min(start + len, d.length);
  return end > start ? [start, end] : undefined;
}

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ stage: fc.integer({ min: 0, max: 4 }), op: fc.constantFrom(...OPS), a: fc.nat(), b: fc.nat(), v: fc.nat() }) },
  // the ClientHello with its cookie: what is not covered by the cookie reaches the handshake
  { weight: 1, arbitrary: fc.record({ stage: fc.constant(1), op: fc.constantFrom<Op>("extensions byte", "extension length"), a: fc.nat(), b: fc.nat(), v: fc.nat() }) },
);

// ---- one case ----

const KNOWN_ALERT = /^[a-z_]+$/;

interface World {
  readonly net: DtlsNet;
  readonly victim: NetClient;
  readonly setup: Setup;
  cases: number;
}

function world(setup: Setup): World {
  const net = new DtlsNet(setup.server);
  const victim = net.client(setup.client, setup.auth);
  expect(net.establish(victim), `${setup.name}: the victim's handshake`).toBe(true);
  return { net, victim, setup, cases: 0 };
}

function diffCounts(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v !== (before[k] ?? 0)) d[k] = v - (before[k] ?? 0);
  return d;
}

/** Runs one attacker handshake with `mutate` applied, then checks the server. Returns what went wrong ("" if nothing). */
function attackCase(w: World, label: string, tamper: (d: Uint8Array, n: number) => Uint8Array[] | undefined): string {
  const { net, setup } = w;
  const n = ++w.cases;
  const alertsBefore = { ...net.server.stats.alertsSent };
  const escapedBefore = net.escaped.length;
  const attacker = net.client(setup.client, setup.auth);
  attacker.tamper = (d, i) => {
    const t = tamper(d, i);
    if (t === undefined) return d;
    // all but the last go out at once, the last through the normal path
    for (const extra of t.slice(0, -1)) net.inject(attacker, extra);
    return t[t.length - 1];
  };
  // the handshake, then a record (a fifth datagram to mutate), then every retransmission and timeout run out
  net.establish(attacker, 10_000);
  if (attacker.info !== undefined) attacker.conn.send(new TextEncoder().encode("after"));
  net.run(200_000, () => attacker.closed !== null && net.server.session(attacker.peer) === undefined);
  const problems: string[] = [];
  if (net.escaped.length > escapedBefore) problems.push(`an exception escaped the server: ${String(net.escaped[escapedBefore])}`);
  const alerts = diffCounts(net.server.stats.alertsSent, alertsBefore);
  const badAlerts = Object.keys(alerts).filter((a) => a === "internal_error" || !KNOWN_ALERT.test(a));
  if (badAlerts.length > 0) problems.push(`the server sent alert(s) ${badAlerts.join(", ")} (all sent: ${JSON.stringify(alerts)})`);
  if (!net.echoes(w.victim, `victim-${n}`)) problems.push("the established session no longer echoes");
  const honest = net.client(setup.client, setup.auth);
  if (!net.establish(honest)) problems.push(`a new honest client could not complete a handshake (${String(honest.closed?.code)})`);
  else if (!net.echoes(honest, `honest-${n}`)) problems.push("a new honest client's record was not echoed");
  net.drop(honest);
  net.drop(attacker);
  net.run(200_000, () => net.server.handshakesInProgress === 0);
  if (net.server.handshakesInProgress !== 0) problems.push(`${net.server.handshakesInProgress} handshake(s) left in progress`);
  return problems.length === 0 ? "" : `${label}: ${problems.join("; ")}`;
}

describe("DTLS server under mutated flights", () => {
  it.each([0, 1, 2, 3])("setup %i: mutations at every handshake stage", async (i) => {
    const w = world(setups[i]!);
    await fuzzAssert(
      fc.property(mutation, (m) => {
        const problem = attackCase(w, `${w.setup.name}, datagram ${m.stage}, ${m.op} (seed ${fuzzSeed()})`, (d, n) => (n === m.stage ? mutate(d, m) : undefined));
        expect(problem, problem).toBe("");
      }),
      fcShared(i === 3 ? 60 : 80, 100 + i),
    );
  });

  it.each([0, 1, 2, 3])("setup %i: flight 3 without its ChangeCipherSpec does not complete the handshake (defect 7)", (i) => {
    const setup = setups[i]!;
    const w = world(setup);
    // the CCS record (content type 20) is cut out of whichever datagram carries it, once
    let cut = false;
    let stateAfter: string | undefined;
    // the first datagram the server takes after the cut is the cut one (only the attacker is talking then)
    w.net.afterServerReceive = (from) => {
      if (!cut || stateAfter !== undefined) return;
      const [address, port] = from.split("|") as [string, string];
      stateAfter = w.net.server.session({ address, port: Number(port) })?.connection.state ?? "gone";
    };
    const problem = attackCase(w, `${setup.name}, no CCS`, (d) => {
      if (cut) return undefined;
      const ccs = recordRanges(d).find(([s]) => d[s] === 20);
      if (ccs === undefined) return undefined;
      cut = true;
      return [new Uint8Array([...d.subarray(0, ccs[0]), ...d.subarray(ccs[1])])];
    });
    expect(problem, problem).toBe("");
    expect(cut, "the client's flight carried a ChangeCipherSpec").toBe(true);
    expect(stateAfter, `${setup.name}: the server's state right after a flight 3 without ChangeCipherSpec`).not.toBe("established");
  });
});
