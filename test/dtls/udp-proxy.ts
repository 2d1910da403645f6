/**
 * A UDP relay between DTLS clients and a server on 127.0.0.1 that may rewrite
 * or drop each datagram on its way, e.g. to take one record type out of every
 * flight: an on-path peer, for tests of what the endpoints must refuse.
 */
import { createSocket, type Socket } from "node:dgram";
import { concatBytes } from "../../src/util/bytes.ts";
import { parseRecords } from "../../src/dtls/record.ts";

export type Rewrite = (datagram: Uint8Array) => Uint8Array | undefined;

export interface ProxyRewrites {
  toServer?: Rewrite;
  toClient?: Rewrite;
}

/** A rewrite that takes every record of `type` out of the datagram (drops it when nothing is left). */
export function withoutRecords(type: number): Rewrite {
  return (d) => {
    const kept = parseRecords(d).filter((r) => r.type !== type);
    return kept.length === 0 ? undefined : concatBytes(kept.flatMap((r) => [r.header, r.body]));
  };
}

export class UdpProxy {
  private readonly front: Socket;
  private readonly upstreams = new Map<string, Socket>();
  private readonly serverPort: number;
  rewrites: ProxyRewrites;

  private constructor(front: Socket, serverPort: number, rewrites: ProxyRewrites) {
    this.front = front;
    this.serverPort = serverPort;
    this.rewrites = rewrites;
    front.on("message", (m, rinfo) => this.fromClient(new Uint8Array(m), rinfo.address, rinfo.port));
  }

  static async start(serverPort: number, rewrites: ProxyRewrites = {}): Promise<UdpProxy> {
    const front = createSocket("udp4");
    await new Promise<void>((resolve) => front.bind({ address: "127.0.0.1", port: 0 }, resolve));
    return new UdpProxy(front, serverPort, rewrites);
  }

  get port(): number {
    return this.front.address().port;
  }

  private fromClient(d: Uint8Array, address: string, port: number): void {
    const key = `${address}|${port}`;
    let up = this.upstreams.get(key);
    if (up === undefined) {
      const socket = createSocket("udp4");
      socket.on("message", (m) => {
        const out = this.rewrites.toClient ? this.rewrites.toClient(new Uint8Array(m)) : new Uint8Array(m);
        if (out !== undefined) this.front.send(out, port, address);
      });
      this.upstreams.set(key, socket);
      up = socket;
    }
    const out = this.rewrites.toServer ? this.rewrites.toServer(d) : d;
    if (out === undefined) return;
    up.send(out, this.serverPort, "127.0.0.1");
  }

  close(): void {
    this.front.close();
    for (const s of this.upstreams.values()) s.close();
  }
}

/**
 * A NAT that rebinds: one client behind it, the server on 127.0.0.1. The
 * client talks to `port`; the proxy relays through an upstream socket whose
 * source address and port `rebind` changes mid-session (all of 127.0.0.0/8 is
 * loopback on Linux). The sockets it rebound from stay open and count what
 * still reaches them, so a test can tell that the server stopped sending to an
 * old address. `sendFrom` sends bytes to the server from another address (a
 * third party replaying or forging records).
 */
export class RebindingProxy {
  private readonly front: Socket;
  private readonly serverPort: number;
  private upstream: Socket;
  private client: { address: string; port: number } | undefined;
  /** Every datagram relayed to the server, in order. */
  readonly toServer: Uint8Array[] = [];
  /** While true nothing passes either way (the NAT is changing its mapping): what was sent is lost. */
  hold = false;
  /** Datagrams from the server lost while holding. */
  readonly heldToClient: Uint8Array[] = [];
  /** Every "address:port" the server's datagrams came from (one, the server's port, even when several processes share it). */
  readonly serverSources = new Set<string>();
  /** Datagrams that reached a socket after it was rebound from, by its "address:port". */
  readonly lateArrivals = new Map<string, number>();
  private readonly retired: Socket[] = [];

  private constructor(front: Socket, upstream: Socket, serverPort: number) {
    this.front = front;
    this.upstream = upstream;
    this.serverPort = serverPort;
    front.on("message", (m, rinfo) => {
      this.client = { address: rinfo.address, port: rinfo.port };
      if (this.hold) return;
      const d = new Uint8Array(m);
      this.toServer.push(d);
      this.upstream.send(d, this.serverPort, "127.0.0.1");
    });
  }

  static async start(serverPort: number, upstreamAddress = "127.0.0.1"): Promise<RebindingProxy> {
    const front = await bound("127.0.0.1");
    const proxy = new RebindingProxy(front, await bound(upstreamAddress), serverPort);
    proxy.listenUpstream(proxy.upstream);
    return proxy;
  }

  get port(): number {
    return this.front.address().port;
  }

  /** Where the server sees the client now. */
  get source(): { address: string; port: number } {
    const { address, port } = this.upstream.address();
    return { address, port };
  }

  /** From now on the client's datagrams reach the server from a new port on `address`. */
  async rebind(address = "127.0.0.1"): Promise<void> {
    const old = this.upstream;
    const where = `${old.address().address}:${old.address().port}`;
    this.lateArrivals.set(where, 0);
    old.removeAllListeners("message");
    old.on("message", () => this.lateArrivals.set(where, (this.lateArrivals.get(where) ?? 0) + 1));
    this.retired.push(old);
    this.upstream = await bound(address);
    this.listenUpstream(this.upstream);
  }

  /** Sends `d` to the server from a socket of its own on `address`; resolves with that socket's "address:port". */
  async sendFrom(address: string, d: Uint8Array): Promise<string> {
    const s = await bound(address);
    const where = `${s.address().address}:${s.address().port}`;
    this.lateArrivals.set(where, 0);
    s.on("message", () => this.lateArrivals.set(where, (this.lateArrivals.get(where) ?? 0) + 1));
    this.retired.push(s);
    await new Promise<void>((resolve) => s.send(d, this.serverPort, "127.0.0.1", () => resolve()));
    return where;
  }

  private listenUpstream(s: Socket): void {
    s.on("message", (m, rinfo) => {
      this.serverSources.add(`${rinfo.address}:${rinfo.port}`);
      const c = this.client;
      if (this.hold) this.heldToClient.push(new Uint8Array(m));
      else if (c !== undefined) this.front.send(m, c.port, c.address);
    });
  }

  close(): void {
    this.front.close();
    this.upstream.close();
    for (const s of this.retired) s.close();
  }
}

function bound(address: string): Promise<Socket> {
  const s = createSocket("udp4");
  return new Promise((resolve) => s.bind({ address, port: 0 }, () => resolve(s)));
}
