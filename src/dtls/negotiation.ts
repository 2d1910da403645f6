/**
 * What a server decides from a ClientHello: version, suite, extended master
 * secret, secure renegotiation. Pure; throws DtlsError with the alert to send.
 */
import { ExtensionType, NamedGroup, ProtocolVersion, TLS_EMPTY_RENEGOTIATION_INFO_SCSV } from "./constants.ts";
import type { EcdhGroup } from "./crypto.ts";
import { alertError } from "./errors.ts";
import {
  decodeEcPointFormats,
  decodeRenegotiationInfo,
  decodeSupportedGroups,
  EC_POINT_FORMATS_UNCOMPRESSED,
  EMPTY,
  EMPTY_RENEGOTIATION_INFO,
  findExtension,
  type ClientHello,
  type Extension,
} from "./messages.ts";
import type { CipherSuite } from "./suites.ts";

/** ECDHE groups in server preference order: the fast ones first (P-384 costs ~10x P-256 in OpenSSL). */
export const GROUPS: readonly { readonly id: number; readonly name: EcdhGroup }[] = [
  { id: NamedGroup.x25519, name: "x25519" },
  { id: NamedGroup.secp256r1, name: "secp256r1" },
  { id: NamedGroup.secp384r1, name: "secp384r1" },
];

export function groupById(id: number): EcdhGroup | undefined {
  return GROUPS.find((g) => g.id === id)?.name;
}

export interface ServerChoice {
  readonly suite: CipherSuite;
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

export function chooseServerParameters(hello: ClientHello, preference: readonly CipherSuite[], requireEms: boolean): ServerChoice {
  if (!supportsDtls12(hello.version)) {
    throw alertError("protocol_version", `client offers DTLS version 0x${hello.version.toString(16)}, DTLS 1.2 is required`);
  }
  if (!hello.compressionMethods.includes(0)) {
    throw alertError("illegal_parameter", "client does not offer the null compression method");
  }
  const offered = new Set(hello.cipherSuites);
  const group = commonGroup(hello);
  const suite = preference.find((s) => offered.has(s.id) && (s.keyExchange === "psk" || group !== undefined));
  if (suite === undefined) {
    throw alertError("handshake_failure", "no cipher suite (and, for ECDHE suites, no group) in common with the client");
  }
  const ecdhe = suite.keyExchange !== "psk";
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
function commonGroup(hello: ClientHello): ServerChoice["group"] {
  const formats = findExtension(hello.extensions, ExtensionType.ec_point_formats);
  if (formats !== undefined && !decodeEcPointFormats(formats.data).includes(0)) return undefined;
  const ext = findExtension(hello.extensions, ExtensionType.supported_groups);
  if (ext === undefined) return GROUPS.find((g) => g.name === "secp256r1");
  const theirs = new Set(decodeSupportedGroups(ext.data));
  return GROUPS.find((g) => theirs.has(g.id));
}
