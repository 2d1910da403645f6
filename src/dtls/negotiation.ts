/**
 * What a server decides from a ClientHello: version, suite, extended master
 * secret, secure renegotiation. Pure; throws DtlsError with the alert to send.
 */
import { ExtensionType, ProtocolVersion, TLS_EMPTY_RENEGOTIATION_INFO_SCSV } from "./constants.ts";
import { alertError } from "./errors.ts";
import { decodeRenegotiationInfo, EMPTY, EMPTY_RENEGOTIATION_INFO, findExtension, type ClientHello, type Extension } from "./messages.ts";
import type { CipherSuite } from "./suites.ts";

export interface ServerChoice {
  readonly suite: CipherSuite;
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
  const suite = preference.find((s) => offered.has(s.id));
  if (suite === undefined) {
    throw alertError("handshake_failure", "no cipher suite in common with the client");
  }
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
  return { suite, extendedMasterSecret: ems, extensions: extensions.length > 0 ? extensions : undefined };
}
