/**
 * The server, sans-I/O: demultiplexes datagrams by Connection ID (RFC 9146:
 * a datagram that starts with a tls12_cid record) and else by peer address, answers
 * first ClientHellos with a stateless HelloVerifyRequest, creates a
 * connection only for a ClientHello with a valid cookie (and within the caps),
 * and drives every connection's timers from one scheduler.
 *
 * NAT rebinding (RFC 9146 6): a session found by its CID moves to the address
 * a datagram came from only when a record of it authenticated AND is newer
 * than every record before (its sequence number above the highest received);
 * a replayed, older or forged record from another address changes nothing.
 * The session object is the peer address its sends go to, so everything it
 * sends from then on (application data, retransmissions, alerts) follows.
 */
import { Scheduler, SLOT_INDEX, type HeapSlotted } from "../util/scheduler.ts";
import { ContentType, ExtensionType, HandshakeType, ProtocolVersion, RECORD_HEADER_LENGTH } from "./constants.ts";
import { cidAt, cidString, DEFAULT_SERVER_CID_LENGTH, makeServerCid } from "./connection-id.ts";
import { Connection, increment, type ConnectionOptions } from "./connection.ts";
import { CookieJar } from "./cookie.ts";
import { DtlsError, RefusalError, toDtlsError, type RefusalCode } from "./errors.ts";
import { encodeHandshake, parseHandshakeFragments, type HandshakeFragment } from "./handshake-codec.ts";
import { newClientHelloDropCounts, type ClientHelloDropCause } from "./hello-limiter.ts";
import { ServerHandshake, type ServerAuth } from "./handshake-server.ts";
import { MemoryBudget } from "./memory-budget.ts";
import { decodeClientHello, encodeHelloVerifyRequest, findExtension, type ClientHello } from "./messages.ts";
import { defaultCrypto, type Certificate } from "../crypto/index.ts";
import {
  DEFAULT_SERVER_LIMITS,
  type ClientAuthMode,
  type ClientVerdict,
  type ConnectionConfig,
  type ConnectionHandler,
  type ConnectionInfo,
  type RecordDropCause,
  type ServerCredential,
  type ServerPskConfig,
} from "./options.ts";
import { encodePlainRecord, parseRecords, type RawRecord } from "./record.ts";
import { newResumptionRefusalCounts, type PeerCertificateInfo, type ResumptionRefusal, type ServerResumption } from "./resumption.ts";
import { encodeSessionSnapshot, RESTORE_SEQUENCE_MARGIN, type SessionSnapshot } from "./session-snapshot.ts";

export interface Peer {
  readonly address: string;
  readonly port: number;
}

export interface ServerCoreConfig extends ConnectionConfig {
  /** Pre-shared keys (PSK and ECDHE_PSK suites); undefined for a certificate-only server. */
  readonly psk: ServerPskConfig | undefined;
  /** Certificate chains (ECDHE_ECDSA / ECDHE_RSA suites), picked per client. */
  readonly certificates?: readonly ServerCredential[];
  /** SHA-1 ServerKeyExchange signatures for clients without signature_algorithms (off by default). */
  readonly legacySha1Signatures?: boolean;
  /** Client certificates (certificate suites): "none" (default), "request" or "require". */
  readonly clientAuth?: ClientAuthMode;
  /** DER subject names of accepted client CAs, listed in the CertificateRequest. */
  readonly clientCaNames?: readonly Uint8Array[];
  /** Judges a client chain and names the device (needed unless clientAuth is "none"). */
  readonly verifyClient?: (chain: readonly Certificate[]) => ClientVerdict;
  /** Asked again when a session with a client certificate is resumed (the listen option authorizeClient): an error refuses the resumption. */
  readonly reauthorizeClient?: (identity: string, certificate: PeerCertificateInfo) => DtlsError | undefined;
  /** Session resumption (tickets, session-ID cache); undefined: off. */
  readonly resumption?: ServerResumption | undefined;
  /** Handshakes in progress at once; further ClientHellos are dropped. */
  readonly maxHandshakes: number;
  /** Connections (handshaking + established) at once. */
  readonly maxSessions: number;
  /** Handshakes in progress from one source (IPv4 address, IPv6 /64) at once; default 100. */
  readonly maxHandshakesPerHost?: number;
  /** Connections (handshakes and sessions) from one source at once; default 32768. */
  readonly maxSessionsPerHost?: number;
  /** A handshake not over this long after its cookie-valid ClientHello is dropped ("handshake_timeout"); 0: none; default 30 s. */
  readonly handshakeTimeoutMs?: number;
  /** Bytes all handshakes in progress may hold; new handshakes beyond it are refused; default 64 MiB. */
  readonly handshakeMemoryBytes?: number;
  readonly cookieRotateMs?: number;
  /** Length of the Connection IDs (RFC 9146) handed to clients that offer the extension; 0: CID off. Default 6. */
  readonly connectionIdLength?: number;
  /** Fixed bytes at the start of every CID (a node prefix), shorter than connectionIdLength by at least 4. Default none. */
  readonly connectionIdPrefix?: Uint8Array;
}

/** What the layer above attaches to an established session (the endpoint's DtlsConnection). */
export interface SessionListener {
  /** One application record from the peer. */
  deliver(plaintext: Uint8Array): void;
  /** The session is over: error undefined for an orderly close. */
  ended(error: DtlsError | undefined): void;
}

/**
 * One peer's connection as the server holds it: its own connection's
 * handler (methods on the prototype, forwarding to the core), and the peer
 * address itself (address and port are fields, no object of their own), so
 * a session costs no closures and nothing it does not use.
 */
export class ServerSession implements ConnectionHandler, Peer, HeapSlotted {
  /** The peer's address and port: they change when the peer's address moves (RFC 9146 6, ServerCore). */
  address: string;
  port: number;
  /** peerKey of address and port: the session's key in the core's address map. */
  key: string;
  readonly connection: Connection;
  /**
   * The ClientHello random that started it, hashed to two 30-bit integers
   * (small integers to V8): a repeat of that ClientHello is no new handshake,
   * any other random is (a collision is a 2^-60 chance). The random itself (a
   * 32-character string) would cost some 40 bytes more per session.
   */
  private readonly random0: number;
  private readonly random1: number;
  listener: SessionListener | undefined;
  /** @internal its position in the core's scheduler (-1: none), so the scheduler needs no map entry per session */
  heapSlot = -1;
  private readonly core: ServerCore;

  /** @internal created by the ServerCore: a new handshake, or (`restored`) an established session from a snapshot. */
  constructor(
    core: ServerCore,
    peer: Peer,
    key: string,
    clientRandom: Uint8Array,
    config: ConnectionConfig,
    now: number,
    opts: ConnectionOptions,
    restored?: SessionSnapshot,
  ) {
    this.core = core;
    this.address = peer.address;
    this.port = peer.port;
    this.key = key;
    this.random0 = randomHash(clientRandom, FNV_OFFSET);
    this.random1 = randomHash(clientRandom, FNV_OFFSET_2);
    this.connection =
      restored === undefined
        ? new Connection("server", config, this, now, opts)
        : Connection.restore("server", config, this, now, restored, RESTORE_SEQUENCE_MARGIN, opts);
  }

  /** The peer's source (sourceHost): what the per-host caps count (worked out on each read: the IPv4 address itself, else a new string). */
  get host(): string {
    return sourceHost(this.address);
  }

  /** The peer's address and port (a new object on each read). */
  get peer(): Peer {
    return { address: this.address, port: this.port };
  }

  get info(): ConnectionInfo {
    return this.connection.establishedInfo;
  }

  /** Whether a ClientHello with this random is the one that started the session (a retransmission), not a new one. */
  startedBy(clientRandom: Uint8Array): boolean {
    return randomHash(clientRandom, FNV_OFFSET) === this.random0 && randomHash(clientRandom, FNV_OFFSET_2) === this.random1;
  }

  /** @internal ConnectionHandler */
  sendDatagram(datagram: Uint8Array): void {
    this.core.sendTo(this, datagram);
  }

  /** @internal ConnectionHandler */
  established(info: ConnectionInfo): void {
    this.core.sessionEstablished(this, info);
  }

  /** @internal ConnectionHandler */
  data(plaintext: Uint8Array): void {
    this.listener?.deliver(plaintext);
  }

  /** @internal ConnectionHandler */
  closed(error: DtlsError | undefined): void {
    this.core.sessionClosed(this, error);
  }

  /** @internal ConnectionHandler */
  recordDropped(cause: RecordDropCause): void {
    this.core.stats.recordsDropped[cause]++;
  }
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_OFFSET_2 = 0x050c5d1f;
const FNV_PRIME = 0x01000193;

/** A 30-bit FNV-1a hash of a ClientHello random (a small integer on every V8: no heap number). */
function randomHash(random: Uint8Array, offset: number): number {
  let h = offset;
  for (let i = 0; i < random.length; i++) h = Math.imul(h ^ (random[i] as number), FNV_PRIME);
  return h & 0x3fffffff;
}

export interface ServerCoreHandler {
  /** `key` is the peer's demultiplexing key (peerKey(peer)), for batching by peer. */
  send(peer: Peer, datagram: Uint8Array, key: string): void;
  /** A handshake ended established, or (`restored`: the layers' attachment) a session was adopted from a snapshot. */
  established(session: ServerSession, restored?: Uint8Array): void;
  handshakeFailed(peer: Peer, error: DtlsError): void;
  /** Asked before a HelloVerifyRequest is built (rate limits); false drops the ClientHello. Absent: always answered. */
  admitHelloVerify?(peer: Peer, key: string, now: number): boolean;
}

export interface ServerStats {
  helloVerifyRequestsSent: number;
  handshakesStarted: number;
  handshakesCompleted: number;
  handshakesFailed: number;
  /** Datagrams from unknown peers that were not a usable ClientHello (unknown CIDs included). */
  datagramsDropped: number;
  /** Datagrams starting with a tls12_cid record whose CID names no session (also counted in datagramsDropped). */
  unknownConnectionIds: number;
  /** Sessions moved to a new peer address (NAT rebinding, RFC 9146 6). */
  addressChanges: number;
  /**
   * Datagrams found by CID from another address that did not move the session, by cause:
   * "unauthenticated" (no record of it authenticated: forged, replayed or garbage),
   * "not_newer" (authentic but not newer than the highest record received: reordered or late),
   * "not_established" (the session's handshake is not over, or it just ended),
   * "address_in_use" (another session holds that address and port).
   */
  addressChangesRefused: Record<AddressChangeRefusal, number>;
  /** ClientHellos from peers without a session dropped before any crypto, by cause (counted by the endpoint). */
  clientHellosDropped: Record<ClientHelloDropCause, number>;
  /** Cookie-valid ClientHellos refused because a cap was reached (all causes; see refusals). */
  refusedOverCapacity: number;
  /**
   * Cookie-valid ClientHellos refused, by cause: over_capacity (the global
   * caps), host_handshakes_exceeded / host_sessions_exceeded (the source's
   * caps), handshake_memory_exceeded (the handshake memory budget).
   */
  refusals: Record<RefusalCode, number>;
  /** Protected records of established sessions and handshakes dropped unread, by cause (forged or replayed datagrams aimed at a session show here). */
  recordsDropped: Record<RecordDropCause, number>;
  /** Handshakes in progress now. */
  readonly handshakesInProgress: number;
  /** Bytes the handshakes in progress hold now, counted against handshakeMemoryBytes. */
  readonly handshakeMemoryBytes: number;
  /** Completed handshakes that resumed a session (abbreviated handshakes; also counted in handshakesCompleted). */
  handshakesResumed: number;
  /** Tickets and session IDs that did not resume their session (a full handshake followed), by cause. */
  resumptionsRefused: Record<ResumptionRefusal, number>;
  /** Sessions in the session-ID cache now. */
  readonly sessionCacheSize: number;
  /** Sessions taken over from a snapshot of an earlier process (adoptSession), no handshake. */
  sessionsRestored: number;
  /** Sessions of a snapshot not taken over, by cause (see RestoreRefusal). */
  restoresRefused: Record<RestoreRefusal, number>;
  /** Sessions exported into a snapshot (exportSessions) and retired. */
  sessionsExported: number;
  /** Completed handshakes by suite name. */
  handshakesBySuite: Record<string, number>;
  /** Failed handshakes by DtlsError code, refusals over capacity ("over_capacity") included. */
  handshakeFailures: Record<string, number>;
  /** Alerts sent to peers by description name ("close_notify", "handshake_failure", ...), handshaking and established connections alike. */
  alertsSent: Record<string, number>;
  /** Alerts received from peers (with a session) by description name; unknown descriptions as "alert_<number>". */
  alertsReceived: Record<string, number>;
}

/**
 * Why a snapshot's session was not taken over (ServerStats.restoresRefused):
 * "not_server" (a client's snapshot), "suite_not_configured" (its cipher suite
 * is no longer configured), "cid_length" (its CID has another length than the
 * server's CIDs now), "cid_in_use" / "address_in_use" (a session here already
 * holds its CID or its address and port), "over_capacity" (maxSessions),
 * "host_sessions_exceeded" (maxSessionsPerHost), "damaged" (the bytes do not
 * decode: another version, an unknown suite, truncated). (What the layers above
 * refuse, such as a device revoked meanwhile, they count themselves.)
 */
export type RestoreRefusal =
  "not_server" | "suite_not_configured" | "cid_length" | "cid_in_use" | "address_in_use" | "over_capacity" | "host_sessions_exceeded" | "damaged";

export const RESTORE_REFUSALS: readonly RestoreRefusal[] = [
  "not_server",
  "suite_not_configured",
  "cid_length",
  "cid_in_use",
  "address_in_use",
  "over_capacity",
  "host_sessions_exceeded",
  "damaged",
];

export function newRestoreRefusalCounts(): Record<RestoreRefusal, number> {
  return Object.fromEntries(RESTORE_REFUSALS.map((r) => [r, 0])) as Record<RestoreRefusal, number>;
}

/** Why a datagram found by CID from another address did not move its session (ServerStats.addressChangesRefused). */
export type AddressChangeRefusal = "unauthenticated" | "not_newer" | "not_established" | "address_in_use";

/** What `updateCredentials` replaces: the authentication and the suites that follow from it. */
export type ServerCredentialConfig = Pick<
  ServerCoreConfig,
  "suites" | "certificates" | "clientAuth" | "clientCaNames" | "verifyClient" | "reauthorizeClient"
>;

export function peerKey(peer: Peer): string {
  return `${peer.address}|${peer.port}`;
}

/**
 * peerKey as a flat string, for keys a session keeps: a template literal
 * makes a rope (a cons string of some 32 bytes, pointing at its flattened
 * copy once a Map hashed it), join makes the flat string alone.
 */
function keptPeerKey(peer: Peer): string {
  return [peer.address, peer.port].join("|");
}

/**
 * What the per-host caps count a peer as: its IPv4 address (also when
 * IPv4-mapped), or the /64 prefix of its IPv6 address (one subscriber's
 * network: a host has the whole /64 to pick addresses from).
 */
export function sourceHost(address: string): string {
  if (!address.includes(":")) return address;
  const lower = address.toLowerCase();
  if (lower.startsWith("::ffff:") && lower.includes(".")) return lower.slice(7);
  const zone = lower.indexOf("%");
  const bare = zone < 0 ? lower : lower.slice(0, zone);
  const [head = "", tail] = bare.split("::", 2);
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups =
    tail === undefined
      ? headGroups
      : [...headGroups, ...Array<string>(Math.max(0, 8 - headGroups.length - tailGroups.length)).fill("0"), ...tailGroups];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ""))
    .join(":")}::/64`;
}

/**
 * What a handshake in progress is counted as holding before its peer sent
 * anything more: the connection, the handshake driver, transcript and our
 * flight (measured: about 5 KiB for a PSK handshake). What the peer sends
 * (fragments, early records) is counted as it is kept.
 */
export const HANDSHAKE_STATE_BYTES = 6 * 1024;

/**
 * A source's handshakes in progress and established sessions are one number
 * in `hosts`, sessions * HOST_SESSION + handshakes: no object per source (a
 * device behind its own address would cost one each, some 40 bytes).
 */
const HOST_SESSION = 2 ** 26;

export class ServerCore {
  /** Replaced (never mutated) by updateCredentials: connections keep the one they started with. */
  private config: ServerCoreConfig;
  private auth: ServerAuth;
  private readonly handler: ServerCoreHandler;
  private readonly cookies: CookieJar;
  private readonly sessions = new Map<string, ServerSession>();
  /** Sessions (handshaking or established) by the CID we gave them (latin1); a CID is unique among them. */
  private readonly cids = new Map<string, ServerSession>();
  private readonly cidLength: number;
  private readonly cidPrefix: string;
  private readonly scheduler = new Scheduler<ServerSession>(SLOT_INDEX);
  private handshaking = 0;
  /** Per source: sessions * HOST_SESSION + handshakes (an entry only while it has any). */
  private readonly hosts = new Map<string, number>();
  private readonly memory: MemoryBudget;
  /** false once stopAccepting() was called: ClientHellos from new peers are dropped */
  private accepting = true;
  readonly stats: ServerStats;

  constructor(config: ServerCoreConfig, handler: ServerCoreHandler, now: number) {
    this.config = config;
    this.auth = serverAuth(config);
    this.handler = handler;
    this.cookies = new CookieJar(now, config.cookieRotateMs, config.crypto ?? defaultCrypto);
    this.memory = new MemoryBudget(config.handshakeMemoryBytes ?? DEFAULT_SERVER_LIMITS.handshakeMemoryBytes);
    this.cidLength = config.connectionIdLength ?? DEFAULT_SERVER_CID_LENGTH;
    this.cidPrefix = cidString(config.connectionIdPrefix ?? new Uint8Array(0));
    const core = this; // the gauges below read the core's live counts
    this.stats = {
      helloVerifyRequestsSent: 0,
      handshakesStarted: 0,
      handshakesCompleted: 0,
      handshakesFailed: 0,
      datagramsDropped: 0,
      unknownConnectionIds: 0,
      addressChanges: 0,
      addressChangesRefused: { unauthenticated: 0, not_newer: 0, not_established: 0, address_in_use: 0 },
      clientHellosDropped: newClientHelloDropCounts(),
      refusedOverCapacity: 0,
      refusals: { over_capacity: 0, host_handshakes_exceeded: 0, host_sessions_exceeded: 0, handshake_memory_exceeded: 0 },
      recordsDropped: { replayed: 0, unauthenticated: 0, cid_mismatch: 0, cid_missing: 0, bad_inner_plaintext: 0 },
      get handshakesInProgress(): number {
        return core.handshaking;
      },
      get handshakeMemoryBytes(): number {
        return core.memory.used;
      },
      handshakesResumed: 0,
      resumptionsRefused: newResumptionRefusalCounts(),
      get sessionCacheSize(): number {
        return core.config.resumption?.cache?.size ?? 0;
      },
      sessionsRestored: 0,
      restoresRefused: newRestoreRefusalCounts(),
      sessionsExported: 0,
      handshakesBySuite: {},
      handshakeFailures: {},
      alertsSent: {},
      alertsReceived: {},
    };
  }

  /**
   * New credentials (certificate chains, client CA names and verifier, client
   * auth mode, and the suites they allow) for handshakes that start from now
   * on; handshakes in progress and established sessions keep theirs. Throws
   * DtlsError "bad_option" and changes nothing when the set is inconsistent.
   */
  updateCredentials(update: ServerCredentialConfig): void {
    const config: ServerCoreConfig = { ...this.config, ...update };
    if (config.suites.length === 0) throw new DtlsError("bad_option", "no cipher suite is usable with the new credentials");
    const auth = serverAuth(config);
    this.config = config;
    this.auth = auth;
  }

  /** Connections (handshaking or established). */
  get size(): number {
    return this.sessions.size;
  }

  get handshakesInProgress(): number {
    return this.handshaking;
  }

  get establishedCount(): number {
    return this.sessions.size - this.handshaking;
  }

  session(peer: Peer): ServerSession | undefined {
    return this.sessions.get(peerKey(peer));
  }

  /** Whether the peer with this demultiplexing key (peerKey) has a connection (handshake or established). */
  hasSession(key: string): boolean {
    return this.sessions.has(key);
  }

  /** New handshakes are no longer started (a draining server); established sessions and handshakes in progress go on. */
  stopAccepting(): void {
    this.accepting = false;
  }

  /** The session holding this CID (latin1), if any. */
  sessionByConnectionId(cid: string): ServerSession | undefined {
    return this.cids.get(cid);
  }

  receive(peer: Peer, datagram: Uint8Array, now: number, key = peerKey(peer)): void {
    if (datagram[0] === ContentType.tls12_cid && this.cidLength > 0) {
      this.receiveWithCid(peer, datagram, now, key);
      return;
    }
    const existing = this.sessions.get(key);
    if (existing !== undefined) {
      // Epoch-1 traffic (the hot path) goes straight through; an epoch-0
      // ClientHello with a new random means the client started over.
      if (datagram[0] !== ContentType.handshake || datagram[3] !== 0 || datagram[4] !== 0 || !this.isNewClientHello(existing, datagram)) {
        existing.connection.receive(datagram, now);
        this.reschedule(existing);
        return;
      }
    }
    this.receiveFromStranger(peer, key, datagram, now, existing);
  }

  /**
   * A datagram that starts with a tls12_cid record: its session is the one
   * holding the CID, wherever the datagram comes from. From another address it
   * moves the session there only when a record of it authenticated and is
   * newer than any before (RFC 9146 6).
   */
  private receiveWithCid(peer: Peer, datagram: Uint8Array, now: number, key: string): void {
    const at = RECORD_HEADER_LENGTH - 2; // the CID follows the sequence number
    const end = at + this.cidLength;
    let session: ServerSession | undefined;
    if (datagram.length >= end + 2) {
      // the hot path: the session at this address holds the CID (compared in place, no string made)
      const here = this.sessions.get(key);
      const hereCid = here === undefined ? "" : here.connection.readConnectionId;
      session = hereCid !== "" && cidAt(datagram, at, hereCid) ? here : this.cids.get(cidString(datagram.subarray(at, end)));
    }
    if (session === undefined) {
      this.stats.unknownConnectionIds++;
      this.stats.datagramsDropped++;
      return;
    }
    const connection = session.connection;
    if (session.key === key) {
      connection.receive(datagram, now);
      this.reschedule(session);
      return;
    }
    const highest = connection.replayMax;
    const authenticated = connection.receive(datagram, now);
    this.reschedule(session);
    let refusal: AddressChangeRefusal | undefined;
    if (!authenticated) refusal = "unauthenticated";
    else if (connection.replayMax <= highest) refusal = "not_newer";
    else if (connection.state !== "established") refusal = "not_established";
    else if (this.sessions.has(key)) refusal = "address_in_use";
    if (refusal !== undefined) {
      this.stats.addressChangesRefused[refusal]++;
      return;
    }
    this.move(session, peer);
  }

  /** The session's peer is at `peer` from now on: the address map and the per-source counts follow. */
  private move(session: ServerSession, peer: Peer): void {
    const oldHost = session.host;
    if (this.sessions.get(session.key) === session) this.sessions.delete(session.key);
    session.address = peer.address;
    session.port = peer.port;
    session.key = keptPeerKey(peer);
    this.sessions.set(session.key, session);
    const newHost = session.host;
    if (newHost !== oldHost) {
      this.countHost(oldHost, 0, -1);
      this.countHost(newHost, 0, 1);
    }
    this.stats.addressChanges++;
  }

  private isNewClientHello(s: ServerSession, datagram: Uint8Array): boolean {
    const first = firstClientHello(datagram);
    return first !== undefined && !s.startedBy(first.hello.random);
  }

  private receiveFromStranger(peer: Peer, key: string, datagram: Uint8Array, now: number, existing: ServerSession | undefined): void {
    const first = this.accepting ? firstClientHello(datagram) : undefined;
    if (first === undefined) {
      this.stats.datagramsDropped++;
      return;
    }
    const { record, fragment, hello } = first;
    if (!this.cookies.verify(key, hello, now)) {
      if (this.handler.admitHelloVerify?.(peer, key, now) === false) return;
      this.sendHelloVerifyRequest(peer, key, record, fragment, hello, now);
      return;
    }
    const host = sourceHost(peer.address);
    const refusal = this.refusal(host, existing);
    if (refusal !== undefined) {
      // Nothing is kept and nothing is sent; an established session from this address and port stays.
      this.stats.refusedOverCapacity++;
      this.stats.refusals[refusal.code]++;
      this.failed(peer, refusal);
      return;
    }
    if (existing !== undefined) this.remove(existing, new DtlsError("replaced", "the peer started a new handshake from the same address"));
    this.startHandshake(peer, key, host, record, fragment, hello, now);
  }

  /** A fresh CID for a client that offers the extension (undefined: CID off, not offered, or no free one found). */
  private newConnectionId(hello: ClientHello): string | undefined {
    if (this.cidLength === 0 || findExtension(hello.extensions, ExtensionType.connection_id) === undefined) return undefined;
    // at least 4 random bytes: a collision with a live session is rare, and a few tries make it vanishing
    const random = (this.config.crypto ?? defaultCrypto).random;
    for (let i = 0; i < 8; i++) {
      const cid = makeServerCid(this.cidPrefix, this.cidLength, (n) => random.bytes(n));
      if (!this.cids.has(cid)) return cid;
    }
    return undefined;
  }

  /**
   * Why a cookie-valid ClientHello from `host` cannot start a handshake now, if
   * it cannot: the global caps, the source's caps, the handshake memory budget.
   * A connection it replaces (same address and port) frees its own place.
   */
  private refusal(host: string, existing: ServerSession | undefined): RefusalError | undefined {
    const c = this.config;
    const replacesHandshake = existing !== undefined && existing.connection.connectionInfo === undefined;
    const replaced = existing === undefined ? 0 : 1;
    const h = this.hosts.get(host) ?? 0;
    const hostHandshakes = (h % HOST_SESSION) - (replacesHandshake ? 1 : 0);
    const hostConnections = (h % HOST_SESSION) + Math.floor(h / HOST_SESSION) - replaced;
    const maxPerHost = c.maxHandshakesPerHost ?? DEFAULT_SERVER_LIMITS.maxHandshakesPerHost;
    const maxSessionsPerHost = c.maxSessionsPerHost ?? DEFAULT_SERVER_LIMITS.maxSessionsPerHost;
    const handshaking = this.handshaking - (replacesHandshake ? 1 : 0);
    if (handshaking >= c.maxHandshakes || this.sessions.size - replaced >= c.maxSessions) {
      return refused(
        "over_capacity",
        `${handshaking} handshakes in progress (maxHandshakes ${c.maxHandshakes}), ${this.sessions.size} connections (maxSessions ${c.maxSessions}); ClientHello dropped`,
      );
    }
    if (hostHandshakes >= maxPerHost) {
      return refused(
        "host_handshakes_exceeded",
        `${host} has ${hostHandshakes} handshakes in progress (maxHandshakesPerHost ${maxPerHost}); ClientHello dropped`,
      );
    }
    if (hostConnections >= maxSessionsPerHost) {
      return refused(
        "host_sessions_exceeded",
        `${host} has ${hostConnections} sessions and handshakes (maxSessionsPerHost ${maxSessionsPerHost}); ClientHello dropped`,
      );
    }
    if (!replacesHandshake && this.memory.used + HANDSHAKE_STATE_BYTES > this.memory.limit) {
      return refused(
        "handshake_memory_exceeded",
        `handshakes in progress hold ${this.memory.used} bytes (handshakeMemoryBytes ${this.memory.limit}); ClientHello dropped`,
      );
    }
    return undefined;
  }

  private sendHelloVerifyRequest(peer: Peer, key: string, record: RawRecord, fragment: HandshakeFragment, hello: ClientHello, now: number): void {
    const body = encodeHelloVerifyRequest({ version: ProtocolVersion.DTLS1_0, cookie: this.cookies.make(key, hello, now) });
    // RFC 6347 4.2.1: HVR repeats the ClientHello's record and message sequence numbers.
    const msg = encodeHandshake(HandshakeType.hello_verify_request, fragment.messageSeq, body);
    this.stats.helloVerifyRequestsSent++;
    this.handler.send(peer, encodePlainRecord(ContentType.handshake, ProtocolVersion.DTLS1_0, 0, record.seq, msg), key);
  }

  private startHandshake(
    peer: Peer,
    key: string,
    host: string,
    record: RawRecord,
    fragment: HandshakeFragment,
    hello: ClientHello,
    now: number,
  ): void {
    const deadlineMs = this.config.handshakeTimeoutMs ?? DEFAULT_SERVER_LIMITS.handshakeTimeoutMs;
    const flat = keptPeerKey(peer);
    if (flat === key) key = flat; // the same string, flat: the sessions map and the session keep it (a caller's own key stays as it is)
    const session = new ServerSession(this, peer, key, hello.random, this.config, now, {
      // Continue above the ClientHello's record number so ServerHello never reuses the HVR's.
      firstWriteSeq: record.seq,
      firstMessageSeq: fragment.messageSeq + 1,
      alerts: this.stats,
      budget: this.memory,
      ...(deadlineMs > 0 ? { handshakeDeadline: now + deadlineMs } : {}),
    });
    const connection = session.connection;
    this.sessions.set(key, session);
    this.handshaking++;
    this.memory.charge(HANDSHAKE_STATE_BYTES);
    this.countHost(host, 1, 0);
    this.stats.handshakesStarted++;
    try {
      connection.attach(
        new ServerHandshake(connection.config, this.auth, hello, fragment.messageSeq, fragment.body, now, this.stats, this.newConnectionId(hello)),
      );
    } catch (e) {
      connection.fail(toDtlsError(e));
      return;
    }
    const cid = connection.readConnectionId;
    if (cid !== "") this.cids.set(cid, session);
    this.reschedule(session);
  }

  /** @internal a session's datagram out */
  sendTo(session: ServerSession, datagram: Uint8Array): void {
    this.handler.send(session, datagram, session.key);
  }

  /** @internal */
  sessionEstablished(session: ServerSession, info: ConnectionInfo): void {
    this.handshakeOver();
    this.countHost(session.host, -1, 1);
    this.stats.handshakesCompleted++;
    if (info.resumed) this.stats.handshakesResumed++;
    increment(this.stats.handshakesBySuite, info.suite);
    this.handler.established(session);
  }

  /** @internal */
  sessionClosed(session: ServerSession, error: DtlsError | undefined): void {
    this.forget(session);
    if (session.connection.connectionInfo === undefined) {
      this.handshakeOver();
      this.countHost(session.host, -1, 0);
      this.stats.handshakesFailed++;
      this.failed(session.peer, error ?? new DtlsError("closed", "peer closed during the handshake"));
    } else {
      this.countHost(session.host, 0, -1);
      const listener = session.listener;
      session.listener = undefined;
      listener?.ended(error);
    }
  }

  /** A handshake ended (established or not): its slot and its share of the memory budget are free (the caller counts its source). */
  private handshakeOver(): void {
    this.handshaking--;
    this.memory.release(HANDSHAKE_STATE_BYTES);
  }

  /** Adds to a source's handshakes and sessions; a source with neither leaves the map. */
  private countHost(host: string, handshakes: number, sessions: number): void {
    const v = (this.hosts.get(host) ?? 0) + handshakes + sessions * HOST_SESSION;
    if (v === 0) this.hosts.delete(host);
    else this.hosts.set(host, v);
  }

  /** Sources with handshakes or sessions (for inspection). */
  get hostCountSize(): number {
    return this.hosts.size;
  }

  private failed(peer: Peer, error: DtlsError): void {
    increment(this.stats.handshakeFailures, error.code);
    this.handler.handshakeFailed(peer, error);
  }

  private remove(session: ServerSession, error: DtlsError): void {
    session.connection.abandon(error);
  }

  private reschedule(session: ServerSession): void {
    if (session.connection.state === "closed") return;
    this.scheduler.schedule(session, session.connection.nextTimeout());
  }

  nextTimeout(): number | undefined {
    return this.scheduler.next();
  }

  timeout(now: number): void {
    for (const s of this.scheduler.due(now)) {
      s.connection.timeout(now);
      this.reschedule(s);
    }
  }

  /**
   * Every established session as a snapshot (session-snapshot.ts) with what
   * `attach` gives for it (the layers above; undefined: that session is not
   * saved), then retired: from here on it sends nothing (a record sealed after
   * its snapshot would reuse a nonce once it is restored), its listener hears
   * nothing, and it is gone from the core. Handshakes in progress are not
   * saved (their peers retransmit into the next process and start over).
   * Call with reading stopped (the daemon's orderly stop).
   */
  exportSessions(attach: (session: ServerSession) => Uint8Array | undefined): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const session of [...this.sessions.values()]) {
      const connection = session.connection;
      if (connection.state !== "established") continue;
      const snap = connection.snapshot();
      const attachment = snap === undefined ? undefined : attach(session);
      if (snap !== undefined && attachment !== undefined) {
        out.push(encodeSessionSnapshot({ ...snap, role: "server", address: session.address, port: session.port, attachment }));
        this.stats.sessionsExported++;
      }
      connection.retire();
      session.listener = undefined;
      this.forget(session);
      this.countHost(session.host, 0, -1);
    }
    return out;
  }

  /**
   * Takes over an established session of an earlier process (its snapshot,
   * decoded): registered by address and CID, counted in the source's and the
   * global caps, scheduled for its idle timeout, and handed to the handler as
   * `established(session, attachment)`. Refused (counted, nothing kept) when
   * it does not fit this server now; the peer then finds no session and
   * starts over (a resumption or a full handshake).
   */
  adoptSession(snap: SessionSnapshot, now: number): ServerSession | RestoreRefusal {
    const refusal = this.adoptRefusal(snap);
    if (refusal !== undefined) {
      this.stats.restoresRefused[refusal]++;
      return refusal;
    }
    const peer: Peer = { address: snap.address, port: snap.port };
    const key = keptPeerKey(peer);
    const session = new ServerSession(this, peer, key, new Uint8Array(0), this.config, now, { alerts: this.stats }, snap);
    this.sessions.set(key, session);
    if (snap.readCid !== "") this.cids.set(snap.readCid, session);
    this.countHost(session.host, 0, 1);
    this.stats.sessionsRestored++;
    this.reschedule(session);
    this.handler.established(session, snap.attachment);
    return session;
  }

  private adoptRefusal(snap: SessionSnapshot): RestoreRefusal | undefined {
    const c = this.config;
    if (snap.role !== "server") return "not_server";
    if (!c.suites.some((s) => s.id === snap.suite.id)) return "suite_not_configured";
    if (snap.readCid !== "" && snap.readCid.length !== this.cidLength) return "cid_length";
    if (snap.readCid !== "" && this.cids.has(snap.readCid)) return "cid_in_use";
    if (this.sessions.has(peerKey(snap))) return "address_in_use";
    if (this.sessions.size >= c.maxSessions) return "over_capacity";
    const h = this.hosts.get(sourceHost(snap.address)) ?? 0;
    if ((h % HOST_SESSION) + Math.floor(h / HOST_SESSION) >= (c.maxSessionsPerHost ?? DEFAULT_SERVER_LIMITS.maxSessionsPerHost))
      return "host_sessions_exceeded";
    return undefined;
  }

  /** The session leaves the maps and the scheduler. */
  private forget(session: ServerSession): void {
    if (this.sessions.get(session.key) === session) this.sessions.delete(session.key);
    const cid = session.connection.readConnectionId;
    if (cid !== "" && this.cids.get(cid) === session) this.cids.delete(cid);
    this.scheduler.cancel(session);
  }

  /** close_notify to every peer; the core stays usable (new peers may arrive). */
  closeAll(): void {
    for (const s of [...this.sessions.values()]) s.connection.close();
  }
}

function refused(code: RefusalCode, message: string): RefusalError {
  return new RefusalError(code, message);
}

function serverAuth(config: ServerCoreConfig): ServerAuth {
  const auth: ServerAuth = {
    psk: config.psk,
    certificates: config.certificates ?? [],
    legacySha1Signatures: config.legacySha1Signatures ?? false,
    clientAuth: config.clientAuth ?? "none",
    clientCaNames: config.clientCaNames ?? [],
    verifyClient: config.verifyClient,
    reauthorizeClient: config.reauthorizeClient,
    resumption: config.resumption,
  };
  if (auth.clientAuth !== "none" && auth.verifyClient === undefined) {
    throw new DtlsError("bad_option", "client certificates are asked for but nothing verifies them (verifyClient)");
  }
  return auth;
}

interface FirstHello {
  readonly record: RawRecord;
  readonly fragment: HandshakeFragment;
  readonly hello: ClientHello;
}

/**
 * The ClientHello that opens a datagram, if it holds one whole (a first
 * ClientHello must fit one record: we keep no state to reassemble it).
 */
function firstClientHello(datagram: Uint8Array): FirstHello | undefined {
  const records = parseRecords(datagram);
  const record = records[0];
  if (record === undefined || record.type !== ContentType.handshake || record.epoch !== 0) return undefined;
  try {
    const frags = parseHandshakeFragments(record.body);
    const fragment = frags[0];
    if (fragment === undefined || fragment.msgType !== HandshakeType.client_hello) return undefined;
    if (fragment.fragmentOffset !== 0 || fragment.fragmentLength !== fragment.length) return undefined;
    return { record, fragment, hello: decodeClientHello(fragment.body) };
  } catch {
    return undefined;
  }
}
