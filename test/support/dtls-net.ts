/**
 * Sans-I/O DTLS world for fuzzing: one ServerCore (echoing every record as
 * "echo:" + record) and any number of our clients, each at its own peer
 * address, joined by an in-memory network with a fake clock. A client's
 * outgoing datagrams can be tampered with, and anything the server throws
 * out of receive/timeout is caught and recorded (it must never happen).
 */
import { copyBytes } from "../../src/util/bytes.ts";
import { Connection } from "../../src/dtls/connection.ts";
import type { DtlsError } from "../../src/dtls/errors.ts";
import { ClientHandshake, type ClientAuth } from "../../src/dtls/handshake-client.ts";
import type { ConnectionConfig, ConnectionInfo } from "../../src/dtls/options.ts";
import { peerKey, ServerCore, type Peer, type ServerCoreConfig } from "../../src/dtls/server-core.ts";

const ECHO = new TextEncoder().encode("echo:");

export interface NetClient {
  readonly peer: Peer;
  readonly conn: Connection;
  info: ConnectionInfo | undefined;
  closed: DtlsError | undefined | null;
  readonly data: string[];
  /** Datagrams this client sent, in order (before tampering). */
  sent: number;
  /** Replaces (or drops, with undefined) the client's n-th datagram (0-based). */
  tamper: ((d: Uint8Array, n: number) => Uint8Array | undefined) | undefined;
}

interface Queued {
  readonly at: number;
  readonly order: number;
  readonly to: string; // "server" or a client's peer key
  readonly from: string;
  readonly data: Uint8Array;
}

export class DtlsNet {
  now = 0;
  readonly server: ServerCore;
  readonly clients = new Map<string, NetClient>();
  /** Exceptions that escaped the server (must stay empty). */
  readonly escaped: unknown[] = [];
  readonly failures: { peer: string; code: string }[] = [];
  /** Called after the server took each datagram (from, datagram). */
  afterServerReceive: ((from: string) => void) | undefined;
  private readonly queue: Queued[] = [];
  private order = 0;
  private nextPort = 20000;

  constructor(config: ServerCoreConfig) {
    this.server = new ServerCore(
      config,
      {
        send: (peer, d) => this.enqueue(peerKey(peer), "server", d),
        established: (s) => {
          s.listener = {
            deliver: (d) => {
              const out = new Uint8Array(ECHO.length + d.length);
              out.set(ECHO);
              out.set(d, ECHO.length);
              s.connection.send(out);
            },
            ended: () => undefined,
          };
        },
        handshakeFailed: (peer, e) => this.failures.push({ peer: peerKey(peer), code: e.code }),
      },
      0,
    );
  }

  private enqueue(to: string, from: string, d: Uint8Array): void {
    this.queue.push({ at: this.now + 1, order: this.order++, to, from, data: copyBytes(d) });
  }

  /** A new client at a new peer address, handshake started. */
  client(config: ConnectionConfig, auth: ClientAuth): NetClient {
    const peer: Peer = { address: "192.0.2.9", port: this.nextPort++ };
    const key = peerKey(peer);
    const c: NetClient = {
      peer,
      conn: undefined as unknown as Connection,
      info: undefined,
      closed: null,
      data: [],
      sent: 0,
      tamper: undefined,
    };
    const conn = new Connection(
      "client",
      config,
      {
        sendDatagram: (d) => {
          const n = c.sent++;
          const t = c.tamper === undefined ? d : c.tamper(copyBytes(d), n);
          if (t !== undefined) this.enqueue("server", key, t);
        },
        established: (info) => {
          c.info = info;
        },
        data: (d) => c.data.push(new TextDecoder().decode(d)),
        closed: (e) => {
          c.closed = e;
        },
      },
      this.now,
    );
    (c as { conn: Connection }).conn = conn;
    this.clients.set(key, c);
    conn.attach(new ClientHandshake(conn, auth, this.now));
    return c;
  }

  /** Sends raw bytes to the server as `client`'s address. */
  inject(client: NetClient, d: Uint8Array): void {
    this.enqueue("server", peerKey(client.peer), d);
  }

  /** Delivers datagrams and fires timers until `stop()` holds, nothing is left, or `ms` of fake time passed. */
  run(ms: number, stop: () => boolean = () => false): void {
    const end = this.now + ms;
    for (let guard = 0; guard < 200_000; guard++) {
      if (stop()) return;
      this.queue.sort((a, b) => a.at - b.at || a.order - b.order);
      const next = this.queue[0];
      let timerAt = this.server.nextTimeout();
      for (const c of this.clients.values()) {
        const t = c.conn.nextTimeout();
        if (t !== undefined && (timerAt === undefined || t < timerAt)) timerAt = t;
      }
      const at = Math.min(next?.at ?? Infinity, timerAt ?? Infinity);
      if (at === Infinity) return;
      if (at > end) {
        this.now = end;
        return;
      }
      this.now = Math.max(this.now, at);
      if (next !== undefined && next.at <= this.now) {
        this.queue.shift();
        if (next.to === "server") {
          const [address, port] = next.from.split("|") as [string, string];
          try {
            this.server.receive({ address, port: Number(port) }, next.data, this.now);
          } catch (e) {
            this.escaped.push(e);
          }
          this.afterServerReceive?.(next.from);
        } else {
          const c = this.clients.get(next.to);
          try {
            c?.conn.receive(next.data, this.now);
          } catch {
            // our client's own robustness is not under test here
          }
        }
      } else {
        try {
          this.server.timeout(this.now);
        } catch (e) {
          this.escaped.push(e);
        }
        for (const c of this.clients.values()) {
          try {
            c.conn.timeout(this.now);
          } catch {
            // as above
          }
        }
      }
    }
    throw new Error("the simulated network did not settle");
  }

  /** The handshake finished on the client side (within ms). */
  establish(c: NetClient, ms = 30_000): boolean {
    this.run(ms, () => c.info !== undefined || c.closed !== null);
    return c.info !== undefined;
  }

  /** The client's record comes back as "echo:" + text (within ms). */
  echoes(c: NetClient, text: string, ms = 10_000): boolean {
    const before = c.data.length;
    c.conn.send(new TextEncoder().encode(text));
    this.run(ms, () => c.data.slice(before).includes(`echo:${text}`));
    return c.data.slice(before).includes(`echo:${text}`);
  }

  /** Forgets a client (closing it first). */
  drop(c: NetClient): void {
    if (c.conn.state !== "closed") c.conn.close();
    this.run(10);
    this.clients.delete(peerKey(c.peer));
  }
}

/** The byte ranges [start, end) of a datagram's records (stops at the first one that does not fit). */
export function recordRanges(d: Uint8Array): [number, number][] {
  const out: [number, number][] = [];
  let at = 0;
  while (at + 13 <= d.length) {
    const len = (d[at + 11]! << 8) | d[at + 12]!;
    const end = at + 13 + len;
    if (end > d.length) break;
    out.push([at, end]);
    at = end;
  }
  return out;
}
