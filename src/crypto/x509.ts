/**
 * X.509 certificates as the DTLS handshake and the configuration need them:
 * parsed once (node:crypto's X509Certificate), with handshake signature
 * checks, issuer checks and name checks.
 */
import { createPrivateKey, verify as nodeVerify, X509Certificate, type KeyObject } from "./node.ts";

import { keyUsage, type KeyUsage } from "./der.ts";
import { keyDescription, SCHEMES, signOptions, type Curve, type KeyType } from "./signatures.ts";

/** A parsed X.509 certificate, as the handshake needs it. */
export interface Certificate {
  readonly der: Uint8Array;
  /** The subject on one line, e.g. "CN=localhost, O=dtlspush". */
  readonly subject: string;
  /** The subject's common name, if it has one. */
  readonly commonName: string | undefined;
  readonly issuer: string;
  /** SHA-256 of the DER, lower-case hex without colons. */
  readonly fingerprint256: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCA: boolean;
  readonly keyType: KeyType;
  readonly curve: Curve | undefined;
  readonly subjectAltName: string | undefined;
  /** keyUsage bits, or undefined when the certificate has no such extension (any use). */
  readonly keyUsage: KeyUsage | undefined;
  /** Extended key usage OIDs, or undefined when the certificate has no such extension (any use). */
  readonly extendedKeyUsage: readonly string[] | undefined;
  /** Verifies a handshake signature made with this certificate's key. */
  verifySignature(scheme: number, data: Uint8Array, signature: Uint8Array): boolean;
  /** True when `issuer`'s subject (and key identifier, if any) is this certificate's issuer. */
  namesIssuer(issuer: Certificate): boolean;
  /** True when `issuer` names this certificate's issuer and its key signed it. */
  issuedBy(issuer: Certificate): boolean;
  matchesPrivateKey(pem: string | Uint8Array): boolean;
  checkHost(name: string): boolean;
  checkIP(ip: string): boolean;
}

/** Each parsed certificate's node:crypto object, so issuer checks never re-parse a trust anchor. */
const x509Of = new WeakMap<Certificate, X509Certificate>();

function x509(cert: Certificate): X509Certificate {
  let x = x509Of.get(cert);
  if (x === undefined) {
    x = new X509Certificate(Buffer.from(cert.der));
    x509Of.set(cert, x);
  }
  return x;
}

export function parseCertificate(der: Uint8Array): Certificate {
  const x = new X509Certificate(Buffer.from(der));
  const pub = x.publicKey;
  const { keyType, curve } = keyDescription(pub);
  const oneLine = (dn: string): string => dn.split("\n").join(", ");
  const cn = x.subject.split("\n").find((l) => l.startsWith("CN="));
  const cert: Certificate = {
    der,
    subject: oneLine(x.subject),
    commonName: cn === undefined ? undefined : cn.slice(3),
    issuer: oneLine(x.issuer),
    fingerprint256: x.fingerprint256.replaceAll(":", "").toLowerCase(),
    notBefore: new Date(x.validFrom),
    notAfter: new Date(x.validTo),
    isCA: x.ca,
    keyType,
    curve,
    subjectAltName: x.subjectAltName,
    keyUsage: keyUsage(der),
    // Node names the extended key usage list `keyUsage`.
    extendedKeyUsage: x.keyUsage,
    verifySignature(scheme, data, signature) {
      const info = SCHEMES.get(scheme);
      if (info === undefined || info.keyType !== keyType) return false;
      try {
        return nodeVerify(info.hash, data, signOptions(pub, info) as KeyObject, signature);
      } catch {
        return false;
      }
    },
    namesIssuer(issuer) {
      return x.checkIssued(x509(issuer));
    },
    issuedBy(issuer) {
      const ix = x509(issuer);
      return x.checkIssued(ix) && x.verify(ix.publicKey);
    },
    matchesPrivateKey(pem) {
      try {
        return x.checkPrivateKey(createPrivateKey(typeof pem === "string" ? pem : Buffer.from(pem)));
      } catch {
        return false;
      }
    },
    checkHost: (name) => x.checkHost(name) !== undefined,
    checkIP: (ip) => x.checkIP(ip) !== undefined,
  };
  x509Of.set(cert, x);
  return cert;
}

/** Every CERTIFICATE block of a PEM text, as DER, in order. */
export function pemCertificates(pem: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  const re = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;
  for (let m = re.exec(pem); m !== null; m = re.exec(pem)) out.push(Buffer.from((m[1] ?? "").replace(/\s+/g, ""), "base64"));
  return out;
}
