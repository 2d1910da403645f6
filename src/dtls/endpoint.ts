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
import { DtlsError } from "./errors.ts";
import { Outbox } from "./outbox.ts";
import { applyCredentialUpdate, clientConfig, serverCoreConfig, type ConnectOptions, type CredentialUpdate, type ListenOptions } from "./endpoint-config.ts";
import { ClientHandshake } from "./handshake-client.ts";
import { ServerCore, type Peer, type ServerCoreConfig, type ServerStats, type SessionListener } from "./server-core.ts";

export type { CertificateKeyPair, ConnectOptions, CredentialUpdate, ListenOptions } from "./endpoint-config.ts";

interface ServerEvents {
  session: [conn: DtlsConnection];
  handshakeError: [event: { peer: PeerAddress; error: DtlsError }];
  error: [error: Error];
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

/** Hands a server session's data and end to its DtlsConnection (a class, so a session costs no closures). */
class SessionEvents implements SessionListener {
  private readonly conn: DtlsConnection;
  constructor(conn: DtlsConnection) {
    this.conn = conn;
  }
  data(plaintext: Uint8Array): void {
    this.conn.deliver(plaintext);
  }
  closed(error: DtlsError | undefined): void {
    this.conn.ended(error);
  }
}

/** How long close() waits for the last close_notify datagrams to leave. */
const CLOSE_FLUSH_MS = 1000;

export class DtlsServer extends EventEmitter<ServerEvents> {
  private readonly socket: Socket;
  private readonly core: ServerCore;
  private readonly timer: Timer;
  private readonly clock: Clock;
  /** What the server was started with, credential updates applied. */
  private options: ListenOptions;
  private closing = false;
  private readonly outbox: Outbox;
  /** Sends not yet handed to the kernel, counted only while closing. */
  private pendingSends = 0;
  private flushed: (() => void) | undefined;
  /** Shared by every session (what it sends may move the earliest deadline). */
  private readonly armTimer = (): void => this.timer.arm();

  /** @internal use listen(). */
  constructor(socket: Socket, config: ServerCoreConfig, clock: Clock, options: ListenOptions) {
    super();
    this.socket = socket;
    this.clock = clock;
    this.options = options;
    this.outbox = new Outbox(config.mtu, (peer, parts) => (this.closing ? this.trackedSend(peer, parts) : this.socket.send(parts, peer.port, peer.address)));
    this.core = new ServerCore(
      config,
      {
        send: (peer, d, key) => this.outbox.push(key, peer, d),
        established: (session) => {
          const conn = new DtlsConnection(session.connection, session.peer, session.info, this.armTimer);
          session.listener = new SessionEvents(conn);
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

  /** The socket's receive and send buffer sizes as the kernel granted them, bytes. */
  socketBuffers(): { recv: number; send: number } {
    return { recv: this.socket.getRecvBufferSize(), send: this.socket.getSendBufferSize() };
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
    });
    this.options = options;
  }

  /** Starts no new handshakes from now on (ClientHellos from new peers are dropped); sessions go on. For draining. */
  stopAccepting(): void {
    this.core.stopAccepting();
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

/** Server socket buffers asked for by default (the kernel may grant less). */
export const DEFAULT_SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

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
  // One socket takes every peer's datagrams: a burst of acks (a topic fan-out) overflows the kernel's
  // default receive buffer (~208 KiB) and each lost ack costs a retransmission. The kernel caps the
  // request at net.core.rmem_max / wmem_max.
  try {
    socket.setRecvBufferSize(opts.recvBufferBytes ?? DEFAULT_SOCKET_BUFFER_BYTES);
    socket.setSendBufferSize(opts.sendBufferBytes ?? DEFAULT_SOCKET_BUFFER_BYTES);
  } catch {
    // a platform without these: the defaults stay
  }
  return new DtlsServer(socket, config, opts.clock ?? monotonicClock, opts);
}

export async function connect(opts: ConnectOptions): Promise<DtlsConnection> {
  const clock = opts.clock ?? monotonicClock;
  const { config, auth } = clientConfig(opts);
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
  const socket = createSocket({ type: hostFamily === 0 && localFamily === 6 ? "udp6" : socketType(opts.host) });
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
      config,
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
    let binding = localAddress !== undefined || localPort !== undefined;
    socket.on("error", (e) => {
      if (binding) {
        const where = `${localAddress ?? "the wildcard address"} port ${localPort ?? 0}`;
        core.fail(new DtlsError("connect_failed", `cannot bind the client socket to ${where}: ${e.message}`, undefined, { cause: e }));
      } else {
        core.fail(new DtlsError("socket_error", e.message));
      }
    });
    const start = (): void => {
      binding = false;
      if (settled || core.state === "closed") return; // timed out while binding: the socket is closed
      socket.connect(opts.port, opts.host, () => {
        try {
          core.attach(new ClientHandshake(core, auth, clock.now()));
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
