/**
 * Codecs of the handshake message bodies the engine speaks (RFC 5246 7.4,
 * RFC 6347 4.2.1/4.3.2, RFC 4279 2, RFC 8422 5, RFC 5077 3.3). Every decoder consumes its
 * input exactly or throws DecodeError.
 */
import { ByteReader, ByteWriter } from "../util/bytes.ts";
import { DecodeError } from "../util/errors.ts";

export interface Extension {
  readonly type: number;
  readonly data: Uint8Array;
}

export interface ClientHello {
  readonly version: number;
  readonly random: Uint8Array;
  readonly sessionId: Uint8Array;
  readonly cookie: Uint8Array;
  readonly cipherSuites: readonly number[];
  readonly compressionMethods: Uint8Array;
  /** undefined when the hello carries no extensions block at all. */
  readonly extensions: readonly Extension[] | undefined;
}

export interface ServerHello {
  readonly version: number;
  readonly random: Uint8Array;
  readonly sessionId: Uint8Array;
  readonly cipherSuite: number;
  readonly compressionMethod: number;
  readonly extensions: readonly Extension[] | undefined;
}

export interface HelloVerifyRequest {
  readonly version: number;
  readonly cookie: Uint8Array;
}

function readExtensions(r: ByteReader): Extension[] | undefined {
  if (r.remaining() === 0) return undefined;
  const block = new ByteReader(r.vec16("extensions"));
  const out: Extension[] = [];
  const seen = new Set<number>();
  while (block.remaining() > 0) {
    const type = block.u16("extension type");
    const data = block.vec16("extension data");
    if (seen.has(type)) throw new DecodeError(`duplicate extension ${type}`);
    seen.add(type);
    out.push({ type, data });
  }
  return out;
}

function writeExtensions(w: ByteWriter, exts: readonly Extension[] | undefined): void {
  if (exts === undefined) return;
  w.lengthPrefixed16((b) => {
    for (const e of exts) b.u16(e.type).vec16(e.data);
  });
}

export function decodeClientHello(body: Uint8Array): ClientHello {
  const r = new ByteReader(body);
  const version = r.u16("client_version");
  const random = r.bytes(32, "random");
  const sessionId = r.vec8("session_id", 0, 32);
  const cookie = r.vec8("cookie", 0, 255);
  const suitesRaw = r.vec16("cipher_suites", 2, 0xfffe);
  if (suitesRaw.length % 2 !== 0) throw new DecodeError("odd cipher_suites length");
  const cipherSuites: number[] = [];
  for (let i = 0; i < suitesRaw.length; i += 2) cipherSuites.push(((suitesRaw[i] as number) << 8) | (suitesRaw[i + 1] as number));
  const compressionMethods = r.vec8("compression_methods", 1, 0xff);
  const extensions = readExtensions(r);
  r.expectEnd("ClientHello");
  return { version, random, sessionId, cookie, cipherSuites, compressionMethods, extensions };
}

export function encodeClientHello(h: ClientHello): Uint8Array {
  const w = new ByteWriter(128);
  w.u16(h.version).bytes(h.random).vec8(h.sessionId).vec8(h.cookie);
  w.u16(h.cipherSuites.length * 2);
  for (const s of h.cipherSuites) w.u16(s);
  w.vec8(h.compressionMethods);
  writeExtensions(w, h.extensions);
  return w.finish();
}

export function decodeServerHello(body: Uint8Array): ServerHello {
  const r = new ByteReader(body);
  const version = r.u16("server_version");
  const random = r.bytes(32, "random");
  const sessionId = r.vec8("session_id", 0, 32);
  const cipherSuite = r.u16("cipher_suite");
  const compressionMethod = r.u8("compression_method");
  const extensions = readExtensions(r);
  r.expectEnd("ServerHello");
  return { version, random, sessionId, cipherSuite, compressionMethod, extensions };
}

export function encodeServerHello(h: ServerHello): Uint8Array {
  const w = new ByteWriter(96);
  w.u16(h.version).bytes(h.random).vec8(h.sessionId).u16(h.cipherSuite).u8(h.compressionMethod);
  writeExtensions(w, h.extensions);
  return w.finish();
}

export function decodeHelloVerifyRequest(body: Uint8Array): HelloVerifyRequest {
  const r = new ByteReader(body);
  const version = r.u16("server_version");
  const cookie = r.vec8("cookie", 0, 255);
  r.expectEnd("HelloVerifyRequest");
  return { version, cookie };
}

export function encodeHelloVerifyRequest(h: HelloVerifyRequest): Uint8Array {
  return new ByteWriter(40).u16(h.version).vec8(h.cookie).finish();
}

/** PSK ServerKeyExchange / ClientKeyExchange: one opaque<0..2^16-1> (identity hint / identity). */
export function decodePskIdentity(body: Uint8Array, what: string): Uint8Array {
  const r = new ByteReader(body);
  const id = r.vec16(what);
  r.expectEnd(what);
  return id;
}

export function encodePskIdentity(identity: Uint8Array): Uint8Array {
  return new ByteWriter(identity.length + 2).vec16(identity).finish();
}

export function decodeEmpty(body: Uint8Array, what: string): void {
  if (body.length !== 0) throw new DecodeError(`${what} must be empty, has ${body.length} bytes`);
}

export function decodeFinished(body: Uint8Array): Uint8Array {
  if (body.length !== 12) throw new DecodeError(`Finished verify_data must be 12 bytes, has ${body.length}`);
  return body;
}

export function findExtension(exts: readonly Extension[] | undefined, type: number): Extension | undefined {
  return exts?.find((e) => e.type === type);
}

/** renegotiation_info body: opaque renegotiated_connection<0..255>. */
export function decodeRenegotiationInfo(data: Uint8Array): Uint8Array {
  const r = new ByteReader(data);
  const v = r.vec8("renegotiated_connection");
  r.expectEnd("renegotiation_info");
  return v;
}

export const EMPTY_RENEGOTIATION_INFO = new Uint8Array([0]);
export const EMPTY = new Uint8Array(0);

/** RFC 5489 ServerKeyExchange for ECDHE_PSK: hint, then named-curve ECDH parameters (no signature). */
export interface EcdhePskServerParams {
  readonly hint: Uint8Array;
  readonly group: number;
  readonly publicKey: Uint8Array;
}

export function encodeEcdhePskServerParams(p: EcdhePskServerParams): Uint8Array {
  return new ByteWriter(8 + p.hint.length + p.publicKey.length).vec16(p.hint).u8(3).u16(p.group).vec8(p.publicKey).finish();
}

export function decodeEcdhePskServerParams(body: Uint8Array): EcdhePskServerParams {
  const r = new ByteReader(body);
  const hint = r.vec16("psk_identity_hint");
  const curveType = r.u8("curve_type");
  if (curveType !== 3) throw new DecodeError(`curve_type ${curveType} is not named_curve`);
  const group = r.u16("named_curve");
  const publicKey = r.vec8("ECDH public key", 1);
  r.expectEnd("ServerKeyExchange");
  return { hint, group, publicKey };
}

/** RFC 5489 ClientKeyExchange for ECDHE_PSK: identity, then the client's ECDH public key. */
export interface EcdhePskClientKeyExchange {
  readonly identity: Uint8Array;
  readonly publicKey: Uint8Array;
}

export function encodeEcdhePskClientKeyExchange(c: EcdhePskClientKeyExchange): Uint8Array {
  return new ByteWriter(4 + c.identity.length + c.publicKey.length).vec16(c.identity).vec8(c.publicKey).finish();
}

export function decodeEcdhePskClientKeyExchange(body: Uint8Array): EcdhePskClientKeyExchange {
  const r = new ByteReader(body);
  const identity = r.vec16("psk_identity");
  const publicKey = r.vec8("ECDH public key", 1);
  r.expectEnd("ClientKeyExchange");
  return { identity, publicKey };
}

/** supported_groups extension body: NamedGroup list<2..2^16-1>. */
export function decodeSupportedGroups(data: Uint8Array): number[] {
  return decodeU16List(data, "named_group_list");
}

export function encodeSupportedGroups(groups: readonly number[]): Uint8Array {
  return encodeU16List(groups);
}

/** A non-empty list<2..2^16-2> of 16-bit values, the whole extension body. */
function decodeU16List(data: Uint8Array, what: string): number[] {
  const r = new ByteReader(data);
  const list = r.vec16(what, 2);
  r.expectEnd(what);
  if (list.length % 2 !== 0) throw new DecodeError(`odd ${what} length`);
  const out: number[] = [];
  for (let i = 0; i < list.length; i += 2) out.push(((list[i] as number) << 8) | (list[i + 1] as number));
  return out;
}

function encodeU16List(values: readonly number[]): Uint8Array {
  const w = new ByteWriter(2 + 2 * values.length).u16(2 * values.length);
  for (const v of values) w.u16(v);
  return w.finish();
}

/** ec_point_formats extension body: ECPointFormat list<1..2^8-1>. */
export function decodeEcPointFormats(data: Uint8Array): Uint8Array {
  const r = new ByteReader(data);
  const list = r.vec8("ec_point_format_list", 1);
  r.expectEnd("ec_point_formats");
  return list;
}

/** Only the uncompressed format (RFC 8422 5.1.2). */
export const EC_POINT_FORMATS_UNCOMPRESSED = new Uint8Array([1, 0]);

/** Certificate (RFC 5246 7.4.2): ASN.1Cert certificate_list<0..2^24-1>, leaf first. */
export function encodeCertificateList(chain: readonly Uint8Array[]): Uint8Array {
  const w = new ByteWriter(16 + chain.reduce((n, c) => n + c.length + 3, 0));
  let total = 0;
  for (const c of chain) total += 3 + c.length;
  w.u24(total);
  for (const c of chain) w.vec24(c);
  return w.finish();
}

export function decodeCertificateList(body: Uint8Array): Uint8Array[] {
  const r = new ByteReader(body);
  const list = new ByteReader(r.vec24("certificate_list"));
  r.expectEnd("Certificate");
  const out: Uint8Array[] = [];
  while (list.remaining() > 0) out.push(list.vec24("ASN.1Cert", 1));
  return out;
}

/** ServerECDHParams (RFC 8422 5.4): named_curve, then the public point. */
export interface EcdhParams {
  readonly group: number;
  readonly publicKey: Uint8Array;
}

export function encodeEcdhParams(p: EcdhParams): Uint8Array {
  return new ByteWriter(4 + p.publicKey.length).u8(3).u16(p.group).vec8(p.publicKey).finish();
}

/** A signed ECDHE ServerKeyExchange: the params bytes (what was signed, with the randoms), scheme, signature. */
export interface SignedEcdhParams extends EcdhParams {
  readonly paramsBytes: Uint8Array;
  readonly scheme: number;
  readonly signature: Uint8Array;
}

export function encodeSignedEcdhParams(paramsBytes: Uint8Array, scheme: number, signature: Uint8Array): Uint8Array {
  return new ByteWriter(paramsBytes.length + 4 + signature.length).bytes(paramsBytes).u16(scheme).vec16(signature).finish();
}

export function decodeSignedEcdhParams(body: Uint8Array): SignedEcdhParams {
  const r = new ByteReader(body);
  const curveType = r.u8("curve_type");
  if (curveType !== 3) throw new DecodeError(`curve_type ${curveType} is not named_curve`);
  const group = r.u16("named_curve");
  const publicKey = r.vec8("ECDH public key", 1);
  const paramsBytes = body.subarray(0, r.offset);
  const scheme = r.u16("signature algorithm");
  const signature = r.vec16("signature", 1);
  r.expectEnd("ServerKeyExchange");
  return { group, publicKey, paramsBytes, scheme, signature };
}

/** ClientECDiffieHellmanPublic (RFC 8422 5.7): the client's point. */
export function encodeEcdhPublic(publicKey: Uint8Array): Uint8Array {
  return new ByteWriter(1 + publicKey.length).vec8(publicKey).finish();
}

export function decodeEcdhPublic(body: Uint8Array): Uint8Array {
  const r = new ByteReader(body);
  const pub = r.vec8("ECDH public key", 1);
  r.expectEnd("ClientKeyExchange");
  return pub;
}

/** signature_algorithms extension body: SignatureAndHashAlgorithm list<2..2^16-2>. */
export function decodeSignatureAlgorithms(data: Uint8Array): number[] {
  return decodeU16List(data, "supported_signature_algorithms");
}

export function encodeSignatureAlgorithms(schemes: readonly number[]): Uint8Array {
  return encodeU16List(schemes);
}

/** ClientCertificateType (RFC 5246 7.4.4, RFC 8422 5.5). */
export const ClientCertificateType = { rsa_sign: 1, ecdsa_sign: 64 } as const;

/** CertificateRequest (RFC 5246 7.4.4). */
export interface CertificateRequest {
  readonly certificateTypes: Uint8Array;
  readonly signatureAlgorithms: readonly number[];
  /** DER-encoded distinguished names of acceptable CAs (empty: any). */
  readonly authorities: readonly Uint8Array[];
}

export function encodeCertificateRequest(r: CertificateRequest): Uint8Array {
  const w = new ByteWriter(64).vec8(r.certificateTypes).u16(2 * r.signatureAlgorithms.length);
  for (const a of r.signatureAlgorithms) w.u16(a);
  w.lengthPrefixed16((b) => {
    for (const dn of r.authorities) b.vec16(dn);
  });
  return w.finish();
}

export function decodeCertificateRequest(body: Uint8Array): CertificateRequest {
  const r = new ByteReader(body);
  const certificateTypes = r.vec8("certificate_types", 1);
  const algs = r.vec16("supported_signature_algorithms", 2);
  if (algs.length % 2 !== 0) throw new DecodeError("odd supported_signature_algorithms length");
  const signatureAlgorithms: number[] = [];
  for (let i = 0; i < algs.length; i += 2) signatureAlgorithms.push(((algs[i] as number) << 8) | (algs[i + 1] as number));
  const list = new ByteReader(r.vec16("certificate_authorities"));
  r.expectEnd("CertificateRequest");
  const authorities: Uint8Array[] = [];
  while (list.remaining() > 0) authorities.push(list.vec16("DistinguishedName", 1));
  return { certificateTypes, signatureAlgorithms, authorities };
}

/** CertificateVerify (RFC 5246 7.4.8): the scheme and a signature over every handshake message so far. */
export interface CertificateVerify {
  readonly scheme: number;
  readonly signature: Uint8Array;
}

export function encodeCertificateVerify(v: CertificateVerify): Uint8Array {
  return new ByteWriter(4 + v.signature.length).u16(v.scheme).vec16(v.signature).finish();
}

export function decodeCertificateVerify(body: Uint8Array): CertificateVerify {
  const r = new ByteReader(body);
  const scheme = r.u16("signature algorithm");
  const signature = r.vec16("signature", 1);
  r.expectEnd("CertificateVerify");
  return { scheme, signature };
}

/** RFC 5077 3.3: struct { uint32 ticket_lifetime_hint; opaque ticket<0..2^16-1>; } NewSessionTicket; */
export interface NewSessionTicket {
  /** seconds; 0: unspecified */
  readonly lifetimeHint: number;
  readonly ticket: Uint8Array;
}

export function encodeNewSessionTicket(t: NewSessionTicket): Uint8Array {
  return new ByteWriter(6 + t.ticket.length).u32(t.lifetimeHint).vec16(t.ticket).finish();
}

export function decodeNewSessionTicket(body: Uint8Array): NewSessionTicket {
  const r = new ByteReader(body);
  const lifetimeHint = r.u32("ticket_lifetime_hint");
  const ticket = r.vec16("ticket");
  r.expectEnd("NewSessionTicket");
  return { lifetimeHint, ticket };
}
