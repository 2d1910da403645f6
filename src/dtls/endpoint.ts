/**
 * Binds the sans-I/O cores to UDP: the only module of the project that
 * imports node:dgram. One socket serves every peer of a server; one timer
 * (armed for the core scheduler's earliest deadline) serves every connection.
 */
import { createSocket, type Socket } from "node:dgram";
import { EventEmitter } from "node:events";
import { isIP } from "node:net";
import { monotonicClock, type Clock } from "../util/clock.ts";
import { Connection } from "./connection.ts";
import { DtlsConnection, type PeerAddress } from "./dtls-connection.ts";
import { alertError, DtlsError } from "./errors.ts";
import { Outbox } from "./outbox.ts";
import { certificateIdentity, normalizeFingerprint, verifyChain, type IdentitySource, type TrustOptions } from "./cert-verify.ts";
import { subjectNameDer } from "./der.ts";
import { ClientHandshake, type ClientAuth } from "./handshake-client.ts";
import { loadPrivateKey, parseCertificate, pemCertificates, type Certificate, type EcdhGroup } from "./crypto.ts";
import {
  DEFAULT_MTU,
  DEFAULT_RETRANSMIT,
  MIN_MTU,
  type ClientAuthMode,
  type ClientPskConfig,
  type ClientVerdict,
  type RetransmitPolicy,
  type ServerCredential,
} from "./options.ts";
import { ServerCore, type Peer, type ServerCoreConfig, type ServerStats } from "./server-core.ts";
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
  /** ECDHE groups in preference order (default x25519, secp256r1, secp384r1). */
  groups?: readonly EcdhGroup[];
  mtu?: number;
  requireExtendedMasterSecret?: boolean;
  maxHandshakes?: number;
  maxSessions?: number;
  idleTimeoutMs?: number;
  retransmit?: Partial<RetransmitPolicy>;
  clock?: Clock;
}

export interface ConnectOptions {
  host: string;
  port: number;
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
  /** ECDHE groups to offer, in order (default x25519, secp256r1, secp384r1). */
  groups?: readonly EcdhGroup[];
  mtu?: number;
  requireExtendedMasterSecret?: boolean;
  /** Whole-handshake limit; the connect promise rejects with code "timeout". */
  timeoutMs?: number;
  idleTimeoutMs?: number;
  retransmit?: Partial<RetransmitPolicy>;
  clock?: Clock;
}

interface ServerEvents {
  session: [conn: DtlsConnection];
  handshakeError: [event: { peer: PeerAddress; error: DtlsError }];
  error: [error: Error];
}

function checkMtu(mtu: number): number {
  if (!Number.isInteger(mtu) || mtu < MIN_MTU || mtu > 65507) {
    throw new DtlsError("bad_option", `mtu must be an integer from ${MIN_MTU} to 65507, got ${mtu}`);
  }
  return mtu;
}

function socketType(host: string): "udp4" | "udp6" {
  return isIP(host) === 6 ? "udp6" : "udp4";
}

/** One real timer for a sans-I/O core's earliest deadline. */
class Timer {
  private handle: NodeJS.Timeout | undefined;
  private at = Infinity;
  private readonly clock: Clock;
  private readonly fire: (now: number) => void;
  private readonly next: () => number | undefined;

  constructor(clock: Clock, next: () => number | undefined, fire: (now: number) => void) {
    this.clock = clock;
    this.next = next;
    this.fire = fire;
  }

  /** Re-arms when the earliest deadline moved earlier (later deadlines just fire early and re-arm). */
  arm(): void {
    const next = this.next();
    if (next === undefined || next >= this.at) return;
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.at = next;
    this.handle = setTimeout(() => {
      this.handle = undefined;
      this.at = Infinity;
      this.fire(this.clock.now());
      this.arm();
    }, Math.max(0, Math.ceil(next - this.clock.now())));
    this.handle.unref();
  }

  stop(): void {
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.handle = undefined;
    this.at = Infinity;
  }
}

function loadCredentials(pairs: readonly CertificateKeyPair[]): ServerCredential[] {
  return pairs.map((pair, i) => {
    const text = typeof pair.cert === "string" ? pair.cert : Buffer.from(pair.cert).toString("utf8");
    const ders = pemCertificates(text);
    if (ders.length === 0) throw new DtlsError("bad_option", `certificates[${i}].cert holds no PEM certificate`);
    let chain;
    let signer;
    try {
      chain = ders.map(parseCertificate);
      signer = loadPrivateKey(pair.key);
    } catch (e) {
      throw new DtlsError("bad_option", `certificates[${i}]: ${(e as Error).message}`);
    }
    if (!(chain[0] as Certificate).matchesPrivateKey(pair.key)) {
      throw new DtlsError("bad_option", `certificates[${i}]: the private key does not belong to the certificate ${(chain[0] as Certificate).subject}`);
    }
    return { chain, signer };
  });
}

/** The suites an endpoint can use with its credentials, in the caller's (or the default) order. */
function usableSuites(requested: readonly SuiteName[] | undefined, psk: boolean, certs: readonly ServerCredential[]): CipherSuite[] {
  const all = (requested ?? SUITE_NAMES).map(suiteByName);
  return all.filter((s) => {
    if (usesPsk(s)) return psk;
    return certs.some((c) => (s.keyExchange === "ecdhe_rsa") === (c.signer.keyType === "rsa"));
  });
}

function serverCoreConfig(opts: ListenOptions): ServerCoreConfig {
  const keys = opts.psk?.keys;
  const lookup = opts.psk?.lookup ?? (keys ? (id: string) => keys.get(id) : undefined);
  if (opts.psk !== undefined && lookup === undefined) throw new DtlsError("bad_option", "psk.keys or psk.lookup is required");
  const certificates = loadCredentials(opts.certificates ?? []);
  if (lookup === undefined && certificates.length === 0) throw new DtlsError("bad_option", "give psk keys or certificates (or both)");
  const suites = usableSuites(opts.suites, lookup !== undefined, certificates);
  if (suites.length === 0) throw new DtlsError("bad_option", "none of the requested suites can be used with the given keys and certificates");
  const clientAuth = opts.clientAuth ?? "none";
  const clientAnchors = opts.clientCa === undefined ? [] : pemAnchors(opts.clientCa, "clientCa");
  if (clientAuth !== "none" && clientAnchors.length === 0) throw new DtlsError("bad_option", `clientAuth "${clientAuth}" needs clientCa`);
  const source = opts.clientIdentity ?? "cn";
  const authorize = opts.authorizeClient;
  const verifyClient = (chain: readonly Certificate[]): ClientVerdict => {
    const bad = verifyChain(chain, { anchors: clientAnchors }, new Date(), "client");
    if (bad !== undefined) return bad;
    const leaf = chain[0] as Certificate;
    const identity = certificateIdentity(leaf, source);
    if (identity === undefined || identity === "") {
      return alertError("bad_certificate", `client certificate ${leaf.subject} has no ${source === "cn" ? "subject CN" : "SAN URI"} to name the device`);
    }
    const refusal = authorize?.(identity, { subject: leaf.subject, fingerprint256: leaf.fingerprint256 });
    return refusal === undefined ? { identity } : alertError(refusal.code, refusal.message);
  };
  return {
    suites,
    certificates,
    legacySha1Signatures: opts.legacySha1Signatures ?? false,
    groups: opts.groups,
    clientAuth,
    clientCaNames: clientAnchors.map((c) => subjectNameDer(c.der)),
    verifyClient,
    mtu: checkMtu(opts.mtu ?? DEFAULT_MTU),
    requireExtendedMasterSecret: opts.requireExtendedMasterSecret ?? false,
    retransmit: { ...DEFAULT_RETRANSMIT, ...opts.retransmit },
    idleTimeoutMs: opts.idleTimeoutMs ?? 300_000,
    psk: lookup === undefined ? undefined : { lookup, hint: opts.psk?.hint },
    maxHandshakes: opts.maxHandshakes ?? 1000,
    maxSessions: opts.maxSessions ?? 100_000,
  };
}

/** How long close() waits for the last close_notify datagrams to leave. */
const CLOSE_FLUSH_MS = 1000;

export class DtlsServer extends EventEmitter<ServerEvents> {
  private readonly socket: Socket;
  private readonly core: ServerCore;
  private readonly timer: Timer;
  private readonly clock: Clock;
  private closing = false;
  private readonly outbox: Outbox;
  /** Sends not yet handed to the kernel, counted only while closing. */
  private pendingSends = 0;
  private flushed: (() => void) | undefined;

  /** @internal use listen(). */
  constructor(socket: Socket, config: ServerCoreConfig, clock: Clock) {
    super();
    this.socket = socket;
    this.clock = clock;
    this.outbox = new Outbox(config.mtu, (peer, parts) => (this.closing ? this.trackedSend(peer, parts) : this.socket.send(parts, peer.port, peer.address)));
    this.core = new ServerCore(
      config,
      {
        send: (peer, d, key) => this.outbox.push(key, peer, d),
        established: (session) => {
          const conn = new DtlsConnection(session.connection, session.peer, session.info, () => this.timer.arm());
          session.listener = { data: (d) => conn.deliver(d), closed: (e) => conn.ended(e) };
          this.emit("session", conn);
        },
        handshakeFailed: (peer, error) => this.emit("handshakeError", { peer, error }),
      },
      clock.now(),
    );
    this.timer = new Timer(
      clock,
      () => this.core.nextTimeout(),
      (now) => this.core.timeout(now),
    );
    socket.on("message", (msg, rinfo) => {
      if (this.closing) return;
      this.core.receive({ address: rinfo.address, port: rinfo.port }, msg, this.clock.now());
      this.timer.arm();
    });
    socket.on("error", (e) => {
      if (this.listenerCount("error") > 0) this.emit("error", e);
    });
  }

  private trackedSend(peer: Peer, parts: Uint8Array[]): void {
    this.pendingSends++;
    this.socket.send(parts, peer.port, peer.address, () => {
      if (--this.pendingSends === 0) this.flushed?.();
    });
  }

  address(): { address: string; port: number; family: string } {
    return this.socket.address();
  }

  /** Established sessions. */
  sessions(): number {
    return this.core.establishedCount;
  }

  get stats(): Readonly<ServerStats> {
    return this.core.stats;
  }

  /** close_notify to every peer, then the socket closes (after those datagrams left, within 1 s). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.timer.stop();
    const drained = new Promise<void>((resolve) => {
      this.flushed = resolve;
      setTimeout(resolve, CLOSE_FLUSH_MS).unref();
    });
    this.outbox.flush(); // what was queued before closing goes out untracked
    this.closing = true;
    this.core.closeAll();
    this.outbox.flush();
    if (this.pendingSends > 0) await drained;
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }
}

export async function listen(opts: ListenOptions): Promise<DtlsServer> {
  const host = opts.host ?? "127.0.0.1";
  const config = serverCoreConfig(opts);
  const socket = createSocket({ type: socketType(host) });
  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error): void => {
      socket.close();
      reject(new DtlsError("listen_failed", `cannot listen on ${host}:${opts.port ?? 0}: ${e.message}`, undefined, { cause: e }));
    };
    socket.once("error", onError);
    socket.bind(opts.port ?? 0, host, () => {
      socket.off("error", onError);
      resolve();
    });
  });
  return new DtlsServer(socket, config, opts.clock ?? monotonicClock);
}

function pemAnchors(pem: string | Uint8Array, what: string): Certificate[] {
  const text = typeof pem === "string" ? pem : Buffer.from(pem).toString("utf8");
  let anchors: Certificate[];
  try {
    anchors = pemCertificates(text).map(parseCertificate);
  } catch (e) {
    throw new DtlsError("bad_option", `${what}: ${(e as Error).message}`);
  }
  if (anchors.length === 0) throw new DtlsError("bad_option", `${what} holds no PEM certificate`);
  return anchors;
}

function clientAuth(opts: ConnectOptions): ClientAuth {
  const anchors = opts.ca === undefined ? [] : pemAnchors(opts.ca, "ca");
  if ((opts.cert === undefined) !== (opts.key === undefined)) throw new DtlsError("bad_option", "cert and key go together");
  const certificate = opts.cert !== undefined && opts.key !== undefined ? loadCredentials([{ cert: opts.cert, key: opts.key }])[0] : undefined;
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

export async function connect(opts: ConnectOptions): Promise<DtlsConnection> {
  const clock = opts.clock ?? monotonicClock;
  const mtu = checkMtu(opts.mtu ?? DEFAULT_MTU);
  const auth = clientAuth(opts);
  const suites = (opts.suites ?? SUITE_NAMES)
    .map(suiteByName)
    .filter((s) => (usesPsk(s) ? auth.psk !== undefined : auth.verifyServer !== undefined));
  if (suites.length === 0) {
    throw new DtlsError("bad_option", "no usable suite: give psk for the PSK suites, or ca/fingerprint for the certificate suites");
  }
  const socket = createSocket({ type: socketType(opts.host) });
  const peer: PeerAddress = { address: opts.host, port: opts.port };
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise<DtlsConnection>((resolve, reject) => {
    let conn: DtlsConnection | undefined;
    let settled = false;
    const outbox = new Outbox(mtu, (_dest, parts) => socket.send(parts));
    const finish = (error: DtlsError | undefined): void => {
      timer.stop();
      clearTimeout(deadline);
      outbox.flush();
      socket.close();
      if (conn !== undefined) conn.ended(error);
      else if (!settled) {
        settled = true;
        reject(error ?? new DtlsError("closed", "server closed the connection during the handshake"));
      }
    };
    const core = new Connection(
      "client",
      {
        suites,
        groups: opts.groups,
        mtu,
        requireExtendedMasterSecret: opts.requireExtendedMasterSecret ?? false,
        retransmit: { ...DEFAULT_RETRANSMIT, ...opts.retransmit },
        idleTimeoutMs: opts.idleTimeoutMs ?? 0,
      },
      {
        sendDatagram: (d) => outbox.push("", peer, d),
        established: (info) => {
          clearTimeout(deadline);
          conn = new DtlsConnection(core, peer, info, () => timer.arm());
          settled = true;
          resolve(conn);
        },
        data: (d) => conn?.deliver(d),
        closed: (error) => finish(error),
      },
      clock.now(),
    );
    const timer = new Timer(
      clock,
      () => core.nextTimeout(),
      (now) => core.timeout(now),
    );
    const deadline = setTimeout(() => {
      core.fail(new DtlsError("timeout", `no DTLS handshake with ${opts.host}:${opts.port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on("message", (msg) => {
      core.receive(msg, clock.now());
      timer.arm();
    });
    socket.on("error", (e) => core.fail(new DtlsError("socket_error", e.message)));
    socket.connect(opts.port, opts.host, () => {
      try {
        core.attach(new ClientHandshake(core, auth, clock.now()));
      } catch (e) {
        core.fail(e instanceof DtlsError ? e : new DtlsError("internal_error", String(e)));
      }
      timer.arm();
    });
  });
}
