/**
 * What a server decides from a ClientHello: version, suite (PSK, ECDHE_PSK or
 * a certificate suite), ECDHE group, certificate chain and signature scheme,
 * extended master secret, secure renegotiation, and the extensions its
 * ServerHello answers with; the groups and signature schemes both roles offer
 * and accept. Pure; throws DtlsError with the alert to send.
 */
import { ExtensionType, NamedGroup, ProtocolVersion, TLS_EMPTY_RENEGOTIATION_INFO_SCSV } from "./constants.ts";
import { SignatureScheme, type EcdhGroup } from "../crypto/index.ts";
import type { ServerCredential } from "./options.ts";
import { alertError } from "./errors.ts";
import {
  decodeEcPointFormats,
  decodeRenegotiationInfo,
  decodeSignatureAlgorithms,
  decodeSupportedGroups,
  EC_POINT_FORMATS_UNCOMPRESSED,
  EMPTY,
  EMPTY_RENEGOTIATION_INFO,
  findExtension,
  type ClientHello,
  type Extension,
} from "./messages.ts";
import { usesEcdhe, type CipherSuite } from "./suites.ts";

/**
 * Every ECDHE group we implement. The default list leaves out secp521r1: one
 * P-521 key exchange costs ~5 ms here (P-384 ~2 ms, x25519 ~0.2 ms); give it in
 * the `groups` option to accept it.
 */
export const GROUPS: readonly { readonly id: number; readonly name: EcdhGroup }[] = [
  { id: NamedGroup.x25519, name: "x25519" },
  { id: NamedGroup.secp256r1, name: "secp256r1" },
  { id: NamedGroup.secp384r1, name: "secp384r1" },
  { id: NamedGroup.secp521r1, name: "secp521r1" },
];

/** Default groups, in server preference order: the fast ones first. */
export const DEFAULT_GROUPS: readonly EcdhGroup[] = ["x25519", "secp256r1", "secp384r1"];

export function groupById(id: number): EcdhGroup | undefined {
  return GROUPS.find((g) => g.id === id)?.name;
}

/** What the server can authenticate with. */
export interface ServerCredentials {
  readonly psk: boolean;
  readonly certificates: readonly ServerCredential[];
  /** Allow SHA-1 handshake signatures for clients that send no signature_algorithms (RFC 5246 defaults). */
  readonly legacySha1: boolean;
}

export interface ServerChoice {
  readonly suite: CipherSuite;
  /** For certificate suites: the chain to send and the scheme to sign the ServerKeyExchange with. */
  readonly credential: ServerCredential | undefined;
  readonly signatureScheme: number | undefined;
  /** The ECDHE group, for ECDHE suites. */
  readonly group: { readonly id: number; readonly name: EcdhGroup } | undefined;
  readonly extendedMasterSecret: boolean;
  /** Extensions for the ServerHello: only echoes of what the client offered. */
  readonly extensions: readonly Extension[] | undefined;
}

/** DTLS versions count down: 1.0 = 0xfeff, 1.2 = 0xfefd. A client at 1.2 or newer gets 1.2. */
export function supportsDtls12(version: number): boolean {
  return version <= ProtocolVersion.DTLS1_2 && (version & 0xff00) === 0xfe00;
}

export function chooseServerParameters(
  hello: ClientHello,
  preference: readonly CipherSuite[],
  requireEms: boolean,
  creds: ServerCredentials = { psk: true, certificates: [], legacySha1: false },
  groups: readonly EcdhGroup[] = DEFAULT_GROUPS,
): ServerChoice {
  if (!supportsDtls12(hello.version)) {
    throw alertError("protocol_version", `client offers DTLS version 0x${hello.version.toString(16)}, DTLS 1.2 is required`);
  }
  if (!hello.compressionMethods.includes(0)) {
    throw alertError("illegal_parameter", "client does not offer the null compression method");
  }
  const offered = new Set(hello.cipherSuites);
  const group = commonGroup(hello, groups);
  const sigExt = findExtension(hello.extensions, ExtensionType.signature_algorithms);
  const sigAlgs = sigExt === undefined ? undefined : decodeSignatureAlgorithms(sigExt.data);
  const groupsExt = findExtension(hello.extensions, ExtensionType.supported_groups);
  const clientGroups = groupsExt === undefined ? undefined : new Set(decodeSupportedGroups(groupsExt.data));
  let signed: { credential: ServerCredential; scheme: number } | undefined;
  const suite = preference.find((s) => {
    if (!offered.has(s.id) || (usesEcdhe(s) && group === undefined)) return false;
    if (s.keyExchange === "psk" || s.keyExchange === "ecdhe_psk") return creds.psk;
    signed = pickCredential(s.keyExchange === "ecdhe_rsa" ? "rsa" : "ecdsa", creds, sigAlgs, clientGroups);
    return signed !== undefined;
  });
  if (suite === undefined) {
    const legacyHint =
      sigAlgs === undefined && creds.certificates.length > 0 && !creds.legacySha1
        ? " (the client sends no signature_algorithms, so only SHA-1 signatures would do: see the legacy SHA-1 option)"
        : "";
    throw alertError("handshake_failure", `no cipher suite (with a usable group and credential) in common with the client${legacyHint}`);
  }
  const ecdhe = usesEcdhe(suite);
  const emsExt = findExtension(hello.extensions, ExtensionType.extended_master_secret);
  if (emsExt !== undefined && emsExt.data.length !== 0) {
    throw alertError("decode_error", "extended_master_secret extension must be empty");
  }
  const ems = emsExt !== undefined;
  if (requireEms && !ems) {
    throw alertError("handshake_failure", "extended master secret is required and the client does not offer it");
  }
  const renegExt = findExtension(hello.extensions, ExtensionType.renegotiation_info);
  if (renegExt !== undefined && decodeRenegotiationInfo(renegExt.data).length !== 0) {
    throw alertError("handshake_failure", "renegotiation_info must be empty in an initial handshake");
  }
  const secureReneg = renegExt !== undefined || offered.has(TLS_EMPTY_RENEGOTIATION_INFO_SCSV);
  const extensions: Extension[] = [];
  if (ems) extensions.push({ type: ExtensionType.extended_master_secret, data: EMPTY });
  if (secureReneg) extensions.push({ type: ExtensionType.renegotiation_info, data: EMPTY_RENEGOTIATION_INFO });
  if (ecdhe && findExtension(hello.extensions, ExtensionType.ec_point_formats) !== undefined) {
    extensions.push({ type: ExtensionType.ec_point_formats, data: EC_POINT_FORMATS_UNCOMPRESSED });
  }
  return {
    suite,
    credential: signed?.credential,
    signatureScheme: signed?.scheme,
    group: ecdhe ? group : undefined,
    extendedMasterSecret: ems,
    extensions: extensions.length > 0 ? extensions : undefined,
  };
}

/**
 * Our most preferred group the client supports. No supported_groups extension
 * means the client takes any (RFC 8422 4): then secp256r1, the most widely
 * implemented. A client whose ec_point_formats lacks "uncompressed" gets none.
 */
function commonGroup(hello: ClientHello, ours: readonly EcdhGroup[]): ServerChoice["group"] {
  const formats = findExtension(hello.extensions, ExtensionType.ec_point_formats);
  if (formats !== undefined && !decodeEcPointFormats(formats.data).includes(0)) return undefined;
  const preference = groupsByName(ours);
  const ext = findExtension(hello.extensions, ExtensionType.supported_groups);
  if (ext === undefined) return preference.find((g) => g.name === "secp256r1");
  const theirs = new Set(decodeSupportedGroups(ext.data));
  return preference.find((g) => theirs.has(g.id));
}

/** The given groups with their code points, in the given order. */
export function groupsByName(names: readonly EcdhGroup[]): { readonly id: number; readonly name: EcdhGroup }[] {
  return names.map((n) => GROUPS.find((g) => g.name === n)).filter((g): g is (typeof GROUPS)[number] => g !== undefined);
}

const CURVE_GROUP: Record<string, number> = { "P-256": 23, "P-384": 24, "P-521": 25 };

/** Signature schemes we verify: offered in signature_algorithms and in CertificateRequest. */
export const VERIFIABLE_SCHEMES: readonly number[] = [
  SignatureScheme.ecdsa_secp256r1_sha256,
  SignatureScheme.ecdsa_secp384r1_sha384,
  SignatureScheme.ecdsa_secp521r1_sha512,
  SignatureScheme.ed25519,
  SignatureScheme.rsa_pss_rsae_sha256,
  SignatureScheme.rsa_pss_rsae_sha384,
  SignatureScheme.rsa_pkcs1_sha256,
  SignatureScheme.rsa_pkcs1_sha384,
];

/** Schemes each key can sign with, best first. In TLS 1.2 an ECDSA scheme names the hash, not the curve. */
export function candidateSchemes(keyType: string, curve: string | undefined): number[] {
  const S = SignatureScheme;
  if (keyType === "rsa") return [S.rsa_pss_rsae_sha256, S.rsa_pkcs1_sha256, S.rsa_pss_rsae_sha384, S.rsa_pkcs1_sha384];
  if (keyType === "ed25519") return [S.ed25519];
  if (curve === "P-384") return [S.ecdsa_secp384r1_sha384, S.ecdsa_secp256r1_sha256, S.ecdsa_secp521r1_sha512];
  if (curve === "P-521") return [S.ecdsa_secp521r1_sha512, S.ecdsa_secp384r1_sha384, S.ecdsa_secp256r1_sha256];
  return [S.ecdsa_secp256r1_sha256, S.ecdsa_secp384r1_sha384, S.ecdsa_secp521r1_sha512];
}

/**
 * The first configured chain the client can verify for this suite family:
 * the key type fits, an ECDSA certificate's curve is among the client's groups
 * (RFC 8422 5.1.1), and a signature scheme is among its signature_algorithms.
 * Without that extension RFC 5246 7.4.1.4.1 defaults to SHA-1, allowed only with
 * the legacy option.
 */
function pickCredential(
  family: "ecdsa" | "rsa",
  creds: ServerCredentials,
  sigAlgs: readonly number[] | undefined,
  clientGroups: ReadonlySet<number> | undefined,
): { credential: ServerCredential; scheme: number } | undefined {
  for (const credential of creds.certificates) {
    const { keyType, curve } = credential.signer;
    if (family === "rsa" ? keyType !== "rsa" : keyType === "rsa") continue;
    if (keyType === "ec" && clientGroups !== undefined && !clientGroups.has(CURVE_GROUP[curve ?? ""] ?? -1)) continue;
    let scheme: number | undefined;
    if (sigAlgs !== undefined) {
      scheme = candidateSchemes(keyType, curve).find((c) => sigAlgs.includes(c));
    } else if (creds.legacySha1 && keyType !== "ed25519") {
      scheme = keyType === "rsa" ? SignatureScheme.rsa_pkcs1_sha1 : SignatureScheme.ecdsa_sha1;
    }
    if (scheme !== undefined) return { credential, scheme };
  }
  return undefined;
}
