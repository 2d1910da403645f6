/**
 * Forwarding by Connection ID between the processes that share one DTLS port
 * (SO_REUSEPORT; `dtlspush serve --workers N`). Each process hands out CIDs
 * starting with its own prefix (ListenOptions.connectionIdPrefix). The kernel
 * picks the process a datagram reaches by the peer's address, so after a NAT
 * rebinding a device's records may reach a process that does not hold its
 * session: that process sends the record, with the peer's address, to the
 * process owning the CID's prefix over a loopback UDP socket of each process;
 * the owner handles it as if it came from that address and answers from its
 * own socket on the shared port (the peer sees the same server address).
 *
 * Its socket comes from udp-sockets.ts (the one node:dgram owner). The owners' loopback ports come from whoever starts the
 * processes (the supervisor): setPeers. A forwarded datagram is accepted only
 * from one of those ports on the loopback address; the record itself is still
 * authenticated by its session (a forged one moves nothing). Bounded:
 * forwards per second are capped (a token bucket); a record whose prefix
 * names no live process is dropped. Every drop is counted by cause.
 */
import { monotonicClock, type Clock } from "../util/clock.ts";
import { ContentType, RECORD_HEADER_LENGTH } from "./constants.ts";
import { DtlsError } from "./errors.ts";
import { TokenBucket } from "./hello-limiter.ts";
import { bindUdpSocket, type Socket } from "./udp-sockets.ts";

/** Where a tls12_cid record's CID starts (after type, version, epoch and sequence number). */
export const CID_OFFSET = RECORD_HEADER_LENGTH - 2;

/** Forwarded datagrams per second, per process, by default (ListenOptions / cluster.forward_rate_per_second). */
export const DEFAULT_FORWARD_RATE = 10_000;

/**
 * Why a datagram was not forwarded or not taken from another process:
 * "unknown_prefix" (its CID's prefix names no live process: a worker that
 * died, or a made-up CID), "rate_limit" (over the forwards per second),
 * "bad_forward" (a datagram on the loopback socket not from a known process,
 * or not a forwarded tls12_cid record), "not_owner" (forwarded here but the
 * prefix is not ours: never forwarded on, so no loops).
 */
export type ForwardDropCause = "unknown_prefix" | "rate_limit" | "bad_forward" | "not_owner";
export const FORWARD_DROP_CAUSES: readonly ForwardDropCause[] = ["unknown_prefix", "rate_limit", "bad_forward", "not_owner"];

export interface ForwardStats {
  /** records sent to the process owning their CID */
  forwarded: number;
  /** records another process forwarded here and that were handed to the server */
  received: number;
  dropped: Record<ForwardDropCause, number>;
}

export interface CidForwarderOptions {
  /** This process's CID prefix (the server's connectionIdPrefix), 1 to 4 bytes. */
  readonly prefix: Uint8Array;
  /** Loopback address of the forwarding socket (default 127.0.0.1). */
  readonly host?: string;
  /** Records forwarded per second at most (default 10000; 0: no limit). */
  readonly maxPerSecond?: number;
  readonly clock?: Clock;
}

/** A peer address as the server sees it. */
export interface ForwardedPeer {
  readonly address: string;
  readonly port: number;
}

/** Magic and version of a forwarded datagram: [0xd7, 1, address length, address (ASCII), port (u16)], then the record(s). */
const MAGIC = 0xd7;
const VERSION = 1;
const MAX_ADDRESS = 64;

function latin1(bytes: Uint8Array): string {
  return String.fromCharCode(...bytes);
}

export class CidForwarder {
  readonly prefix: Uint8Array;
  private readonly prefixKey: string;
  private readonly socket: Socket;
  /** the loopback address the forwarding sockets are bound to */
  private readonly host: string;
  private readonly clock: Clock;
  private readonly bucket: TokenBucket | undefined;
  /** owners' loopback ports by prefix (latin1) */
  private owners = new Map<string, number>();
  private ownerPorts = new Set<number>();
  private receiver: ((datagram: Uint8Array, peer: ForwardedPeer) => void) | undefined;
  private closed = false;
  readonly stats: ForwardStats = { forwarded: 0, received: 0, dropped: { unknown_prefix: 0, rate_limit: 0, bad_forward: 0, not_owner: 0 } };

  private constructor(socket: Socket, o: CidForwarderOptions) {
    this.socket = socket;
    this.host = socket.address().address;
    this.prefix = Uint8Array.from(o.prefix);
    this.prefixKey = latin1(this.prefix);
    this.clock = o.clock ?? monotonicClock;
    const rate = o.maxPerSecond ?? DEFAULT_FORWARD_RATE;
    this.bucket = rate === 0 ? undefined : new TokenBucket(rate, this.clock.now());
    socket.on("message", (msg, rinfo) => this.onMessage(msg, rinfo));
    socket.on("error", () => undefined);
  }

  /** Binds the loopback socket (port chosen by the kernel; announce `port` to the other processes). */
  static async open(o: CidForwarderOptions): Promise<CidForwarder> {
    if (!(o.prefix instanceof Uint8Array) || o.prefix.length < 1 || o.prefix.length > 4) {
      throw new DtlsError("bad_option", "the forwarder's prefix must be 1 to 4 bytes");
    }
    const rate = o.maxPerSecond ?? DEFAULT_FORWARD_RATE;
    if (!Number.isInteger(rate) || rate < 0) throw new DtlsError("bad_option", `maxPerSecond must be a non-negative integer, got ${rate}`);
    const host = o.host ?? "127.0.0.1";
    const socket = await bindUdpSocket(host.includes(":") ? "udp6" : "udp4", host, 0, false, `cannot bind the forwarding socket on ${host}`);
    return new CidForwarder(socket, o);
  }

  /** The loopback port other processes forward to. */
  get port(): number {
    return this.socket.address().port;
  }

  /** The other processes (their prefix and loopback port); replaces the previous set. Our own prefix is ignored. */
  setPeers(peers: readonly { readonly prefix: Uint8Array; readonly port: number }[]): void {
    const owners = new Map<string, number>();
    for (const p of peers) {
      const key = latin1(p.prefix);
      if (key !== this.prefixKey && p.prefix.length === this.prefix.length) owners.set(key, p.port);
    }
    this.owners = owners;
    this.ownerPorts = new Set(owners.values());
  }

  /** The server's handler of forwarded records (one per forwarder). */
  attach(receiver: (datagram: Uint8Array, peer: ForwardedPeer) => void): void {
    this.receiver = receiver;
  }

  /** Whether a tls12_cid datagram's CID carries our prefix (too short to carry one: ours, the server drops it). */
  owns(datagram: Uint8Array): boolean {
    const p = this.prefix;
    if (datagram.length < CID_OFFSET + p.length) return true;
    for (let i = 0; i < p.length; i++) if (datagram[CID_OFFSET + i] !== p[i]) return false;
    return true;
  }

  /** Sends a tls12_cid datagram that is not ours to the process owning its prefix, or drops and counts it. */
  forward(datagram: Uint8Array, from: ForwardedPeer): void {
    if (this.closed) return;
    const port = this.owners.get(latin1(datagram.subarray(CID_OFFSET, CID_OFFSET + this.prefix.length)));
    if (port === undefined) {
      this.stats.dropped.unknown_prefix++;
      return;
    }
    if (this.bucket !== undefined && !this.bucket.take(this.clock.now())) {
      this.stats.dropped.rate_limit++;
      return;
    }
    const address = Buffer.from(from.address, "latin1");
    if (address.length > MAX_ADDRESS) {
      this.stats.dropped.bad_forward++;
      return;
    }
    const header = Buffer.allocUnsafe(3 + address.length + 2);
    header[0] = MAGIC;
    header[1] = VERSION;
    header[2] = address.length;
    address.copy(header, 3);
    header.writeUInt16BE(from.port, 3 + address.length);
    this.stats.forwarded++;
    this.socket.send([header, datagram], port, this.host);
  }

  private onMessage(msg: Buffer, rinfo: { address: string; port: number }): void {
    if (this.closed) return;
    if (!this.ownerPorts.has(rinfo.port) || rinfo.address !== this.host) {
      this.stats.dropped.bad_forward++;
      return;
    }
    const length = msg.length >= 3 ? (msg[2] as number) : 0;
    const at = 3 + length + 2;
    if (msg.length <= at || msg[0] !== MAGIC || msg[1] !== VERSION || length === 0 || length > MAX_ADDRESS || msg[at] !== ContentType.tls12_cid) {
      this.stats.dropped.bad_forward++;
      return;
    }
    const datagram = msg.subarray(at);
    if (!this.owns(datagram)) {
      this.stats.dropped.not_owner++;
      return;
    }
    const peer = { address: msg.toString("latin1", 3, 3 + length), port: msg.readUInt16BE(3 + length) };
    this.stats.received++;
    this.receiver?.(datagram, peer);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }
}
