/**
 * Session resumption, server side (RFC 5246 7.3 abbreviated handshake,
 * RFC 5077 stateless tickets, a bounded session-ID cache): what a session
 * keeps to be resumed, how it is sealed into a ticket, and whether a
 * ClientHello's ticket or session ID may resume it now.
 *
 * Ticket format (opaque to the client, RFC 5077 4's recommended shape):
 *
 *   key_name (16) || nonce (12) || AES-256-GCM(key, nonce, aad = key_name, state) || tag (16)
 *
 * with `state` (all integers big-endian):
 *
 *   version (1) = 1 || cipher suite (2) || master secret <1..255> || EMS flag (1)
 *   || ECDHE group (2; 0: none) || identity <0..2^16-1> (UTF-8)
 *   || peer certificate flag (1) [|| subject <0..2^16-1> || SHA-256 fingerprint <0..255>]
 *   || full handshake time (6, wall ms) || issued (6, wall ms) || PSK digest <0..255> (SHA-256 of the PSK; empty without PSK)
 *
 * Every check that fails sends the client through a full handshake (never an
 * alert), counted by cause in ServerStats.resumptionsRefused.
 */
import { ByteReader, ByteWriter, copyBytes, fromHex, toHex } from "../util/bytes.ts";
import { DecodeError } from "../util/errors.ts";
import { DtlsError } from "./errors.ts";
import { defaultCrypto, type AeadCiphers, type AeadKey, type CryptoProvider, type Digests, type EcdhGroup } from "../crypto/index.ts";
import { groupById, GROUPS } from "./negotiation.ts";
import type { ServerResumptionOptions, TicketKey, TicketKeySource } from "./resumption-options.ts";
import { RotatingTicketKeys } from "./ticket-keys.ts";

/** Why a ticket or session ID did not resume its session (the handshake went on as a full one). */
export type ResumptionRefusal =
  /** the ticket's key name is none of the current keys (retired, from another server, or garbage) */
  | "unknown_key"
  /** the ticket does not open (tampered, truncated) or its state does not parse */
  | "bad_ticket"
  /** the ticket (or cached session) is older than ticketLifetimeMs */
  | "ticket_expired"
  /** the session's full handshake is older than maxSessionAgeMs */
  | "session_too_old"
  /** the session's cipher suite is not offered by the client or no longer configured here */
  | "suite_not_offered"
  /** extended master secret used by the session and not offered now, or the other way round (RFC 7627 5.3) */
  | "ems_mismatch"
  /** the PSK identity is no longer known */
  | "psk_unknown"
  /** the identity's PSK is no longer the one the session was made with */
  | "psk_changed"
  /** the certificate identity is refused now (authorizeClient), or a certificate is required and the session had none */
  | "client_refused"
  /** a session ID that is not (or no longer) in the cache */
  | "unknown_session_id";

export const RESUMPTION_REFUSALS: readonly ResumptionRefusal[] = [
  "unknown_key",
  "bad_ticket",
  "ticket_expired",
  "session_too_old",
  "suite_not_offered",
  "ems_mismatch",
  "psk_unknown",
  "psk_changed",
  "client_refused",
  "unknown_session_id",
];

export function newResumptionRefusalCounts(): Record<ResumptionRefusal, number> {
  return {
    unknown_key: 0,
    bad_ticket: 0,
    ticket_expired: 0,
    session_too_old: 0,
    suite_not_offered: 0,
    ems_mismatch: 0,
    psk_unknown: 0,
    psk_changed: 0,
    client_refused: 0,
    unknown_session_id: 0,
  };
}

/** The peer certificate as the layers above saw it. */
export interface PeerCertificateInfo {
  readonly subject: string;
  /** lower-case hex, no colons */
  readonly fingerprint256: string;
}

/** What both sides keep of a session to resume it (the server in tickets and its cache, the client in its SavedSession). */
export interface SessionCore {
  readonly suite: number;
  readonly master: Uint8Array;
  readonly ems: boolean;
  readonly group: EcdhGroup | undefined;
  /** The PSK identity, or the certificate identity the server's verifier gave; "" when anonymous. */
  readonly identity: string;
  readonly peer: PeerCertificateInfo | undefined;
  /** Wall time of the session's full handshake (ms since the epoch). */
  readonly createdAt: number;
}

/** A server's session as a ticket or the cache holds it. */
export interface ServerSessionState extends SessionCore {
  /** Wall time the ticket (or cache entry) was made. */
  readonly issuedAt: number;
  /** SHA-256 of the PSK for PSK sessions (resumption only while the identity still has that key); empty otherwise. */
  readonly pskDigest: Uint8Array;
}

const STATE_VERSION = 1;
const KEY_NAME_LENGTH = 16;
const NONCE_LENGTH = 12;
const TAG_LENGTH = 16;
const utf8Encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

export function writeSessionCore(w: ByteWriter, s: SessionCore): void {
  w.u16(s.suite)
    .vec8(s.master)
    .u8(s.ems ? 1 : 0);
  w.u16(s.group === undefined ? 0 : (GROUPS.find((g) => g.name === s.group)?.id ?? 0));
  w.vec16(utf8Encoder.encode(s.identity));
  if (s.peer === undefined) w.u8(0);
  else w.u8(1).vec16(utf8Encoder.encode(s.peer.subject)).vec8(fromHex(s.peer.fingerprint256));
  w.u48(s.createdAt);
}

/** Throws DecodeError (or a TypeError from the UTF-8 decoder) on anything malformed. */
export function readSessionCore(r: ByteReader): SessionCore {
  const suite = r.u16("suite");
  const master = copyBytes(r.vec8("master secret", 48, 48));
  const emsByte = r.u8("ems");
  const groupId = r.u16("group");
  const group = groupId === 0 ? undefined : groupById(groupId);
  if (emsByte > 1 || (groupId !== 0 && group === undefined)) throw new DecodeError("bad session state");
  const identity = utf8.decode(r.vec16("identity"));
  let peer: PeerCertificateInfo | undefined;
  const hasPeer = r.u8("peer flag");
  if (hasPeer === 1) peer = { subject: utf8.decode(r.vec16("subject")), fingerprint256: toHex(r.vec8("fingerprint", 32, 32)) };
  else if (hasPeer !== 0) throw new DecodeError("bad session state");
  const createdAt = r.u48("created");
  return { suite, master, ems: emsByte === 1, group, identity, peer, createdAt };
}

function encodeServerState(s: ServerSessionState): Uint8Array {
  const w = new ByteWriter(160);
  w.u8(STATE_VERSION);
  writeSessionCore(w, s);
  w.u48(s.issuedAt).vec8(s.pskDigest);
  return w.finish();
}

function decodeServerState(b: Uint8Array): ServerSessionState | undefined {
  try {
    const r = new ByteReader(b);
    if (r.u8("version") !== STATE_VERSION) return undefined;
    const core = readSessionCore(r);
    const issuedAt = r.u48("issued");
    const pskDigest = copyBytes(r.vec8("psk digest", 0, 32));
    r.expectEnd("ticket state");
    return { ...core, issuedAt, pskDigest };
  } catch {
    return undefined;
  }
}

/** Each ticket key's AEAD key object per provider, built once (keys come and go with their source). */
const aeadKeys = new WeakMap<AeadCiphers, WeakMap<TicketKey, AeadKey>>();

function ticketAeadKey(aead: AeadCiphers, key: TicketKey): AeadKey {
  let keys = aeadKeys.get(aead);
  if (keys === undefined) {
    keys = new WeakMap();
    aeadKeys.set(aead, keys);
  }
  let k = keys.get(key);
  if (k === undefined) {
    k = aead.key(key.secret);
    keys.set(key, k);
  }
  return k;
}

/** The ticket for `state` under `key`, sealed with the provider's AEAD and a nonce from its random source. */
export function sealTicket(provider: CryptoProvider, key: TicketKey, state: ServerSessionState): Uint8Array {
  const nonce = provider.random.bytes(NONCE_LENGTH);
  const sealed = provider.aead.seal(
    "aes-256-gcm",
    ticketAeadKey(provider.aead, key),
    nonce,
    key.name,
    encodeServerState(state),
    KEY_NAME_LENGTH + NONCE_LENGTH,
  );
  sealed.set(key.name, 0);
  sealed.set(nonce, KEY_NAME_LENGTH);
  return sealed;
}

export function openTicket(
  provider: CryptoProvider,
  keys: TicketKeySource,
  ticket: Uint8Array,
  wallNow: number,
): ServerSessionState | ResumptionRefusal {
  if (ticket.length < KEY_NAME_LENGTH + NONCE_LENGTH + TAG_LENGTH) return "bad_ticket";
  const name = ticket.subarray(0, KEY_NAME_LENGTH);
  const key = keys.byName(name, wallNow);
  if (key === undefined) return "unknown_key";
  const nonce = ticket.subarray(KEY_NAME_LENGTH, KEY_NAME_LENGTH + NONCE_LENGTH);
  const plain = provider.aead.open(
    "aes-256-gcm",
    ticketAeadKey(provider.aead, key),
    nonce,
    key.name,
    ticket.subarray(KEY_NAME_LENGTH + NONCE_LENGTH),
  );
  if (plain === null) return "bad_ticket";
  return decodeServerState(plain) ?? "bad_ticket";
}

/** SHA-256 of a PSK: what a ticket keeps to tell whether the identity's key changed. */
export function pskDigest(d: Digests, psk: Uint8Array): Uint8Array {
  return d.hash("sha256", [psk]);
}

export function samePsk(d: Digests, state: ServerSessionState, psk: Uint8Array): boolean {
  return d.constantTimeEqual(state.pskDigest, pskDigest(d, psk));
}

/**
 * Sessions kept for session-ID resumption, least recently used first out
 * (a Map keeps insertion order; a hit moves the entry to the end). Each is
 * kept encoded (the ticket's state layout, unsealed): one byte array of some
 * 130 bytes instead of an object and its arrays: measured ~816 -> ~340 bytes
 * of heap per entry with its key.
 */
export class SessionCache {
  readonly capacity: number;
  private readonly entries = new Map<string, Uint8Array>();

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  get size(): number {
    return this.entries.size;
  }

  get(id: Uint8Array): ServerSessionState | undefined {
    const key = toHex(id);
    const s = this.entries.get(key);
    if (s === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, s);
    return decodeServerState(s);
  }

  set(id: Uint8Array, state: ServerSessionState): void {
    if (this.capacity === 0) return;
    const key = toHex(id);
    this.entries.delete(key);
    this.entries.set(key, encodeServerState(state));
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  delete(id: Uint8Array): void {
    this.entries.delete(toHex(id));
  }
}

/** A server's resumption settings with their defaults applied (ServerCoreConfig.resumption). */
export interface ServerResumption {
  readonly ticketKeys: TicketKeySource;
  readonly ticketLifetimeMs: number;
  readonly maxSessionAgeMs: number;
  /** undefined when sessionCacheSize is 0 */
  readonly cache: SessionCache | undefined;
  readonly wallClock: () => number;
}

export const DEFAULT_RESUMPTION = {
  ticketLifetimeMs: 24 * 3600_000,
  maxSessionAgeMs: 7 * 24 * 3600_000,
  sessionCacheSize: 10_000,
} as const;

/** The options checked and defaulted; undefined when resumption is off. Throws DtlsError "bad_option". */
export function serverResumption(opts: ServerResumptionOptions | undefined, provider: CryptoProvider = defaultCrypto): ServerResumption | undefined {
  if (opts?.enabled === false) return undefined;
  const positive = (name: string, v: number | undefined, def: number, min: number): number => {
    if (v === undefined) return def;
    if (!Number.isSafeInteger(v) || v < min) throw new DtlsError("bad_option", `resumption.${name} must be an integer of at least ${min}, got ${v}`);
    return v;
  };
  const ticketLifetimeMs = positive("ticketLifetimeMs", opts?.ticketLifetimeMs, DEFAULT_RESUMPTION.ticketLifetimeMs, 1000);
  const cacheSize = positive("sessionCacheSize", opts?.sessionCacheSize, DEFAULT_RESUMPTION.sessionCacheSize, 0);
  return {
    ticketKeys: opts?.ticketKeys ?? new RotatingTicketKeys(ticketLifetimeMs, provider.random),
    ticketLifetimeMs,
    maxSessionAgeMs: positive("maxSessionAgeMs", opts?.maxSessionAgeMs, DEFAULT_RESUMPTION.maxSessionAgeMs, 1000),
    cache: cacheSize === 0 ? undefined : new SessionCache(cacheSize),
    wallClock: opts?.wallClock ?? Date.now,
  };
}
