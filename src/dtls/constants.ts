/**
 * Wire constants of DTLS 1.2 used by the engine: record content types
 * (RFC 6347, RFC 9146's tls12_cid), handshake message types (RFC 5246, RFC
 * 6347, RFC 5077's NewSessionTicket) and their names, versions, alerts,
 * extension numbers (RFC 8422, 5246, 7627, 5746, 5077, 9146).
 */

export const ContentType = {
  change_cipher_spec: 20,
  alert: 21,
  handshake: 22,
  application_data: 23,
  /** RFC 9146: a record carrying a connection ID, its real type inside the protected DTLSInnerPlaintext. */
  tls12_cid: 25,
} as const;

export const HandshakeType = {
  hello_request: 0,
  client_hello: 1,
  server_hello: 2,
  hello_verify_request: 3,
  certificate: 11,
  server_key_exchange: 12,
  certificate_request: 13,
  server_hello_done: 14,
  certificate_verify: 15,
  client_key_exchange: 16,
  finished: 20,
  /** RFC 5077 3.3 */
  new_session_ticket: 4,
} as const;

/** The RFC's names of the handshake messages (for errors): every HandshakeType has one. */
const HANDSHAKE_NAMES: Record<(typeof HandshakeType)[keyof typeof HandshakeType], string> = {
  [HandshakeType.hello_request]: "HelloRequest",
  [HandshakeType.client_hello]: "ClientHello",
  [HandshakeType.server_hello]: "ServerHello",
  [HandshakeType.hello_verify_request]: "HelloVerifyRequest",
  [HandshakeType.certificate]: "Certificate",
  [HandshakeType.server_key_exchange]: "ServerKeyExchange",
  [HandshakeType.certificate_request]: "CertificateRequest",
  [HandshakeType.server_hello_done]: "ServerHelloDone",
  [HandshakeType.certificate_verify]: "CertificateVerify",
  [HandshakeType.client_key_exchange]: "ClientKeyExchange",
  [HandshakeType.finished]: "Finished",
  [HandshakeType.new_session_ticket]: "NewSessionTicket",
};
const handshakeNames: Readonly<Partial<Record<number, string>>> = HANDSHAKE_NAMES;

/** A handshake message type as the RFC names it, e.g. "ServerHelloDone (14)"; an unknown one by its number. */
export function handshakeName(msgType: number): string {
  const name = handshakeNames[msgType];
  return name === undefined ? `handshake message type ${msgType}` : `${name} (${msgType})`;
}

export const ProtocolVersion = {
  DTLS1_0: 0xfeff,
  DTLS1_2: 0xfefd,
} as const;

export const AlertLevel = { warning: 1, fatal: 2 } as const;

export const AlertDescription = {
  close_notify: 0,
  unexpected_message: 10,
  bad_record_mac: 20,
  record_overflow: 22,
  handshake_failure: 40,
  bad_certificate: 42,
  unsupported_certificate: 43,
  certificate_revoked: 44,
  certificate_expired: 45,
  certificate_unknown: 46,
  illegal_parameter: 47,
  unknown_ca: 48,
  access_denied: 49,
  decode_error: 50,
  decrypt_error: 51,
  protocol_version: 70,
  insufficient_security: 71,
  internal_error: 80,
  user_canceled: 90,
  no_renegotiation: 100,
  unsupported_extension: 110,
  unknown_psk_identity: 115,
} as const;

export type AlertName = keyof typeof AlertDescription;

const alertNames = new Map<number, AlertName>((Object.entries(AlertDescription) as [AlertName, number][]).map(([k, v]) => [v, k]));

export function alertName(code: number): string {
  return alertNames.get(code) ?? `alert_${code}`;
}

export const ExtensionType = {
  supported_groups: 10,
  ec_point_formats: 11,
  signature_algorithms: 13,
  encrypt_then_mac: 22,
  extended_master_secret: 23,
  session_ticket: 35,
  /** RFC 9146 3 (the code point 54; 53 was the draft's) */
  connection_id: 54,
  renegotiation_info: 0xff01,
} as const;

/** Signalling suite value for secure renegotiation (RFC 5746). */
export const TLS_EMPTY_RENEGOTIATION_INFO_SCSV = 0x00ff;

export const RECORD_HEADER_LENGTH = 13;
export const HANDSHAKE_HEADER_LENGTH = 12;
/** 2^14 plaintext bytes (RFC 5246 6.2.1). */
export const MAX_PLAINTEXT = 16384;
/** 2^48 - 1 */
export const MAX_SEQUENCE = 0xffff_ffff_ffff;

/** Named groups for ECDHE (RFC 8422 5.1.1, RFC 7748). */
export const NamedGroup = {
  secp256r1: 23,
  secp384r1: 24,
  secp521r1: 25,
  x25519: 29,
} as const;

/** ECCurveType named_curve (RFC 8422 5.4). */
export const EC_CURVE_TYPE_NAMED = 3;
