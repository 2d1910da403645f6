/**
 * `dtlspush serve --workers N` (N > 1): a supervisor process and N worker
 * processes, each a whole daemon and a node of the cluster
 * (`<node_id>-w<k>`), sharing the DTLS and HTTP ports with SO_REUSEPORT.
 *
 * Workers are `child_process.fork`s of this same program (`serve` with the
 * same settings, the concrete ports, and DTLSPUSH_WORKER=k), not node:cluster
 * workers: each binds its own sockets with SO_REUSEPORT so the kernel spreads
 * devices and HTTP connections over them with no process in the data path
 * (node:cluster would route HTTP connections through the primary, round
 * robin, and share one UDP handle unless told otherwise). The IPC channel
 * carries control only: a worker says it is ready (its ports and the
 * loopback port of its CID forwarder), the supervisor tells every worker
 * where the others' forwarders are, and relays which devices' registry
 * entries a worker changed. Datagrams never cross it.
 *
 * The supervisor starts worker 0 first (it checks the ports are free, turns
 * port 0 into a port, and creates what a first start creates in the data
 * directory), then the others on its ports. It forwards SIGTERM / SIGINT /
 * SIGHUP to every worker, restarts a worker that exits on its own (with a
 * backoff, each restart counted and logged), and exits once every worker
 * stopped when asked to stop. A worker whose IPC channel closes (the
 * supervisor was killed) stops by itself: no orphans.
 */
import { fork, type ChildProcess } from "node:child_process";
import { PROGRAM, type CliIo } from "./command.ts";
import { storeDescription, type DaemonConfig } from "../daemon/config/index.ts";
import { nodeIdFor } from "../daemon/data-dir.ts";
import type { Daemon } from "../daemon/daemon.ts";
import { createLogger } from "../daemon/logger.ts";

/** The environment variable that makes `serve` a worker (with an IPC channel to its supervisor): the worker's index. */
export const WORKER_ENV = "DTLSPUSH_WORKER";
/** "open" (the first worker: checks the ports are free) or "join" (the ports the other workers hold). */
export const WORKER_PORTS_ENV = "DTLSPUSH_WORKER_PORTS";
/** How often the supervisor restarted this worker before (dtlspush_worker_restarts). */
export const WORKER_RESTARTS_ENV = "DTLSPUSH_WORKER_RESTARTS";

/** First delay before restarting a worker that exited on its own; doubles per quick exit, up to RESTART_MAX_MS. */
export const RESTART_INITIAL_MS = 500;
export const RESTART_MAX_MS = 30_000;
/** A worker that ran this long before exiting is restarted after RESTART_INITIAL_MS again. */
const STABLE_MS = 30_000;
/** How long the supervisor waits for a worker to be ready at the first start. */
const START_BOUND_MS = 60_000;

/** Worker -> supervisor. */
export interface ReadyMessage {
  readonly type: "ready";
  readonly index: number;
  readonly node: string;
  readonly dtls: { readonly address: string; readonly port: number };
  readonly http: { readonly host: string; readonly port: number };
  readonly forwardPort: number;
}

/**
 * Worker -> supervisor -> the other workers: devices whose registry entry
 * changed (through this worker's API, or found changed by a reload). Each
 * worker keeps the registry in memory (PSK lookups during handshakes); the
 * others re-read it from the store, so a device added through any worker can
 * connect to every worker at once.
 */
export interface RegistryMessage {
  readonly type: "registry";
  readonly ids: readonly string[];
}

/** Supervisor -> worker: where every live worker's CID forwarder listens. */
export interface PeersMessage {
  readonly type: "peers";
  readonly peers: readonly { readonly index: number; readonly port: number }[];
}

/** What this process was started as by a supervisor, or undefined when it is no worker (no IPC channel, or not asked to be one). */
export function workerRole(env: NodeJS.ProcessEnv): { index: number; ports: "open" | "join"; restarts: number } | undefined {
  const v = env[WORKER_ENV];
  if (v === undefined || !/^\d{1,2}$/.test(v) || process.send === undefined) return undefined;
  const restarts = Number(env[WORKER_RESTARTS_ENV] ?? 0);
  return {
    index: Number(v),
    ports: env[WORKER_PORTS_ENV] === "open" ? "open" : "join",
    restarts: Number.isSafeInteger(restarts) && restarts >= 0 ? restarts : 0,
  };
}

/**
 * The worker's side of the IPC channel: says it is ready, applies the peers
 * the supervisor announces, and calls `stop` when the channel closes.
 */
export function attachWorker(daemon: Daemon, stop: () => void): () => void {
  const worker = daemon.worker;
  if (worker === undefined || process.send === undefined) throw new Error("attachWorker: not a worker");
  const send = process.send.bind(process);
  const registry = daemon.push.registry;
  // changes of this turn, told once; a reload's changes are told too (the others' reloads then find
  // nothing new, so it ends there)
  let changed = new Set<string>();
  const offChange = registry.onChange((id) => {
    if (changed.size === 0) {
      setImmediate(() => {
        const ids = [...changed];
        changed = new Set();
        if (process.connected) send({ type: "registry", ids } satisfies RegistryMessage);
      });
    }
    changed.add(id);
  });
  // one reload at a time; changes told meanwhile make one more
  let reloading: Promise<void> | undefined;
  let again = false;
  const reload = (): void => {
    if (reloading !== undefined) {
      again = true;
      return;
    }
    reloading = registry
      .reload()
      .then(
        () => undefined,
        (e: unknown) => daemon.logger.error({ err: e }, "could not re-read the device registry after another worker changed it"),
      )
      .finally(() => {
        reloading = undefined;
        if (again) {
          again = false;
          reload();
        }
      });
  };
  const onMessage = (m: unknown): void => {
    const msg = m as Partial<PeersMessage> | Partial<RegistryMessage>;
    if (msg.type === "peers" && Array.isArray(msg.peers)) {
      worker.forwarder.setPeers(msg.peers.map((p) => ({ prefix: Uint8Array.of(p.index), port: p.port })));
    } else if (msg.type === "registry") {
      reload();
    }
  };
  const onDisconnect = (): void => {
    daemon.logger.warn({ event: "supervisor_gone" }, "the supervisor is gone (IPC channel closed): stopping");
    stop();
  };
  process.on("message", onMessage);
  process.once("disconnect", onDisconnect);
  const dtls = daemon.push.address();
  const http = daemon.http.address();
  const ready: ReadyMessage = {
    type: "ready",
    index: worker.index,
    node: daemon.cluster?.nodeId ?? `w${worker.index}`,
    dtls: { address: dtls.address, port: dtls.port },
    http,
    forwardPort: worker.forwarder.port,
  };
  send(ready);
  return () => {
    offChange();
    process.off("message", onMessage);
    process.off("disconnect", onDisconnect);
    // the channel would keep the process alive
    if (process.connected) process.disconnect();
  };
}

export interface SuperviseOptions {
  /** `serve` arguments every worker gets besides --listen/--http (--config, --data-dir, --log-level as given) */
  readonly args: readonly string[];
  /** the program to fork (bin/dtlspush.js) */
  readonly program: string;
}

interface Slot {
  readonly index: number;
  child: ChildProcess | undefined;
  ready: ReadyMessage | undefined;
  startedAt: number;
  restarts: number;
  /** exits in a row that came soon after their start (the backoff's exponent) */
  quickExits: number;
  timer: NodeJS.Timeout | undefined;
}

/** Runs N workers until a shutdown signal stopped them all; the exit status (0 when every worker stopped cleanly). */
export async function superviseWorkers(config: DaemonConfig, count: number, io: CliIo, o: SuperviseOptions): Promise<number> {
  const logger = createLogger({ level: config.log.level });
  // created here, before any worker: the workers read the same file (no race on the first start)
  const base = await nodeIdFor(config);
  const log = logger.child({ node: `${base}-supervisor` });
  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({
    index,
    child: undefined,
    ready: undefined,
    startedAt: 0,
    restarts: 0,
    quickExits: 0,
    timer: undefined,
  }));
  let stopping = false;
  let ports: { dtls: number; http: number } | undefined;
  let allExited: (() => void) | undefined;
  let failedExit = false;
  const say = (line: string): void => {
    io.stderr.write(`${PROGRAM}: ${line}\n`);
  };

  const broadcast = (): void => {
    const peers = slots.flatMap((s) => (s.ready === undefined ? [] : [{ index: s.index, port: s.ready.forwardPort }]));
    const msg: PeersMessage = { type: "peers", peers };
    for (const s of slots) if (s.ready !== undefined && s.child?.connected === true) s.child.send(msg);
  };

  const start = (slot: Slot, onReady?: (r: ReadyMessage) => void, onEarlyExit?: (code: number | null, signal: string | null) => void): void => {
    const listen = config.dtls.listen;
    const http = config.http.listen;
    const host = (h: string): string => (h.includes(":") ? `[${h}]` : h);
    const args = [
      "serve",
      ...o.args,
      "--listen",
      `${host(listen.host)}:${ports?.dtls ?? listen.port}`,
      "--http",
      `${host(http.host)}:${ports?.http ?? http.port}`,
    ];
    const child = fork(o.program, args, {
      env: {
        ...process.env,
        [WORKER_ENV]: String(slot.index),
        [WORKER_PORTS_ENV]: ports === undefined ? "open" : "join",
        [WORKER_RESTARTS_ENV]: String(slot.restarts),
      },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    slot.child = child;
    slot.ready = undefined;
    slot.startedAt = Date.now();
    child.on("message", (m: unknown) => {
      const r = m as Partial<ReadyMessage> | Partial<RegistryMessage>;
      if (r.type === "registry" && Array.isArray(r.ids)) {
        const relay: RegistryMessage = { type: "registry", ids: r.ids };
        for (const s of slots) if (s !== slot && s.ready !== undefined && s.child?.connected === true) s.child.send(relay);
        return;
      }
      if (r.type !== "ready" || typeof r.forwardPort !== "number") return;
      slot.ready = r as ReadyMessage;
      say(`worker ${slot.index} started (node ${slot.ready.node}, pid ${child.pid ?? "?"})`);
      log.info(
        { event: "worker_started", worker: slot.index, workerNode: slot.ready.node, pid: child.pid, restarts: slot.restarts },
        "worker started",
      );
      broadcast();
      onReady?.(slot.ready);
    });
    child.on("exit", (code, signal) => {
      const wasReady = slot.ready !== undefined;
      const ranMs = Date.now() - slot.startedAt;
      slot.child = undefined;
      slot.ready = undefined;
      broadcast();
      const how = signal !== null ? `signal ${signal}` : `status ${code ?? "?"}`;
      if (stopping) {
        say(`worker ${slot.index} stopped (${how})`);
        log.info({ event: "worker_stopped", worker: slot.index, code, signal }, "worker stopped");
        if (code !== 0) failedExit = true;
        if (slots.every((s) => s.child === undefined)) allExited?.();
        return;
      }
      if (!wasReady && onEarlyExit !== undefined) {
        onEarlyExit(code, signal);
        return;
      }
      slot.quickExits = ranMs >= STABLE_MS ? 0 : slot.quickExits + 1;
      const delay = Math.min(RESTART_MAX_MS, RESTART_INITIAL_MS * 2 ** Math.max(0, slot.quickExits - 1));
      slot.restarts++;
      say(`worker ${slot.index} exited (${how}); restarting it in ${(delay / 1000).toFixed(1)} s (restart ${slot.restarts})`);
      log.warn(
        { event: "worker_exited", worker: slot.index, code, signal, ranMs, restarts: slot.restarts, restartInMs: delay },
        "worker exited; restarting it",
      );
      slot.timer = setTimeout(() => {
        slot.timer = undefined;
        if (!stopping) start(slot);
      }, delay);
    });
  };

  const stopAll = (signal: NodeJS.Signals): void => {
    for (const s of slots) {
      if (s.timer !== undefined) {
        clearTimeout(s.timer);
        s.timer = undefined;
      }
      s.child?.kill(signal);
    }
  };

  const exited = new Promise<void>((resolve) => {
    allExited = resolve;
  });
  // the first start ends early when a signal comes before every worker is ready
  let firstDone: ((ok: boolean) => void) | undefined;
  const offStop = io.onShutdownSignal((signal) => {
    if (!stopping) log.info({ signal }, "stopping the workers");
    stopping = true;
    firstDone?.(false);
    stopAll(signal as NodeJS.Signals);
    if (slots.every((s) => s.child === undefined)) allExited?.();
  });
  const offReload = io.onReloadSignal?.(() => {
    for (const s of slots) s.child?.kill("SIGHUP");
  });

  let bound: NodeJS.Timeout | undefined;
  // the first start: worker 0 alone, then the others on its ports; a worker that fails to start stops them all
  const first = await new Promise<boolean>((resolve) => {
    firstDone = resolve;
    let pending = count;
    const failed =
      (slot: Slot) =>
      (_code: number | null, signal: string | null): void => {
        // a worker that refused to start said why on standard error (one line, like a single daemon)
        if (signal !== null) say(`worker ${slot.index} could not start (signal ${signal}); stopping`);
        stopping = true;
        failedExit = true;
        stopAll("SIGTERM");
        resolve(false);
      };
    bound = setTimeout(() => {
      say(`the workers did not start within ${START_BOUND_MS / 1000} s; stopping`);
      stopping = true;
      failedExit = true;
      stopAll("SIGKILL");
      resolve(false);
    }, START_BOUND_MS);
    const readyOne = (): void => {
      if (--pending === 0) {
        clearTimeout(bound);
        resolve(true);
      }
    };
    start(
      slots[0] as Slot,
      (r) => {
        ports = { dtls: r.dtls.port, http: r.http.port };
        if (stopping) return;
        readyOne();
        for (const s of slots.slice(1)) start(s, readyOne, failed(s));
      },
      failed(slots[0] as Slot),
    );
  });
  firstDone = undefined;
  clearTimeout(bound);
  if (first && !stopping) {
    const w0 = slots[0]?.ready as ReadyMessage;
    io.stderr.write(
      supervisorBanner(
        config,
        w0,
        slots.map((s) => s.ready?.node ?? "?"),
      ),
    );
    log.info({ event: "workers_started", workers: count, dtls: w0.dtls, http: w0.http, store: storeDescription(config) }, "dtlspush started");
  }
  if (slots.some((s) => s.child !== undefined)) await exited;
  offStop();
  offReload?.();
  log.info({ event: "stopped", clean: !failedExit }, "all workers stopped");
  return failedExit ? 1 : 0;
}

function supervisorBanner(c: DaemonConfig, w0: ReadyMessage, nodes: readonly string[]): string {
  const host = (h: string): string => (h.includes(":") ? `[${h}]` : h);
  const api = `http://${host(w0.http.host)}:${w0.http.port}`;
  return (
    [
      `dtlspush is running: ${nodes.length} worker processes`,
      `  DTLS (UDP)      ${host(w0.dtls.address)}:${w0.dtls.port}${c.dtls.psk ? "  PSK and certificates" : "  certificates"}`,
      `  HTTP API        ${api}  (OpenAPI: ${api}/openapi.json)`,
      `  configuration   ${c.file ?? "built-in defaults (no file)"}`,
      `  data            ${storeDescription(c)}`,
      `  cluster nodes   ${nodes.join(", ")} (key prefix ${c.cluster.keyPrefix})`,
      `  workers         ${nodes.length}, sharing both ports (SO_REUSEPORT); records forwarded between them by Connection ID`,
      "",
    ].join("\n") + "\n"
  );
}
