/**
 * X.509 certificate generation for development and device certificates:
 * a local CA, server certificates for localhost, and device (client)
 * certificates. Built on @peculiar/x509 over WebCrypto; returns PEM strings
 * and never touches the file system (the CLI writes the files).
 */
// @peculiar/x509 needs a Reflect metadata polyfill loaded before it (its README says so).
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { DtlspushError } from "../util/errors.ts";
import {
  encodePem,
  exportPrivateKeyPem,
  generateKeyPair,
  hash,
  importPrivateKeyPem,
  keyAlgorithm,
  keysMatch,
  kindOfAlgorithm,
  pemBlocks,
  randomBytes,
  toHex,
  webCrypto,
} from "../crypto/index.ts";
import type { KeyKind, WebKey } from "../crypto/index.ts";

x509.cryptoProvider.set(webCrypto);

const DAY_MS = 86_400_000;
/** Leaves start this long before "now", so a peer with a slightly slow clock accepts them. */
const BACKDATE_MS = 5 * 60_000;

export const CA_COMMON_NAME = "dtlspush development CA";
export const SERVER_COMMON_NAME = "localhost";
export const DEFAULT_SERVER_DNS_NAMES: readonly string[] = ["localhost"];
export const DEFAULT_SERVER_IP_ADDRESSES: readonly string[] = ["127.0.0.1", "::1"];
/** Validity of a generated CA, in years. */
export const CA_YEARS = 10;
/** Default validity of server and device certificates, in days. */
export const DEFAULT_LEAF_DAYS = 365;
/** Upper bound for `days` (about 100 years; UTCTime/GeneralizedTime both fine). */
export const MAX_LEAF_DAYS = 36_500;

/** Device ids: 1 to 64 of A-Z a-z 0-9 . _ - (they become a CN and part of a URI). */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

export type Usage = "server" | "client";

export interface Fingerprint {
  /** SHA-256 of the DER certificate, lower-case hex without separators. */
  readonly hex: string;
  /** The same, upper-case with colons (the `openssl x509 -fingerprint -sha256` form). */
  readonly colon: string;
}

export interface IssuedCertificate {
  /** The certificate alone, PEM. */
  readonly certPem: string;
  /** What goes in the `.pem` file: the certificate, then the CA certificate (for the CA itself: just it). */
  readonly chainPem: string;
  /** PKCS#8 PEM private key. */
  readonly keyPem: string;
  readonly kind: KeyKind;
  readonly fingerprint: Fingerprint;
  /** Hex serial number. */
  readonly serialNumber: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** A CA ready to sign: its certificate and private key. */
export interface CertificateAuthority {
  readonly certPem: string;
  readonly kind: KeyKind;
  readonly fingerprint: Fingerprint;
  readonly notAfter: Date;
  /** @internal */
  readonly certificate: x509.X509Certificate;
  /** @internal */
  readonly privateKey: WebKey;
}

export class PkiError extends DtlspushError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "PkiError";
  }
}

/** Is `id` a valid device id? */
export function isValidDeviceId(id: string): boolean {
  return DEVICE_ID_PATTERN.test(id);
}

/** The SAN URI naming a device: `urn:dtlspush:device:ID`. */
export function deviceUri(id: string): string {
  return `urn:dtlspush:device:${id}`;
}

/** SHA-256 fingerprint of DER certificate bytes. */
export async function fingerprintOf(der: Uint8Array | ArrayBuffer): Promise<Fingerprint> {
  const digest = hash("sha256", [der instanceof Uint8Array ? der : new Uint8Array(der)]);
  const hex = toHex(digest);
  return { hex, colon: (hex.toUpperCase().match(/../g) ?? []).join(":") };
}

/** SHA-256 fingerprint of the first certificate in PEM text. */
export async function certificateFingerprint(pem: string): Promise<Fingerprint> {
  const der = pemBlocks(pem, "CERTIFICATE")[0];
  if (der === undefined) throw new PkiError("bad_certificate", "no CERTIFICATE PEM block");
  return await fingerprintOf(der);
}

/** 16 random bytes, positive and without a leading zero byte (RFC 5280 allows up to 20). */
export function randomSerialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return toHex(bytes);
}

function seconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

function signingAlgorithm(kind: KeyKind): { name: string; hash: string } {
  const { name } = keyAlgorithm(kind);
  return { name, hash: kind === "p384" ? "SHA-384" : "SHA-256" };
}

/** Algorithm to turn a certificate's public key into a WebCrypto key. */
function publicImportAlgorithm(kind: KeyKind): { name: string; namedCurve?: string; hash?: string } {
  const { name, namedCurve } = keyAlgorithm(kind);
  return namedCurve !== undefined ? { name, namedCurve } : { name, hash: "SHA-256" };
}

function parseCertificate(der: Uint8Array, what: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(der);
  } catch (e) {
    throw new PkiError("bad_certificate", `${what} is not a valid X.509 certificate`, { cause: e });
  }
}

function kindOfCertificate(cert: x509.X509Certificate): KeyKind | undefined {
  return kindOfAlgorithm(cert.publicKey.algorithm as { name: string; namedCurve?: unknown; modulusLength?: unknown });
}

async function certificatePublicKey(cert: x509.X509Certificate, kind: KeyKind): Promise<WebKey> {
  return (await cert.publicKey.export(publicImportAlgorithm(kind), ["verify"])) as WebKey;
}

async function finish(cert: x509.X509Certificate, keyPem: string, kind: KeyKind, caPem: string | undefined): Promise<IssuedCertificate> {
  const certPem = encodePem("CERTIFICATE", cert.rawData);
  return {
    certPem,
    chainPem: caPem === undefined ? certPem : certPem + caPem,
    keyPem,
    kind,
    fingerprint: await fingerprintOf(cert.rawData),
    serialNumber: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
  };
}

export interface CaOptions {
  readonly now?: Date;
  readonly years?: number;
  readonly commonName?: string;
}

/**
 * A new self-signed development CA: ECDSA P-256, CA:true (critical),
 * keyCertSign + cRLSign (critical), 10 years.
 */
export async function createCertificateAuthority(options: CaOptions = {}): Promise<{ ca: CertificateAuthority; issued: IssuedCertificate }> {
  const kind: KeyKind = "p256";
  const now = options.now ?? new Date();
  const notBefore = seconds(now.getTime() - BACKDATE_MS);
  const notAfter = seconds(now.getTime());
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + (options.years ?? CA_YEARS));
  const keys = await generateKeyPair(kind);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialNumber(),
    name: [{ CN: [options.commonName ?? CA_COMMON_NAME] }, { O: ["dtlspush"] }],
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: signingAlgorithm(kind),
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const issued = await finish(cert, await exportPrivateKeyPem(keys.privateKey), kind, undefined);
  const ca: CertificateAuthority = {
    certPem: issued.certPem,
    kind,
    fingerprint: issued.fingerprint,
    notAfter: issued.notAfter,
    certificate: cert,
    privateKey: keys.privateKey,
  };
  return { ca, issued };
}

/**
 * Loads a CA from its certificate and PKCS#8 key PEM, checking that it is a
 * CA allowed to sign certificates, currently valid, and that the key matches.
 * Error codes: `bad_certificate`, `bad_key`, `not_a_ca`, `expired`, `key_mismatch`.
 */
export async function loadCertificateAuthority(certPem: string, keyPem: string, now: Date = new Date()): Promise<CertificateAuthority> {
  const der = pemBlocks(certPem, "CERTIFICATE")[0];
  if (der === undefined) throw new PkiError("bad_certificate", "the CA file holds no CERTIFICATE PEM block");
  const cert = parseCertificate(der, "the CA certificate");
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  const usage = cert.getExtension(x509.KeyUsagesExtension);
  if (basic === null || !basic.ca) throw new PkiError("not_a_ca", "the CA certificate is not a CA (basicConstraints CA:true missing)");
  if (usage !== null && (usage.usages & x509.KeyUsageFlags.keyCertSign) === 0) {
    throw new PkiError("not_a_ca", "the CA certificate may not sign certificates (keyCertSign missing)");
  }
  if (now.getTime() > cert.notAfter.getTime()) throw new PkiError("expired", `the CA certificate expired on ${cert.notAfter.toISOString()}`);
  if (now.getTime() < cert.notBefore.getTime())
    throw new PkiError("expired", `the CA certificate is not valid before ${cert.notBefore.toISOString()}`);
  const kind = kindOfCertificate(cert);
  if (kind === undefined || kind === "rsa2048") throw new PkiError("bad_certificate", "the CA key must be ECDSA P-256 or P-384");
  const privateKey = await importPrivateKeyPem(keyPem, kind);
  if (!(await keysMatch(privateKey, await certificatePublicKey(cert, kind)))) {
    throw new PkiError("key_mismatch", "the CA private key does not belong to the CA certificate");
  }
  return {
    certPem: encodePem("CERTIFICATE", der),
    kind,
    fingerprint: await fingerprintOf(der),
    notAfter: cert.notAfter,
    certificate: cert,
    privateKey,
  };
}

interface LeafParams {
  readonly kind: KeyKind;
  readonly days: number;
  readonly now: Date | undefined;
  readonly subject: x509.JsonName;
  readonly usage: Usage;
  readonly altNames: x509.JsonGeneralNames;
}

async function issueLeaf(ca: CertificateAuthority, params: LeafParams): Promise<IssuedCertificate> {
  if (!Number.isInteger(params.days) || params.days < 1 || params.days > MAX_LEAF_DAYS) {
    throw new PkiError("bad_validity", `validity must be 1-${MAX_LEAF_DAYS} days (got ${params.days})`);
  }
  const now = (params.now ?? new Date()).getTime();
  const keys = await generateKeyPair(params.kind);
  let flags = x509.KeyUsageFlags.digitalSignature;
  if (params.kind === "rsa2048") flags |= x509.KeyUsageFlags.keyEncipherment;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialNumber(),
    subject: params.subject,
    issuer: ca.certificate.subjectName,
    notBefore: seconds(now - BACKDATE_MS),
    notAfter: seconds(now + params.days * DAY_MS),
    publicKey: keys.publicKey,
    signingKey: ca.privateKey,
    signingAlgorithm: signingAlgorithm(ca.kind),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(flags, true),
      new x509.ExtendedKeyUsageExtension([params.usage === "server" ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(params.altNames),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.certificate.publicKey),
    ],
  });
  return await finish(cert, await exportPrivateKeyPem(keys.privateKey), params.kind, ca.certPem);
}

export interface ServerCertificateOptions {
  readonly kind: KeyKind;
  readonly days?: number;
  readonly now?: Date;
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
}

/** A server certificate (serverAuth) for localhost, 127.0.0.1 and ::1 by default, signed by `ca`. */
export async function issueServerCertificate(ca: CertificateAuthority, options: ServerCertificateOptions): Promise<IssuedCertificate> {
  const dns = options.dnsNames ?? DEFAULT_SERVER_DNS_NAMES;
  const ips = options.ipAddresses ?? DEFAULT_SERVER_IP_ADDRESSES;
  return await issueLeaf(ca, {
    kind: options.kind,
    days: options.days ?? DEFAULT_LEAF_DAYS,
    now: options.now,
    subject: [{ CN: [dns[0] ?? SERVER_COMMON_NAME] }, { O: ["dtlspush"] }],
    usage: "server",
    altNames: [...dns.map((value) => ({ type: "dns" as const, value })), ...ips.map((value) => ({ type: "ip" as const, value }))],
  });
}

export interface DeviceCertificateOptions {
  readonly id: string;
  readonly curve?: "p256" | "p384";
  readonly days?: number;
  readonly now?: Date;
}

/** A device certificate (clientAuth): CN=ID, SAN URI urn:dtlspush:device:ID, signed by `ca`. */
export async function issueDeviceCertificate(ca: CertificateAuthority, options: DeviceCertificateOptions): Promise<IssuedCertificate> {
  if (!isValidDeviceId(options.id)) {
    throw new PkiError("bad_device_id", "a device id is 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'");
  }
  return await issueLeaf(ca, {
    kind: options.curve ?? "p256",
    days: options.days ?? DEFAULT_LEAF_DAYS,
    now: options.now,
    subject: [{ CN: [options.id] }],
    usage: "client",
    altNames: [{ type: "url", value: deviceUri(options.id) }],
  });
}

export type CheckResult =
  { readonly ok: true; readonly fingerprint: Fingerprint; readonly notAfter: Date } | { readonly ok: false; readonly reason: string };

export interface CheckOptions {
  readonly kind: KeyKind;
  readonly usage: Usage;
  readonly now?: Date;
}

/**
 * Checks an existing leaf (chain PEM = leaf then CA, and its key) against
 * `ca`: signed by it, chain ends in it, currently valid, right key kind and
 * usage, and the key belongs to the certificate. Never throws for bad input.
 */
export async function checkIssuedCertificate(
  ca: CertificateAuthority,
  chainPem: string,
  keyPem: string,
  options: CheckOptions,
): Promise<CheckResult> {
  const fail = (reason: string): CheckResult => ({ ok: false, reason });
  let ders: Uint8Array[];
  try {
    ders = pemBlocks(chainPem, "CERTIFICATE");
  } catch {
    return fail("the certificate file is not valid PEM");
  }
  const [leafDer, caDer] = ders;
  if (leafDer === undefined) return fail("no certificate in the file");
  if (ders.length !== 2 || caDer === undefined || toHex(caDer) !== toHex(new Uint8Array(ca.certificate.rawData))) {
    return fail("the file is not the certificate followed by the current CA");
  }
  let leaf: x509.X509Certificate;
  try {
    leaf = parseCertificate(leafDer, "the certificate");
  } catch {
    return fail("the certificate does not parse");
  }
  const now = (options.now ?? new Date()).getTime();
  if (now > leaf.notAfter.getTime()) return fail(`expired on ${leaf.notAfter.toISOString()}`);
  if (now < leaf.notBefore.getTime()) return fail(`not valid before ${leaf.notBefore.toISOString()}`);
  if (kindOfCertificate(leaf) !== options.kind) return fail(`the key is not ${options.kind}`);
  if (!(await leaf.verify({ publicKey: ca.certificate.publicKey, signatureOnly: true }).catch(() => false))) {
    return fail("not signed by the current CA");
  }
  const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension);
  const wanted = options.usage === "server" ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth;
  if (eku === null || !eku.usages.includes(wanted)) return fail(`not a ${options.usage} certificate (extended key usage)`);
  try {
    const privateKey = await importPrivateKeyPem(keyPem, options.kind);
    if (!(await keysMatch(privateKey, await certificatePublicKey(leaf, options.kind)))) return fail("the key does not belong to the certificate");
  } catch {
    return fail("the key file holds no usable private key");
  }
  return { ok: true, fingerprint: await fingerprintOf(leafDer), notAfter: leaf.notAfter };
}
