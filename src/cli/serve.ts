/** `dtlspush serve`: the push daemon (DTLS + HTTP API), configured by file, environment and flags. */
import { existsSync } from "node:fs";
import { expectPositionals, parseCommandLine, stringOption, type OptionSpecs } from "./args.ts";
import { PROGRAM, formatHelp, type CliIo, type LeafCommand } from "./command.ts";
import { clusterWorkers, ConfigError, loadConfig, settingLabel, storeBackend, storeDescription, type DaemonConfig } from "../daemon/config/index.ts";
import { MIN_CID_RANDOM_BYTES } from "../dtls/index.ts";
import { startDaemon, type Daemon } from "../daemon/daemon.ts";
import { attachWorker, superviseWorkers, workerRole } from "./serve-workers.ts";

const COMMAND = `${PROGRAM} serve`;
/** The file read when neither --config nor DTLSPUSH_CONFIG names one. */
export const DEFAULT_CONFIG_FILE = "dtlspush.toml";

const OPTIONS: OptionSpecs = {
  config: {
    type: "string",
    value: "FILE",
    description: `TOML configuration file (default: $DTLSPUSH_CONFIG, else\n./${DEFAULT_CONFIG_FILE} when it exists, else built-in defaults)`,
  },
  listen: { type: "string", value: "HOST:PORT", description: "DTLS (UDP) address; overrides dtls.listen (default 127.0.0.1:5684)" },
  http: { type: "string", value: "HOST:PORT", description: "HTTP API (TCP) address; overrides http.listen (default 127.0.0.1:8080)" },
  "data-dir": { type: "string", value: "DIR", description: "Store and signing keys; overrides data_dir (default ./data)" },
  "log-level": { type: "string", value: "LEVEL", description: "trace, debug, info (default), warn, error, fatal or silent" },
  workers: {
    type: "string",
    value: "N",
    description:
      "Daemon processes sharing the ports, one node each; overrides cluster.workers\n(default: the CPU cores with cluster.redis_url, else 1; N > 1 needs redis_url)",
  },
  help: { type: "boolean", short: "h", description: "Show this help" },
};

function help(): string {
  return formatHelp({
    usage: [`${COMMAND} [--config FILE] [--listen HOST:PORT] [--http HOST:PORT] [--data-dir DIR] [--workers N]`],
    description:
      "Runs the push daemon: devices connect over DTLS 1.2 (PSK or certificates) and\n" +
      "publishers use the HTTP API. With no configuration at all it works out of the box\n" +
      "for development: DTLS on 127.0.0.1:5684, HTTP on 127.0.0.1:8080, development\n" +
      "certificates generated under ./certs, signing keys and the SQLite store under ./data.\n" +
      "\n" +
      "Settings come from defaults, then the file, then DTLSPUSH_<SECTION>_<KEY>\n" +
      "environment variables, then these flags (docs/configuration.md lists them all).\n" +
      "Logs are JSON lines on standard output; the start-up summary goes to standard error.\n" +
      "SIGTERM/SIGINT drain and exit 0; SIGHUP reloads certificates and the device registry.\n" +
      "\n" +
      "With --workers N (N > 1, needs cluster.redis_url) a supervisor runs N daemon\n" +
      "processes (nodes <node_id>-w0 ...) sharing the DTLS and HTTP ports; it passes the\n" +
      "signals on, restarts a worker that dies, and exits when all have stopped.",
    options: OPTIONS,
    examples: [
      `${COMMAND}`,
      `${COMMAND} --config /etc/dtlspush/dtlspush.toml`,
      `${COMMAND} --config cluster.toml --workers 4`,
      `DTLSPUSH_HTTP_LISTEN=0.0.0.0:8080 ${COMMAND} --data-dir /var/lib/dtlspush`,
    ],
  });
}

/** The start-up summary: where everything is and how to go on. */
export function banner(d: Daemon): string {
  const c: DaemonConfig = d.config;
  const dtls = d.push.address();
  const http = d.http.address();
  const host = (h: string): string => (h.includes(":") ? `[${h}]` : h);
  const api = `http://${host(http.host)}:${http.port}`;
  const lines = [
    "dtlspush is running",
    `  DTLS (UDP)      ${host(dtls.address)}:${dtls.port}${c.dtls.psk ? "  PSK and certificates" : "  certificates"}`,
    `  HTTP API        ${api}  (OpenAPI: ${api}/openapi.json)`,
    `  configuration   ${c.file ?? "built-in defaults (no file)"}`,
    `  data            ${storeBackend(c) === "memory" ? "in memory (lost on exit)" : storeDescription(c)}`,
    `  certificate     ${c.dtls.certificate ?? `${c.dtls.certsDir} (development)`}`,
  ];
  if (d.cluster !== undefined) lines.push(`  cluster node    ${d.cluster.nodeId} (key prefix ${c.cluster.keyPrefix})`);
  if (d.generated.length > 0) lines.push(`  generated       ${d.generated.length} development certificate files in ${c.dtls.certsDir}`);
  const defaultApi = http.host === "127.0.0.1" && http.port === 8080;
  const apiFlag = defaultApi ? "" : ` --api ${api}`;
  // the other commands find the data directory (its signing keys) the same way the daemon did
  const dataFlag = c.file !== undefined ? ` --config ${c.file}` : c.sources["data_dir"] !== "default" ? ` --data-dir ${c.dataDir}` : "";
  lines.push(
    "",
    "Next, in another terminal:",
    `  ${PROGRAM} device add sensor-1 --psk 000102030405060708090a0b0c0d0e0f${apiFlag}${dataFlag}`,
    `  ${PROGRAM} listen --server ${host(dtls.address)}:${dtls.port} --device sensor-1 --psk 000102030405060708090a0b0c0d0e0f`,
    `  ${PROGRAM} send --device sensor-1 --data "hello"${apiFlag}${dataFlag}`,
    "",
  );
  return `${lines.join("\n")}\n`;
}

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, COMMAND);
  expectPositionals(positionals, [], COMMAND);
  const env = process.env;
  let file = stringOption(values, "config") ?? env["DTLSPUSH_CONFIG"];
  if (file === undefined && existsSync(DEFAULT_CONFIG_FILE)) file = DEFAULT_CONFIG_FILE;
  const flags = {
    ...optional("listen", stringOption(values, "listen")),
    ...optional("http", stringOption(values, "http")),
    ...optional("dataDir", stringOption(values, "data-dir")),
    ...optional("logLevel", stringOption(values, "log-level")),
    ...optional("workers", stringOption(values, "workers")),
  };
  const config = await loadConfig({ ...(file === undefined ? {} : { file }), env, flags });
  const worker = workerRole(env);
  if (worker === undefined) {
    const count = clusterWorkers(config);
    if (count > 1) {
      // SO_REUSEPORT spreads datagrams and connections over the processes only there (elsewhere the last bound gets all)
      if (process.platform !== "linux" && process.platform !== "freebsd") {
        throw new ConfigError(
          `${settingLabel(config, "cluster.workers")}: ${count} workers need SO_REUSEPORT load balancing (Linux or FreeBSD); use 1 on ${process.platform}`,
        );
      }
      const cid = config.dtls.connectionIdLength;
      if (cid > 0 && cid < MIN_CID_RANDOM_BYTES + 1) {
        throw new ConfigError(
          `${settingLabel(config, "dtls.connection_id_length")}: ${cid} leaves no room for the worker prefix byte with ${count} workers; use 0 (off) or at least ${MIN_CID_RANDOM_BYTES + 1}`,
        );
      }
      // the workers get the settings as given here (flags that name a setting), their ports from the supervisor
      const args = [
        ...(file === undefined ? [] : ["--config", file]),
        ...(flags.dataDir === undefined ? [] : ["--data-dir", flags.dataDir]),
        ...(flags.logLevel === undefined ? [] : ["--log-level", flags.logLevel]),
      ];
      return await superviseWorkers(config, count, io, { args, program: process.argv[1] ?? "" });
    }
  }
  const daemon = await startDaemon(config, worker === undefined ? {} : { worker });
  if (worker === undefined) io.stderr.write(banner(daemon));
  daemon.logger.info(
    {
      dtls: daemon.push.address(),
      http: daemon.http.address(),
      config: config.file ?? null,
      dataDir: config.dataDir,
      store: storeDescription(config),
    },
    "dtlspush started",
  );

  return await new Promise<number>((resolve) => {
    let stopping = false;
    let detachWorker: (() => void) | undefined;
    const offReload = io.onReloadSignal?.(() => {
      daemon.reload().catch((e: unknown) => {
        daemon.logger.error({ err: e }, "reload failed; the previous certificates stay in use");
      });
    });
    const shutdown = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      daemon.logger.info({ signal }, "shutting down");
      void daemon.stop().then((clean) => {
        offStop();
        offReload?.();
        detachWorker?.();
        resolve(clean ? 0 : 1);
      });
    };
    const offStop = io.onShutdownSignal(shutdown);
    // a worker stops with its supervisor (the IPC channel closes when it dies, even by SIGKILL)
    if (worker !== undefined) detachWorker = attachWorker(daemon, () => shutdown("supervisor_gone"));
    // the engine stops only when a store commit fails (a device, a publish or a listener that fails is
    // isolated and counted in dtlspush_engine_failures_total): that is the one reason to exit
    daemon.push.engine.once("fatal", (e: Error) => {
      if (stopping) return;
      stopping = true;
      const store = storeDescription(config);
      daemon.logger.fatal({ err: e, store }, "the store failed: the delivery engine stopped; exiting with status 1");
      const check =
        storeBackend(config) === "redis" ? "Check Redis (reachable, memory, persistence)" : "Check the disk (space, permissions, I/O errors)";
      io.stderr.write(
        `${PROGRAM}: the store (${store}) failed: ${e.message}\n` +
          "  The delivery engine stopped so that nothing unrecorded is sent; exiting with status 1.\n" +
          `  ${check}, then start the daemon again: it resumes from the store.\n`,
      );
      void daemon.stop().then(() => {
        offStop();
        offReload?.();
        detachWorker?.();
        resolve(1);
      });
    });
  });
}

function optional<K extends string>(key: K, value: string | undefined): { [P in K]?: string } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: string };
}

export const serveCommand: LeafCommand = {
  kind: "command",
  name: "serve",
  summary: "Run the push daemon (DTLS devices + HTTP API)",
  help,
  run,
};
