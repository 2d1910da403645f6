/**
 * Sans-I/O test harness: our client Connection and a ServerCore joined by an
 * in-memory datagram pipe with a fake clock, and optional loss, reordering,
 * duplication driven by a seeded PRNG (so failures reproduce).
 */
import { copyBytes } from "../../src/util/bytes.ts";
import { Connection } from "../../src/dtls/connection.ts";
import type { DtlsError } from "../../src/dtls/errors.ts";
import { ClientHandshake, type ClientAuth, type ClientResumption } from "../../src/dtls/handshake-client.ts";
import type { SavedSession } from "../../src/dtls/resumption-options.ts";
import { DEFAULT_RETRANSMIT, type ClientPskConfig, type ConnectionConfig, type ConnectionInfo } from "../../src/dtls/options.ts";
import { ServerCore, type Peer, type ServerCoreConfig, type ServerSession } from "../../src/dtls/server-core.ts";
import { suiteByName, SUITE_NAMES, type SuiteName } from "../../src/dtls/suites.ts";

export function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x1_0000_0000;
  };
}

export interface NetworkConditions {
  loss?: number;
  duplicate?: number;
  reorder?: number;
  /** Extra delay range for reordered datagrams (ms). */
  jitterMs?: number;
  seed?: number;
}

interface InFlight {
  at: number;
  order: number;
  to: "client" | "server";
  data: Uint8Array;
}

export const CLIENT_PEER: Peer = { address: "192.0.2.1", port: 40000 };
export const PSK_ID = "device-1";
export const PSK_KEY = new Uint8Array(Buffer.from("000102030405060708090a0b0c0d0e0f", "hex"));

export function connectionConfig(over: Partial<ConnectionConfig> = {}): ConnectionConfig {
  return {
    suites: SUITE_NAMES.map(suiteByName),
    mtu: 1200,
    requireExtendedMasterSecret: false,
    retransmit: DEFAULT_RETRANSMIT,
    idleTimeoutMs: 0,
    ...over,
  };
}

export function serverConfig(over: Partial<ServerCoreConfig> = {}): ServerCoreConfig {
  return {
    ...connectionConfig(),
    psk: { lookup: (id) => (id === PSK_ID ? PSK_KEY : undefined) },
    maxHandshakes: 100,
    maxSessions: 1000,
    ...over,
  };
}

export class Pipe {
  now = 0;
  private order = 0;
  private readonly queue: InFlight[] = [];
  private readonly rand: () => number;
  readonly cond: Required<NetworkConditions>;
  readonly server: ServerCore;
  client!: Connection;
  clientInfo: ConnectionInfo | undefined;
  clientClosed: DtlsError | undefined | null = null;
  serverSession: ServerSession | undefined;
  readonly serverData: Uint8Array[] = [];
  readonly clientData: Uint8Array[] = [];
  readonly serverErrors: DtlsError[] = [];
  serverClosed: DtlsError | undefined | null = null;
  datagrams = { toServer: 0, toClient: 0 };
  /** Every datagram the server sent, for inspection. */
  readonly sentByServer: Uint8Array[] = [];
  /** Hook to replace or drop client->server datagrams (return undefined to drop). */
  tamperToServer: ((d: Uint8Array) => Uint8Array | undefined) | undefined;
  /** Hook to replace or drop server->client datagrams (return undefined to drop). */
  tamperToClient: ((d: Uint8Array) => Uint8Array | undefined) | undefined;
  /** The client's newest resumable session (when started with `resumption`). */
  clientSession: SavedSession | undefined;

  constructor(cond: NetworkConditions = {}, server: Partial<ServerCoreConfig> = {}) {
    this.cond = { loss: 0, duplicate: 0, reorder: 0, jitterMs: 50, seed: 1, ...cond };
    this.rand = prng(this.cond.seed);
    this.server = new ServerCore(
      serverConfig(server),
      {
        send: (_peer, d) => {
          this.sentByServer.push(d);
          this.enqueue("client", d);
        },
        established: (s) => {
          this.serverSession = s;
          s.listener = {
            deliver: (d) => this.serverData.push(copyBytes(d)),
            ended: (e) => {
              this.serverClosed = e;
            },
          };
        },
        handshakeFailed: (_peer, e) => this.serverErrors.push(e),
      },
      0,
    );
  }

  startClient(
    config: Partial<ConnectionConfig> = {},
    psk: ClientPskConfig | undefined = { identity: PSK_ID, key: PSK_KEY },
    verifyServer?: ClientAuth["verifyServer"],
    certificate?: ClientAuth["certificate"],
    resumption?: Omit<ClientResumption, "onSession">,
  ): void {
    this.client = new Connection(
      "client",
      connectionConfig(config),
      {
        sendDatagram: (d) => this.enqueue("server", d),
        established: (info) => {
          this.clientInfo = info;
        },
        data: (d) => this.clientData.push(copyBytes(d)),
        closed: (e) => {
          this.clientClosed = e;
        },
      },
      this.now,
    );
    const r: ClientResumption | undefined =
      resumption === undefined
        ? undefined
        : {
            ...resumption,
            onSession: (saved) => {
              this.clientSession = saved;
            },
          };
    this.client.attach(new ClientHandshake(this.client, { psk, verifyServer, certificate }, this.now, r));
  }

  enqueue(to: "client" | "server", d: Uint8Array): void {
    if (to === "server") {
      this.datagrams.toServer++;
      if (this.tamperToServer) {
        const t = this.tamperToServer(d);
        if (t === undefined) return;
        d = t;
      }
    } else {
      this.datagrams.toClient++;
      if (this.tamperToClient) {
        const t = this.tamperToClient(d);
        if (t === undefined) return;
        d = t;
      }
    }
    if (this.rand() < this.cond.loss) return;
    const copies = this.rand() < this.cond.duplicate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const delay = this.rand() < this.cond.reorder ? 1 + this.rand() * this.cond.jitterMs : 1;
      this.queue.push({ at: this.now + delay, order: this.order++, to, data: copyBytes(d) });
    }
  }

  /** Delivers datagrams and fires timers until nothing is left or `untilMs` passes. */
  run(untilMs = 300_000, stop: () => boolean = () => false): void {
    const end = this.now + untilMs;
    for (let guard = 0; guard < 1_000_000; guard++) {
      if (stop()) return;
      this.queue.sort((a, b) => a.at - b.at || a.order - b.order);
      const next = this.queue[0];
      const timers = [this.client?.nextTimeout(), this.server.nextTimeout()].filter((t): t is number => t !== undefined);
      const timerAt = timers.length > 0 ? Math.min(...timers) : undefined;
      if (next === undefined && timerAt === undefined) return;
      const at = Math.min(next?.at ?? Infinity, timerAt ?? Infinity);
      if (at > end) {
        this.now = end;
        return;
      }
      this.now = Math.max(this.now, at);
      if (next !== undefined && next.at <= this.now) {
        this.queue.shift();
        if (next.to === "server") this.server.receive(CLIENT_PEER, next.data, this.now);
        else this.client.receive(next.data, this.now);
      } else {
        this.client?.timeout(this.now);
        this.server.timeout(this.now);
      }
    }
    throw new Error("pipe did not settle");
  }

  runUntilEstablished(untilMs = 300_000): boolean {
    this.run(untilMs, () => this.clientInfo !== undefined && this.serverSession !== undefined);
    return this.clientInfo !== undefined && this.serverSession !== undefined;
  }
}

export function suites(...names: SuiteName[]) {
  return names.map(suiteByName);
}
