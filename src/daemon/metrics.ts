/**
 * Prometheus metrics of the daemon, on a registry of their own (never the
 * process-global one). Delivery counters and latency histograms are fed by the
 * engine through a DeliveryObserver; DTLS counters, sessions, devices online
 * and queue depth are read from the running server when scraped, so they
 * cost nothing between scrapes.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ServerStats } from "../dtls/index.ts";
import type { SigningPoolStats } from "../auth/index.ts";
import { ENGINE_FAILURES, FRAME_REFUSALS, HOLD_EVENTS, type DeliveryObserver } from "../messaging/observer.ts";
import type { ClusterEventKind } from "../store/cluster-types.ts";
import { LINK_RESTORE_OUTCOMES } from "../messaging/link-snapshot.ts";
import { SNAPSHOT_REFUSALS, type SnapshotRefusal } from "./session-snapshot-file.ts";
import type { BatchObserver, HttpObserver } from "./http/index.ts";
import type { Store, WorkerStore, WorkerStoreStats } from "../store/index.ts";
import type { RedisStore, RedisStoreStats } from "../store/redis-store.ts";
import type { PushServer } from "./push-server.ts";
import type { RedisHealth } from "./redis-health.ts";

export interface DaemonMetrics {
  /** give it to the delivery engine */
  readonly observer: DeliveryObserver;
  /** give it to the HTTP API: its error answers, by code; batch entries, by result */
  readonly http: HttpObserver & BatchObserver;
  /** the server whose DTLS stats, sessions, devices online and queue depth are read at scrape time (the last one attached) */
  attach(server: PushServer): void;
  /** reads the store's grouping stats at scrape time (a worker store has them; others are left out) */
  attachStore(store: Store): void;
  /** a saved-sessions file was refused at start (or deleted unread: "disabled") */
  snapshotRefused(cause: SnapshotRefusal | "disabled"): void;
  /** a check of Redis's reachability (cluster.redis_url): dtlspush_redis_up, _ping_seconds, _ping_failures_total */
  redisChecked(h: RedisHealth): void;
  /** this process is the cluster node `node` (store instance `instance`): dtlspush_cluster_node_info{node,instance} 1 */
  clusterNode(node: string, instance?: string): void;
  /** an event from the other nodes (the shared store's onClusterEvent): dtlspush_cluster_events_total{kind} */
  clusterEvent(kind: ClusterEventKind): void;
  /** reads the live nodes of the cluster at scrape time: dtlspush_cluster_nodes_alive */
  attachClusterNodes(count: () => Promise<number>): void;
  /** under `serve --workers`: this worker's index and how often the supervisor restarted it (it had died) */
  worker(index: number, restarts: number): void;
  /** the Content-Type of `text()` */
  readonly contentType: string;
  /** the exposition text (Prometheus text format 0.0.4) */
  text(): Promise<string>;
}

/** Network round trips: 0.5 ms (loopback) to 10 s (a congested cellular link). */
const RTT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** First transmission to ack: one RTT at best, retransmissions and reconnects at worst. */
const PUSH_TO_ACK_BUCKETS = [...RTT_BUCKETS, 30, 60, 300];
/** A store commit: tens of µs in memory, ms with fsync. */
const COMMIT_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

/** Every kind of cluster event (a new kind fails to compile until it is here): the kind label, exported at 0. */
const CLUSTER_EVENT_KINDS: Readonly<Record<ClusterEventKind, true>> = {
  queued: true,
  taken: true,
  subscriptions: true,
  registry: true,
  receipts: true,
  resync: true,
};
/** A scrape waits at most this for the live-node count (the last value is kept otherwise). */
const NODES_ALIVE_BOUND_MS = 1000;

/** Messages queued or in flight for all devices. */
function queueDepth(server: PushServer): number {
  return server.engine.queueDepthTotal();
}

/** Observes ms as seconds; a value that is not a finite non-negative number is ignored (observers never throw). */
function observeMs(h: Histogram, ms: number): void {
  if (Number.isFinite(ms) && ms >= 0) h.observe(ms / 1000);
}

export function createMetrics(): DaemonMetrics {
  const registry = new Registry();
  const registers = [registry];
  let server: PushServer | undefined;
  const stats = (): Readonly<ServerStats> | undefined => server?.dtls.stats;

  new Counter({
    name: "dtlspush_handshakes_total",
    help: 'DTLS handshakes by result ("ok" or the failure code) and suite ("" for failures)',
    labelNames: ["result", "suite"],
    registers,
    collect() {
      const s = stats();
      if (s === undefined) return;
      this.reset();
      for (const [suite, n] of Object.entries(s.handshakesBySuite)) this.inc({ result: "ok", suite }, n);
      for (const [code, n] of Object.entries(s.handshakeFailures)) this.inc({ result: code, suite: "" }, n);
    },
  });
  /** A counter read from the DTLS server's stats when scraped: one number, or numbers by one label. */
  const statsCounter = (
    name: string,
    help: string,
    read: (s: Readonly<ServerStats>) => number | Readonly<Record<string, number>>,
    label?: string,
  ): void => {
    new Counter({
      name,
      help,
      labelNames: label === undefined ? [] : [label],
      registers,
      collect() {
        const s = stats();
        if (s === undefined) return;
        this.reset();
        const v = read(s);
        if (typeof v === "number") this.inc(v);
        else for (const [k, n] of Object.entries(v)) this.inc({ [label ?? "cause"]: k }, n);
      },
    });
  };
  statsCounter("dtlspush_alerts_sent_total", "DTLS alerts sent, by description", (s) => s.alertsSent, "description");
  statsCounter("dtlspush_alerts_received_total", "DTLS alerts received, by description", (s) => s.alertsReceived, "description");
  statsCounter(
    "dtlspush_dtls_handshakes_refused_total",
    "Cookie-valid ClientHellos refused before a handshake started, by cause: over_capacity (dtls.max_handshakes / max_sessions), host_handshakes_exceeded (dtls.max_handshakes_per_host), host_sessions_exceeded (dtls.max_sessions_per_host), handshake_memory_exceeded (dtls.handshake_memory_bytes)",
    (s) => s.refusals,
    "cause",
  );
  statsCounter(
    "dtlspush_dtls_handshakes_resumed_total",
    "DTLS handshakes that resumed a session (abbreviated: a session ticket or a cached session ID); also counted in dtlspush_handshakes_total",
    (s) => s.handshakesResumed,
  );
  statsCounter(
    "dtlspush_dtls_resumptions_refused_total",
    "Session tickets and session IDs offered that did not resume their session (a full handshake followed), by cause: unknown_key (its ticket key retired or is not ours), bad_ticket (forged, tampered), ticket_expired (dtls.ticket_lifetime_seconds), session_too_old (dtls.max_session_age_seconds), suite_not_offered, ems_mismatch, psk_unknown (the device was revoked or removed), psk_changed, client_refused (its certificate is refused now), unknown_session_id",
    (s) => s.resumptionsRefused,
    "cause",
  );
  statsCounter(
    "dtlspush_dtls_sessions_restored_total",
    "DTLS sessions taken over at start from the sessions saved by the previous orderly stop (dtls.keep_sessions_on_restart): no handshake",
    (s) => s.sessionsRestored,
  );
  statsCounter(
    "dtlspush_dtls_sessions_restore_refused_total",
    "Saved DTLS sessions not taken over at start, by cause: not_server, suite_not_configured (dtls.suites changed), cid_length (dtls.connection_id_length changed), cid_in_use, address_in_use, over_capacity (dtls.max_sessions), host_sessions_exceeded (dtls.max_sessions_per_host), damaged",
    (s) => s.restoresRefused,
    "cause",
  );
  statsCounter(
    "dtlspush_dtls_sessions_saved_total",
    "DTLS sessions saved by this process's orderly stop (read it in the stop's log line: the process exits right after)",
    (s) => s.sessionsExported,
  );
  for (const [name, key, help] of [
    ["dtlspush_dtls_handshakes_in_progress", "handshakesInProgress", "DTLS handshakes in progress (after a valid cookie)"],
    [
      "dtlspush_dtls_handshake_memory_bytes",
      "handshakeMemoryBytes",
      "Bytes the DTLS handshakes in progress hold, counted against dtls.handshake_memory_bytes",
    ],
    ["dtlspush_dtls_session_cache_size", "sessionCacheSize", "Sessions in the DTLS session-ID cache (at most dtls.session_cache_size)"],
  ] as const) {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        const s = stats();
        if (s !== undefined) this.set(s[key]);
      },
    });
  }
  statsCounter(
    "dtlspush_dtls_hello_verify_requests_total",
    "HelloVerifyRequests sent (answers to first ClientHellos; rate limited by dtls.hello_verify_rate_per_second / _per_prefix)",
    (s) => s.helloVerifyRequestsSent,
  );
  statsCounter(
    "dtlspush_dtls_datagrams_dropped_total",
    "Datagrams from peers without a session that were not a usable ClientHello (garbage, stray records of a lost session, malformed ClientHellos), dropped before any state",
    (s) => s.datagramsDropped,
  );
  statsCounter(
    "dtlspush_dtls_records_dropped_total",
    'Protected records from peers with a session dropped unread, by cause ("replayed": seen before or too old for the replay window; "unauthenticated": forged or corrupted; "cid_mismatch" / "cid_missing": a Connection ID where none or another is due, or none where one is; "bad_inner_plaintext": no real content type inside)',
    (s) => s.recordsDropped,
    "cause",
  );
  statsCounter(
    "dtlspush_dtls_address_changes_total",
    "Sessions moved to a new device address by a newer authenticated record carrying their Connection ID (NAT rebinding, RFC 9146 6)",
    (s) => s.addressChanges,
  );
  statsCounter(
    "dtlspush_dtls_address_changes_refused_total",
    'Datagrams carrying a session\'s Connection ID from another address that did not move it, by cause ("unauthenticated": forged, replayed or garbage; "not_newer": authentic but older than the newest record; "not_established"; "address_in_use")',
    (s) => s.addressChangesRefused,
    "cause",
  );
  statsCounter(
    "dtlspush_dtls_unknown_connection_ids_total",
    "Datagrams whose Connection ID names no session (stale after a restart, or made up), dropped",
    (s) => s.unknownConnectionIds,
  );
  statsCounter(
    "dtlspush_dtls_client_hellos_dropped_total",
    'ClientHellos from peers without a session dropped before any crypto, by cause ("global_limit", "prefix_limit", "duplicate", "turn_limit")',
    (s) => s.clientHellosDropped,
    "cause",
  );
  new Counter({
    name: "dtlspush_dtls_forwarded_total",
    help: 'DTLS records forwarded between the workers of `serve --workers` by their Connection ID\'s worker prefix: "out" sent to the worker holding the session, "in" taken from another worker',
    labelNames: ["direction"],
    registers,
    collect() {
      const f = server?.dtls.forwardStats;
      if (f === undefined) return;
      this.reset();
      this.inc({ direction: "out" }, f.forwarded);
      this.inc({ direction: "in" }, f.received);
    },
  });
  new Counter({
    name: "dtlspush_dtls_forward_dropped_total",
    help: "DTLS records not forwarded between workers, by cause: unknown_prefix (no live worker holds the CID's prefix: it died, or the CID is made up), rate_limit (over cluster.forward_rate_per_second), bad_forward (a datagram on the forwarding socket not from a worker, or malformed), not_owner (forwarded here for another worker)",
    labelNames: ["cause"],
    registers,
    collect() {
      const f = server?.dtls.forwardStats;
      if (f === undefined) return;
      this.reset();
      for (const [cause, n] of Object.entries(f.dropped)) this.inc({ cause }, n);
    },
  });
  new Gauge({
    name: "dtlspush_sessions",
    help: "Established DTLS sessions",
    registers,
    collect() {
      if (server !== undefined) this.set(server.dtls.sessions());
    },
  });
  new Gauge({
    name: "dtlspush_dtls_sockets",
    help: "UDP sockets sharing the DTLS port",
    registers,
    collect() {
      if (server !== undefined) this.set(server.dtls.socketCount);
    },
  });
  new Gauge({
    name: "dtlspush_dtls_socket_buffer_bytes",
    help: "Buffer size of each DTLS socket as the kernel granted it (it caps the request at rmem_max / wmem_max)",
    labelNames: ["direction"],
    registers,
    collect() {
      if (server === undefined) return;
      const b = server.dtls.socketBuffers();
      this.set({ direction: "receive" }, b.recv);
      this.set({ direction: "send" }, b.send);
    },
  });
  new Gauge({
    name: "dtlspush_devices_online",
    help: "Devices with a live session",
    registers,
    collect() {
      if (server !== undefined) this.set(server.engine.onlineCount());
    },
  });
  new Gauge({
    name: "dtlspush_queue_depth",
    help: "Messages queued or in flight, all devices",
    registers,
    collect() {
      if (server !== undefined) this.set(queueDepth(server));
    },
  });

  /** A counter set at scrape time from a running total some component keeps (absent while `read` gives undefined). */
  const totalCounter = (name: string, help: string, read: () => number | undefined): void => {
    new Counter({
      name,
      help,
      registers,
      collect() {
        const total = read();
        if (total === undefined) return;
        this.reset();
        this.inc(total);
      },
    });
  };

  /** the store's grouping stats (a worker store has them; memory does not) */
  let storeStats: Readonly<WorkerStoreStats> | undefined;
  let redisStats: Readonly<RedisStoreStats> | undefined;
  /** the Redis store's outage mode (cluster.md "When Redis fails") */
  let redisOutage: Pick<RedisStore, "available" | "outageSeconds"> | undefined;
  totalCounter(
    "dtlspush_store_commits_total",
    "Batches committed by the store (one per engine turn with changes)",
    () => storeStats?.commits ?? redisStats?.commits,
  );
  totalCounter(
    "dtlspush_redis_commands_total",
    "Commands and scripts the Redis store sent (pipelined: several leave in one write; with dtlspush_store_commits_total, the commands per commit)",
    () => redisStats?.commands,
  );
  new Gauge({
    name: "dtlspush_store_available",
    help: "1 while the shared store (Redis) takes calls, 0 while it is unreachable (publishes answer 503 store_unavailable) or failed",
    registers,
    collect() {
      if (redisOutage !== undefined) this.set(redisOutage.available ? 1 : 0);
    },
  });
  totalCounter(
    "dtlspush_store_outages_total",
    "Times the store's connection to Redis was lost (each an outage until it is back)",
    () => redisStats?.outages,
  );
  totalCounter("dtlspush_store_outage_seconds_total", "Seconds the store spent unreachable (Redis away), the current outage included", () =>
    redisOutage?.outageSeconds(),
  );
  totalCounter(
    "dtlspush_store_commits_replayed_total",
    "Commits sent to Redis again after a reconnection (their first attempt was not applied; the fence decided)",
    () => redisStats?.replayed,
  );
  totalCounter(
    "dtlspush_store_unavailable_refusals_total",
    "Store calls refused at once with store_unavailable while Redis was unreachable (the 503s they became are in dtlspush_http_errors_total)",
    () => redisStats?.unavailableRefusals,
  );
  totalCounter(
    "dtlspush_store_transactions_total",
    "SQLite transactions of the store thread: group commits (commits / transactions = batches per group)",
    () => storeStats?.transactions,
  );
  new Gauge({
    name: "dtlspush_store_largest_group",
    help: "The most batches one store transaction has held since start (group commit)",
    registers,
    collect() {
      if (storeStats !== undefined) this.set(storeStats.largestGroup);
    },
  });

  // DTLS session-ticket keys in the store (absent with dtls.resumption off)
  totalCounter(
    "dtlspush_dtls_ticket_key_rotation_failures_total",
    "Ticket key rotations the store refused (retried at the next interval; the keys held go on sealing until their notAfter, then no tickets are issued)",
    () => (server?.ticketKeys === undefined ? undefined : server.ticketKeyStats.failures),
  );
  new Gauge({
    name: "dtlspush_dtls_ticket_keys",
    help: "Session-ticket keys held (the one sealing, the next, and retired ones still opening tickets)",
    registers,
    collect() {
      if (server?.ticketKeys !== undefined) this.set(server.ticketKeys.keys().length);
    },
  });

  /** the content-signing pool's stats (absent while the main thread signs) */
  const signing = (): Readonly<SigningPoolStats> | undefined => server?.signing?.stats;
  totalCounter(
    "dtlspush_signing_worker_failures_total",
    "Content-signing workers that crashed, threw or exited and were replaced",
    () => signing()?.workerFailures,
  );
  totalCounter(
    "dtlspush_signing_failed_total",
    "Publishes that failed (500 internal) because the content-signing worker holding their signature failed",
    () => signing()?.failedByWorkerFailure,
  );
  totalCounter("dtlspush_signing_worker_signatures_total", "Content signatures made by the signing workers", () => signing()?.signed);
  new Gauge({
    name: "dtlspush_signing_workers",
    help: "Content-signing worker threads running (0: the main thread signs)",
    registers,
    collect() {
      if (server !== undefined) this.set(server.signing?.liveWorkers ?? 0);
    },
  });

  const pushesSent = new Counter({ name: "dtlspush_pushes_sent_total", help: "Pushes sent for the first time", registers });
  const pushesRetransmitted = new Counter({
    name: "dtlspush_pushes_retransmitted_total",
    help: "Pushes sent again after a retransmission timeout",
    registers,
  });
  const pushesAcked = new Counter({ name: "dtlspush_pushes_acked_total", help: "Pushes acknowledged by their device", registers });
  const pushesExpired = new Counter({
    name: "dtlspush_pushes_expired_total",
    help: "Messages expired or evicted before their device acked them",
    registers,
  });
  const pushesRejected = new Counter({ name: "dtlspush_pushes_rejected_total", help: "Pushes refused by their device", registers });
  const published = new Counter({ name: "dtlspush_published_total", help: "Messages accepted from publishers (API or device uplink)", registers });
  const rtt = new Histogram({ name: "dtlspush_rtt_seconds", help: "Round-trip time samples of device sessions", buckets: RTT_BUCKETS, registers });
  const pushToAck = new Histogram({
    name: "dtlspush_push_to_ack_seconds",
    help: "Time from a push's first transmission to its ack",
    buckets: PUSH_TO_ACK_BUCKETS,
    registers,
  });
  const storeCommit = new Histogram({
    name: "dtlspush_store_commit_seconds",
    help: "Wall time of store commits, from the call until durable (with the wait behind commits in flight before it)",
    buckets: COMMIT_BUCKETS,
    registers,
  });
  const framesRefused = new Counter({
    name: "dtlspush_device_frames_refused_total",
    help: "Frames (or fields of frames) from devices refused: answered with an Error, nothing stored; by cause",
    labelNames: ["cause"],
    registers,
  });
  const engineFailures = new Counter({
    name: "dtlspush_engine_failures_total",
    help: "Operations of the delivery engine that failed and were isolated (a device's session, a publish, a listener); by cause",
    labelNames: ["cause"],
    registers,
  });
  // every cause is exported from the start (at 0), so an alert rule can be written before the first attack
  for (const cause of FRAME_REFUSALS) framesRefused.inc({ cause }, 0);
  for (const cause of ENGINE_FAILURES) engineFailures.inc({ cause }, 0);
  const snapshotsRefused = new Counter({
    name: "dtlspush_session_snapshots_refused_total",
    help: "Saved-sessions files refused at start (the daemon started without them; devices resume or handshake), by cause: too_old (dtls.session_snapshot_max_age_seconds), other_key (sealed with another data directory's key), other_version, damaged, disabled (dtls.keep_sessions_on_restart is off: deleted unread)",
    labelNames: ["cause"],
    registers,
  });
  for (const cause of [...SNAPSHOT_REFUSALS, "disabled"]) snapshotsRefused.inc({ cause }, 0);
  const linksRestored = new Counter({
    name: "dtlspush_restored_sessions_links_total",
    help: "Device sessions carried over a daemon restart as the delivery engine took them: bound again without Hello, unbound, or ended with Bye (device_unknown, device_revoked, damaged)",
    labelNames: ["outcome"],
    registers,
  });
  for (const outcome of LINK_RESTORE_OUTCOMES) linksRestored.inc({ outcome }, 0);

  const httpErrors = new Counter({
    name: "dtlspush_http_errors_total",
    help: "HTTP API error answers by code (docs/http-api.md) and status: refused, malformed and failed requests",
    labelNames: ["code", "status"],
    registers,
  });

  const batchEntries = new Counter({
    name: "dtlspush_http_batch_entries_total",
    help: "Entries of batch publishes (POST /v1/messages) by result: published, or the code of the entry's error",
    labelNames: ["result"],
    registers,
  });
  batchEntries.inc({ result: "published" }, 0);

  // Redis (only with cluster.redis_url): exported from the first check on
  const redisUp = new Gauge({
    name: "dtlspush_redis_up",
    help: "1 when the last PING of Redis (every second, own connection) was answered within 1 s, else 0",
    registers,
  });
  const redisPing = new Histogram({
    name: "dtlspush_redis_ping_seconds",
    help: "Round trip of the reachability PINGs to Redis (its latency as this node sees it)",
    buckets: COMMIT_BUCKETS,
    registers,
  });
  const redisPingFailures = new Counter({
    name: "dtlspush_redis_ping_failures_total",
    help: "Reachability PINGs to Redis not answered within 1 s (Redis down, unreachable or stalled)",
    registers,
  });
  const clusterNode = new Gauge({
    name: "dtlspush_cluster_node_info",
    help: "This process's cluster node id (cluster.node_id or the one kept in data_dir) and store instance (what GET /v1/devices shows as node), as labels; value 1",
    labelNames: ["node", "instance"],
    registers,
  });
  // cluster (a shared store): this node's holds, the other nodes' events, the nodes alive
  new Gauge({
    name: "dtlspush_cluster_devices_held",
    help: "Devices whose session (and live queue) this node holds on the shared store",
    registers,
    collect() {
      if (clustered && server !== undefined) this.set(server.engine.heldDevices().length);
    },
  });
  const holds = new Counter({
    name: "dtlspush_cluster_holds_total",
    help: "Device holds on the shared store by event: claimed (a Hello here), released (the session ended here), taken (another node claimed a device this node held: its session moved), merged (another node's deliveries for a held device read in)",
    labelNames: ["event"],
    registers,
  });
  const clusterEvents = new Counter({
    name: "dtlspush_cluster_events_total",
    help: "Events received from the other nodes (Redis pub/sub hints), by kind; resync: the event connection came back and the state was read again",
    labelNames: ["kind"],
    registers,
  });
  let clusterNodes: (() => Promise<number>) | undefined;
  let clustered = false;
  new Gauge({
    name: "dtlspush_cluster_nodes_alive",
    help: "Nodes (store instances) alive on the shared store, as its liveness keys say (a killed node drops out within the key's lifetime, 5 s)",
    registers,
    async collect() {
      if (clusterNodes === undefined) return;
      let timer: NodeJS.Timeout | undefined;
      try {
        const n = await Promise.race([
          clusterNodes(),
          new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), NODES_ALIVE_BOUND_MS))),
        ]);
        if (n !== undefined) this.set(n);
      } catch {
        // Redis unreachable: dtlspush_redis_up says so; the last value stays
      } finally {
        clearTimeout(timer);
      }
    },
  });

  const workerRestarts = new Gauge({
    name: "dtlspush_worker_restarts",
    help: "Under serve --workers: times the supervisor restarted this worker (it died: crash, kill, store failure) before this start; the worker's index as a label",
    labelNames: ["worker"],
    registers,
  });

  collectDefaultMetrics({ register: registry });

  const observer: DeliveryObserver = {
    pushSent: () => pushesSent.inc(),
    pushRetransmitted: () => pushesRetransmitted.inc(),
    pushAcked: (latencyMs) => {
      pushesAcked.inc();
      observeMs(pushToAck, latencyMs);
    },
    pushExpired: () => pushesExpired.inc(),
    pushRejected: () => pushesRejected.inc(),
    rttSample: (ms) => observeMs(rtt, ms),
    storeCommit: (ms) => observeMs(storeCommit, ms),
    published: () => published.inc(),
    frameRefused: (cause) => framesRefused.inc({ cause }),
    engineFailure: (cause) => engineFailures.inc({ cause }),
    linkRestored: (outcome) => linksRestored.inc({ outcome }),
    holdEvent: (event) => holds.inc({ event }),
  };

  return {
    observer,
    snapshotRefused: (cause) => snapshotsRefused.inc({ cause }),
    http: {
      httpError: (code, status) => httpErrors.inc({ code, status: String(status) }),
      batchEntries: (result, n) => batchEntries.inc({ result }, n),
    },
    redisChecked(h: RedisHealth): void {
      redisUp.set(h.reachable ? 1 : 0);
      if (h.reachable && h.latencyMs !== undefined) observeMs(redisPing, h.latencyMs);
      if (!h.reachable) redisPingFailures.inc();
    },
    worker(index: number, restarts: number): void {
      workerRestarts.set({ worker: String(index) }, restarts);
    },
    clusterNode(node: string, instance = ""): void {
      clustered = true;
      clusterNode.reset();
      clusterNode.set({ node, instance }, 1);
      for (const event of HOLD_EVENTS) holds.inc({ event }, 0);
      for (const kind of Object.keys(CLUSTER_EVENT_KINDS) as ClusterEventKind[]) clusterEvents.inc({ kind }, 0);
    },
    clusterEvent(kind: ClusterEventKind): void {
      clusterEvents.inc({ kind });
    },
    attachClusterNodes(count: () => Promise<number>): void {
      clusterNodes = count;
    },
    attach(s: PushServer): void {
      server = s;
    },
    attachStore(store: Store): void {
      const stats = (store as Partial<WorkerStore>).stats;
      // a worker store's grouping stats; a Redis store's have commits and commands, no transactions
      storeStats = stats !== undefined && typeof stats.commits === "number" && typeof stats.transactions === "number" ? stats : undefined;
      const redis = (store as { stats?: Partial<RedisStoreStats> }).stats;
      redisStats =
        store.kind === "redis" && typeof redis?.commands === "number" && typeof redis.commits === "number" ? (redis as RedisStoreStats) : undefined;
      const outage = store as Partial<Pick<RedisStore, "available" | "outageSeconds">>;
      redisOutage =
        store.kind === "redis" && typeof outage.outageSeconds === "function"
          ? (outage as Pick<RedisStore, "available" | "outageSeconds">)
          : undefined;
    },
    contentType: registry.contentType,
    text: () => registry.metrics(),
  };
}
