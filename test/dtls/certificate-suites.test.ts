import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { verifyChain } from "../../src/dtls/cert-verify.ts";
import { ContentType, ExtensionType, HandshakeType, ProtocolVersion } from "../../src/dtls/constants.ts";
import { loadPrivateKey, parseCertificate, pemCertificates, SignatureScheme, type Certificate } from "../../src/crypto/index.ts";
import { parseHandshakeFragments } from "../../src/dtls/handshake-codec.ts";
import { decodeSignedEcdhParams, EMPTY, encodeSupportedGroups, type ClientHello } from "../../src/dtls/messages.ts";
import { chooseServerParameters } from "../../src/dtls/negotiation.ts";
import { parseRecords } from "../../src/dtls/record.ts";
import { suiteByName, SUITE_NAMES, usesPsk } from "../../src/dtls/suites.ts";
import { Pipe, suites } from "./harness.ts";
import { credential, makeTestPki, type TestPki } from "./test-certs.ts";

let pki: TestPki;
beforeAll(async () => {
  pki = await makeTestPki();
}, 60_000);

const chain = (pem: string): Certificate[] => pemCertificates(pem).map(parseCertificate);
const trustCa =
  (caPem: string, servername = "localhost") =>
  (c: readonly Certificate[]) =>
    verifyChain(c, { anchors: chain(caPem), servername }, new Date());

function certPipe(suiteNames = SUITE_NAMES.filter((n) => !usesPsk(suiteByName(n)))) {
  return new Pipe({}, { psk: undefined, suites: suites(...suiteNames), certificates: [pki.p256, pki.p384, pki.rsa].map(credential) });
}

describe("certificate suites over the pipe", () => {
  for (const name of SUITE_NAMES.filter((n) => !usesPsk(suiteByName(n)))) {
    it(`${name}: the right chain, a verified signature, data both ways`, () => {
      const p = certPipe([name]);
      p.startClient({ suites: suites(name) }, undefined, trustCa(pki.caPem));
      expect(p.runUntilEstablished()).toBe(true);
      expect(p.clientInfo?.suite).toBe(name);
      const expected = name.includes("_RSA_") ? pki.rsa : pki.p256;
      expect(p.clientInfo?.peerCertificate?.fingerprint256).toBe(expected.fingerprint.hex);
      expect(p.clientInfo?.identity).toBe("");
      p.client.send(new TextEncoder().encode("up"));
      p.serverSession?.connection.send(new TextEncoder().encode("down"));
      p.run(100);
      expect(Buffer.from(p.serverData[0] ?? []).toString()).toBe("up");
      expect(Buffer.from(p.clientData[0] ?? []).toString()).toBe("down");
    });
  }

  it("completes under 30% loss with fragmentation to an MTU of 300 (certificate chains span datagrams)", () => {
    for (let seed = 1; seed <= 5; seed++) {
      const p = new Pipe(
        { loss: 0.3, reorder: 0.2, seed },
        {
          psk: undefined,
          mtu: 300,
          suites: suites("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
          certificates: [credential(pki.rsa)],
          retransmit: { initialMs: 1000, maxMs: 60_000, maxRetransmits: 12 },
        },
      );
      p.startClient(
        { mtu: 300, suites: suites("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"), retransmit: { initialMs: 1000, maxMs: 60_000, maxRetransmits: 12 } },
        undefined,
        trustCa(pki.caPem),
      );
      expect(p.runUntilEstablished(900_000)).toBe(true);
    }
  });

  it("the client pins a fingerprint instead of a CA", () => {
    const p = certPipe();
    p.startClient({ suites: suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256") }, undefined, (c) =>
      verifyChain(c, { anchors: [], fingerprint: pki.p256.fingerprint.colon }, new Date()),
    );
    expect(p.runUntilEstablished()).toBe(true);
  });

  const refusals: [string, () => (c: readonly Certificate[]) => ReturnType<typeof verifyChain>, string, number][] = [
    ["a server from another CA: unknown_ca", () => trustCa(pki.otherCaPem), "unknown_ca", 48],
    ["a name the certificate is not for: bad_certificate", () => trustCa(pki.caPem, "device.example"), "bad_certificate", 42],
    [
      "a different pinned fingerprint: bad_certificate",
      () => (c) => verifyChain(c, { anchors: [], fingerprint: "00".repeat(32) }, new Date()),
      "bad_certificate",
      42,
    ],
  ];
  for (const [what, verifier, code, alert] of refusals) {
    it(`the client refuses ${what}`, () => {
      const p = certPipe();
      p.startClient({ suites: suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256") }, undefined, verifier());
      p.run(5000);
      expect(p.clientClosed).toMatchObject({ code, alert });
      expect(p.serverErrors[0]).toMatchObject({ code: "alert_received", alert });
    });
  }

  it("the client refuses an expired server certificate with certificate_expired", () => {
    const p = new Pipe({}, { psk: undefined, suites: suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"), certificates: [credential(pki.expired)] });
    p.startClient({ suites: suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256") }, undefined, trustCa(pki.caPem));
    p.run(5000);
    expect(p.clientClosed).toMatchObject({ code: "certificate_expired", alert: 45 });
  });

  it("the client refuses a ServerKeyExchange whose signature does not verify (decrypt_error)", () => {
    const p = certPipe();
    const orig = p.enqueue.bind(p);
    p.enqueue = (to, d) => {
      if (to === "client") {
        const out = new Uint8Array(d);
        for (const r of parseRecords(out)) {
          if (r.type !== ContentType.handshake || r.epoch !== 0) continue;
          for (const f of parseHandshakeFragments(r.body)) {
            if (f.msgType === HandshakeType.server_key_exchange) f.body[f.body.length - 5] = (f.body[f.body.length - 5] as number) ^ 1;
          }
        }
        d = out;
      }
      orig(to, d);
    };
    p.startClient({ suites: suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256") }, undefined, trustCa(pki.caPem));
    p.run(5000);
    expect(p.clientClosed).toMatchObject({ code: "decrypt_error", alert: 51 });
  });
});

describe("certificate choice", () => {
  function hello(extensions: ClientHello["extensions"], ids: number[]): ClientHello {
    return {
      version: ProtocolVersion.DTLS1_2,
      random: new Uint8Array(32),
      sessionId: EMPTY,
      cookie: EMPTY,
      cipherSuites: ids,
      compressionMethods: new Uint8Array([0]),
      extensions,
    };
  }
  const groups = (...g: number[]) => ({ type: ExtensionType.supported_groups, data: encodeSupportedGroups(g) });
  const sigalgs = (...a: number[]) => ({ type: ExtensionType.signature_algorithms, data: encodeSupportedGroups(a) });
  const ecdsa = [suiteByName("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")];

  it("picks the P-384 chain for a client whose groups leave out P-256, and signs with the scheme it offers", () => {
    const creds = { psk: false, certificates: [credential(pki.p256), credential(pki.p384)], legacySha1: false };
    const c = chooseServerParameters(hello([groups(24, 25), sigalgs(0x0503)], [0xc02b]), ecdsa, false, creds);
    expect(c.credential?.signer.curve).toBe("P-384");
    expect(c.signatureScheme).toBe(SignatureScheme.ecdsa_secp384r1_sha384);
    const c2 = chooseServerParameters(hello([groups(29, 23, 24), sigalgs(0x0403, 0x0503)], [0xc02b]), ecdsa, false, creds);
    expect(c2.credential?.signer.curve).toBe("P-256");
  });

  it("signs with SHA-1 for a client without signature_algorithms only behind the legacy option (@nodertc/dtls)", () => {
    const nodertc = hello([groups(24, 25)], [0xc02b]);
    const creds = { psk: false, certificates: [credential(pki.p256), credential(pki.p384)], legacySha1: false };
    expect(() => chooseServerParameters(nodertc, ecdsa, false, creds)).toThrow(/legacy SHA-1 option/);
    const c = chooseServerParameters(nodertc, ecdsa, false, { ...creds, legacySha1: true });
    expect(c.credential?.signer.curve).toBe("P-384");
    expect(c.signatureScheme).toBe(SignatureScheme.ecdsa_sha1);
  });

  it("prefers RSA-PSS for RSA chains and never offers certificate suites without a certificate", () => {
    const rsaSuite = [suiteByName("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")];
    const c = chooseServerParameters(hello([groups(29), sigalgs(0x0401, 0x0804)], [0xc02f]), rsaSuite, false, {
      psk: false,
      certificates: [credential(pki.rsa)],
      legacySha1: false,
    });
    expect(c.signatureScheme).toBe(SignatureScheme.rsa_pss_rsae_sha256);
    expect(() => chooseServerParameters(hello([groups(29), sigalgs(0x0401)], [0xc02f]), rsaSuite, false)).toThrow(/no cipher suite/);
  });
});

describe("verifyChain", () => {
  it("accepts the chain to its CA for its names, and says why it refuses others", () => {
    const now = new Date();
    const anchors = chain(pki.caPem);
    expect(verifyChain(chain(pki.p256.chainPem), { anchors, servername: "localhost" }, now)).toBeUndefined();
    expect(verifyChain(chain(pki.p256.chainPem), { anchors, servername: "127.0.0.1" }, now)).toBeUndefined();
    expect(verifyChain(chain(pki.p256.chainPem), { anchors, servername: "::1" }, now)).toBeUndefined();
    expect(verifyChain(chain(pki.p256.certPem), { anchors, servername: "localhost" }, now)).toBeUndefined(); // leaf alone, CA from trust
    expect(verifyChain(chain(pki.foreign.chainPem), { anchors, servername: "localhost" }, now)?.code).toBe("unknown_ca");
    expect(verifyChain(chain(pki.expired.chainPem), { anchors, servername: "localhost" }, now)?.code).toBe("certificate_expired");
    expect(verifyChain(chain(pki.p256.chainPem), { anchors, servername: "10.0.0.1" }, now)?.code).toBe("bad_certificate");
    expect(verifyChain([], { anchors }, now)?.code).toBe("bad_certificate");
    const future = new Date(Date.now() + 400 * 86_400_000);
    expect(verifyChain(chain(pki.p256.chainPem), { anchors, servername: "localhost" }, future)?.code).toBe("certificate_expired");
  });
});

describe("Ed25519 certificates (RFC 8422 EdDSA with ECDHE_ECDSA suites)", () => {
  const openssl = spawnSync("openssl", ["version"]).status === 0;
  it.skipIf(!openssl)("a server with an Ed25519 chain signs the ServerKeyExchange with ed25519 (0x0807)", () => {
    const dir = mkdtempSync(join(tmpdir(), "dtlspush-ed25519-"));
    try {
      const r = spawnSync(
        "openssl",
        [
          "req",
          "-x509",
          "-newkey",
          "ed25519",
          "-nodes",
          "-keyout",
          "k.pem",
          "-out",
          "c.pem",
          "-days",
          "2",
          "-subj",
          "/CN=localhost",
          "-addext",
          "subjectAltName=DNS:localhost",
        ],
        { cwd: dir, encoding: "utf8" },
      );
      expect(r.status, r.stderr).toBe(0);
      const certPem = readFileSync(join(dir, "c.pem"), "utf8");
      const keyPem = readFileSync(join(dir, "k.pem"), "utf8");
      const cred = { chain: chain(certPem), signer: loadPrivateKey(keyPem) };
      expect(cred.signer.keyType).toBe("ed25519");
      const p = new Pipe({}, { psk: undefined, suites: suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"), certificates: [cred] });
      let scheme: number | undefined;
      const orig = p.enqueue.bind(p);
      p.enqueue = (to, d) => {
        if (to === "client") {
          for (const r2 of parseRecords(d)) {
            if (r2.type !== ContentType.handshake || r2.epoch !== 0) continue;
            for (const f of parseHandshakeFragments(r2.body)) {
              if (f.msgType === HandshakeType.server_key_exchange) scheme = decodeSignedEcdhParams(f.body).scheme;
            }
          }
        }
        orig(to, d);
      };
      // The self-signed leaf is its own trust anchor here.
      p.startClient({ suites: suites("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256") }, undefined, (c) =>
        verifyChain(c, { anchors: chain(certPem), servername: "localhost" }, new Date()),
      );
      expect(p.runUntilEstablished()).toBe(true);
      expect(scheme).toBe(SignatureScheme.ed25519);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
