import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { verifyChain } from "../../src/dtls/cert-verify.ts";
import { generateEcdh, loadPrivateKey, parseCertificate, pemCertificates, SignatureScheme, type Certificate } from "../../src/crypto/index.ts";
import { createCertificateAuthority, issueServerCertificate } from "../../src/pki/index.ts";
import { makeTestPki, type TestPki } from "./test-certs.ts";

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "hex"));
const toHex = (b: Uint8Array | null): string => (b === null ? "null" : Buffer.from(b).toString("hex"));
const chain = (pem: string): Certificate[] => pemCertificates(pem).map(parseCertificate);

let pki: TestPki;
beforeAll(async () => {
  pki = await makeTestPki();
}, 60_000);

describe("ECDH known answers", () => {
  it("x25519: RFC 7748 section 6.1", () => {
    const alice = generateEcdh("x25519", hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
    expect(toHex(alice.publicKey)).toBe("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    const bobPublic = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    expect(toHex(alice.derive(bobPublic))).toBe("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    const bob = generateEcdh("x25519", hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"));
    expect(toHex(bob.publicKey)).toBe(toHex(bobPublic));
    expect(toHex(bob.derive(alice.publicKey))).toBe("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  });

  it("NIST groups: both sides agree, on the x-coordinate of the right size", () => {
    for (const [group, size] of [
      ["secp256r1", 32],
      ["secp384r1", 48],
      ["secp521r1", 66],
    ] as const) {
      const a = generateEcdh(group);
      const b = generateEcdh(group);
      expect(a.publicKey.length).toBe(1 + 2 * size);
      expect(a.publicKey[0]).toBe(4);
      const z = a.derive(b.publicKey);
      expect(z?.length).toBe(size);
      expect(toHex(z)).toBe(toHex(b.derive(a.publicKey)));
    }
  });
});

describe("handshake signatures", () => {
  const data = new TextEncoder().encode("client_random || server_random || params");
  const cases: [string, () => { pem: string; key: string }, number[]][] = [
    [
      "ECDSA P-256",
      () => ({ pem: pki.p256.certPem, key: pki.p256.keyPem }),
      [SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.ecdsa_secp384r1_sha384, SignatureScheme.ecdsa_sha1],
    ],
    [
      "ECDSA P-384",
      () => ({ pem: pki.p384.certPem, key: pki.p384.keyPem }),
      [SignatureScheme.ecdsa_secp384r1_sha384, SignatureScheme.ecdsa_secp256r1_sha256],
    ],
    [
      "RSA-2048",
      () => ({ pem: pki.rsa.certPem, key: pki.rsa.keyPem }),
      [
        SignatureScheme.rsa_pss_rsae_sha256,
        SignatureScheme.rsa_pss_rsae_sha384,
        SignatureScheme.rsa_pkcs1_sha256,
        SignatureScheme.rsa_pkcs1_sha384,
        SignatureScheme.rsa_pkcs1_sha1,
      ],
    ],
  ];
  for (const [name, material, schemes] of cases) {
    it(`${name}: each scheme signs and verifies; a flipped bit, other data or another scheme does not verify`, () => {
      const { pem, key } = material();
      const signer = loadPrivateKey(key);
      const cert = chain(pem)[0] as Certificate;
      for (const scheme of schemes) {
        const sig = signer.sign(scheme, data);
        expect(cert.verifySignature(scheme, data, sig), `0x${scheme.toString(16)}`).toBe(true);
        const bad = new Uint8Array(sig);
        bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
        expect(cert.verifySignature(scheme, data, bad)).toBe(false);
        expect(cert.verifySignature(scheme, new TextEncoder().encode("other"), sig)).toBe(false);
      }
      expect(cert.verifySignature(SignatureScheme.ed25519, data, signer.sign(schemes[0] as number, data))).toBe(false);
      expect(() => signer.sign(cert.keyType === "rsa" ? SignatureScheme.ecdsa_secp256r1_sha256 : SignatureScheme.rsa_pkcs1_sha256, data)).toThrow();
    });
  }

  it("refuses keys that are not PEM, or encrypted, with a clear reason", () => {
    expect(() => loadPrivateKey("not a key")).toThrow(/no PEM private key/);
    expect(() => loadPrivateKey("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")).toThrow(/encrypted/);
  });
});

describe("certificate path checks", () => {
  it("a certificate not yet valid: bad_certificate", async () => {
    const { ca } = await createCertificateAuthority();
    const future = await issueServerCertificate(ca, { kind: "p256", now: new Date(Date.now() + 10 * 86_400_000) });
    const bad = verifyChain(chain(future.chainPem), { anchors: chain(ca.certPem), servername: "localhost" }, new Date());
    expect(bad?.code).toBe("bad_certificate");
    expect(bad?.message).toMatch(/not valid before/);
  });

  it("a certificate whose signature was tampered with: unknown_ca, saying the named CA did not sign it", () => {
    const leaf = chain(pki.p256.certPem)[0] as Certificate;
    const der = new Uint8Array(leaf.der);
    der[der.length - 3] = (der[der.length - 3] as number) ^ 0x01; // inside the signature BIT STRING
    const bad = verifyChain([parseCertificate(der)], { anchors: chain(pki.caPem), servername: "localhost" }, new Date());
    expect(bad?.code).toBe("unknown_ca");
    expect(bad?.message).toMatch(/not signed by the configured CA/);
  });

  it("an intermediate that is not a CA cannot issue", () => {
    // The P-256 server certificate (CA:FALSE) as the "issuer" of another: no path.
    const bad = verifyChain([...chain(pki.p384.certPem), ...chain(pki.p256.certPem)], { anchors: [] }, new Date());
    expect(bad?.code).toBe("unknown_ca");
  });
});

describe("keyUsage", () => {
  it("is read from the project's own certificates: leaves sign, the CA signs certificates", () => {
    const [leaf, ca] = chain(pki.p256.chainPem) as [Certificate, Certificate];
    expect(leaf.keyUsage).toEqual({ digitalSignature: true, keyCertSign: false });
    expect(ca.keyUsage?.keyCertSign).toBe(true);
  });

  const openssl = spawnSync("openssl", ["version"]).status === 0;
  it.skipIf(!openssl)("refuses a leaf whose keyUsage lacks digitalSignature, and a CA whose keyUsage lacks keyCertSign", () => {
    if (!openssl) console.warn("openssl is not installed: keyUsage refusal test skipped");
    const dir = mkdtempSync(join(tmpdir(), "dtlspush-ku-"));
    try {
      const sh = (args: string[]): void => {
        const r = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
        if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr}`);
      };
      const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
      // A proper CA, and a "CA" that may not sign certificates.
      sh([
        "req",
        "-x509",
        ...ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ku CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
      ]);
      sh([
        "req",
        "-x509",
        ...ec,
        "-keyout",
        "weak.key",
        "-out",
        "weak.pem",
        "-days",
        "2",
        "-subj",
        "/CN=weak CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,digitalSignature",
      ]);
      sh(["req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"]);
      writeFileSync(join(dir, "noSign.ext"), "subjectAltName=DNS:localhost\nkeyUsage=critical,keyAgreement\n");
      writeFileSync(join(dir, "ok.ext"), "subjectAltName=DNS:localhost\nkeyUsage=critical,digitalSignature\n");
      sh([
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "nosign.pem",
        "-days",
        "1",
        "-extfile",
        "noSign.ext",
      ]);
      sh([
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "weak.pem",
        "-CAkey",
        "weak.key",
        "-CAcreateserial",
        "-out",
        "fromweak.pem",
        "-days",
        "1",
        "-extfile",
        "ok.ext",
      ]);
      sh([
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "ok.pem",
        "-days",
        "1",
        "-extfile",
        "ok.ext",
      ]);
      const read = (f: string): Certificate[] => chain(readFileSync(join(dir, f), "utf8"));
      const trust = (ca: string) => ({ anchors: read(ca), servername: "localhost" });
      expect(verifyChain(read("ok.pem"), trust("ca.pem"), new Date())).toBeUndefined();
      expect(verifyChain(read("nosign.pem"), trust("ca.pem"), new Date())?.code).toBe("unsupported_certificate");
      expect(verifyChain(read("fromweak.pem"), trust("weak.pem"), new Date())?.code).toBe("unknown_ca");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
