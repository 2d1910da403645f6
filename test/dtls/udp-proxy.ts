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
