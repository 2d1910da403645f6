/**
 * Verification of a peer's certificate chain (leaf first), pure: the caller
 * passes the time. Either the leaf's SHA-256 fingerprint is pinned, or a path
 * must lead from the leaf through CA certificates of the chain to a configured
 * trust anchor, every certificate on it within its validity period, and the
 * leaf must match the expected name. Failures carry the RFC 5246 alert.
 */
import type { Certificate } from "../crypto/index.ts";
import { alertError, type DtlsError } from "./errors.ts";

export interface TrustOptions {
  /** Trust anchors (CA certificates). */
  readonly anchors: readonly Certificate[];
  /** Accept exactly the leaf with this SHA-256 fingerprint (hex, colons and case ignored), instead of a CA path and name. */
  readonly fingerprint?: string | undefined;
  /** DNS name or IP address the leaf must be issued for (checked with a CA path, not with a pin). */
  readonly servername?: string | undefined;
}

/** Longest chain we follow (leaf + intermediates). */
const MAX_DEPTH = 8;

export function normalizeFingerprint(fp: string): string {
  return fp.replaceAll(":", "").trim().toLowerCase();
}

function checkValidity(cert: Certificate, now: Date, role: string): DtlsError | undefined {
  if (now.getTime() < cert.notBefore.getTime()) {
    return alertError("bad_certificate", `${role} certificate ${cert.subject} is not valid before ${cert.notBefore.toISOString()}`);
  }
  if (now.getTime() > cert.notAfter.getTime()) {
    return alertError("certificate_expired", `${role} certificate ${cert.subject} expired at ${cert.notAfter.toISOString()}`);
  }
  return undefined;
}

const EKU = { server: "1.3.6.1.5.5.7.3.1", client: "1.3.6.1.5.5.7.3.2", any: "2.5.29.37.0" } as const;

/**
 * undefined when the chain is acceptable, else the error (with its alert) to
 * fail the handshake with. `role` is the peer's: a leaf with an extended key
 * usage extension must allow serverAuth for a server, clientAuth for a client.
 */
export function verifyChain(
  chain: readonly Certificate[],
  trust: TrustOptions,
  now: Date,
  role: "server" | "client" = "server",
): DtlsError | undefined {
  const leaf = chain[0];
  if (leaf === undefined) return alertError("bad_certificate", `the ${role} sent no certificate`);
  if (leaf.keyUsage !== undefined && !leaf.keyUsage.digitalSignature) {
    return alertError(
      "unsupported_certificate",
      `${role} certificate ${leaf.subject} has a keyUsage without digitalSignature, so it cannot sign the handshake`,
    );
  }
  const eku = leaf.extendedKeyUsage;
  if (eku !== undefined && !eku.includes(EKU[role]) && !eku.includes(EKU.any)) {
    return alertError(
      "unsupported_certificate",
      `${role} certificate ${leaf.subject} is not for ${role} authentication (extended key usage ${eku.join(", ")})`,
    );
  }
  if (trust.fingerprint !== undefined) {
    if (leaf.fingerprint256 !== normalizeFingerprint(trust.fingerprint)) {
      return alertError("bad_certificate", `${role} certificate fingerprint ${leaf.fingerprint256} is not the pinned one`);
    }
    return checkValidity(leaf, now, role);
  }
  let cur = leaf;
  for (let depth = 0; ; depth++) {
    const bad = checkValidity(cur, now, role);
    if (bad !== undefined) return bad;
    if (trust.anchors.some((a) => a.fingerprint256 === cur.fingerprint256)) break;
    const named = trust.anchors.filter((a) => a.isCA && a.keyUsage?.keyCertSign !== false && cur.namesIssuer(a));
    const anchor = named.find((a) => cur.issuedBy(a));
    if (anchor !== undefined) {
      const badAnchor = checkValidity(anchor, now, "CA");
      if (badAnchor !== undefined) return badAnchor;
      break;
    }
    const next = chain.find((c, i) => i > 0 && c.isCA && c.keyUsage?.keyCertSign !== false && c !== cur && cur.issuedBy(c));
    if (next === undefined || depth >= MAX_DEPTH) {
      if (named.length > 0 || chain.some((c, i) => i > 0 && c !== cur && c.isCA && cur.namesIssuer(c))) {
        // A CA of that name is known but its key did not sign this: most often another CA with the same
        // name (every development CA is "dtlspush development CA"), else a forged signature.
        return alertError(
          "unknown_ca",
          `${role} certificate ${cur.subject} was not signed by the configured CA named ${cur.issuer} (another CA with the same name, or a bad signature)`,
        );
      }
      return alertError("unknown_ca", `${role} certificate ${cur.subject} (issuer ${cur.issuer}) does not lead to a trusted CA`);
    }
    cur = next;
  }
  const name = trust.servername;
  if (name !== undefined && !(looksLikeIp(name) ? leaf.checkIP(name) : leaf.checkHost(name))) {
    return alertError(
      "bad_certificate",
      `${role} certificate ${leaf.subject} is not issued for ${name} (${leaf.subjectAltName ?? "no subjectAltName"})`,
    );
  }
  return undefined;
}

/** An IPv4 dotted quad or an IPv6 literal (DNS names never contain ':'). */
function looksLikeIp(name: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(name) || name.includes(":");
}

/** How a client certificate names its device. */
export type IdentitySource = "cn" | "san-uri" | "fingerprint";

/**
 * The device identity a certificate carries: its subject CN, its first SAN URI,
 * or its SHA-256 fingerprint. undefined when the certificate has no such field.
 */
export function certificateIdentity(cert: Certificate, source: IdentitySource): string | undefined {
  switch (source) {
    case "fingerprint":
      return cert.fingerprint256;
    case "cn":
      return cert.commonName;
    case "san-uri": {
      const uri = (cert.subjectAltName ?? "").split(", ").find((e) => e.startsWith("URI:"));
      return uri === undefined ? undefined : uri.slice(4);
    }
  }
}
