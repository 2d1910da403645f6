/**
 * Certificates for tests, made once per test file with the project's own pki
 * layer: a CA, server certificates (P-256, P-384, RSA-2048) for localhost,
 * 127.0.0.1 and ::1, a second unrelated CA, and an expired server certificate.
 */
import { loadPrivateKey, parseCertificate, pemCertificates } from "../../src/crypto/index.ts";
import type { ServerCredential } from "../../src/dtls/options.ts";
import { createCertificateAuthority, issueServerCertificate, type IssuedCertificate } from "../../src/pki/index.ts";

export interface TestPki {
  caPem: string;
  otherCaPem: string;
  p256: IssuedCertificate;
  p384: IssuedCertificate;
  rsa: IssuedCertificate;
  expired: IssuedCertificate;
  /** Signed by the other CA. */
  foreign: IssuedCertificate;
}

export async function makeTestPki(): Promise<TestPki> {
  const { ca } = await createCertificateAuthority();
  const { ca: other } = await createCertificateAuthority({ commonName: "some other CA" });
  const [p256, p384, rsa, foreign] = await Promise.all([
    issueServerCertificate(ca, { kind: "p256" }),
    issueServerCertificate(ca, { kind: "p384" }),
    issueServerCertificate(ca, { kind: "rsa2048" }),
    issueServerCertificate(other, { kind: "p256" }),
  ]);
  const expired = await issueServerCertificate(ca, { kind: "p256", days: 1, now: new Date(Date.now() - 10 * 86_400_000) });
  return { caPem: ca.certPem, otherCaPem: other.certPem, p256, p384, rsa, expired, foreign };
}

export function credential(issued: IssuedCertificate): ServerCredential {
  return { chain: pemCertificates(issued.chainPem).map(parseCertificate), signer: loadPrivateKey(issued.keyPem) };
}
