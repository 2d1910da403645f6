import { beforeAll, describe, expect, it } from "vitest";
import { certificateIdentity, verifyChain } from "../../src/dtls/cert-verify.ts";
import { parseCertificate, pemCertificates, subjectNameDer, type Certificate } from "../../src/crypto/index.ts";
import { alertError } from "../../src/dtls/errors.ts";
import type { ClientVerdict } from "../../src/dtls/options.ts";
import { createCertificateAuthority, issueDeviceCertificate, type IssuedCertificate } from "../../src/pki/index.ts";
import { Pipe, suites } from "./harness.ts";
import { credential, makeTestPki, type TestPki } from "./test-certs.ts";

let pki: TestPki;
let device: IssuedCertificate;
let deviceP384: IssuedCertificate;
let strangerDevice: IssuedCertificate;
const chain = (pem: string): Certificate[] => pemCertificates(pem).map(parseCertificate);

beforeAll(async () => {
  pki = await makeTestPki();
  // Device certificates from the same CA as the server's (the test PKI's CA is not exported; make one here).
  const { ca } = await createCertificateAuthority({ commonName: "device CA" });
  device = await issueDeviceCertificate(ca, { id: "sensor-7" });
  deviceP384 = await issueDeviceCertificate(ca, { id: "sensor-8", curve: "p384" });
  const { ca: other } = await createCertificateAuthority({ commonName: "someone else's CA" });
  strangerDevice = await issueDeviceCertificate(other, { id: "intruder" });
  deviceCaPem = ca.certPem;
}, 60_000);
let deviceCaPem = "";

const SUITE = suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
const trustServer = () => (c: readonly Certificate[]) => verifyChain(c, { anchors: chain(pki.caPem), servername: "localhost" }, new Date());

function mutualPipe(mode: "request" | "require", refuse?: (identity: string) => ClientVerdict | undefined) {
  const anchors = chain(deviceCaPem);
  return new Pipe(
    {},
    {
      psk: undefined,
      suites: SUITE,
      certificates: [credential(pki.p256)],
      clientAuth: mode,
      clientCaNames: anchors.map((a) => subjectNameDer(a.der)),
      verifyClient: (c) => {
        const bad = verifyChain(c, { anchors }, new Date(), "client");
        if (bad !== undefined) return bad;
        const identity = certificateIdentity(c[0] as Certificate, "cn") as string;
        return refuse?.(identity) ?? { identity };
      },
    },
  );
}

describe("mutual X.509", () => {
  it("a required client certificate: CertificateVerify checked, the device named by its CN, data both ways", () => {
    for (const d of [device, deviceP384]) {
      const p = mutualPipe("require");
      p.startClient({ suites: SUITE }, undefined, trustServer(), credential(d));
      expect(p.runUntilEstablished()).toBe(true);
      const expectedId = d === device ? "sensor-7" : "sensor-8";
      expect(p.serverSession?.info.identity).toBe(expectedId);
      expect(p.serverSession?.info.peerCertificate?.fingerprint256).toBe(d.fingerprint.hex);
      p.client.send(new TextEncoder().encode("hi"));
      p.run(10);
      expect(Buffer.from(p.serverData[0] ?? []).toString()).toBe("hi");
    }
  });

  it("no certificate when one is required: handshake_failure; when only requested: an anonymous session", () => {
    const p = mutualPipe("require");
    p.startClient({ suites: SUITE }, undefined, trustServer());
    p.run(5000);
    expect(p.serverErrors.map((e) => e.code)).toEqual(["handshake_failure"]);
    const q = mutualPipe("request");
    q.startClient({ suites: SUITE }, undefined, trustServer());
    expect(q.runUntilEstablished()).toBe(true);
    expect(q.serverSession?.info.identity).toBe("");
    expect(q.serverSession?.info.peerCertificate).toBeUndefined();
  });

  it("a client certificate from another CA: unknown_ca", () => {
    const p = mutualPipe("require");
    p.startClient({ suites: SUITE }, undefined, trustServer(), credential(strangerDevice));
    p.run(5000);
    expect(p.serverErrors.map((e) => e.code)).toEqual(["unknown_ca"]);
    expect(p.clientClosed).toMatchObject({ code: "alert_received", alert: 48 });
  });

  it("the layer above refuses a revoked device: certificate_revoked", () => {
    const p = mutualPipe("require", (id) => (id === "sensor-7" ? alertError("certificate_revoked", "sensor-7 is revoked") : undefined));
    p.startClient({ suites: SUITE }, undefined, trustServer(), credential(device));
    p.run(5000);
    expect(p.serverErrors.map((e) => e.code)).toEqual(["certificate_revoked"]);
    expect(p.clientClosed).toMatchObject({ alert: 44 });
  });

  it("a CertificateVerify made with another key: decrypt_error", () => {
    const p = mutualPipe("require");
    // The device's chain with a different key: its CertificateVerify cannot verify.
    const forged = { chain: credential(device).chain, signer: credential(deviceP384).signer };
    p.startClient({ suites: SUITE }, undefined, trustServer(), forged);
    p.run(5000);
    expect(p.serverErrors.map((e) => e.code)).toEqual(["decrypt_error"]);
  });

  it("a server certificate offered as a client certificate is refused for its extended key usage", () => {
    const bad = verifyChain(chain(pki.p256.chainPem), { anchors: chain(pki.caPem) }, new Date(), "client");
    expect(bad?.code).toBe("unsupported_certificate");
  });

  it("names devices by CN, SAN URI or fingerprint", () => {
    const leaf = chain(device.chainPem)[0] as Certificate;
    expect(certificateIdentity(leaf, "cn")).toBe("sensor-7");
    expect(certificateIdentity(leaf, "san-uri")).toBe("urn:dtlspush:device:sensor-7");
    expect(certificateIdentity(leaf, "fingerprint")).toBe(device.fingerprint.hex);
  });
});
