/**
 * What `listen` and `connect` take, checked and turned into the sans-I/O
 * cores' configuration: credentials loaded once (PEM to KeyObjects and parsed
 * certificates), the usable suites, the verifiers for peer certificates.
 * Errors here are DtlsError "bad_option", raised before any socket exists.
 */
import type { Clock } from "../util/clock.ts";
import { certificateIdentity, normalizeFingerprint, verifyChain, type IdentitySource, type TrustOptions } from "./cert-verify.ts";
import { defaultCrypto, type Certificate, type CryptoProvider, type EcdhGroup } from "../crypto/index.ts";
import { alertError, DtlsError, errorMessage } from "./errors.ts";
import { DEFAULT_SERVER_CID_LENGTH, MAX_CID_LENGTH, MIN_CID_RANDOM_BYTES } from "./connection-id.ts";
import type { ClientAuth } from "./handshake-client.ts";
import {
  DEFAULT_MTU,
  DEFAULT_RETRANSMIT,
  DEFAULT_SERVER_LIMITS,
  MIN_MTU,
  type ClientAuthMode,
  type ClientPskConfig,
  type ClientVerdict,
  type ConnectionConfig,
  type RetransmitPolicy,
  type ServerCredential,
} from "./options.ts";
import type { ServerCoreConfig } from "./server-core.ts";
import type { CidForwarder } from "./cid-forwarder.ts";
import { serverResumption } from "./resumption.ts";
import type { SavedSession, ServerResumptionOptions } from "./resumption-options.ts";
import { decodeSavedSession, type ClientSessionState } from "./saved-session.ts";
import { SUITE_NAMES, suiteByName, usesPsk, type CipherSuite, type SuiteName } from "./suites.ts";

/** A PEM certificate chain (leaf first) and the leaf's PEM private key. */
export interface CertificateKeyPair {
  cert: string | Uint8Array;
  key: string | Uint8Array;
}

export interface ListenOptions {
  host?: string;
  port?: number;
  /** Pre-shared keys; at least one of psk and certificates is required. */
  psk?: {
    keys?: ReadonlyMap<string, Uint8Array>;
    lookup?: (identity: string) => Uint8Array | undefined;
    hint?: string;
  };
  /** Certificate chains; the server picks one per client by its suites, groups and signature algorithms. */
  certificates?: readonly CertificateKeyPair[];
  /**
   * Sign the ServerKeyExchange with SHA-1 for clients that send no
   * signature_algorithms (RFC 5246 defaults; @nodertc/dtls is one). Off by
   * default: SHA-1 signatures are forgeable in principle and refused by current
   * security policies.
   */
  legacySha1Signatures?: boolean;
  /** Client certificates with certificate suites: "none" (default), "request", or "require". */
  clientAuth?: ClientAuthMode;
  /** PEM CA certificate(s) client chains must lead to; required unless clientAuth is "none". */
  clientCa?: string | Uint8Array;
  /** Where a client certificate's device identity comes from: subject CN (default), first SAN URI, or SHA-256 fingerprint. */
  clientIdentity?: IdentitySource;
  /**
   * The layer above's say on a verified client certificate (e.g. revocation):
   * undefined accepts; a refusal fails the handshake with that alert.
   */
  authorizeClient?: (
    identity: string,
    certificate: { readonly subject: string; readonly fingerprint256: string },
  ) => { code: "certificate_revoked" | "access_denied" | "bad_certificate"; message: string } | undefined;
  suites?: readonly SuiteName[];
  /** ECDHE groups in preference order (default x25519, secp256r1, secp384r1; secp521r1 on request). */
  groups?: readonly EcdhGroup[];
  mtu?: number;
  requireExtendedMasterSecret?: boolean;
  /**
   * Session resumption (RFC 5077 tickets and a session-ID cache), on by
   * default with in-memory ticket keys; see docs/dtls-engine.md "Resumption".
   * A resumed session is authorized again (PSK lookup, authorizeClient).
   */
  resumption?: ServerResumptionOptions;
  maxHandshakes?: number;
  maxSessions?: number;
  /** Handshakes in progress from one source (IPv4 address, IPv6 /64) at once (default 100); further ClientHellos from it are refused. */
  maxHandshakesPerHost?: number;
  /** Connections (sessions and handshakes) from one source at once (default 32768). */
  maxSessionsPerHost?: number;
  /** A handshake not over this long after its cookie-valid ClientHello is dropped, ms (default 30000; 0: no deadline). */
  handshakeTimeoutMs?: number;
  /** Bytes all handshakes in progress may hold (their state and what their peers sent), default 64 MiB; new handshakes beyond it are refused. */
  handshakeMemoryBytes?: number;
  idleTimeoutMs?: number;
  retransmit?: Partial<RetransmitPolicy>;
  clock?: Clock;
  /**
   * HelloVerifyRequests per second, whole server (default 5000; 0: no limit).
   * First ClientHellos beyond it are dropped before any crypto; see docs/dtls-engine.md.
   */
  /**
   * The crypto provider of the endpoint (default `defaultCrypto`, node:crypto):
   * random, hashes, HMAC, PRF, ECDH, signatures, certificate parsing, AEAD keys,
   * cookies and tickets of every handshake and session all go through it.
   */
  crypto?: CryptoProvider;
  helloVerifyRatePerSecond?: number;
  /** HelloVerifyRequests per second per source prefix, /24 (IPv4) or /64 (IPv6) (default 500; 0: no limit). */
  helloVerifyRatePerPrefix?: number;
  /**
   * SO_RCVBUF / SO_SNDBUF of each server socket, bytes (default 1 MiB receive,
   * 4 MiB send; the kernel caps them at rmem_max / wmem_max). A bigger receive
   * buffer absorbs longer bursts but, when the process falls behind, makes
   * every record wait behind all that is queued.
   */
  recvBufferBytes?: number;
  sendBufferBytes?: number;
  /**
   * UDP sockets sharing the server's address and port (SO_REUSEPORT; the
   * kernel spreads peers over them by address hash). Node reads at most 32
   * datagrams from a socket per event-loop turn, so N sockets read up to N x 32:
   * acks of a large fan-out are read back N times faster. Default 4 on Linux,
   * 1 elsewhere (where SO_REUSEPORT does not spread datagrams); 1 to 16.
   */
  sockets?: number;
  /**
   * Length of the Connection IDs (RFC 9146) handed to clients that offer the
   * extension, bytes (default 6; 0 turns CID off). A client with a CID is found
   * by it wherever its datagrams come from (NAT rebinding).
   */
  connectionIdLength?: number;
  /**
   * Fixed bytes at the start of every CID this server hands out (a node
   * prefix, for routing records between processes); default none. At least 4
   * bytes of connectionIdLength stay random.
   */
  connectionIdPrefix?: Uint8Array;
  /**
   * Sharing the port with other processes (SO_REUSEPORT, `serve --workers`):
   * "open" checks the port is free (an exclusive probe) and binds so that
   * others may join; "join" binds a port those processes hold already (no
   * probe). Default: not shared (several sockets of this server only).
   */
  portSharing?: "open" | "join";
  /**
   * Forwards tls12_cid records whose CID prefix is not ours to the process
   * owning that prefix, and takes the ones forwarded here (cid-forwarder.ts).
   * Its prefix is the server's connectionIdPrefix (set from it when absent).
   * The caller closes it after the server.
   */
  forwarder?: CidForwarder;
}

export interface ConnectOptions {
  host: string;
  port: number;
  /**
   * Local IP address the client socket binds to before connecting (default: the
   * system picks one), e.g. one of several loopback addresses 127.0.0.x so that
   * more than one ephemeral port range's worth of clients can reach one server.
   * Must be an IP literal of the same family as `host`.
   */
  localAddress?: string;
  /** Local UDP port to bind (default 0: an ephemeral port). */
  localPort?: number;
  /** Our certificate chain (PEM, leaf first) and key, sent when the server asks for one. */
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
  /** A pre-shared key; with it the client offers the PSK suites. */
  psk?: ClientPskConfig;
  /**
   * Trust for certificate suites (offered only when one of these is given):
   * `ca`, PEM CA certificate(s) the server's chain must lead to, or
   * `fingerprint`, the SHA-256 of the server's leaf certificate (hex; colons ignored).
   */
  ca?: string | Uint8Array;
  fingerprint?: string;
  /** Name (DNS or IP) the server certificate must be issued for; default `host`. Not checked with a fingerprint pin. */
  servername?: string;
  suites?: readonly SuiteName[];
  /** ECDHE groups to offer, in order (default x25519, secp256r1, secp384r1; secp521r1 on request). */
  groups?: readonly EcdhGroup[];
  mtu?: number;
  requireExtendedMasterSecret?: boolean;
  /**
   * A session saved from an earlier connection to the same host and port
   * (DtlsConnection.session, or its "session" event): its ticket and/or
   * session ID are offered and, if the server agrees, the handshake is the
   * abbreviated one (info.resumed). Not offered when it was made with another
   * server, PSK identity or pinned fingerprint, its suite is not among ours,
   * its ticket expired, or the bytes are not a saved session; a server that
   * answers with a full handshake is fine (the new session replaces it).
   */
  session?: SavedSession;
  /** Whole-handshake limit; the connect promise rejects with code "timeout". */
  timeoutMs?: number;
  idleTimeoutMs?: number;
  retransmit?: Partial<RetransmitPolicy>;
  clock?: Clock;
  /** Offer the RFC 9146 connection_id extension (asking for no CID of our own; the server's CID then rides in our records). Default true. */
  connectionId?: boolean;
  /**
   * The crypto provider of the endpoint (default `defaultCrypto`, node:crypto):
   * random, hashes, HMAC, PRF, ECDH, signatures, certificate parsing, AEAD keys,
   * cookies and tickets of every handshake and session all go through it.
   */
  crypto?: CryptoProvider;
}

function checkCount(name: string, value: number | undefined, min: number, def: number): number {
  if (value === undefined) return def;
  if (!Number.isSafeInteger(value) || value < min) throw new DtlsError("bad_option", `${name} must be an integer of at least ${min}, got ${value}`);
  return value;
}

function checkMtu(mtu: number): number {
  if (!Number.isInteger(mtu) || mtu < MIN_MTU || mtu > 65507) {
    throw new DtlsError("bad_option", `mtu must be an integer from ${MIN_MTU} to 65507, got ${mtu}`);
  }
  return mtu;
}

function loadCredentials(pairs: readonly CertificateKeyPair[], provider: CryptoProvider): ServerCredential[] {
  return pairs.map((pair, i) => {
    const text = typeof pair.cert === "string" ? pair.cert : Buffer.from(pair.cert).toString("utf8");
    const ders = provider.x509.pemCertificates(text);
    if (ders.length === 0) throw new DtlsError("bad_option", `certificates[${i}].cert holds no PEM certificate`);
    let chain;
    let signer;
    try {
      chain = ders.map((der) => provider.x509.parse(der));
      signer = provider.x509.loadPrivateKey(pair.key);
    } catch (e) {
      throw new DtlsError("bad_option", `certificates[${i}]: ${errorMessage(e)}`);
    }
    const leaf = chain[0];
    if (leaf === undefined) throw new DtlsError("bad_option", `certificates[${i}].cert holds no PEM certificate`);
    if (!leaf.matchesPrivateKey(pair.key)) {
      throw new DtlsError("bad_option", `certificates[${i}]: the private key does not belong to the certificate ${leaf.subject}`);
    }
    return { chain, signer };
  });
}

/** The suites an endpoint can use with its credentials, in the caller's (or the default) order. */
export function usableSuites(requested: readonly SuiteName[] | undefined, psk: boolean, certs: readonly ServerCredential[]): CipherSuite[] {
  const all = (requested ?? SUITE_NAMES).map(suiteByName);
  return all.filter((s) => {
    if (usesPsk(s)) return psk;
    return certs.some((c) => (s.keyExchange === "ecdhe_rsa") === (c.signer.keyType === "rsa"));
  });
}

export function serverCoreConfig(opts: ListenOptions): ServerCoreConfig {
  const provider = opts.crypto ?? defaultCrypto;
  const keys = opts.psk?.keys;
  const lookup = opts.psk?.lookup ?? (keys ? (id: string) => keys.get(id) : undefined);
  if (opts.psk !== undefined && lookup === undefined) throw new DtlsError("bad_option", "psk.keys or psk.lookup is required");
  const certificates = loadCredentials(opts.certificates ?? [], provider);
  if (lookup === undefined && certificates.length === 0) throw new DtlsError("bad_option", "give psk keys or certificates (or both)");
  const suites = usableSuites(opts.suites, lookup !== undefined, certificates);
  if (suites.length === 0) throw new DtlsError("bad_option", "none of the requested suites can be used with the given keys and certificates");
  const clientAuth = opts.clientAuth ?? "none";
  const clientAnchors = opts.clientCa === undefined ? [] : pemAnchors(opts.clientCa, "clientCa", provider);
  if (clientAuth !== "none" && clientAnchors.length === 0) throw new DtlsError("bad_option", `clientAuth "${clientAuth}" needs clientCa`);
  const source = opts.clientIdentity ?? "cn";
  const authorize = opts.authorizeClient;
  const verifyClient = (chain: readonly Certificate[]): ClientVerdict => {
    const bad = verifyChain(chain, { anchors: clientAnchors }, new Date(), "client");
    if (bad !== undefined) return bad;
    const leaf = chain[0];
    if (leaf === undefined) return alertError("bad_certificate", "the client sent no certificate to verify");
    const identity = certificateIdentity(leaf, source);
    if (identity === undefined || identity === "") {
      return alertError(
        "bad_certificate",
        `client certificate ${leaf.subject} has no ${source === "cn" ? "subject CN" : "SAN URI"} to name the device`,
      );
    }
    const refusal = authorize?.(identity, { subject: leaf.subject, fingerprint256: leaf.fingerprint256 });
    return refusal === undefined ? { identity } : alertError(refusal.code, refusal.message);
  };
  const reauthorizeClient = (identity: string, certificate: { readonly subject: string; readonly fingerprint256: string }): DtlsError | undefined => {
    const refusal = authorize?.(identity, certificate);
    return refusal === undefined ? undefined : alertError(refusal.code, refusal.message);
  };
  return {
    suites,
    certificates,
    legacySha1Signatures: opts.legacySha1Signatures ?? false,
    groups: opts.groups,
    clientAuth,
    clientCaNames: clientAnchors.map((c) => provider.x509.subjectNameDer(c.der)),
    verifyClient,
    reauthorizeClient,
    resumption: serverResumption(opts.resumption, provider),
    crypto: provider,
    mtu: checkMtu(opts.mtu ?? DEFAULT_MTU),
    requireExtendedMasterSecret: opts.requireExtendedMasterSecret ?? false,
    retransmit: { ...DEFAULT_RETRANSMIT, ...opts.retransmit },
    idleTimeoutMs: opts.idleTimeoutMs ?? 300_000,
    psk: lookup === undefined ? undefined : { lookup, hint: opts.psk?.hint },
    maxHandshakes: opts.maxHandshakes ?? 1000,
    maxSessions: opts.maxSessions ?? 100_000,
    maxHandshakesPerHost: checkCount("maxHandshakesPerHost", opts.maxHandshakesPerHost, 1, DEFAULT_SERVER_LIMITS.maxHandshakesPerHost),
    maxSessionsPerHost: checkCount("maxSessionsPerHost", opts.maxSessionsPerHost, 1, DEFAULT_SERVER_LIMITS.maxSessionsPerHost),
    handshakeTimeoutMs: checkCount("handshakeTimeoutMs", opts.handshakeTimeoutMs, 0, DEFAULT_SERVER_LIMITS.handshakeTimeoutMs),
    handshakeMemoryBytes: checkCount("handshakeMemoryBytes", opts.handshakeMemoryBytes, 0, DEFAULT_SERVER_LIMITS.handshakeMemoryBytes),
    ...serverConnectionId(opts),
  };
}

/** The CID settings, checked: a length of 0 (off) or one that leaves MIN_CID_RANDOM_BYTES after the prefix, up to 255. */
function serverConnectionId(opts: ListenOptions): { connectionIdLength: number; connectionIdPrefix: Uint8Array } {
  const length = opts.connectionIdLength ?? DEFAULT_SERVER_CID_LENGTH;
  if (!Number.isInteger(length) || length < 0 || length > MAX_CID_LENGTH) {
    throw new DtlsError("bad_option", `connectionIdLength must be an integer from 0 to ${MAX_CID_LENGTH}, got ${length}`);
  }
  const prefix = opts.connectionIdPrefix ?? new Uint8Array(0);
  if (!(prefix instanceof Uint8Array)) throw new DtlsError("bad_option", "connectionIdPrefix must be bytes (a Uint8Array)");
  if (length > 0 && length - prefix.length < MIN_CID_RANDOM_BYTES) {
    throw new DtlsError(
      "bad_option",
      `connectionIdLength ${length} leaves ${length - prefix.length} random bytes after the ${prefix.length}-byte connectionIdPrefix; at least ${MIN_CID_RANDOM_BYTES} are needed`,
    );
  }
  return { connectionIdLength: length, connectionIdPrefix: Uint8Array.from(prefix) };
}

/** New credentials for a running server (DtlsServer.updateCredentials); an absent field keeps its value. */
export interface CredentialUpdate {
  certificates?: readonly CertificateKeyPair[];
  clientCa?: string | Uint8Array;
  clientAuth?: ClientAuthMode;
}

const CLIENT_AUTH_MODES: readonly string[] = ["none", "request", "require"];

/**
 * The listen options with `update` applied, and the core configuration they
 * give, checked as at `listen` (DtlsError "bad_option" naming the problem).
 */
export function applyCredentialUpdate(opts: ListenOptions, update: CredentialUpdate): { options: ListenOptions; config: ServerCoreConfig } {
  if (update.clientAuth !== undefined && !CLIENT_AUTH_MODES.includes(update.clientAuth)) {
    throw new DtlsError("bad_option", `clientAuth must be "none", "request" or "require", got ${JSON.stringify(update.clientAuth)}`);
  }
  if (update.certificates !== undefined && !Array.isArray(update.certificates)) {
    throw new DtlsError("bad_option", "certificates must be a list of { cert, key } PEM pairs");
  }
  const options: ListenOptions = {
    ...opts,
    ...(update.certificates !== undefined ? { certificates: update.certificates } : {}),
    ...(update.clientCa !== undefined ? { clientCa: update.clientCa } : {}),
    ...(update.clientAuth !== undefined ? { clientAuth: update.clientAuth } : {}),
  };
  return { options, config: serverCoreConfig(options) };
}

function pemAnchors(pem: string | Uint8Array, what: string, provider: CryptoProvider): Certificate[] {
  const text = typeof pem === "string" ? pem : Buffer.from(pem).toString("utf8");
  let anchors: Certificate[];
  try {
    anchors = provider.x509.pemCertificates(text).map((der) => provider.x509.parse(der));
  } catch (e) {
    throw new DtlsError("bad_option", `${what}: ${errorMessage(e)}`);
  }
  if (anchors.length === 0) throw new DtlsError("bad_option", `${what} holds no PEM certificate`);
  return anchors;
}

/** The client connection's configuration and credentials; only the suites its credentials can serve. */
export function clientConfig(opts: ConnectOptions): { config: ConnectionConfig; auth: ClientAuth } {
  const mtu = checkMtu(opts.mtu ?? DEFAULT_MTU);
  const provider = opts.crypto ?? defaultCrypto;
  const auth = clientAuth(opts, provider);
  const suites = (opts.suites ?? SUITE_NAMES).map(suiteByName).filter((s) => (usesPsk(s) ? auth.psk !== undefined : auth.verifyServer !== undefined));
  if (suites.length === 0) {
    throw new DtlsError("bad_option", "no usable suite: give psk for the PSK suites, or ca/fingerprint for the certificate suites");
  }
  return {
    auth,
    config: {
      suites,
      groups: opts.groups,
      mtu,
      requireExtendedMasterSecret: opts.requireExtendedMasterSecret ?? false,
      retransmit: { ...DEFAULT_RETRANSMIT, ...opts.retransmit },
      idleTimeoutMs: opts.idleTimeoutMs ?? 0,
      connectionId: opts.connectionId ?? true,
      crypto: provider,
    },
  };
}

/** What a saved session is bound to: the server as connect was given it. */
export function sessionServer(opts: ConnectOptions): string {
  return `${opts.host}:${opts.port}`;
}

/**
 * The saved session of `opts.session` if it may be offered on this
 * connection: same server, same PSK identity (or a certificate session with
 * server trust configured, and the pinned fingerprint if one is), a suite we
 * offer, EMS if we require it, a ticket within its lifetime. Otherwise
 * undefined (a full handshake).
 */
export function sessionToOffer(opts: ConnectOptions, config: ConnectionConfig, auth: ClientAuth, wallNow: number): ClientSessionState | undefined {
  if (opts.session === undefined) return undefined;
  const s = decodeSavedSession(opts.session);
  if (s === undefined || s.server !== sessionServer(opts)) return undefined;
  const suite = config.suites.find((c) => c.id === s.suite);
  if (suite === undefined || (config.requireExtendedMasterSecret && !s.ems)) return undefined;
  if (s.lifetimeMs > 0 && wallNow - s.issuedAt > s.lifetimeMs) return undefined;
  if (usesPsk(suite)) return auth.psk !== undefined && auth.psk.identity === s.identity ? s : undefined;
  if (auth.verifyServer === undefined || s.peer === undefined) return undefined;
  if (opts.fingerprint !== undefined && normalizeFingerprint(opts.fingerprint) !== s.peer.fingerprint256) return undefined;
  return s;
}

function clientAuth(opts: ConnectOptions, provider: CryptoProvider): ClientAuth {
  const anchors = opts.ca === undefined ? [] : pemAnchors(opts.ca, "ca", provider);
  if ((opts.cert === undefined) !== (opts.key === undefined)) throw new DtlsError("bad_option", "cert and key go together");
  const certificate =
    opts.cert !== undefined && opts.key !== undefined ? loadCredentials([{ cert: opts.cert, key: opts.key }], provider)[0] : undefined;
  if (opts.fingerprint !== undefined && !/^[0-9a-f]{64}$/.test(normalizeFingerprint(opts.fingerprint))) {
    throw new DtlsError("bad_option", "fingerprint must be a SHA-256 fingerprint: 64 hex digits, colons allowed");
  }
  const trust: TrustOptions | undefined =
    opts.ca !== undefined || opts.fingerprint !== undefined
      ? { anchors, fingerprint: opts.fingerprint, servername: opts.servername ?? opts.host }
      : undefined;
  return {
    psk: opts.psk,
    certificate,
    verifyServer: trust === undefined ? undefined : (chain) => verifyChain(chain, trust, new Date()),
  };
}
