/**
 * Binds the sans-I/O cores to UDP (its sockets come from udp-sockets.ts, the
 * one node:dgram owner). A server reads from one or several sockets bound to the
 * same port (SO_REUSEPORT) and sends through the first; one timer (armed for
 * the core scheduler's earliest deadline) serves every connection. What runs
 * when in a turn of the event loop (the timer, the per-peer flush of a turn's
 * datagrams, ClientHellos at the end of the turn) is src/util/turn.ts's.
 */
import { bindUdpSocket, udpSocket, type Socket } from "./udp-sockets.ts";
import { EventEmitter } from "node:events";
import { isIP } from "node:net";
import { monotonicClock, type Clock } from "../util/clock.ts";
import { DeadlineTimer, EndOfTurn, TurnOutbox } from "../util/turn.ts";
import type { CidForwarder, ForwardedPeer, ForwardStats } from "./cid-forwarder.ts";
import { Connection } from "./connection.ts";
import { ContentType } from "./constants.ts";
import { classifyStranger, isHelloVerifyRequest } from "./datagram-class.ts";
import { DtlsConnection, type PeerAddress } from "./dtls-connection.ts";
import { DtlsError, HandshakeTimeoutError } from "./errors.ts";
import {
  applyCredentialUpdate,
  clientConfig,
  serverCoreConfig,
  sessionServer,
  sessionToOffer,
  type ConnectOptions,
  type CredentialUpdate,
  type ListenOptions,
} from "./endpoint-config.ts";
import { ClientHandshake } from "./handshake-client.ts";
import { DEFAULT_HELLO_VERIFY_RATE, DEFAULT_HELLO_VERIFY_RATE_PER_PREFIX, HelloLimiter, type ClientHelloDropCause } from "./hello-limiter.ts";
import type { SavedSession } from "./resumption-options.ts";
import { peerKey, ServerCore, type Peer, type RestoreRefusal, type ServerCoreConfig, type ServerStats } from "./server-core.ts";
import { decodeSessionSnapshot } from "./session-snapshot.ts";

export type { CertificateKeyPair, ConnectOptions, CredentialUpdate, ListenOptions } from "./endpoint-config.ts";

interface ServerEvents {
  session: [conn: DtlsConnection];
  handshakeError: [event: { peer: PeerAddress; error: DtlsError }];
  error: [error: Error];
}

function socketType(host: string): "udp4" | "udp6" {
  return isIP(host) === 6 ? "udp6" : "udp4";
}

/** How long close() waits for the last close_notify datagrams to leave. */
const CLOSE_FLUSH_MS = 1000;

/**
 * ClientHellos carrying a cookie checked per event-loop turn at most (each
 * costs an HMAC; a flood of made-up cookies must not cost more than that).
 */
export const COOKIE_HELLOS_PER_TURN = 64;

/** A ClientHello from a peer without a session, waiting for the end of the turn. */
interface WaitingHello {
  readonly peer: Peer;
  readonly datagram: Uint8Array;
  /** its HelloVerifyRequest token was taken when it was read */
  readonly admitted: boolean;
}

export class DtlsServer extends EventEmitter<ServerEvents> {
  /** every socket bound to the server's port; sends go through the first */
  private readonly sockets: readonly Socket[];
  private readonly socket: Socket;
  private readonly core: ServerCore;
  private readonly timer: DeadlineTimer;
  private readonly clock: Clock;
  /** What the server was started with, credential updates applied. */
  private options: ListenOptions;
  private closing = false;
  private readonly outbox: TurnOutbox;
  /** Sends not yet handed to the kernel, counted only while closing. */
  private pendingSends = 0;
  private flushed: (() => void) | undefined;
  /** Shared by every session (what it sends may move the earliest deadline). */
  private readonly armTimer = (): void => this.timer.arm();
  private readonly limiter: HelloLimiter;
  /**
   * ClientHellos from peers without a session read in this turn, one per peer,
   * handled after the turn's records of established peers (at setImmediate).
   */
  private readonly waiting = new Map<string, WaitingHello>();
  private cookieHellos = 0;
  /** the peer key whose HelloVerifyRequest token was taken on arrival, while its ClientHello is in the core */
  private admittedKey: string | undefined;
  /** peers sent a HelloVerifyRequest in this turn (strangers and peers with a session alike): one each */
  private readonly verifiedThisTurn = new Set<string>();
  private readonly forgetVerified = new EndOfTurn(() => this.verifiedThisTurn.clear());
  private readonly answerWaiting = new EndOfTurn(() => this.answerHellos());
  private readonly forwarder: CidForwarder | undefined;

  /** @internal use listen(). */
  constructor(sockets: readonly Socket[], config: ServerCoreConfig, clock: Clock, options: ListenOptions) {
    super();
    this.sockets = sockets;
    this.socket = sockets[0] as Socket;
    this.clock = clock;
    this.options = options;
    this.forwarder = options.forwarder;
    this.limiter = new HelloLimiter(
      {
        perSecond: options.helloVerifyRatePerSecond ?? DEFAULT_HELLO_VERIFY_RATE,
        perPrefixPerSecond: options.helloVerifyRatePerPrefix ?? DEFAULT_HELLO_VERIFY_RATE_PER_PREFIX,
      },
      clock.now(),
    );
    this.outbox = new TurnOutbox(config.mtu, (peer, parts) => this.transmit(peer, parts));
    this.core = new ServerCore(
      config,
      {
        // a HelloVerifyRequest goes alone: a stateless reply is never coalesced with anything (clients hang on two in one datagram)
        send: (peer, d, key) => (isHelloVerifyRequest(d) ? this.transmit(peer, [d]) : this.outbox.push(key, peer, d)),
        admitHelloVerify: (peer, key, now) => this.admitHelloVerify(peer, key, now),
        established: (session, restored) => {
          // the session is the peer address (its fields) and the connection its listener: nothing in between
          const conn = new DtlsConnection(session.connection, session, this.armTimer);
          session.listener = conn;
          if (restored !== undefined) conn.markRestored(restored);
          this.emit("session", conn);
        },
        handshakeFailed: (peer, error) => this.emit("handshakeError", { peer, error }),
      },
      clock.now(),
    );
    this.timer = new DeadlineTimer({
      clock,
      next: () => this.core.nextTimeout(),
      fire: (now) => this.core.timeout(now),
      unref: true,
    });
    const onMessage = (msg: Buffer, rinfo: { address: string; port: number }): void => {
      if (this.closing) return;
      const peer: Peer = { address: rinfo.address, port: rinfo.port };
      const key = peerKey(peer);
      if (msg[0] === ContentType.tls12_cid && this.forwarder !== undefined && !this.forwarder.owns(msg)) {
        // another process sharing the port holds this CID's session (NAT rebinding moved the peer to us)
        this.forwarder.forward(msg, peer);
      } else if (msg[0] === ContentType.tls12_cid || this.core.hasSession(key)) {
        // a peer with a session (the hot path; a tls12_cid record names its session by CID, whatever
        // address it comes from): served now, before any ClientHello of this turn
        this.core.receive(peer, msg, this.clock.now(), key);
        this.timer.arm();
      } else {
        this.stranger(peer, key, msg);
      }
    };
    const onError = (e: Error): void => {
      if (this.listenerCount("error") > 0) this.emit("error", e);
    };
    for (const s of sockets) {
      s.on("message", onMessage);
      s.on("error", onError);
    }
    this.forwarder?.attach((datagram, peer) => this.receiveForwarded(datagram, peer));
  }

  /** A record another process forwarded (its CID is ours): handled as if it came from `peer`, answered from our socket. */
  private receiveForwarded(datagram: Uint8Array, from: ForwardedPeer): void {
    if (this.closing) return;
    const peer: Peer = { address: from.address, port: from.port };
    this.core.receive(peer, datagram, this.clock.now(), peerKey(peer));
    this.timer.arm();
  }

  /** Records forwarded to and from the other processes sharing the port (undefined: no forwarder). */
  get forwardStats(): Readonly<ForwardStats> | undefined {
    return this.forwarder?.stats;
  }

  private transmit(peer: Peer, parts: Uint8Array[]): void {
    if (this.closing) this.trackedSend(peer, parts);
    else this.socket.send(parts, peer.port, peer.address);
  }

  /**
   * A datagram from a peer without a session, judged from a few header bytes:
   * anything but a whole ClientHello is dropped; a first ClientHello takes a
   * HelloVerifyRequest token now or is dropped; one ClientHello per peer per
   * turn waits for the end of the turn.
   */
  private stranger(peer: Peer, key: string, datagram: Uint8Array): void {
    const kind = classifyStranger(datagram);
    if (kind === "other") {
      this.core.stats.datagramsDropped++;
      return;
    }
    if (this.waiting.has(key)) return this.dropHello("duplicate");
    let admitted = false;
    if (kind === "hello") {
      if (!this.admit(peer, this.clock.now())) return;
      admitted = true;
    } else if (++this.cookieHellos > COOKIE_HELLOS_PER_TURN) {
      return this.dropHello("turn_limit");
    }
    this.answerWaiting.request();
    this.waiting.set(key, { peer, datagram, admitted });
  }

  /** The core is about to answer a ClientHello with a HelloVerifyRequest: at most one per peer per turn, within the limits. */
  private admitHelloVerify(peer: Peer, key: string, now: number): boolean {
    if (this.verifiedThisTurn.has(key)) {
      this.dropHello("duplicate");
      return false;
    }
    if (key !== this.admittedKey && !this.admit(peer, now)) return false;
    this.forgetVerified.request();
    this.verifiedThisTurn.add(key);
    return true;
  }

  /** Takes a HelloVerifyRequest token for the peer, or counts the drop. */
  private admit(peer: Peer, now: number): boolean {
    const spent = this.limiter.take(peer.address, now);
    if (spent === undefined) return true;
    this.dropHello(spent);
    return false;
  }

  private dropHello(cause: ClientHelloDropCause): void {
    this.core.stats.clientHellosDropped[cause]++;
  }

  /** The turn's waiting ClientHellos, after the records of established peers. */
  private answerHellos(): void {
    this.cookieHellos = 0;
    if (this.closing) {
      this.waiting.clear();
      return;
    }
    const now = this.clock.now();
    for (const [key, w] of this.waiting) {
      this.admittedKey = w.admitted ? key : undefined;
      this.core.receive(w.peer, w.datagram, now, key);
    }
    this.admittedKey = undefined;
    this.waiting.clear();
    this.timer.arm();
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

  /** The (first) socket's receive and send buffer sizes as the kernel granted them, bytes. */
  socketBuffers(): { recv: number; send: number } {
    return { recv: this.socket.getRecvBufferSize(), send: this.socket.getSendBufferSize() };
  }

  /** How many sockets share the server's port (see ListenOptions.sockets). */
  get socketCount(): number {
    return this.sockets.length;
  }

  /** Established sessions. */
  sessions(): number {
    return this.core.establishedCount;
  }

  get stats(): Readonly<ServerStats> {
    return this.core.stats;
  }

  /**
   * Replaces the certificate chains, the client CA and/or the client
   * authentication mode (absent fields keep their value). Everything is parsed
   * and checked first: a DtlsError "bad_option" naming the problem leaves the
   * server as it was. Handshakes that start afterwards use the new
   * credentials; established sessions (and handshakes in progress) keep theirs.
   */
  updateCredentials(o: CredentialUpdate): void {
    const { options, config } = applyCredentialUpdate(this.options, o);
    this.core.updateCredentials({
      suites: config.suites,
      certificates: config.certificates,
      clientAuth: config.clientAuth,
      clientCaNames: config.clientCaNames,
      verifyClient: config.verifyClient,
      reauthorizeClient: config.reauthorizeClient,
    });
    this.options = options;
  }

  /** Starts no new handshakes from now on (ClientHellos from new peers are dropped); sessions go on. For draining. */
  stopAccepting(): void {
    this.core.stopAccepting();
  }

  /**
   * Restart without the peers noticing, first half: stops reading and the
   * timers, sends what this turn queued, then returns every established
   * session as a snapshot (session-snapshot.ts) carrying what `attach` gives
   * for its connection (undefined: not saved). The sessions are retired at
   * once (they can send nothing more: a record sealed after its snapshot would
   * reuse a nonce once restored). Then `close({ notify: false })`.
   */
  exportSessions(attach: (conn: DtlsConnection) => Uint8Array | undefined): Uint8Array[] {
    this.closing = true;
    this.timer.stop();
    this.waiting.clear();
    this.outbox.flush();
    return this.core.exportSessions((session) => {
      const conn = session.listener;
      return conn instanceof DtlsConnection ? attach(conn) : undefined;
    });
  }

  /**
   * Second half, in the new process: takes over each snapshot's session (no
   * handshake; emitted as "session" with `conn.restored` set, in order).
   * Listen for "session" first. A snapshot that does not decode or fit is
   * refused and counted (stats.restoresRefused; "damaged" here). The caller
   * must have made sure these bytes are never restored again (a second
   * restore would reuse nonces): delete them durably before calling this.
   */
  restoreSessions(snapshots: readonly Uint8Array[]): { restored: number; refused: Partial<Record<RestoreRefusal, number>> } {
    const now = this.clock.now();
    let restored = 0;
    const refused: Partial<Record<RestoreRefusal, number>> = {};
    for (const bytes of snapshots) {
      let r: ReturnType<ServerCore["adoptSession"]>;
      try {
        r = this.core.adoptSession(decodeSessionSnapshot(bytes), now);
      } catch {
        this.core.stats.restoresRefused.damaged++;
        r = "damaged";
      }
      if (typeof r === "string") refused[r] = (refused[r] ?? 0) + 1;
      else restored++;
    }
    this.timer.arm();
    return { restored, refused };
  }

  /**
   * close_notify to every peer, then the socket closes (after those datagrams
   * left, within 1 s). `notify: false` (after exportSessions): nothing more is
   * sent, the sockets just close.
   */
  async close(o: { readonly notify?: boolean } = {}): Promise<void> {
    if (o.notify === false) {
      this.closing = true;
      this.timer.stop();
      await Promise.all(this.sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      return;
    }
    await this.closeNotifying();
  }

  private async closeNotifying(): Promise<void> {
    if (this.closing) return;
    this.timer.stop();
    const drained = new Promise<void>((resolve) => {
      this.flushed = resolve;
      setTimeout(resolve, CLOSE_FLUSH_MS).unref();
    });
    // tracked from here on: what was queued before closing (e.g. an application's last records, a Bye)
    // must leave before the sockets close, or the kernel never sees it (a send still resolving its
    // address when its socket closes is dropped)
    this.closing = true;
    this.outbox.flush();
    this.core.closeAll();
    this.outbox.flush();
    if (this.pendingSends > 0) await drained;
    await Promise.all(this.sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

/** Socket errors that only relay an ICMP error for a datagram sent (on a connected UDP socket). */
const UNREACHABLE = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN"]);

function isUnreachable(e: Error): boolean {
  return UNREACHABLE.has(String((e as { code?: unknown }).code));
}

/** Server send buffers asked for by default (the kernel may grant less). */
export const DEFAULT_SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;
/**
 * Server receive buffers asked for by default: a burst of acks fits, yet when
 * the process falls behind (a flood) a record waits behind at most a few
 * thousand datagrams per socket, tens of milliseconds, not a second.
 */
export const DEFAULT_RECV_BUFFER_BYTES = 1024 * 1024;

/** Sockets per server by default: several only where SO_REUSEPORT spreads datagrams over them. */
export const DEFAULT_SERVER_SOCKETS = process.platform === "linux" ? 4 : 1;
export const MAX_SERVER_SOCKETS = 16;

function bindSocket(type: "udp4" | "udp6", host: string, port: number, reusePort: boolean): Promise<Socket> {
  return bindUdpSocket(type, host, port, reusePort, `cannot listen on ${host}:${port}`);
}

function closeQuietly(sockets: readonly Socket[]): void {
  for (const s of sockets) {
    try {
      s.close();
    } catch {
      // already closed
    }
  }
}

export async function listen(options: ListenOptions): Promise<DtlsServer> {
  const opts = withForwarderPrefix(options);
  const host = opts.host ?? "127.0.0.1";
  const config = serverCoreConfig(opts);
  const count = opts.sockets ?? DEFAULT_SERVER_SOCKETS;
  if (!Number.isInteger(count) || count < 1 || count > MAX_SERVER_SOCKETS) {
    throw new DtlsError("bad_option", `sockets must be an integer from 1 to ${MAX_SERVER_SOCKETS}, got ${count}`);
  }
  const type = socketType(host);
  let port = opts.port ?? 0;
  const sharing = opts.portSharing;
  if (sharing === "join" && port === 0) throw new DtlsError("bad_option", 'portSharing "join" needs the port to join, got port 0');
  const sockets: Socket[] = [];
  if (count === 1 && sharing === undefined) sockets.push(await bindSocket(type, host, port, false));
  else {
    // SO_REUSEPORT would let us share the port with a daemon already running as the same user:
    // an exclusive probe first, so a port in use is refused as it is with one socket (unless we join
    // the port our own sibling processes hold)
    if (sharing !== "join") {
      const probe = await bindSocket(type, host, port, false);
      port = probe.address().port;
      await new Promise<void>((resolve) => probe.close(() => resolve()));
    }
    try {
      for (let i = 0; i < count; i++) sockets.push(await bindSocket(type, host, port, true));
    } catch (e) {
      closeQuietly(sockets);
      throw e;
    }
  }
  // A burst of acks (a topic fan-out) overflows the kernel's default receive buffer (~208 KiB) and each
  // lost ack costs a retransmission. The kernel caps the request at net.core.rmem_max / wmem_max.
  for (const socket of sockets) {
    try {
      socket.setRecvBufferSize(opts.recvBufferBytes ?? DEFAULT_RECV_BUFFER_BYTES);
      socket.setSendBufferSize(opts.sendBufferBytes ?? DEFAULT_SOCKET_BUFFER_BYTES);
    } catch {
      // a platform without these: the defaults stay
    }
  }
  return new DtlsServer(sockets, config, opts.clock ?? monotonicClock, opts);
}

/** The forwarder's prefix is the server's CID prefix: taken from it when absent, refused when different. */
function withForwarderPrefix(opts: ListenOptions): ListenOptions {
  const f = opts.forwarder;
  if (f === undefined) return opts;
  const own = opts.connectionIdPrefix;
  if (own === undefined) return { ...opts, connectionIdPrefix: f.prefix };
  if (own.length !== f.prefix.length || own.some((b, i) => b !== f.prefix[i])) {
    throw new DtlsError("bad_option", "connectionIdPrefix must be the forwarder's prefix");
  }
  return opts;
}

export async function connect(opts: ConnectOptions): Promise<DtlsConnection> {
  const clock = opts.clock ?? monotonicClock;
  const { config, auth } = clientConfig(opts);
  const offer = sessionToOffer(opts, config, auth, Date.now());
  const mtu = config.mtu;
  const { localAddress, localPort } = opts;
  const localFamily = localAddress === undefined ? 0 : isIP(localAddress);
  if (localAddress !== undefined && localFamily === 0) {
    throw new DtlsError("bad_option", `localAddress must be an IPv4 or IPv6 address, got ${JSON.stringify(localAddress)}`);
  }
  const hostFamily = isIP(opts.host);
  if (localFamily !== 0 && hostFamily !== 0 && localFamily !== hostFamily) {
    throw new DtlsError("bad_option", `localAddress ${localAddress} is IPv${localFamily} but host ${opts.host} is IPv${hostFamily}`);
  }
  if (localPort !== undefined && (!Number.isInteger(localPort) || localPort < 0 || localPort > 65535)) {
    throw new DtlsError("bad_option", `localPort must be an integer from 0 to 65535, got ${localPort}`);
  }
  // a host name (no IP literal) takes the socket family of the local address, if one is given
  const socket = udpSocket(hostFamily === 0 && localFamily === 6 ? "udp6" : socketType(opts.host));
  const peer: PeerAddress = { address: opts.host, port: opts.port };
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise<DtlsConnection>((resolve, reject) => {
    let conn: DtlsConnection | undefined;
    let settled = false;
    /** a datagram came from the server during the handshake */
    let answered = false;
    /** the handshake's new session, until the connection exists */
    let session: SavedSession | undefined;
    const outbox = new TurnOutbox(mtu, (_dest, parts) => socket.send(parts));
    const finish = (error: DtlsError | undefined): void => {
      timer.stop();
      clearTimeout(deadline);
      outbox.flush();
      socket.close();
      if (conn !== undefined) conn.ended(error);
      else if (!settled) {
        settled = true;
        // every timeout (the deadline, or the retransmissions used up) says whether the server answered meanwhile
        reject(
          error?.code === "timeout"
            ? new HandshakeTimeoutError(error.message, answered)
            : (error ?? new DtlsError("closed", "server closed the connection during the handshake")),
        );
      }
    };
    const core = new Connection(
      "client",
      config,
      {
        sendDatagram: (d) => outbox.push("", peer, d),
        established: () => {
          clearTimeout(deadline);
          conn = new DtlsConnection(core, peer, () => timer.arm());
          if (session !== undefined) conn.setSession(session);
          settled = true;
          resolve(conn);
        },
        data: (d) => conn?.deliver(d),
        closed: (error) => finish(error),
      },
      clock.now(),
    );
    const timer = new DeadlineTimer({
      clock,
      next: () => core.nextTimeout(),
      fire: (now) => core.timeout(now),
      unref: true,
    });
    const deadline = setTimeout(() => {
      core.fail(new DtlsError("timeout", `no DTLS handshake with ${opts.host}:${opts.port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on("message", (msg) => {
      answered = true;
      core.receive(msg, clock.now());
      timer.arm();
    });
    let binding = localAddress !== undefined || localPort !== undefined;
    socket.on("error", (e) => {
      if (binding) {
        const where = `${localAddress ?? "the wildcard address"} port ${localPort ?? 0}`;
        core.fail(new DtlsError("connect_failed", `cannot bind the client socket to ${where}: ${e.message}`, undefined, { cause: e }));
      } else if (core.state === "established" && isUnreachable(e)) {
        // An ICMP "port unreachable" (or host/network unreachable) for a record we sent: unauthenticated, and
        // what a server restarting on its port answers for a moment. The session goes on; a peer that is
        // really gone shows as silence (the application's liveness checks and the idle timeout).
        return;
      } else {
        core.fail(new DtlsError("socket_error", e.message));
      }
    });
    const start = (): void => {
      binding = false;
      if (settled || core.state === "closed") return; // timed out while binding: the socket is closed
      socket.connect(opts.port, opts.host, () => {
        try {
          core.attach(
            new ClientHandshake(core, auth, clock.now(), {
              offer,
              server: sessionServer(opts),
              wallClock: Date.now,
              onSession: (s) => {
                session = s;
              },
            }),
          );
        } catch (e) {
          core.fail(e instanceof DtlsError ? e : new DtlsError("internal_error", String(e)));
        }
        timer.arm();
      });
    };
    // bound first where asked (e.g. one of several loopback source addresses); connect() binds implicitly otherwise
    if (binding) socket.bind({ address: localAddress, port: localPort ?? 0, exclusive: true }, start);
    else start();
  });
}
