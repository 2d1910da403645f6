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
import { parseCertificate, pemCertificates, subjectNameDer, type Certificate } from "../../src/crypto/index.ts";
import type { ClientAuth } from "../../src/dtls/handshake-client.ts";
import type { ConnectionConfig } from "../../src/dtls/options.ts";
import type { ServerCoreConfig } from "../../src/dtls/server-core.ts";
import { createCertificateAuthority, issueDeviceCertificate } from "../../src/pki/index.ts";
import { DtlsNet, recordRanges, type NetClient } from "../support/dtls-net.ts";
import { clientHelloExtensions, mutate, mutation } from "../support/dtls-mutations.ts";
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

/** Runs one attacker handshake with `tamper` applied, then checks the server. Returns what went wrong ("" if nothing). */
function attackCase(w: World, label: string, tamper: (d: Uint8Array, n: number) => Uint8Array[] | undefined): string {
  return attack(w, label, tamper).problem;
}

/** attackCase, with the alerts the server sent during the attack (by name). */
function attack(
  w: World,
  label: string,
  tamper: (d: Uint8Array, n: number) => Uint8Array[] | undefined,
): { problem: string; alerts: Record<string, number> } {
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
  return { problem: problems.length === 0 ? "" : `${label}: ${problems.join("; ")}`, alerts };
}

describe("DTLS server under mutated flights", () => {
  it.each([0, 1, 2, 3])("setup %i: mutations at every handshake stage", async (i) => {
    const w = world(setups[i]!);
    await fuzzAssert(
      fc.property(mutation, (m) => {
        const problem = attackCase(w, `${w.setup.name}, datagram ${m.stage}, ${m.op} (seed ${fuzzSeed()})`, (d, n) =>
          n === m.stage ? mutate(d, m) : undefined,
        );
        expect(problem, problem).toBe("");
      }),
      fcShared(i === 3 ? 60 : 80, 100 + i),
    );
  });

  it.each([0, 1, 2, 3])("setup %i: flight 3 without its ChangeCipherSpec does not complete the handshake", (i) => {
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

  // docs/dtls-engine.md: malformed handshake messages are refused with decode_error (an earlier engine
  // answered internal_error). A ClientHello whose extensions block does not parse is dropped before any state (no alert is due);
  // one that parses but holds an extension whose own content is malformed reaches the handshake and must get
  // decode_error (or be ignored, for an extension the server does not use).
  it.each([0, 1, 2, 3])(
    "setup %i: every extension of a ClientHello with its cookie, its content malformed: decode_error or ignored",
    (setupIndex) => {
      const failures: string[] = [];
      let mutated = 0;
      // variants: the content's leading length byte(s) claim too much; claim nothing; the content's last byte cut off
      for (const variant of ["too long", "zero", "short by one"] as const) {
        for (let index = 0; index < 32; index++) {
          const w = world(setups[setupIndex]!);
          let target = "";
          const { problem, alerts } = attack(w, `extension #${index} ${variant}`, (d, n) => {
            if (n !== 1) return undefined;
            const ext = clientHelloExtensions(d, 0);
            if (ext === undefined) return undefined;
            let i = 0;
            for (let at = ext[0]; at + 4 <= ext[1]; at += 4 + ((d[at + 2]! << 8) | d[at + 3]!), i++) {
              const len = (d[at + 2]! << 8) | d[at + 3]!;
              if (i !== index) continue;
              target = `extension type ${(d[at]! << 8) | d[at + 1]!} (${len} bytes), ${variant}`;
              const out = new Uint8Array(d);
              if (variant === "too long") {
                if (len === 0) return undefined;
                out[at + 4] = 0xff;
                if (len >= 2) out[at + 5] = 0xff;
                return [out];
              }
              if (variant === "zero") {
                if (len === 0) return undefined;
                out[at + 4] = 0;
                if (len >= 2) out[at + 5] = 0;
                return [out];
              }
              if (len === 0) return undefined;
              // drop the content's last byte, and fix the lengths around it so the ClientHello still parses
              const cut = new Uint8Array([...out.subarray(0, at + 4 + len - 1), ...out.subarray(at + 4 + len)]);
              const put16 = (p: number, v: number): void => {
                cut[p] = (v >> 8) & 0xff;
                cut[p + 1] = v & 0xff;
              };
              const put24 = (p: number, v: number): void => {
                cut[p] = (v >> 16) & 0xff;
                cut[p + 1] = (v >> 8) & 0xff;
                cut[p + 2] = v & 0xff;
              };
              put16(at + 2, len - 1);
              put16(ext[0] - 2, ext[1] - ext[0] - 1);
              const body = ((d[14]! << 16) | (d[15]! << 8) | d[16]!) - 1;
              put24(14, body); // handshake length
              put24(22, body); // fragment length
              put16(11, ((d[11]! << 8) | d[12]!) - 1); // record length
              return [cut];
            }
            return undefined;
          });
          if (target === "") continue;
          mutated++;
          const wrong = Object.keys(alerts).filter((a) => a !== "decode_error" && a !== "close_notify");
          if (problem !== "" || wrong.length > 0) failures.push(`${target}: ${problem || `alerts ${JSON.stringify(alerts)}`}`);
        }
      }
      expect(mutated, "extensions mutated").toBeGreaterThan(3);
      expect(failures, `${setups[setupIndex]!.name}:\n${failures.join("\n")}`).toEqual([]);
    },
  );

  // docs/dtls-engine.md: a Finished that does not open fails the handshake at once with bad_record_mac
  it.each([0, 1, 2, 3])("setup %i: a Finished whose protected record was altered gets bad_record_mac", (i) => {
    const w = world(setups[i]!);
    let altered = false;
    const { problem, alerts } = attack(w, `${setups[i]!.name}, Finished altered`, (d) => {
      if (altered) return undefined;
      // a plain epoch-1 record, or (RFC 9146 CID negotiated) the tls12_cid record that ends the flight: its
      // CID hides its length from recordRanges, which stops there
      const ranges = recordRanges(d);
      const cidAt = [...ranges.map(([s]) => s), ranges.at(-1)?.[1] ?? 0].find((s) => d[s] === 25);
      const fin: [number, number] | undefined =
        cidAt !== undefined ? [cidAt, d.length] : ranges.find(([s]) => d[s] === 22 && (d[s + 3] !== 0 || d[s + 4] !== 0));
      if (fin === undefined) return undefined;
      altered = true;
      const out = new Uint8Array(d);
      out[fin[1] - 1] = out[fin[1] - 1]! ^ 0x01; // the last byte of the authentication tag
      return [out];
    });
    expect(problem, problem).toBe("");
    expect(altered, "the client's flight carried an epoch-1 Finished").toBe(true);
    expect(alerts, "alerts the server sent").toEqual({ bad_record_mac: 1 });
  });
});
