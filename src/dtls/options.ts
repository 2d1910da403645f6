/**
 * What the sans-I/O cores are configured with (PSK and certificate
 * credentials, retransmission, MTU, suites, groups, Connection IDs, server
 * limits), what a connection reports as negotiated (ConnectionInfo), and what
 * it hands its host (ConnectionHandler).
 */
import type { Certificate, CryptoProvider, EcdhGroup, Signer } from "../crypto/index.ts";
import type { DtlsError } from "./errors.ts";
import type { CipherSuite, SuiteName } from "./suites.ts";

/** Server-side PSK configuration. */
export interface ServerPskConfig {
  /** The key of an identity, or undefined when the identity is unknown (-> unknown_psk_identity). */
  readonly lookup: (identity: string) => Uint8Array | undefined;
  /** PSK identity hint; sent (in a ServerKeyExchange) only when set. */
  readonly hint?: string | undefined;
}

export interface ClientPskConfig {
  readonly identity: string;
  readonly key: Uint8Array;
}

export interface RetransmitPolicy {
  /** First retransmission timeout (RFC 6347 4.2.4.1: 1 s). */
  readonly initialMs: number;
  /** Cap of the doubling timeout (60 s). */
  readonly maxMs: number;
  /** Retransmissions of one flight before the handshake fails with "timeout". */
  readonly maxRetransmits: number;
}

export const DEFAULT_RETRANSMIT: RetransmitPolicy = { initialMs: 1000, maxMs: 60_000, maxRetransmits: 6 };

/** Largest UDP payload we send by default (docs/dtls-engine.md, "Flights": 1200 bytes). */
export const DEFAULT_MTU = 1200;
export const MIN_MTU = 100;

export interface ConnectionConfig {
  readonly suites: readonly CipherSuite[];
  readonly mtu: number;
  readonly requireExtendedMasterSecret: boolean;
  readonly retransmit: RetransmitPolicy;
  /** Close after this long without an authenticated record from the peer; 0 = never. */
  readonly idleTimeoutMs: number;
  /** ECDHE groups: what a client offers, in a server's preference order. Default x25519, secp256r1, secp384r1; secp521r1 on request. */
  readonly groups?: readonly EcdhGroup[] | undefined;
  /** A client offers the RFC 9146 connection_id extension (asking for no CID of its own) unless this is false. */
  readonly connectionId?: boolean | undefined;
  /**
   * The crypto provider every handshake and record protection of the
   * endpoint uses (random, hashes, PRF, ECDH, signatures, certificates,
   * AEAD); `defaultCrypto` when absent.
   */
  readonly crypto?: CryptoProvider | undefined;
}

/** What an established connection tells the layers above. */
export interface ConnectionInfo {
  /** The PSK identity; "" when the peer authenticated with a certificate or not at all. */
  readonly identity: string;
  readonly suite: SuiteName;
  readonly extendedMasterSecret: boolean;
  /** The ECDHE group, for suites with an ephemeral key exchange. */
  readonly group?: EcdhGroup | undefined;
  /** The peer's certificate (leaf), when it presented one. */
  readonly peerCertificate?: { readonly subject: string; readonly fingerprint256: string } | undefined;
  /**
   * An abbreviated handshake resumed an earlier session: identity, group and
   * peer certificate are the original full handshake's.
   */
  readonly resumed: boolean;
}

/** Where a sans-I/O connection puts what it produces. */
export interface ConnectionHandler {
  sendDatagram(datagram: Uint8Array): void;
  established(info: ConnectionInfo): void;
  data(plaintext: Uint8Array): void;
  /** The connection is over: error undefined for an orderly close_notify (either side). */
  closed(error: DtlsError | undefined): void;
  /** A protected record was dropped unread: a replay, or one that does not authenticate (for counters). */
  recordDropped?(cause: RecordDropCause): void;
}

/**
 * Why a protected record from the peer was dropped (RFC 6347 4.1.2.6, 4.1.2.7: silently):
 * "replayed", "unauthenticated" (forged or corrupted), and for Connection IDs
 * (RFC 9146) "cid_mismatch" (a tls12_cid record without our CID, or when we
 * gave none), "cid_missing" (a plain protected record where our CID is due),
 * "bad_inner_plaintext" (authenticated, but no real content type inside).
 */
export type RecordDropCause = "replayed" | "unauthenticated" | "cid_mismatch" | "cid_missing" | "bad_inner_plaintext";

/** A certificate chain (leaf first) and the leaf's private key. */
export interface ServerCredential {
  readonly chain: readonly Certificate[];
  readonly signer: Signer;
}

/** Whether the server asks for client certificates (certificate suites only). */
export type ClientAuthMode = "none" | "request" | "require";

/** The verdict on a client's chain: its identity, or the error to fail with. */
export type ClientVerdict = { readonly identity: string } | DtlsError;

/** A certificate chain (leaf first) and the leaf's key, for the client role. */
export type ClientCredential = ServerCredential;

/**
 * A server's limits on what one source and all handshakes may hold (what
 * ServerCoreConfig / ListenOptions default to). A source is an IPv4 address or
 * an IPv6 /64.
 */
export const DEFAULT_SERVER_LIMITS = {
  /** Handshakes in progress from one source at once. */
  maxHandshakesPerHost: 100,
  /** Connections (handshakes and sessions) from one source at once: above one IPv4 address's ephemeral port range on Linux (28 232). */
  maxSessionsPerHost: 32_768,
  /** A handshake not finished this long after its cookie-valid ClientHello is dropped (0: no deadline). */
  handshakeTimeoutMs: 30_000,
  /** Bytes all handshakes in progress may hold (their state and what their peers sent); new handshakes beyond it are refused. */
  handshakeMemoryBytes: 64 * 1024 * 1024,
} as const;
