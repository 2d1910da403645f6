/**
 * Codecs of the handshake message bodies the PSK engine speaks
 * (RFC 5246 7.4, RFC 6347 4.2.1/4.3.2, RFC 4279 2). Every decoder consumes its
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
  const r = new ByteReader(data);
  const list = r.vec16("named_group_list", 2);
  r.expectEnd("supported_groups");
  if (list.length % 2 !== 0) throw new DecodeError("odd named_group_list length");
  const out: number[] = [];
  for (let i = 0; i < list.length; i += 2) out.push(((list[i] as number) << 8) | (list[i + 1] as number));
  return out;
}

export function encodeSupportedGroups(groups: readonly number[]): Uint8Array {
  const w = new ByteWriter(2 + 2 * groups.length).u16(2 * groups.length);
  for (const g of groups) w.u16(g);
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
