/**
 * The daemon as `dtlspush serve` runs it: configuration checked, credentials
 * loaded (development ones generated on first run), the data directory
 * opened, the push server (DTLS + delivery engine), the HTTP API, metrics,
 * logs and the periodic store prune, and the lifecycle (drain on stop,
 * reload of certificates and the device registry).
 */
import { createServer, type AddressInfo } from "node:net";
import type { Receipt, Store } from "../store/types.ts";
import { clusterOf } from "../store/cluster-types.ts";
import { CidForwarder } from "../dtls/index.ts";
import {
  loadCredentials,
  settingLabel,
  signingWorkers,
  storeBackend,
  toDeliveryOptions,
  toDtlsOptions,
  type DaemonConfig,
  type DtlsCredentials,
} from "./config/index.ts";
import type { RedisUrl } from "./config/redis-url.ts";
import { ConfigError } from "./config/errors.ts";
import { nodeIdFor, openDataDir, type DataDir } from "./data-dir.ts";
import { startHttpApi, type HttpApi } from "./http/index.ts";
import { createLogger, logDaemonEvents, type Logger } from "./logger.ts";
import { createMetrics, type DaemonMetrics } from "./metrics.ts";
import { startPushServer, type PushServer } from "./push-server.ts";
import { startRedisProbe, type RedisHealth, type RedisProbe } from "./redis-health.ts";
import { readRedisPersistence, type RedisStore } from "../store/redis-store.ts";
import { StoreError } from "../store/errors.ts";
import { openSnapshot, sealSnapshot, snapshotKey, takeSnapshotFile, writeSnapshotFile } from "./session-snapshot-file.ts";
import type { DeliveryObserver } from "../messaging/observer.ts";
import type { EngineFailureEvent } from "../messaging/delivery-engine.ts";

export interface Daemon {
  readonly config: DaemonConfig;
  readonly push: PushServer;
  readonly http: HttpApi;
  readonly metrics: DaemonMetrics;
  readonly logger: Logger;
  readonly store: Store;
  /** with cluster.redis_url: this node's id (in every log line as `node`) and the Redis reachability checks */
  readonly cluster: { readonly nodeId: string; readonly redis: RedisProbe } | undefined;
  /** under `serve --workers`: this worker's index (its CID prefix byte) and its CID forwarder */
  readonly worker: { readonly index: number; readonly forwarder: CidForwarder } | undefined;
  /** the development certificate files this start created (first run) */
  readonly generated: readonly string[];
  /** Re-reads the certificate files and the device registry; sessions stay up. Throws (and changes nothing) when the new files are bad. */
  reload(): Promise<{ devicesChanged: number; devicesRemoved: number }>;
  /**
   * Graceful stop: /healthz turns 503 and event streams end, HTTP requests in
   * progress finish, devices get Bye and close_notify, the last commit is
   * written, the store closes. Resolves true when all of it finished within
   * shutdown.drain_timeout_seconds, false when the bound cut it short.
   */
  stop(): Promise<boolean>;
}

export interface StartDaemonOptions {
  /** default: JSON lines on standard output at config.log.level */
  readonly logger?: Logger;
  /**
   * One worker of `serve --workers` (a supervisor started it): node id
   * `<node_id>-w<index>`, CIDs prefixed with the index byte, records of
   * another worker's CIDs forwarded to it (the supervisor announces the
   * forwarders: worker.forwarder.setPeers), the DTLS and HTTP ports shared
   * with the other workers ("open": the first worker, which checks they are
   * free; "join": the ports the others hold).
   */
  readonly worker?: { readonly index: number; readonly ports: "open" | "join"; readonly restarts: number };
}

/** Starts everything; a problem with the configuration, the files or the ports is a ConfigError naming the setting. */
export async function startDaemon(config: DaemonConfig, o: StartDaemonOptions = {}): Promise<Daemon> {
  let logger = o.logger ?? createLogger({ level: config.log.level });
  const credentials = await loadCredentials(config);
  const metrics = createMetrics();
  const cleanup: (() => Promise<void> | void)[] = [];
  let cluster: Daemon["cluster"];
  try {
    const url = config.cluster.redisUrl;
    if (url !== undefined) {
      const base = await nodeIdFor(config);
      const nodeId = o.worker === undefined ? base : `${base}-w${o.worker.index}`;
      logger = logger.child({ node: nodeId });
      metrics.clusterNode(nodeId);
      // Redis is checked on a connection of the daemon's own before the store opens: one line when unreachable
      const redis = await connectRedis(config, url, logger, metrics.redisChecked);
      cleanup.push(() => redis.close());
      cluster = { nodeId, redis };
    }
  } catch (e) {
    for (const fn of cleanup.reverse()) await fn();
    throw e;
  }
  try {
    const data = await openDataDir(config);
    cleanup.push(() => data.close());
    if (config.cluster.redisUrl !== undefined) await checkPersistence(config, config.cluster.redisUrl, data.store, logger);
    const instance = clusterOf(data.store)?.instance;
    if (cluster !== undefined) {
      metrics.clusterNode(cluster.nodeId, instance);
      logger.info(
        { event: "cluster_node", redis: String(config.cluster.redisUrl), keyPrefix: config.cluster.keyPrefix, instance },
        "cluster node: state in Redis, shared with every node on this key prefix",
      );
    }
    let worker: Daemon["worker"];
    if (o.worker !== undefined) {
      const forwarder = await CidForwarder.open({ prefix: Uint8Array.of(o.worker.index), maxPerSecond: config.cluster.forwardRatePerSecond });
      cleanup.push(() => forwarder.close());
      worker = { index: o.worker.index, forwarder };
      metrics.worker(o.worker.index, o.worker.restarts);
    }
    return await assemble(config, logger, metrics, credentials, data, cluster, cleanup, worker, o.worker?.ports);
  } catch (e) {
    for (const fn of cleanup.reverse()) await fn();
    throw e;
  }
}

async function assemble(
  config: DaemonConfig,
  logger: Logger,
  metrics: DaemonMetrics,
  credentials: DtlsCredentials,
  data: DataDir,
  cluster: Daemon["cluster"],
  cleanup: (() => Promise<void> | void)[],
  worker: Daemon["worker"],
  portSharing: "open" | "join" | undefined,
): Promise<Daemon> {
  const startedAt = Date.now();
  const store = timedStore(data.store, metrics.observer);
  metrics.attachStore(data.store);
  const embeddedFile = storeBackend(config) === "sqlite";
  const keepSessions = config.dtls.keepSessionsOnRestart && embeddedFile;
  const saved = embeddedFile ? await takeSavedSessions(config, logger, metrics) : undefined;
  // a shared store: this daemon is one node of several (the store object itself, not the timed wrapper)
  const shared = clusterOf(data.store);
  if (shared !== undefined) {
    const unlisten = shared.onClusterEvent((e) => metrics.clusterEvent(e.kind));
    cleanup.push(unlisten);
    if (cluster !== undefined) metrics.attachClusterNodes(() => cluster.redis.aliveInstances(config.cluster.keyPrefix));
  }
  const push = await bind("dtls.listen", config, () =>
    startPushServer({
      store,
      ...(shared === undefined ? {} : { cluster: shared }),
      ...(saved === undefined ? {} : { restoreSessions: saved }),
      dtls: {
        ...toDtlsOptions(config, credentials),
        ...(worker === undefined ? {} : { forwarder: worker.forwarder }),
        ...(portSharing === undefined ? {} : { portSharing }),
      },
      delivery: toDeliveryOptions(config),
      observer: metrics.observer,
      signingWorkers: signingWorkers(config),
      onTicketKeyError: (e) => logger.error({ err: e }, "DTLS ticket key rotation failed (the store refused it); retried at the next interval"),
    }),
  );
  cleanup.push(() => push.close());
  metrics.attach(push);
  if (saved !== undefined)
    logger.info({ event: "sessions_restored", ...push.restored }, "took over the sessions saved by the previous stop: no handshake for them");
  // a store that failed stops the engine: its sessions are not worth keeping then
  let storeFailed = false;
  push.engine.once("fatal", () => {
    storeFailed = true;
  });
  cleanup.push(watchStoreOutages(data.store, push, logger, () => storeFailed));
  const unlogEvents = logDaemonEvents(push, logger);
  const unlogFailures = logEngineFailures(push, logger);
  const unlog = (): void => {
    unlogEvents();
    unlogFailures();
  };
  cleanup.push(unlog);
  // the first worker checks the HTTP port is free before binding it shareable (SO_REUSEPORT would
  // otherwise join the port of another daemon of the same user), as the DTLS endpoint does
  const httpListen =
    portSharing === "open"
      ? { host: config.http.listen.host, port: await bind("http.listen", config, () => probeTcpPort(config.http.listen)) }
      : config.http.listen;
  const http = await bind("http.listen", config, () =>
    startHttpApi(
      {
        server: push,
        store,
        logger,
        metrics,
        observer: metrics.http,
        startedAt,
        ...(cluster === undefined ? {} : { storeHealth: () => ({ kind: "redis" as const, ...cluster.redis.current() }), node: cluster.nodeId }),
        ...(shared === undefined ? {} : { cluster: shared }),
        limits: {
          bodyLimitBytes: config.http.bodyLimitBytes,
          batchBodyLimitBytes: config.http.batchBodyLimitBytes,
          requestTimeoutMs: config.http.requestTimeoutSeconds * 1000,
          rateLimitPerMinute: config.http.rateLimitPerMinute,
          publicMetrics: config.http.publicMetrics,
        },
      },
      { ...httpListen, reusePort: portSharing !== undefined },
    ),
  );
  cleanup.push(() => http.close());

  let pruning = false;
  const prune = (): void => {
    if (pruning) return; // one at a time: a slow store does not pile them up
    pruning = true;
    store
      .prune(Date.now() - config.store.receiptRetentionSeconds * 1000)
      .then(
        (removed) => {
          if (removed > 0) logger.info({ removed }, "pruned expired messages and old receipts");
        },
        (e: unknown) => logger.error({ err: e }, "store prune failed"),
      )
      .finally(() => {
        pruning = false;
      });
  };
  const pruneTimer = setInterval(prune, config.store.pruneIntervalSeconds * 1000);
  pruneTimer.unref();

  let stopping: Promise<boolean> | undefined;
  const daemon: Daemon = {
    config,
    push,
    http,
    metrics,
    logger,
    store,
    cluster,
    worker,
    generated: credentials.generated,
    async reload() {
      const fresh = await loadCredentials(config);
      push.dtls.updateCredentials({
        certificates: fresh.certificates,
        ...(fresh.clientCa === undefined ? {} : { clientCa: fresh.clientCa }),
        clientAuth: fresh.clientCa === undefined ? "none" : config.dtls.clientAuth,
      });
      const { changed, removed } = await push.registry.reload();
      logger.info({ devicesChanged: changed.length, devicesRemoved: removed.length }, "reloaded certificates and device registry");
      return { devicesChanged: changed.length, devicesRemoved: removed.length };
    },
    stop() {
      stopping ??= drain();
      return stopping;
    },
  };

  async function drain(): Promise<boolean> {
    clearInterval(pruneTimer);
    logger.info("draining: no new API requests or handshakes; devices get Bye");
    const bound = config.shutdown.drainTimeoutSeconds * 1000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), bound);
    });
    const work = (async (): Promise<true> => {
      http.draining();
      push.dtls.stopAccepting();
      await http.close(); // requests in progress (a publish waiting for its commit) are answered first
      if (keepSessions && !storeFailed) await saveSessions(config, push, logger);
      else await push.close(); // Bye, close_notify, the final commit; then the content-signing workers end
      unlog();
      return true;
    })();
    const finished = await Promise.race([work, timedOut]);
    clearTimeout(timer);
    if (!finished) logger.warn({ boundMs: bound }, "drain did not finish in time; closing the store anyway");
    await data.close();
    await cluster?.redis.close();
    await worker?.forwarder.close();
    logger.info({ clean: finished }, "stopped");
    return finished;
  }

  return daemon;
}

/**
 * The sessions the previous orderly stop saved, if any: the file is read and
 * deleted for good first (it is single-use: see session-snapshot-file.ts),
 * then opened; refused (one log line, counted) when too old, sealed with
 * another key, of another version or damaged. With keep_sessions_on_restart
 * off a file is deleted unread.
 */
async function takeSavedSessions(config: DaemonConfig, logger: Logger, metrics: DaemonMetrics): Promise<Uint8Array[] | undefined> {
  const t0 = performance.now();
  const file = await takeSnapshotFile(config.dataDir);
  if (file === undefined) return undefined;
  if (!config.dtls.keepSessionsOnRestart) {
    metrics.snapshotRefused("disabled");
    logger.warn({ event: "session_snapshot_refused", cause: "disabled" }, "deleted the saved sessions unread: dtls.keep_sessions_on_restart is off");
    return undefined;
  }
  const opened = openSnapshot(await snapshotKey(config.dataDir), file, Date.now(), config.dtls.sessionSnapshotMaxAgeSeconds * 1000);
  if (opened.kind !== "loaded") {
    if (opened.kind === "refused") {
      metrics.snapshotRefused(opened.cause);
      logger.warn(
        { event: "session_snapshot_refused", cause: opened.cause },
        `refused the saved sessions (${opened.detail}); starting without them: devices resume or handshake`,
      );
    }
    return undefined;
  }
  logger.info(
    {
      event: "session_snapshot_loaded",
      sessions: opened.sessions.length,
      bytes: opened.bytes,
      ageMs: Date.now() - opened.writtenAt,
      loadMs: Math.round((performance.now() - t0) * 10) / 10,
    },
    "loaded the sessions saved by the previous stop (the file is deleted)",
  );
  return opened.sessions;
}

/** The orderly stop that keeps the sessions: no Bye, no close_notify; the final commit, then the sessions sealed into the data directory. */
async function saveSessions(config: DaemonConfig, push: PushServer, logger: Logger): Promise<void> {
  const t0 = performance.now();
  const sessions = await push.suspend();
  const sealed = sealSnapshot(await snapshotKey(config.dataDir), sessions, Date.now());
  try {
    await writeSnapshotFile(config.dataDir, sealed);
  } catch (e) {
    // the sessions are retired already: the devices resume or handshake after the restart
    logger.error({ err: e, sessions: sessions.length }, "could not save the sessions; devices will resume or handshake after the restart");
    return;
  }
  logger.info(
    {
      event: "sessions_saved",
      sessions: sessions.length,
      bytes: sealed.length,
      bytesPerSession: sessions.length === 0 ? 0 : Math.round(sealed.length / sessions.length),
      saveMs: Math.round((performance.now() - t0) * 10) / 10,
    },
    "saved the established sessions for the next start (dtls.keep_sessions_on_restart)",
  );
}

/**
 * Connects the daemon's own Redis connection (bounded by cluster.connect_timeout_seconds): unreachable is
 * one ConfigError naming the setting, the URL without its password, and the cause. Later checks feed the
 * metrics, and a change of reachability is logged once.
 */
async function connectRedis(config: DaemonConfig, url: RedisUrl, logger: Logger, onCheck: (h: RedisHealth) => void): Promise<RedisProbe> {
  const timeoutMs = config.cluster.connectTimeoutSeconds * 1000;
  let reachable = true;
  try {
    return await startRedisProbe(url, {
      connectTimeoutMs: timeoutMs,
      onCheck(h) {
        onCheck(h);
        if (h.reachable === reachable) return;
        reachable = h.reachable;
        if (h.reachable) logger.info({ event: "redis_reachable", latencyMs: h.latencyMs }, `Redis ${url.redacted} answers again`);
        else
          logger.error(
            { event: "redis_unreachable", cause: h.error },
            `Redis ${url.redacted} does not answer: ${h.error ?? "no answer"}; /healthz answers 503`,
          );
      },
    });
  } catch (e) {
    const cause = connectFailure(e, url);
    throw new ConfigError(
      `${settingLabel(config, "cluster.redis_url")}: cannot reach Redis at ${url.redacted} (within ${config.cluster.connectTimeoutSeconds} s): ${cause}`,
      { cause: e },
    );
  }
}

/** System errors of a connection, in words (the CLI reads an E... code in a message as the whole story). */
const CONNECT_ERRORS: Readonly<Record<string, string>> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ETIMEDOUT: "timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "host name not found",
  EAI_AGAIN: "host name lookup failed",
};

function connectFailure(e: unknown, url: RedisUrl): string {
  const code = (e as { code?: unknown }).code;
  const known = typeof code === "string" ? CONNECT_ERRORS[code] : undefined;
  if (known !== undefined) return `${known} (${url.address})`;
  const message = e instanceof Error ? e.message : String(e);
  // "connect ECONNREFUSED 127.0.0.1:6379" (node-redis keeps the code only in the text)
  const m = /^connect (E[A-Z_]{3,}) (\S+)$/.exec(message);
  if (m !== null) return `${CONNECT_ERRORS[m[1] ?? ""] ?? (m[1] ?? "").toLowerCase()} (${m[2] ?? url.address})`;
  return message.replace(/\b(E[A-Z_]{3,})\b/g, (token) => CONNECT_ERRORS[token] ?? token.toLowerCase());
}

/**
 * Reads Redis's persistence: none at all is refused (a Redis restart would lose every 202) unless
 * cluster.allow_no_persistence, then warned about at every start; weaker than appendfsync always is
 * warned about, saying what a 202 then means (docs/cluster.md).
 */
async function checkPersistence(config: DaemonConfig, url: RedisUrl, store: Store, logger: Logger): Promise<void> {
  let p;
  try {
    p = await readRedisPersistence(store);
  } catch (e) {
    logger.warn(
      { event: "redis_persistence_unknown", err: e },
      `could not read the persistence settings of Redis ${url.redacted} (CONFIG GET refused: a managed Redis may): make sure it runs with appendonly yes and appendfsync always, or a 202 may not survive a Redis restart`,
    );
    return;
  }
  // "persistence", not "level": pino's field
  const fields = { appendonly: p.appendonly, appendfsync: p.appendfsync, save: p.save, persistence: p.level };
  if (p.level === "none") {
    if (!config.cluster.allowNoPersistence) {
      throw new ConfigError(
        `${settingLabel(config, "cluster.allow_no_persistence")}: Redis ${url.redacted} has no persistence (appendonly no, no save points): a Redis restart would lose every message answered 202; ` +
          "turn on appendonly yes with appendfsync always, or set cluster.allow_no_persistence = true to run anyway",
      );
    }
    logger.warn({ event: "redis_no_persistence", ...fields }, `RUNNING WITHOUT PERSISTENCE (cluster.allow_no_persistence = true): ${p.summary}`);
  } else if (p.level !== "durable") {
    logger.warn(
      { event: "redis_persistence_weak", ...fields },
      `appendfsync is not "always", so a 202 is not on Redis's disk when it is answered: ${p.summary} (docs/cluster.md)`,
    );
  } else {
    logger.info({ event: "redis_persistence", ...fields }, p.summary);
  }
}

/** Listens on host:port without SO_REUSEPORT and closes again: the port (port 0: one the kernel chose) was free. */
function probeTcpPort(at: { host: string; port: number }): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen({ host: at.host, port: at.port, exclusive: true }, () => {
      const port = (probe.address() as AddressInfo).port;
      probe.close(() => resolve(port));
    });
  });
}

/** Runs a bind step; "address in use" and "cannot assign address" become ConfigErrors naming the setting. */
async function bind<T>(setting: "dtls.listen" | "http.listen", config: DaemonConfig, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    const where = setting === "dtls.listen" ? config.dtls.listen : config.http.listen;
    const addr = `${where.host.includes(":") ? `[${where.host}]` : where.host}:${where.port}`;
    const proto = setting === "dtls.listen" ? "UDP" : "TCP";
    if (code === "EADDRINUSE")
      throw new ConfigError(`${settingLabel(config, setting)}: ${proto} ${addr} is already in use by another process`, { cause: e });
    if (code === "EADDRNOTAVAIL") throw new ConfigError(`${settingLabel(config, setting)}: ${addr} is not an address of this machine`, { cause: e });
    if (code === "EACCES") throw new ConfigError(`${settingLabel(config, setting)}: no permission to listen on ${proto} ${addr}`, { cause: e });
    throw e;
  }
}

/**
 * Logs the failures the delivery engine isolated (one device's session, one publish, a listener):
 * at most 10 lines a second, then how many were left out; dtlspush_engine_failures_total counts them all.
 */
function logEngineFailures(push: PushServer, logger: Logger): () => void {
  let second = 0;
  let logged = 0;
  let suppressed = 0;
  const onFailure = (f: EngineFailureEvent): void => {
    const now = Math.floor(Date.now() / 1000);
    if (now !== second) {
      second = now;
      logged = 0;
    }
    if (logged >= 10) {
      suppressed++;
      return;
    }
    logged++;
    const fields: Record<string, unknown> = { event: "engine_failure", cause: f.cause, device: f.device, err: f.error };
    if (suppressed > 0) fields["suppressed"] = suppressed;
    suppressed = 0;
    logger.warn(fields, "the delivery engine failed one operation and went on (only that device, publish or listener was failed)");
  };
  push.engine.on("failure", onFailure);
  return () => push.engine.off("failure", onFailure);
}

/**
 * Logs the Redis store's outages (cluster.md "When Redis fails") and, when
 * one outlasts cluster.outage_max_seconds (the store failed), stops the
 * daemon as a failed commit does, even if the engine had nothing to commit.
 */
function watchStoreOutages(store: Store, push: PushServer, logger: Logger, engineStopped: () => boolean): () => void {
  const redis = store as Partial<Pick<RedisStore, "onStateChange" | "outageSeconds">>;
  if (typeof redis.onStateChange !== "function") return () => undefined;
  const r = redis as Pick<RedisStore, "onStateChange" | "outageSeconds">;
  let since = 0;
  return r.onStateChange((state) => {
    switch (state) {
      case "unavailable":
        since = r.outageSeconds();
        logger.warn(
          { event: "store_unavailable" },
          "Redis is unreachable: publishes and API calls answer 503 store_unavailable, devices keep their sessions; reconnecting (cluster.outage_max_seconds bounds the wait)",
        );
        return;
      case "available":
        logger.info(
          { event: "store_available", outageSeconds: Number((r.outageSeconds() - since).toFixed(3)) },
          "Redis is back: commits under way applied, publishes accepted again",
        );
        return;
      case "failed":
        // the engine stops by itself when a commit of its own was waiting (its event comes first then)
        setImmediate(() => {
          if (!engineStopped())
            push.engine.emit(
              "fatal",
              new StoreError(
                "store_failed",
                "the Redis store failed: Redis was unreachable for longer than cluster.outage_max_seconds (or came back without data it had acknowledged)",
              ),
            );
        });
        return;
    }
  });
}

/**
 * The store with every commit timed (from the call until it is durable) for
 * the store_commit metric. Every other member is the store's own, called on
 * the store itself (its state, such as `available`, lives there only).
 */
function timedStore(store: Store, observer: DeliveryObserver): Store {
  const commit = (batch: Parameters<Store["commit"]>[0]): Promise<Receipt[]> => {
    const t0 = performance.now();
    return store.commit(batch).finally(() => observer.storeCommit(performance.now() - t0));
  };
  return new Proxy(store, {
    get(target, key) {
      if (key === "commit") return commit;
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
