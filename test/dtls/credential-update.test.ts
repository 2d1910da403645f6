import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { connect, DtlsError, listen, type DtlsConnection, type DtlsServer } from "../../src/dtls/index.ts";
import { createCertificateAuthority, issueDeviceCertificate, type IssuedCertificate } from "../../src/pki/index.ts";
import { makeTestPki, type TestPki } from "./test-certs.ts";

const SUITES = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"] as const;
const KEY = Buffer.from("00112233445566778899aabbccddeeff", "hex");

let pki: TestPki;
let deviceCa1 = "";
let deviceCa2 = "";
let device1: IssuedCertificate;
let device2: IssuedCertificate;

beforeAll(async () => {
  pki = await makeTestPki();
  const { ca: ca1 } = await createCertificateAuthority({ commonName: "device CA one" });
  const { ca: ca2 } = await createCertificateAuthority({ commonName: "device CA two" });
  deviceCa1 = ca1.certPem;
  deviceCa2 = ca2.certPem;
  device1 = await issueDeviceCertificate(ca1, { id: "dev-1" });
  device2 = await issueDeviceCertificate(ca2, { id: "dev-2" });
}, 60_000);

let servers: DtlsServer[] = [];
let conns: DtlsConnection[] = [];
afterEach(async () => {
  for (const c of conns.splice(0)) if (!c.closed) c.close();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function echoServer(opts: Partial<Parameters<typeof listen>[0]>): Promise<DtlsServer> {
  const s = await listen({ host: "127.0.0.1", port: 0, ...opts });
  servers.push(s);
  s.on("session", (c) => c.on("data", (d) => c.send(Buffer.concat([Buffer.from("echo:"), d]))));
  return s;
}

async function open(s: DtlsServer, opts: Partial<Parameters<typeof connect>[0]>): Promise<DtlsConnection> {
  const c = await connect({ host: "127.0.0.1", port: s.address().port, suites: [...SUITES], timeoutMs: 5000, ...opts });
  conns.push(c);
  return c;
}

function roundTrip(c: DtlsConnection, msg: string): Promise<string> {
  const answer = new Promise<string>((resolve) => c.once("data", (d) => resolve(d.toString())));
  c.send(Buffer.from(msg));
  return answer;
}

async function failure(p: Promise<unknown>): Promise<DtlsError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof DtlsError) return e;
    throw e;
  }
  throw new Error("expected the handshake to fail");
}

describe("DtlsServer.updateCredentials", () => {
  it("swaps the server certificate: new handshakes get the new chain, an established session keeps going", async () => {
    const s = await echoServer({ certificates: [{ cert: pki.p256.chainPem, key: pki.p256.keyPem }] });
    const before = await open(s, { ca: pki.caPem });
    expect(before.info.peerCertificate?.fingerprint256).toBe(pki.p256.fingerprint.hex);
    expect(await roundTrip(before, "one")).toBe("echo:one");

    // A chain from another CA: clients trusting only the old CA can no longer connect.
    s.updateCredentials({ certificates: [{ cert: pki.foreign.chainPem, key: pki.foreign.keyPem }] });

    const after = await open(s, { ca: pki.otherCaPem });
    expect(after.info.peerCertificate?.fingerprint256).toBe(pki.foreign.fingerprint.hex);
    expect(await roundTrip(after, "two")).toBe("echo:two");
    const pinned = await open(s, { fingerprint: pki.foreign.fingerprint.hex });
    expect(pinned.info.peerCertificate?.fingerprint256).toBe(pki.foreign.fingerprint.hex);

    const old = await failure(open(s, { ca: pki.caPem }));
    expect(old.code).toBe("unknown_ca");
    expect(old.alert).toBe(48);

    // The session made before the swap is untouched.
    expect(before.closed).toBe(false);
    expect(await roundTrip(before, "three")).toBe("echo:three");
    expect(s.sessions()).toBe(3);
    expect(s.stats.alertsReceived.unknown_ca).toBe(1);
  });

  it("swaps the client CA: devices of the old CA are refused with unknown_ca, those of the new one accepted", async () => {
    const s = await echoServer({
      certificates: [{ cert: pki.p256.chainPem, key: pki.p256.keyPem }],
      clientAuth: "require",
      clientCa: deviceCa1,
    });
    const trust = { ca: pki.caPem, servername: "localhost" };
    const early = await open(s, { ...trust, cert: device1.chainPem, key: device1.keyPem });
    expect(await roundTrip(early, "a")).toBe("echo:a");
    expect((await failure(open(s, { ...trust, cert: device2.chainPem, key: device2.keyPem }))).alert).toBe(48);

    s.updateCredentials({ clientCa: deviceCa2 });

    const refused = await failure(open(s, { ...trust, cert: device1.chainPem, key: device1.keyPem }));
    expect(refused).toMatchObject({ code: "alert_received", alert: 48 });
    const accepted = await open(s, { ...trust, cert: device2.chainPem, key: device2.keyPem });
    expect(await roundTrip(accepted, "b")).toBe("echo:b");
    expect(await roundTrip(early, "c")).toBe("echo:c");
    expect(s.stats.handshakeFailures.unknown_ca).toBe(2);
    expect(s.stats.alertsSent.unknown_ca).toBe(2);
  });

  it("changes the client authentication mode", async () => {
    const s = await echoServer({ certificates: [{ cert: pki.p256.chainPem, key: pki.p256.keyPem }], clientAuth: "none" });
    const trust = { ca: pki.caPem };
    await open(s, trust);
    s.updateCredentials({ clientAuth: "require", clientCa: deviceCa1 });
    const refused = await failure(open(s, trust));
    expect(refused).toMatchObject({ code: "alert_received", alert: 40 });
    const device = await open(s, { ...trust, cert: device1.chainPem, key: device1.keyPem });
    expect(await roundTrip(device, "x")).toBe("echo:x");
  });

  it("adds certificate suites to a PSK-only server", async () => {
    const s = await echoServer({ psk: { keys: new Map([["dev", KEY]]) } });
    await failure(open(s, { ca: pki.caPem }));
    s.updateCredentials({ certificates: [{ cert: pki.p256.chainPem, key: pki.p256.keyPem }] });
    const c = await open(s, { ca: pki.caPem });
    expect(c.info.suite).toBe(SUITES[0]);
    const p = await open(s, { psk: { identity: "dev", key: KEY }, suites: ["TLS_PSK_WITH_AES_128_GCM_SHA256"] });
    expect(await roundTrip(p, "psk")).toBe("echo:psk");
  });

  it("checks everything first: a bad update throws bad_option naming the problem and changes nothing", async () => {
    const s = await echoServer({ certificates: [{ cert: pki.p256.chainPem, key: pki.p256.keyPem }] });
    const cases: [Parameters<DtlsServer["updateCredentials"]>[0], RegExp][] = [
      // the new chain with a key that is not its own, next to a good pair
      [
        {
          certificates: [
            { cert: pki.foreign.chainPem, key: pki.foreign.keyPem },
            { cert: pki.p384.chainPem, key: pki.p256.keyPem },
          ],
        },
        /certificates\[1\].*private key does not belong/,
      ],
      [{ certificates: [{ cert: "not a certificate", key: pki.p256.keyPem }] }, /certificates\[0\]/],
      [{ certificates: [] }, /psk keys or certificates/],
      [{ clientAuth: "require" }, /needs clientCa/],
      [{ clientAuth: "require", clientCa: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" }, /clientCa/],
      [{ clientAuth: "sometimes" as "none" }, /clientAuth must be/],
    ];
    for (const [update, message] of cases) {
      let error: unknown;
      try {
        s.updateCredentials(update);
      } catch (e) {
        error = e;
      }
      expect(error, JSON.stringify(update).slice(0, 80)).toBeInstanceOf(DtlsError);
      expect((error as DtlsError).code).toBe("bad_option");
      expect((error as DtlsError).message).toMatch(message);
    }
    const c = await open(s, { ca: pki.caPem });
    expect(c.info.peerCertificate?.fingerprint256).toBe(pki.p256.fingerprint.hex);
  });
});
