/**
 * The certificate generator (src/pki): certificates parse with Node's
 * X509Certificate, chain to the CA, carry the specified extensions (checked
 * through Node and through `openssl x509 -text` / `openssl verify` when
 * openssl is installed), and keys match certificates.
 */
import { spawnSync } from "node:child_process";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DEVICE_ID_PATTERN,
  PkiError,
  certificateFingerprint,
  checkIssuedCertificate,
  createCertificateAuthority,
  decodePem,
  deviceUri,
  encodePem,
  isValidDeviceId,
  issueDeviceCertificate,
  issueServerCertificate,
  loadCertificateAuthority,
  randomSerialNumber,
} from "../../src/pki/index.ts";
import type { CertificateAuthority, IssuedCertificate, KeyKind } from "../../src/pki/index.ts";

const HAVE_OPENSSL = spawnSync("openssl", ["version"], { encoding: "utf8" }).status === 0;
const DAY = 86_400_000;
const SERVER_EKU = "1.3.6.1.5.5.7.3.1";
const CLIENT_EKU = "1.3.6.1.5.5.7.3.2";

let tmp: string;
let ca: CertificateAuthority;
let caIssued: IssuedCertificate;
let caX509: X509Certificate;
const servers = new Map<KeyKind, IssuedCertificate>();

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), "dtlspush-pki-"));
  ({ ca, issued: caIssued } = await createCertificateAuthority());
  caX509 = new X509Certificate(caIssued.certPem);
  for (const kind of ["p256", "p384", "rsa2048"] as const) servers.set(kind, await issueServerCertificate(ca, { kind }));
});

afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function leafOf(issued: IssuedCertificate): X509Certificate {
  return new X509Certificate(issued.certPem);
}

function server(kind: KeyKind): IssuedCertificate {
  const s = servers.get(kind);
  if (s === undefined) throw new Error(`no ${kind} server certificate`);
  return s;
}

/** `openssl x509 -noout -text` of a PEM certificate. */
function opensslText(pem: string): string {
  const r = spawnSync("openssl", ["x509", "-noout", "-text"], { input: pem, encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

function opensslVerify(chainPem: string, purpose: string): { status: number | null; out: string } {
  const name = `chain-${Math.random().toString(36).slice(2)}.pem`;
  writeFileSync(join(tmp, "ca.pem"), caIssued.certPem);
  writeFileSync(join(tmp, name), chainPem);
  const r = spawnSync("openssl", ["verify", "-purpose", purpose, "-CAfile", join(tmp, "ca.pem"), join(tmp, name)], { encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}

function serialBytes(cert: X509Certificate): string {
  return cert.serialNumber.toLowerCase().replace(/^0+/, "");
}

describe("development CA", () => {
  it("is a self-signed ECDSA P-256 CA valid for 10 years", () => {
    expect(caX509.ca).toBe(true);
    expect(caX509.subject).toContain("CN=dtlspush development CA");
    expect(caX509.issuer).toBe(caX509.subject);
    expect(caX509.verify(caX509.publicKey)).toBe(true);
    expect(caX509.publicKey.asymmetricKeyType).toBe("ec");
    expect(caX509.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    const years = (Date.parse(caX509.validTo) - Date.now()) / (365.25 * DAY);
    expect(years).toBeGreaterThan(9.99);
    expect(years).toBeLessThan(10.01);
    expect(Date.parse(caX509.validFrom)).toBeLessThanOrEqual(Date.now());
  });

  it("has a PKCS#8 key that matches the certificate", () => {
    expect(caIssued.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(caX509.checkPrivateKey(createPrivateKey(caIssued.keyPem))).toBe(true);
    expect(caIssued.chainPem).toBe(caIssued.certPem);
  });

  it("has a random positive 16-byte serial number", () => {
    const hex = serialBytes(caX509);
    expect(hex).toHaveLength(32);
    expect(Number.parseInt(hex.slice(0, 2), 16)).toBeLessThan(0x80);
    expect(caIssued.serialNumber).toBe(hex);
  });

  it.skipIf(!HAVE_OPENSSL)("shows CA:TRUE and keyCertSign/cRLSign (critical) in openssl", () => {
    const text = opensslText(caIssued.certPem);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\n\s+CA:TRUE/);
    expect(text).toMatch(/X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
    expect(text).toContain("ASN1 OID: prime256v1");
    expect(text).toContain("Signature Algorithm: ecdsa-with-SHA256");
  });
});

describe.each([
  ["p256", "ec", "prime256v1"],
  ["p384", "ec", "secp384r1"],
  ["rsa2048", "rsa", undefined],
] as const)("server certificate %s", (kind, keyType, curve) => {
  it("is signed by the CA and its key matches", () => {
    const leaf = leafOf(server(kind));
    expect(leaf.verify(caX509.publicKey)).toBe(true);
    expect(leaf.checkIssued(caX509)).toBe(true);
    expect(leaf.checkPrivateKey(createPrivateKey(server(kind).keyPem))).toBe(true);
    expect(leaf.checkPrivateKey(createPrivateKey(caIssued.keyPem))).toBe(false);
    expect(leaf.publicKey.asymmetricKeyType).toBe(keyType);
    if (curve !== undefined) expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe(curve);
    else expect(leaf.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
  });

  it("is for localhost, 127.0.0.1 and ::1, serverAuth, not a CA, one year", () => {
    const leaf = leafOf(server(kind));
    expect(leaf.ca).toBe(false);
    expect(leaf.subject).toContain("CN=localhost");
    expect(leaf.subjectAltName).toBe("DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1");
    expect(leaf.checkHost("localhost")).toBe("localhost");
    expect(leaf.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(leaf.checkIP("::1")).toBe("::1");
    expect(leaf.keyUsage).toEqual([SERVER_EKU]);
    const days = (Date.parse(leaf.validTo) - Date.now()) / DAY;
    expect(days).toBeGreaterThan(364.99);
    expect(days).toBeLessThanOrEqual(365);
    expect(Date.parse(leaf.validFrom)).toBeLessThanOrEqual(Date.now());
    expect(serialBytes(leaf)).toHaveLength(32);
  });

  it("puts the certificate then the CA in the chain file", () => {
    const blocks = decodePem(server(kind).chainPem);
    expect(blocks.map((b) => b.label)).toEqual(["CERTIFICATE", "CERTIFICATE"]);
    expect(encodePem("CERTIFICATE", blocks[0]?.der ?? new Uint8Array())).toBe(server(kind).certPem);
    expect(encodePem("CERTIFICATE", blocks[1]?.der ?? new Uint8Array())).toBe(caIssued.certPem);
  });

  it("reports the SHA-256 fingerprint Node computes", async () => {
    const leaf = leafOf(server(kind));
    expect(server(kind).fingerprint.colon).toBe(leaf.fingerprint256);
    expect(server(kind).fingerprint.hex).toBe(leaf.fingerprint256.replaceAll(":", "").toLowerCase());
    expect(await certificateFingerprint(server(kind).chainPem)).toEqual(server(kind).fingerprint);
  });

  it.skipIf(!HAVE_OPENSSL)("shows the extensions in openssl and verifies against ca.pem", () => {
    const text = opensslText(server(kind).certPem);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\n\s+CA:FALSE/);
    const usage = kind === "rsa2048" ? "Digital Signature, Key Encipherment" : "Digital Signature";
    expect(text).toMatch(new RegExp(`X509v3 Key Usage: critical\\n\\s+${usage}\\n`));
    expect(text).toMatch(/X509v3 Extended Key Usage: *\n\s+TLS Web Server Authentication\n/);
    expect(text).toMatch(/X509v3 Subject Alternative Name: *\n\s+DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1\n/);
    expect(text).toContain("X509v3 Authority Key Identifier");
    const v = opensslVerify(server(kind).chainPem, "sslserver");
    expect(v.out).toMatch(/: OK\n/);
    expect(v.status).toBe(0);
  });

  it("passes checkIssuedCertificate", async () => {
    const s = server(kind);
    const r = await checkIssuedCertificate(ca, s.chainPem, s.keyPem, { kind, usage: "server" });
    expect(r).toEqual({ ok: true, fingerprint: s.fingerprint, notAfter: s.notAfter });
  });
});

describe("server certificate options", () => {
  it("takes the validity in days", async () => {
    const s = await issueServerCertificate(ca, { kind: "p256", days: 30 });
    const days = (Date.parse(leafOf(s).validTo) - Date.now()) / DAY;
    expect(days).toBeGreaterThan(29.99);
    expect(days).toBeLessThanOrEqual(30);
  });

  it("takes other names", async () => {
    const s = await issueServerCertificate(ca, { kind: "p256", dnsNames: ["push.example", "*.push.example"], ipAddresses: ["10.0.0.1"] });
    expect(leafOf(s).subjectAltName).toBe("DNS:push.example, DNS:*.push.example, IP Address:10.0.0.1");
    expect(leafOf(s).subject).toContain("CN=push.example");
  });

  it.each([0, -1, 1.5, 36_501])("refuses %d days", async (days) => {
    await expect(issueServerCertificate(ca, { kind: "p256", days })).rejects.toMatchObject({ code: "bad_validity" });
  });

  it("uses a different random serial each time", () => {
    const serials = new Set(Array.from({ length: 200 }, () => randomSerialNumber()));
    expect(serials.size).toBe(200);
    for (const s of serials) {
      expect(s).toMatch(/^[0-9a-f]{32}$/);
      expect(Number.parseInt(s.slice(0, 2), 16)).toBeGreaterThanOrEqual(0x40);
      expect(Number.parseInt(s.slice(0, 2), 16)).toBeLessThan(0x80);
    }
  });
});

describe("device certificates", () => {
  it.each(["p256", "p384"] as const)("%s: CN=ID, SAN URI, clientAuth, chain verifies", async (curve) => {
    const d = await issueDeviceCertificate(ca, { id: "sensor-17.a_b", curve });
    const leaf = leafOf(d);
    expect(leaf.subject).toBe("CN=sensor-17.a_b");
    expect(leaf.subjectAltName).toBe("URI:urn:dtlspush:device:sensor-17.a_b");
    expect(leaf.keyUsage).toEqual([CLIENT_EKU]);
    expect(leaf.ca).toBe(false);
    expect(leaf.verify(caX509.publicKey)).toBe(true);
    expect(leaf.checkPrivateKey(createPrivateKey(d.keyPem))).toBe(true);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe(curve === "p256" ? "prime256v1" : "secp384r1");
    expect(d.fingerprint.colon).toBe(leaf.fingerprint256);
    expect(d.chainPem).toBe(d.certPem + caIssued.certPem);
    expect(await checkIssuedCertificate(ca, d.chainPem, d.keyPem, { kind: curve, usage: "client" })).toMatchObject({ ok: true });
    expect(await checkIssuedCertificate(ca, d.chainPem, d.keyPem, { kind: curve, usage: "server" })).toMatchObject({ ok: false });
    if (HAVE_OPENSSL) {
      const text = opensslText(d.certPem);
      expect(text).toMatch(/X509v3 Key Usage: critical\n\s+Digital Signature\n/);
      expect(text).toMatch(/X509v3 Extended Key Usage: *\n\s+TLS Web Client Authentication\n/);
      expect(text).toMatch(/URI:urn:dtlspush:device:sensor-17\.a_b/);
      const v = opensslVerify(d.chainPem, "sslclient");
      expect(v.out).toMatch(/: OK\n/);
      expect(v.status).toBe(0);
    }
  });

  it("defaults to P-256 and one year", async () => {
    const d = await issueDeviceCertificate(ca, { id: "d" });
    expect(d.kind).toBe("p256");
    const days = (Date.parse(leafOf(d).validTo) - Date.now()) / DAY;
    expect(days).toBeGreaterThan(364.99);
  });

  it.each(["", "a b", "a/b", "x".repeat(65), "ä", "a:b", "../x"])("refuses the id %j", async (id) => {
    expect(isValidDeviceId(id)).toBe(false);
    await expect(issueDeviceCertificate(ca, { id })).rejects.toMatchObject({ code: "bad_device_id" });
  });

  it("accepts 64 characters and the allowed punctuation", () => {
    expect(isValidDeviceId("x".repeat(64))).toBe(true);
    expect(isValidDeviceId("A-z_0.9")).toBe(true);
    expect(DEVICE_ID_PATTERN.test("A-z_0.9")).toBe(true);
    expect(deviceUri("A-z_0.9")).toBe("urn:dtlspush:device:A-z_0.9");
  });
});

describe("loadCertificateAuthority", () => {
  it("loads what createCertificateAuthority wrote and signs with it", async () => {
    const loaded = await loadCertificateAuthority(caIssued.certPem, caIssued.keyPem);
    expect(loaded.fingerprint).toEqual(caIssued.fingerprint);
    expect(loaded.kind).toBe("p256");
    const d = await issueDeviceCertificate(loaded, { id: "via-loaded" });
    expect(leafOf(d).verify(caX509.publicKey)).toBe(true);
  });

  it("refuses a key that belongs to another certificate", async () => {
    const other = await createCertificateAuthority();
    await expect(loadCertificateAuthority(caIssued.certPem, other.issued.keyPem)).rejects.toMatchObject({ code: "key_mismatch" });
  });

  it("refuses a leaf certificate", async () => {
    const s = server("p256");
    await expect(loadCertificateAuthority(s.certPem, s.keyPem)).rejects.toMatchObject({ code: "not_a_ca" });
  });

  it("refuses an expired CA", async () => {
    const later = new Date(Date.now() + 11 * 366 * DAY);
    await expect(loadCertificateAuthority(caIssued.certPem, caIssued.keyPem, later)).rejects.toMatchObject({ code: "expired" });
  });

  it("refuses garbage with typed errors", async () => {
    await expect(loadCertificateAuthority("nothing", caIssued.keyPem)).rejects.toBeInstanceOf(PkiError);
    await expect(loadCertificateAuthority(encodePem("CERTIFICATE", new Uint8Array([1, 2, 3])), caIssued.keyPem)).rejects.toMatchObject({
      code: "bad_certificate",
    });
    await expect(loadCertificateAuthority(caIssued.certPem, "no key")).rejects.toMatchObject({ code: "bad_key" });
    await expect(loadCertificateAuthority(caIssued.certPem, server("p384").keyPem)).rejects.toMatchObject({ code: "bad_key" });
  });
});

describe("checkIssuedCertificate", () => {
  it("rejects a certificate of another CA", async () => {
    const other = await createCertificateAuthority();
    const s = await issueServerCertificate(other.ca, { kind: "p256" });
    const r = await checkIssuedCertificate(ca, s.chainPem, s.keyPem, { kind: "p256", usage: "server" });
    expect(r.ok).toBe(false);
    // Even with our CA appended instead of theirs, the signature does not verify.
    const forged = s.certPem + caIssued.certPem;
    expect(await checkIssuedCertificate(ca, forged, s.keyPem, { kind: "p256", usage: "server" })).toEqual({
      ok: false,
      reason: "not signed by the current CA",
    });
  });

  it("rejects the wrong key, kind, expiry, missing CA and garbage", async () => {
    const s = server("p256");
    const check = (chain: string, key: string, kind: KeyKind = "p256", now?: Date) =>
      checkIssuedCertificate(ca, chain, key, { kind, usage: "server", ...(now !== undefined ? { now } : {}) });
    expect(await check(s.chainPem, server("p384").keyPem)).toMatchObject({ ok: false });
    expect(await check(s.chainPem, (await issueServerCertificate(ca, { kind: "p256" })).keyPem)).toEqual({
      ok: false,
      reason: "the key does not belong to the certificate",
    });
    expect(await check(s.chainPem, s.keyPem, "p384")).toEqual({ ok: false, reason: "the key is not p384" });
    expect(await check(s.chainPem, s.keyPem, "p256", new Date(Date.now() + 400 * DAY))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/^expired on /),
    });
    expect(await check(s.certPem, s.keyPem)).toMatchObject({ ok: false });
    expect(await check("", s.keyPem)).toMatchObject({ ok: false });
    expect(await check("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n", s.keyPem)).toMatchObject({ ok: false });
    expect(await check(s.chainPem, "")).toMatchObject({ ok: false });
  });
});

describe("PEM", () => {
  it("round-trips and wraps at 64 characters", () => {
    const der = Uint8Array.from({ length: 100 }, (_, i) => i);
    const pem = encodePem("TEST", der);
    expect(pem.split("\n").every((l) => l.length <= 64)).toBe(true);
    expect(decodePem(`junk\n${pem}more junk\n${pem}`)).toEqual([
      { label: "TEST", der },
      { label: "TEST", der },
    ]);
  });

  it("rejects mismatched labels", () => {
    expect(() => decodePem("-----BEGIN A-----\nAA==\n-----END B-----\n")).toThrow(/ends with END B/);
  });
});
