/**
 * Connection ID (RFC 9146) in the hellos: the `connection_id` extension (54),
 *
 *   struct { opaque cid<0..2^8-1>; } ConnectionId;
 *
 * Each side names the CID it wants to RECEIVE: records to a peer that asked
 * for a non-empty CID carry it (tls12_cid records, record.ts); a zero-length
 * CID says "I send CIDs, put none in what you send me". Our client asks for an
 * empty one (it is the side whose address changes, it needs none); our server
 * answers with one of its own, so the client's records find their session
 * whatever address they come from. The server answers only a client that
 * offered the extension (RFC 9146 3); a peer without it sees nothing new.
 *
 * CIDs are held as latin1 strings (one char per byte): a short one-byte string
 * costs a server session some 20 bytes where a Uint8Array costs over 100, and
 * the same string keys the server's CID map.
 */
import { ByteReader, ByteWriter } from "../util/bytes.ts";
import { DecodeError } from "../util/errors.ts";
import { ExtensionType } from "./constants.ts";
import { alertError, errorMessage } from "./errors.ts";
import { findExtension, type Extension } from "./messages.ts";

/** The CIDs of one association, as latin1 strings (one char per byte). */
export interface ConnectionIds {
  /** What the peer puts in the records it sends us ("" for none: it sends plain records). */
  readonly read: string;
  /** What we put in the records we send ("" for none: we send plain records). */
  readonly write: string;
}

/** Longest CID the extension can carry. */
export const MAX_CID_LENGTH = 255;
/** Default length of the CIDs our server hands out (ListenOptions.connectionIdLength). */
export const DEFAULT_SERVER_CID_LENGTH = 6;
/** Random bytes a server CID has at least after its node prefix. */
export const MIN_CID_RANDOM_BYTES = 4;

export function encodeConnectionId(cid: string): Uint8Array {
  return new ByteWriter().vec8(cidBytes(cid)).finish();
}

/** The CID of an extension body; decode_error when it is not exactly one opaque<0..255>. */
export function decodeConnectionId(data: Uint8Array): string {
  try {
    const r = new ByteReader(data);
    const cid = r.vec8("connection_id");
    if (r.remaining() !== 0) throw new DecodeError("trailing bytes after the connection_id");
    return cidString(cid);
  } catch (e) {
    throw alertError("decode_error", `connection_id extension: ${errorMessage(e)}`);
  }
}

/** The extension our client offers: an empty CID (we need none to be found). */
export function clientConnectionIdExtension(): Extension {
  return { type: ExtensionType.connection_id, data: encodeConnectionId("") };
}

/** The CID a ClientHello asks us to send with, if it offers the extension. */
export function offeredConnectionId(extensions: readonly Extension[] | undefined): string | undefined {
  const ext = findExtension(extensions, ExtensionType.connection_id);
  return ext === undefined ? undefined : decodeConnectionId(ext.data);
}

/**
 * The server's side: the ServerHello extensions with ours appended (our CID),
 * and the CIDs the association uses; `ours` undefined (CID off, or the client
 * did not offer it) leaves the extensions as they are, and the client's
 * extension is not even read then (a malformed one matters only to a server
 * that would answer it: decode_error).
 */
export function answerConnectionId(
  extensions: readonly Extension[] | undefined,
  clientExtensions: readonly Extension[] | undefined,
  ours: string | undefined,
): { readonly extensions: readonly Extension[] | undefined; readonly ids: ConnectionIds | undefined } {
  const clientCid = ours === undefined ? undefined : offeredConnectionId(clientExtensions);
  if (ours === undefined || clientCid === undefined) return { extensions, ids: undefined };
  return {
    extensions: [...(extensions ?? []), { type: ExtensionType.connection_id, data: encodeConnectionId(ours) }],
    ids: { read: ours, write: clientCid },
  };
}

/** The client's side: the CIDs from the ServerHello's answer (we offered an empty one), or undefined when it did not answer. */
export function acceptedConnectionId(serverExtensions: readonly Extension[] | undefined): ConnectionIds | undefined {
  const theirs = offeredConnectionId(serverExtensions);
  return theirs === undefined ? undefined : { read: "", write: theirs };
}

/** A new server CID: the node prefix, then random bytes (latin1). */
export function makeServerCid(prefix: string, length: number, random: (n: number) => Uint8Array): string {
  return prefix + cidString(random(length - prefix.length));
}

export function cidString(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
}

export function cidBytes(cid: string): Uint8Array {
  return Buffer.from(cid, "latin1");
}

/** Whether bytes[at .. at + cid.length) are the CID. */
export function cidAt(bytes: Uint8Array, at: number, cid: string): boolean {
  if (at + cid.length > bytes.length) return false;
  for (let i = 0; i < cid.length; i++) if (bytes[at + i] !== cid.charCodeAt(i)) return false;
  return true;
}
