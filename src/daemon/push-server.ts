import {
  DEFAULT_RESUMPTION,
  DEFAULT_SERVER_SOCKETS,
  listen,
  type ConnectionReceiver,
  type DtlsConnection,
  type DtlsServer,
  type ListenOptions,
} from "../dtls/index.ts";
import type { ServerResumptionOptions } from "../dtls/resumption-options.ts";
import type { Store } from "../store/types.ts";
import type { ClusterStore } from "../store/cluster-types.ts";
import { DeviceRegistry, KeyRing, SigningPool, TicketKeyRing } from "../auth/index.ts";
import { DeliveryEngine, type PublishRequest, type PublishResult, type SessionLink } from "../messaging/delivery-engine.ts";
import type { DeliveryOptions } from "../messaging/options.ts";
import type { DeliveryObserver } from "../messaging/observer.ts";
import type { Clock } from "../util/clock.ts";
import type { CryptoProvider } from "../crypto/index.ts";
import { DeadlineTimer, EndOfTurn, TurnPacer } from "../util/turn.ts";

/**
 * The push server: the DTLS endpoint, the device registry (PSK keys and
 * certificate authorization come from it), the signing keys and the delivery
 * engine, wired to real sockets and one timer.
 */
export interface PushServerOptions {
  readonly store: Store;
  /**
   * The cluster view of a shared store (`clusterOf`, the store object itself
   * unwrapped): the engine then holds only the devices whose sessions this
   * node has, and follows the other nodes' events (docs/cluster.md).
   */
  readonly cluster?: ClusterStore;
  /** where and how to listen; psk lookup and client authorization come from the registry, ticket keys from the store */
  readonly dtls: Omit<ListenOptions, "psk" | "authorizeClient" | "resumption" | "crypto"> & {
    readonly psk?: boolean;
    readonly resumption?: PushResumptionOptions;
  };
  readonly delivery?: Partial<DeliveryOptions>;
  /** metrics sink of the delivery engine */
  readonly observer?: DeliveryObserver;
  /** wall clock (ms since the epoch); default Date.now */
  readonly clock?: Clock;
  /** worker threads that make the content signatures; 0 (default) signs on the main thread */
  readonly signingWorkers?: number;
  /** the crypto provider of the key rings, the delivery engine's ids and the DTLS engine (default: the Node one, src/crypto) */
  readonly crypto?: CryptoProvider;
  /**
   * Sessions saved by an earlier process (PushServer.suspend), taken over
   * right after the endpoint listens, before it reads a datagram. The caller
   * must have deleted them durably first (never restore the same bytes twice).
   */
  readonly restoreSessions?: readonly Uint8Array[];
  /** a ticket key rotation that failed (the store refused it); it is retried at the next interval */
  readonly onTicketKeyError?: (error: unknown) => void;
}

/**
 * Session resumption as the push server runs it: the engine's settings, the
 * ticket keys kept in the store (a TicketKeyRing, rotated by this server's
 * timer) instead of a source of one's own.
 */
export interface PushResumptionOptions extends Omit<ServerResumptionOptions, "ticketKeys"> {
  /** How long one ticket key seals new tickets; default the ticket lifetime. */
  readonly ticketKeyRotationMs?: number;
}

/** What the ticket keys did since start (for metrics). */
export interface TicketKeyStats {
  /** keys generated and stored */
  added: number;
  /** retired keys deleted */
  retired: number;
  /** rotations the store refused (retried at the next interval) */
  failures: number;
}

export interface PushServer {
  readonly engine: DeliveryEngine;
  readonly registry: DeviceRegistry;
  readonly dtls: DtlsServer;
  /** signs pushed content; its JWKS goes to devices */
  readonly contentKeys: KeyRing;
  /** signs device session tokens */
  readonly sessionKeys: KeyRing;
  /** signs publisher (API) tokens */
  readonly publisherKeys: KeyRing;
  /** the worker pool that makes content signatures; undefined when they are made on the main thread */
  readonly signing: SigningPool | undefined;
  /** the session-ticket keys (in the store); undefined with resumption off */
  readonly ticketKeys: TicketKeyRing | undefined;
  readonly ticketKeyStats: Readonly<TicketKeyStats>;
  address(): { address: string; port: number; family: string };
  publish(req: PublishRequest): Promise<PublishResult>;
  /** Bye to every device, close_notify, final commit, socket closed, signing workers ended. */
  close(): Promise<void>;
  /**
   * The orderly stop that keeps the sessions (a restart the devices do not
   * notice): no Bye and no close_notify; the final commit, what it released
   * sent, then every established session exported (its DTLS state and its
   * engine link) and retired, the socket closed, signing workers ended.
   * Returns the sessions' snapshots (they hold session keys: seal them).
   */
  suspend(): Promise<Uint8Array[]>;
  /** What `restoreSessions` gave: sessions taken over, and refused by cause. */
  readonly restored: { readonly restored: number; readonly refused: Readonly<Record<string, number>> };
}

const wallClock: Clock = { now: () => Date.now() };
/**
 * Sessions sent to per event-loop turn and server socket before the rest waits for the next turn:
 * libuv reads at most 32 datagrams from a UDP socket per turn (the measured reason is in
 * src/util/turn.ts, TurnPacer).
 */
const SENDS_PER_TURN_PER_SOCKET = 32;

export async function startPushServer(o: PushServerOptions): Promise<PushServer> {
  const clock = o.clock ?? wallClock;
  const { store } = o;
  const registry = await DeviceRegistry.open(store, clock);
  const now = clock.now();
  const ringOptions = { now, crypto: o.crypto };
  const contentKeys = await KeyRing.open(store, "content", ringOptions);
  const sessionKeys = await KeyRing.open(store, "session", ringOptions);
  const publisherKeys = await KeyRing.open(store, "publisher", ringOptions);
  const ticketKeys = await openTicketKeys(store, o.dtls.resumption);
  const signing = (o.signingWorkers ?? 0) > 0 ? await SigningPool.start(contentKeys, o.signingWorkers ?? 0) : undefined;
  try {
    return await serve(o, { clock, registry, contentKeys, sessionKeys, publisherKeys, signing, ticketKeys });
  } catch (e) {
    await signing?.close();
    throw e;
  }
}

/** The ticket keys in the store, unless resumption is off. */
async function openTicketKeys(store: Store, r: PushResumptionOptions | undefined): Promise<TicketKeyRing | undefined> {
  if (r?.enabled === false) return undefined;
  const ticketLifetimeMs = r?.ticketLifetimeMs ?? DEFAULT_RESUMPTION.ticketLifetimeMs;
  return TicketKeyRing.open(store, {
    rotationMs: r?.ticketKeyRotationMs ?? ticketLifetimeMs,
    ticketLifetimeMs,
    ...(r?.wallClock === undefined ? {} : { wallClock: r.wallClock }),
  });
}

/** Rotates the ticket keys from a timer (through the store); returns the stop function. */
function rotateTicketKeys(ring: TicketKeyRing, stats: TicketKeyStats, onError: ((error: unknown) => void) | undefined): () => void {
  let stopped = false;
  const timer = setInterval(() => {
    ring.maintain().then(
      (m) => {
        stats.added += m.added;
        stats.retired += m.retired;
      },
      (e: unknown) => {
        if (stopped) return; // a run the closing store cut short
        stats.failures++;
        onError?.(e);
      },
    );
  }, ring.maintenanceIntervalMs);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

async function serve(
  o: PushServerOptions,
  keys: Pick<PushServer, "registry" | "contentKeys" | "sessionKeys" | "publisherKeys" | "signing" | "ticketKeys"> & { readonly clock: Clock },
): Promise<PushServer> {
  const { clock, registry, contentKeys, sessionKeys, publisherKeys, signing, ticketKeys } = keys;
  const { store } = o;

  // what leaves per turn matches what the loop can read back per turn (see SENDS_PER_TURN_PER_SOCKET)
  const perTurn = SENDS_PER_TURN_PER_SOCKET * (o.dtls.sockets ?? DEFAULT_SERVER_SOCKETS);
  let closed = false;
  const timer = new DeadlineTimer({
    clock,
    next: () => engine.nextDeadline(),
    fire: (now) => engine.onTimer(now),
    afterPoll: true, // acks already read are not retransmitted (see src/util/turn.ts)
  });
  // the engine's per-turn batch: one flush (store writes, then sends) at the end of the turn
  const endOfTurn = new EndOfTurn(() => {
    engine.flush();
    timer.arm();
  });
  const engine: DeliveryEngine = await DeliveryEngine.open({
    store,
    registry,
    contentKeys,
    ...(signing === undefined ? {} : { contentSigner: signing }),
    sessionKeys,
    clock,
    crypto: o.crypto,
    options: { pumpPerTurn: perTurn, ...o.delivery },
    ...(o.observer === undefined ? {} : { observer: o.observer }),
    ...(o.cluster === undefined ? {} : { cluster: o.cluster }),
    requestFlush: () => endOfTurn.request(),
  });

  const { psk: usePsk = true, resumption, ...listenOptions } = o.dtls;
  const { ticketKeyRotationMs: _rotation, ...engineResumption } = resumption ?? {};
  const dtls = await listen({
    ...listenOptions,
    ...(o.crypto === undefined ? {} : { crypto: o.crypto }),
    ...(usePsk ? { psk: { lookup: (identity: string) => registry.pskKey(identity) } } : {}),
    // a resumed session is authorized again through these same hooks: a revoked or removed device cannot resume
    authorizeClient: (identity: string) => registry.authorizeCertificate(identity),
    resumption: ticketKeys === undefined ? { ...engineResumption, enabled: false } : { ...engineResumption, ticketKeys },
  });
  const ticketKeyStats: TicketKeyStats = { added: 0, retired: 0, failures: 0 };
  const stopRotation = ticketKeys === undefined ? () => undefined : rotateTicketKeys(ticketKeys, ticketKeyStats, o.onTicketKeyError);
  const pacer = new TurnPacer<DtlsConnection>(perTurn, {
    send: (conn, records) => {
      if (!conn.closed) conn.sendBatch(records);
    },
    close: (conn) => conn.close(),
  });
  /**
   * One DTLS session wired to the engine: the engine's SessionLink and the
   * connection's receiver in one object of one field, its methods on the
   * prototype (this server's engine and pacer in their scope), so an idle
   * session costs this object and no closures, listeners or event tables
   * (measured in docs/bench.md, "memory per session").
   */
  class DeviceLink implements SessionLink, ConnectionReceiver {
    private readonly conn: DtlsConnection;

    constructor(conn: DtlsConnection) {
      this.conn = conn;
    }

    // read once per Hello: made from the connection's info on each read
    get identity(): string {
      return this.conn.info.identity;
    }

    get viaCertificate(): boolean {
      return this.conn.info.peerCertificate !== undefined;
    }

    /** For logs and presence events. */
    get peer(): string {
      const p = this.conn.info.peer;
      return `${p.address}:${p.port}`;
    }

    send(records: readonly Uint8Array[]): void {
      pacer.send(this.conn, records);
    }

    /** After the records queued before it (a Bye). */
    close(): void {
      pacer.close(this.conn);
    }

    /** ConnectionReceiver: a record from the device. */
    data(record: Uint8Array): void {
      engine.receive(this, record);
    }

    /** ConnectionReceiver: the session is over. */
    closed(): void {
      engine.detach(this);
    }
  }
  dtls.on("session", (conn: DtlsConnection) => {
    const link = new DeviceLink(conn);
    conn.setReceiver(link); // no "error" listener: a connection emits "error" only to listeners it has
    const saved = conn.restored;
    if (saved === undefined) engine.attach(link);
    else engine.attachRestored(link, saved); // carried over a restart: bound again without Hello
  });
  // before the first datagram is read (that is in a later turn): a restored device's records find their session
  const restored =
    o.restoreSessions === undefined || o.restoreSessions.length === 0 ? { restored: 0, refused: {} } : dtls.restoreSessions(o.restoreSessions);
  dtls.on("error", () => undefined);

  return {
    engine,
    registry,
    dtls,
    contentKeys,
    sessionKeys,
    publisherKeys,
    signing,
    ticketKeys,
    ticketKeyStats,
    address: () => dtls.address(),
    publish: (req) => engine.publish(req),
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      stopRotation();
      await engine.shutdown(); // the Byes are released once the last commit is durable
      pacer.drain(); // the Byes go out before close_notify
      timer.stop();
      await dtls.close();
      engine.flush();
      await engine.drained();
      await signing?.close(); // after the last publish: those still waiting for a signature fail (the engine is closed)
    },
    async suspend(): Promise<Uint8Array[]> {
      if (closed) return [];
      closed = true;
      stopRotation();
      timer.stop();
      await engine.suspend(); // the last commit is durable; what it released is in the pacer
      pacer.drain(); // sealed and sent now: nothing is sealed after the snapshot
      const snapshots = dtls.exportSessions((conn) => {
        const link = conn.currentReceiver;
        return link instanceof DeviceLink ? engine.exportLink(link) : undefined;
      });
      await dtls.close({ notify: false });
      await engine.drained();
      await signing?.close();
      return snapshots;
    },
    restored,
  };
}
