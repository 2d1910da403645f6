/**
 * The daemon's configuration: defaults, then the TOML file, then the
 * environment (DTLSPUSH_<SECTION>_<KEY>), then command-line flags; validated
 * once, paths made absolute. Every problem is one ConfigError naming the
 * setting as the user wrote it and where it came from.
 */
import { availableParallelism } from "node:os";
import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseToml, TomlError } from "smol-toml";
import type { z } from "zod";
import { MIN_CID_RANDOM_BYTES, type ClientAuthMode } from "../../dtls/index.ts";
import type { DeliveryOptions, QueueFullPolicy } from "../../messaging/options.ts";
import type { StoreOptions } from "../../store/index.ts";
import { pushOverhead } from "../../wire/index.ts";
import { ConfigError, shortReason } from "./errors.ts";
import { RedisUrl, redactRedisUrl } from "./redis-url.ts";
import {
  configSchema,
  ENV_PREFIX,
  MAX_WORKERS,
  parseHostPort,
  SECTIONS,
  SETTINGS,
  SETTINGS_BY_ENV,
  SETTINGS_BY_NAME,
  type ConfigFile,
  type LogLevel,
  type SettingInfo,
} from "./schema.ts";

/** Command-line flags of `dtlspush serve` that override a setting. */
export interface ConfigFlags {
  /** dtls.listen (`--listen`) */
  listen?: string;
  /** http.listen (`--http`) */
  http?: string;
  /** data_dir (`--data-dir`) */
  dataDir?: string;
  /** log.level (`--log-level`) */
  logLevel?: string;
  /** cluster.workers (`--workers`) */
  workers?: string;
}

/** Which setting each flag sets, and how the flag is spelled in messages. */
export const FLAG_SETTINGS: Readonly<Record<keyof ConfigFlags, { readonly setting: string; readonly flag: string }>> = {
  listen: { setting: "dtls.listen", flag: "--listen" },
  http: { setting: "http.listen", flag: "--http" },
  dataDir: { setting: "data_dir", flag: "--data-dir" },
  logLevel: { setting: "log.level", flag: "--log-level" },
  workers: { setting: "cluster.workers", flag: "--workers" },
};

/** DTLSPUSH_ variables that are not settings (the CLI's); never reported as unknown. */
export const ENV_NOT_SETTINGS: readonly string[] = [
  "DTLSPUSH_TOKEN",
  "DTLSPUSH_API",
  "DTLSPUSH_CONFIG",
  "DTLSPUSH_DEBUG",
  "DTLSPUSH_WORKER",
  "DTLSPUSH_WORKER_PORTS",
  "DTLSPUSH_WORKER_RESTARTS",
];

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** The configuration the daemon runs with: camelCase, defaults applied, every path absolute. */
export interface DaemonConfig {
  /** Absolute path of the file read; undefined when there was none. */
  readonly file: string | undefined;
  /** Store and signing keys live here. */
  readonly dataDir: string;
  readonly dtls: {
    readonly listen: HostPort;
    readonly psk: boolean;
    /** PEM chain file; undefined: the development certificate (certsDir/server-p256.pem, generated when missing). */
    readonly certificate: string | undefined;
    /** PEM key file; undefined exactly when certificate is (development key certsDir/server-p256.key). */
    readonly key: string | undefined;
    /** PEM CA file for device certificates; undefined: the development CA with the development certificate, none otherwise. */
    readonly clientCa: string | undefined;
    readonly clientAuth: ClientAuthMode;
    readonly certsDir: string;
    readonly mtu: number;
    readonly maxSessions: number;
    readonly maxHandshakes: number;
    readonly maxHandshakesPerHost: number;
    readonly maxSessionsPerHost: number;
    readonly handshakeTimeoutSeconds: number;
    readonly handshakeMemoryBytes: number;
    readonly idleTimeoutSeconds: number;
    /** sockets sharing the port; undefined: the platform default (4 on Linux, 1 elsewhere) */
    readonly sockets: number | undefined;
    /** send buffer of each socket */
    readonly socketBufferBytes: number;
    readonly receiveBufferBytes: number;
    /** 0 = no limit */
    readonly helloVerifyRatePerSecond: number;
    /** 0 = no limit */
    readonly helloVerifyRatePerPrefix: number;
    /** RFC 9146 CID length of the server, bytes; 0 = off */
    readonly connectionIdLength: number;
    readonly resumption: boolean;
    readonly ticketLifetimeSeconds: number;
    readonly maxSessionAgeSeconds: number;
    readonly sessionCacheSize: number;
    /** "auto" in the file: the ticket lifetime */
    readonly ticketKeyRotationSeconds: number;
    /** save the established sessions on an orderly stop, take them over on start (sqlite stores only) */
    readonly keepSessionsOnRestart: boolean;
    readonly sessionSnapshotMaxAgeSeconds: number;
  };
  readonly http: {
    readonly listen: HostPort;
    readonly bodyLimitBytes: number;
    /** POST /v1/messages (batch publish) */
    readonly batchBodyLimitBytes: number;
    readonly requestTimeoutSeconds: number;
    /** per token (per IP without one); 0 = no limit */
    readonly rateLimitPerMinute: number;
    readonly publicMetrics: boolean;
  };
  readonly store: {
    readonly kind: "sqlite" | "memory";
    /** the SQLite file (inside dataDir unless the setting was absolute) */
    readonly path: string;
    readonly synchronous: "normal" | "full";
    readonly pruneIntervalSeconds: number;
    readonly receiptRetentionSeconds: number;
  };
  readonly delivery: {
    readonly window: number;
    readonly maxQueue: number;
    readonly queueFull: QueueFullPolicy;
    readonly maxPayloadBytes: number;
    readonly defaultTtlSeconds: number;
    readonly maxTtlSeconds: number;
    readonly heartbeatSeconds: number;
    readonly missedHeartbeats: number;
    readonly sessionTokenTtlSeconds: number;
    readonly maxTopics: number;
    readonly maxInflight: number;
  };
  readonly log: { readonly level: LogLevel };
  /** content-signing worker threads: a number (0: the main thread signs) or "auto" (cores - 1, at least 1) */
  readonly signing: { readonly workers: number | "auto" };
  readonly shutdown: { readonly drainTimeoutSeconds: number };
  /** [cluster]: undefined redisUrl = no cluster (the store of [store]) */
  readonly cluster: {
    /** printed forms never hold the password; reveal() only for the client */
    readonly redisUrl: RedisUrl | undefined;
    /** as configured; undefined: the one kept in data_dir (see nodeIdFor in data-dir.ts) */
    readonly nodeId: string | undefined;
    readonly keyPrefix: string;
    readonly connectTimeoutSeconds: number;
    readonly outageMaxSeconds: number;
    readonly allowNoPersistence: boolean;
    /** daemon processes on this machine (`serve --workers`): a number, or "auto" (see clusterWorkers) */
    readonly workers: number | "auto";
    /** records a worker forwards per second at most to the worker holding their CID (0: no limit) */
    readonly forwardRatePerSecond: number;
  };
  /**
   * Where each setting came from, by its name in the file ("dtls.listen"):
   * "in dtlspush.toml", "from DTLSPUSH_DTLS_LISTEN", "from --listen" or "default".
   */
  readonly sources: Readonly<Record<string, string>>;
}

export interface LoadConfigOptions {
  /** The TOML file; relative to cwd. None: defaults, environment and flags only. */
  file?: string;
  /** Default process.env. */
  env?: Record<string, string | undefined>;
  flags?: ConfigFlags;
  /** Base of relative paths that do not come from the file; default process.cwd(). */
  cwd?: string;
}

/** Record layer bytes around a Push: the 13-byte header and the largest AEAD overhead (AES-GCM: 8-byte nonce + 16-byte tag). */
const RECORD_OVERHEAD = 13 + 24;

/** The largest Push frame one record carries at this MTU. */
export function maxRecordPayload(mtu: number): number {
  return mtu - RECORD_OVERHEAD;
}

/**
 * A content signature's length: a detached compact JWS whose protected header
 * is {"alg":"EdDSA"|"ES256","kid":"<43-character JWK thumbprint>"}, then "..",
 * then a 64-byte signature (86 base64url characters). Both algs are the same
 * length.
 */
const SIGNATURE_CHARS = Buffer.from(JSON.stringify({ alg: "EdDSA", kid: "k".repeat(43) })).toString("base64url").length + 2 + 86;

/**
 * Bytes every Push adds to its payload whatever its names: the signature, the
 * sequence number and times at their largest, the priority, and the payload's
 * own tag and length (an upper bound). Ids, topic, publisher, content type and
 * collapse key come on top.
 */
export const PUSH_FIXED_OVERHEAD = pushOverhead({
  seq: Number.MAX_SAFE_INTEGER,
  createdAt: Number.MAX_SAFE_INTEGER,
  expiresAt: Number.MAX_SAFE_INTEGER,
  priority: 9,
  signature: "x".repeat(SIGNATURE_CHARS),
});

/** The largest payload that can ever fit one record at this MTU: the record minus a Push with empty names. */
export function maxPayloadAtMtu(mtu: number): number {
  return maxRecordPayload(mtu) - PUSH_FIXED_OVERHEAD;
}

/** Where a value came from, and the value as the user wrote it. */
interface Source {
  readonly label: string;
  /** relative paths resolve against the file's directory (true) or cwd */
  readonly inFile: boolean;
  readonly raw: unknown;
}

type Table = Record<string, unknown>;

function isTable(v: unknown): v is Table {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

export async function loadConfig(o: LoadConfigOptions = {}): Promise<DaemonConfig> {
  const cwd = resolve(o.cwd ?? process.cwd());
  const env = o.env ?? process.env;
  const sources = new Map<string, Source>();
  const raw: Table = {};

  let filePath: string | undefined;
  if (o.file !== undefined) {
    filePath = resolve(cwd, o.file);
    readFileSettings(o.file, await readConfigFile(o.file, filePath), raw, sources);
  }
  applyEnv(env, raw, sources);
  applyFlags(o.flags ?? {}, raw, sources);

  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) throw issueError(parsed.error.issues, sources);
  const f = parsed.data;
  const label = (name: string): string => `${name} (${sources.get(name)?.label ?? "default"})`;
  crossCheck(f, label);

  const pathOf = (name: string, value: string, base?: string): string => {
    if (isAbsolute(value)) return resolve(value);
    const from = base ?? (sources.get(name)?.inFile === true && filePath !== undefined ? dirname(filePath) : cwd);
    return resolve(from, value);
  };
  const optionalPath = (name: string, value: string): string | undefined => (value === "" ? undefined : pathOf(name, value));
  const dataDir = pathOf("data_dir", f.data_dir);
  const sourceLabels: Record<string, string> = {};
  for (const s of SETTINGS) sourceLabels[s.name] = sources.get(s.name)?.label ?? "default";

  return {
    file: filePath,
    dataDir,
    dtls: {
      listen: hostPort(f.dtls.listen),
      psk: f.dtls.psk,
      certificate: optionalPath("dtls.certificate", f.dtls.certificate),
      key: optionalPath("dtls.key", f.dtls.key),
      clientCa: optionalPath("dtls.client_ca", f.dtls.client_ca),
      clientAuth: f.dtls.client_auth,
      certsDir: pathOf("dtls.certs_dir", f.dtls.certs_dir),
      mtu: f.dtls.mtu,
      maxSessions: f.dtls.max_sessions,
      maxHandshakes: f.dtls.max_handshakes,
      maxHandshakesPerHost: f.dtls.max_handshakes_per_host,
      maxSessionsPerHost: f.dtls.max_sessions_per_host,
      handshakeTimeoutSeconds: f.dtls.handshake_timeout_seconds,
      handshakeMemoryBytes: f.dtls.handshake_memory_bytes,
      idleTimeoutSeconds: f.dtls.idle_timeout_seconds,
      sockets: f.dtls.sockets === 0 ? undefined : f.dtls.sockets,
      socketBufferBytes: f.dtls.socket_buffer_bytes,
      receiveBufferBytes: f.dtls.receive_buffer_bytes,
      helloVerifyRatePerSecond: f.dtls.hello_verify_rate_per_second,
      helloVerifyRatePerPrefix: f.dtls.hello_verify_rate_per_prefix,
      connectionIdLength: f.dtls.connection_id_length,
      resumption: f.dtls.resumption,
      ticketLifetimeSeconds: f.dtls.ticket_lifetime_seconds,
      maxSessionAgeSeconds: f.dtls.max_session_age_seconds,
      sessionCacheSize: f.dtls.session_cache_size,
      ticketKeyRotationSeconds: f.dtls.ticket_key_rotation_seconds === "auto" ? f.dtls.ticket_lifetime_seconds : f.dtls.ticket_key_rotation_seconds,
      keepSessionsOnRestart: f.dtls.keep_sessions_on_restart,
      sessionSnapshotMaxAgeSeconds: f.dtls.session_snapshot_max_age_seconds,
    },
    http: {
      listen: hostPort(f.http.listen),
      bodyLimitBytes: f.http.body_limit_bytes,
      batchBodyLimitBytes: f.http.batch_body_limit_bytes,
      requestTimeoutSeconds: f.http.request_timeout_seconds,
      rateLimitPerMinute: f.http.rate_limit_per_minute,
      publicMetrics: f.http.public_metrics,
    },
    store: {
      kind: f.store.kind,
      path: pathOf("store.path", f.store.path, dataDir),
      synchronous: f.store.synchronous,
      pruneIntervalSeconds: f.store.prune_interval_seconds,
      receiptRetentionSeconds: f.store.receipt_retention_seconds,
    },
    delivery: {
      window: f.delivery.window,
      maxQueue: f.delivery.max_queue,
      queueFull: f.delivery.queue_full,
      maxPayloadBytes: f.delivery.max_payload_bytes,
      defaultTtlSeconds: f.delivery.default_ttl_seconds,
      maxTtlSeconds: f.delivery.max_ttl_seconds,
      heartbeatSeconds: f.delivery.heartbeat_seconds,
      missedHeartbeats: f.delivery.missed_heartbeats,
      sessionTokenTtlSeconds: f.delivery.session_token_ttl_seconds,
      maxTopics: f.delivery.max_topics,
      maxInflight: f.delivery.max_inflight,
    },
    log: { level: f.log.level },
    signing: { workers: f.signing.workers },
    shutdown: { drainTimeoutSeconds: f.shutdown.drain_timeout_seconds },
    cluster: {
      redisUrl: f.cluster.redis_url === "" ? undefined : new RedisUrl(f.cluster.redis_url),
      nodeId: f.cluster.node_id === "" ? undefined : f.cluster.node_id,
      keyPrefix: f.cluster.key_prefix,
      connectTimeoutSeconds: f.cluster.connect_timeout_seconds,
      outageMaxSeconds: f.cluster.outage_max_seconds,
      allowNoPersistence: f.cluster.allow_no_persistence,
      workers: f.cluster.workers,
      forwardRatePerSecond: f.cluster.forward_rate_per_second,
    },
    sources: sourceLabels,
  };
}

/** "dtls.listen (from --listen)": a setting and where its value came from, for messages. */
export function settingLabel(c: DaemonConfig, name: string): string {
  return `${name} (${c.sources[name] ?? "default"})`;
}

/** The daemon processes `serve` runs: cluster.workers, "auto" being the cores with a Redis URL and 1 without. */
export function clusterWorkers(c: DaemonConfig, cores: number = availableParallelism()): number {
  if (c.cluster.workers !== "auto") return c.cluster.workers;
  return c.cluster.redisUrl === undefined ? 1 : Math.min(MAX_WORKERS, Math.max(1, cores));
}

/** The content-signing worker threads to start: signing.workers, "auto" being the cores less one (at least 1); 0 signs on the main thread. */
export function signingWorkers(c: DaemonConfig, cores: number = availableParallelism()): number {
  return c.signing.workers === "auto" ? Math.max(1, cores - 1) : c.signing.workers;
}

/** The delivery engine's options from the configuration. */
export function toDeliveryOptions(c: DaemonConfig): Partial<DeliveryOptions> {
  const d = c.delivery;
  return {
    window: d.window,
    maxQueue: d.maxQueue,
    queueFullPolicy: d.queueFull,
    maxPayload: d.maxPayloadBytes,
    maxRecordPayload: maxRecordPayload(c.dtls.mtu),
    defaultTtlSeconds: d.defaultTtlSeconds,
    maxTtlSeconds: d.maxTtlSeconds,
    heartbeatIntervalMs: d.heartbeatSeconds * 1000,
    missedHeartbeats: d.missedHeartbeats,
    sessionTokenTtlSeconds: d.sessionTokenTtlSeconds,
    maxTopics: d.maxTopics,
    maxInflight: d.maxInflight,
    // a publisher's chosen id stays reserved (cluster) until its commit, which may wait out a whole Redis outage
    idReservationSeconds: Math.max(900, c.cluster.outageMaxSeconds + 300),
  };
}

/** Where the daemon's state lives: Redis when cluster.redis_url is set, else store.kind. */
export function storeBackend(c: DaemonConfig): "sqlite" | "memory" | "redis" {
  return c.cluster.redisUrl !== undefined ? "redis" : c.store.kind;
}

/** The store in a few words for messages: the SQLite file, "in memory", or the Redis URL (password redacted). */
export function storeDescription(c: DaemonConfig): string {
  const backend = storeBackend(c);
  return backend === "redis" ? `Redis ${String(c.cluster.redisUrl)}` : backend === "sqlite" ? c.store.path : "in memory";
}

/** What openStore takes (the embedded stores; Redis is opened by the data directory). */
export function toStoreOptions(c: DaemonConfig): StoreOptions {
  return c.store.kind === "memory" ? { kind: "memory" } : { kind: "sqlite", path: c.store.path, synchronous: c.store.synchronous };
}

function hostPort(text: string): HostPort {
  const r = parseHostPort(text);
  // The schema accepted it, so it parses.
  if (typeof r === "string") throw new Error(`unreachable: ${text} passed validation`);
  return r;
}

async function readConfigFile(given: string, path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read the configuration file ${given}: ${shortReason(e)}`, { cause: e });
  }
}

/** Parses the TOML text into `raw`, recording each setting's source; unknown settings are errors here. */
function readFileSettings(given: string, text: string, raw: Table, sources: Map<string, Source>): void {
  let doc: Table;
  try {
    doc = parseToml(text) as Table;
  } catch (e) {
    if (e instanceof TomlError) {
      const reason = (e.message.split("\n")[0] ?? "").replace(/^Invalid TOML document:\s*/, "");
      throw new ConfigError(`${given} line ${e.line}, column ${e.column}: invalid TOML: ${reason}`, { cause: e });
    }
    throw new ConfigError(`${given}: invalid TOML: ${shortReason(e)}`, { cause: e });
  }
  const where = `in ${given}`;
  for (const [key, value] of Object.entries(doc)) {
    if ((SECTIONS as readonly string[]).includes(key)) {
      if (!isTable(value)) throw new ConfigError(`${key} (${where}): expected a table ([${key}]), got ${shown(value)}`);
      const table: Table = {};
      for (const [k, v] of Object.entries(value)) {
        const name = `${key}.${k}`;
        if (!SETTINGS_BY_NAME.has(name)) {
          const hint =
            SETTINGS_BY_NAME.get(k)?.section === undefined && SETTINGS_BY_NAME.has(k)
              ? ` (${k} is a top-level setting: write it before the first [table])`
              : suggestion(
                  name,
                  SETTINGS.map((s) => s.name),
                );
          throw new ConfigError(`unknown setting ${name} ${where}${hint}`);
        }
        table[k] = v;
        sources.set(name, { label: where, inFile: true, raw: v });
      }
      raw[key] = table;
    } else if (SETTINGS_BY_NAME.has(key)) {
      raw[key] = value;
      sources.set(key, { label: where, inFile: true, raw: value });
    } else {
      const what = isTable(value) ? `unknown table [${key}]` : `unknown setting ${key}`;
      throw new ConfigError(`${what} ${where}${suggestion(key, [...SECTIONS, ...SETTINGS.map((s) => s.name)])}`);
    }
  }
}

/** Puts a value at a setting's place in `raw`. */
function put(raw: Table, info: SettingInfo, value: unknown): void {
  if (info.section === undefined) {
    raw[info.key] = value;
    return;
  }
  const table = raw[info.section];
  if (isTable(table)) table[info.key] = value;
  else raw[info.section] = { [info.key]: value };
}

/** A variable's text as the setting's type; text that does not convert stays text (validation names it). */
function convert(info: SettingInfo, text: string): unknown {
  switch (info.kind) {
    case "integer":
    case "integer-or-auto":
      return /^\s*[+-]?\d+(\.\d+)?\s*$/.test(text) ? Number(text) : text;
    case "boolean":
      return text === "true" ? true : text === "false" ? false : text;
    default:
      return text;
  }
}

/** A DTLSPUSH_ variable that is meant as a setting: a section's prefix, DATA..., or a near miss of a known name. */
function looksLikeSetting(name: string): boolean {
  const rest = name.slice(ENV_PREFIX.length);
  if (rest.startsWith("DATA")) return true;
  if (SECTIONS.some((s) => rest.startsWith(`${s.toUpperCase()}_`))) return true;
  return [...SETTINGS_BY_ENV.keys()].some((known) => distance(known, name) <= 2);
}

function applyEnv(env: Record<string, string | undefined>, raw: Table, sources: Map<string, Source>): void {
  const names = Object.keys(env)
    .filter((n) => n.startsWith(ENV_PREFIX) && env[n] !== undefined)
    .sort();
  for (const name of names) {
    if (ENV_NOT_SETTINGS.includes(name)) continue;
    const text = env[name] as string;
    const info = SETTINGS_BY_ENV.get(name);
    if (info === undefined) {
      if (looksLikeSetting(name)) {
        throw new ConfigError(`unknown setting ${name} in the environment${suggestion(name, [...SETTINGS_BY_ENV.keys()])}`);
      }
      continue;
    }
    put(raw, info, convert(info, text));
    sources.set(info.name, { label: `from ${name}`, inFile: false, raw: text });
  }
}

function applyFlags(flags: ConfigFlags, raw: Table, sources: Map<string, Source>): void {
  for (const key of Object.keys(FLAG_SETTINGS) as (keyof ConfigFlags)[]) {
    const value = flags[key];
    if (value === undefined) continue;
    const { setting, flag } = FLAG_SETTINGS[key];
    const info = SETTINGS_BY_NAME.get(setting) as SettingInfo;
    put(raw, info, convert(info, value));
    sources.set(setting, { label: `from ${flag}`, inFile: false, raw: value });
  }
}

/** The first problem zod found, as one sentence. */
function issueError(issues: readonly z.core.$ZodIssue[], sources: ReadonlyMap<string, Source>): ConfigError {
  // An unknown key explains the rest; report it first.
  const issue = issues.find((i) => i.code === "unrecognized_keys") ?? issues[0];
  if (issue === undefined) return new ConfigError("the configuration is invalid");
  const name = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    const key = [...issue.path.map(String), issue.keys[0] ?? ""].join(".");
    return new ConfigError(`unknown setting ${key} (${sources.get(name)?.label ?? "in the configuration"})`);
  }
  const source = sources.get(name);
  const secret = SETTINGS_BY_NAME.get(name)?.secret === true;
  // a secret setting's message says what it got itself, redacted (redis-url's superRefine)
  const got = source === undefined || (secret && issue.code === "custom") ? "" : `, got ${secret ? shownSecret(source.raw) : shown(source.raw)}`;
  return new ConfigError(`${name === "" ? "the configuration" : name} (${source?.label ?? "default"}): ${issue.message}${got}`);
}

/** Rules between settings, each checked on the merged values. */
function crossCheck(f: ConfigFile, label: (name: string) => string): void {
  const d = f.dtls;
  if (d.certificate === "" && d.key !== "") {
    throw new ConfigError(`${label("dtls.key")}: set dtls.certificate too, or leave both empty to use the development certificate`);
  }
  if (d.certificate !== "" && d.key === "") {
    throw new ConfigError(`${label("dtls.certificate")}: needs dtls.key, the file of the certificate's private key`);
  }
  if (d.certificate !== "" && d.client_ca === "" && d.client_auth !== "none") {
    throw new ConfigError(
      `${label("dtls.client_auth")}: "${d.client_auth}" needs dtls.client_ca (the CA of device certificates) when dtls.certificate is set; set dtls.client_ca, or dtls.client_auth = "none"`,
    );
  }
  if (d.connection_id_length > 0 && d.connection_id_length < MIN_CID_RANDOM_BYTES) {
    throw new ConfigError(
      `${label("dtls.connection_id_length")}: ${d.connection_id_length} is too short to be unguessable and unique; use 0 (off) or at least ${MIN_CID_RANDOM_BYTES}`,
    );
  }
  if (d.idle_timeout_seconds <= f.delivery.heartbeat_seconds) {
    throw new ConfigError(
      `${label("dtls.idle_timeout_seconds")}: ${d.idle_timeout_seconds} must be more than delivery.heartbeat_seconds (${f.delivery.heartbeat_seconds}), or sessions close between heartbeats`,
    );
  }
  const payloadLimit = maxPayloadAtMtu(d.mtu);
  if (f.delivery.max_payload_bytes > payloadLimit) {
    throw new ConfigError(
      `${label("delivery.max_payload_bytes")}: ${f.delivery.max_payload_bytes} bytes cannot fit one DTLS record at dtls.mtu ${d.mtu}: ` +
        `the record carries ${maxRecordPayload(d.mtu)} bytes, a Push needs ${PUSH_FIXED_OVERHEAD} of them for its signature and numbers before any id, topic or content type, ` +
        `so at most ${payloadLimit} bytes of payload fit; lower it or raise dtls.mtu`,
    );
  }
  if (f.cluster.redis_url !== "" && f.store.kind === "memory") {
    throw new ConfigError(
      `${label("store.kind")}: "memory" cannot go with cluster.redis_url: with Redis the state lives in Redis; remove one of them`,
    );
  }
  if (f.cluster.workers !== "auto" && f.cluster.workers > 1 && f.cluster.redis_url === "") {
    throw new ConfigError(
      `${label("cluster.workers")}: ${f.cluster.workers} worker processes need cluster.redis_url (the embedded SQLite store belongs to one process); set cluster.redis_url or use 1 worker`,
    );
  }
  if (f.delivery.default_ttl_seconds > f.delivery.max_ttl_seconds) {
    throw new ConfigError(
      `${label("delivery.default_ttl_seconds")}: ${f.delivery.default_ttl_seconds} is more than delivery.max_ttl_seconds (${f.delivery.max_ttl_seconds})`,
    );
  }
}

/** A secret setting's value for "got ...": a URL with its password redacted, anything else by its type only. */
function shownSecret(v: unknown): string {
  return typeof v === "string" ? JSON.stringify(redactRedisUrl(v)) : isTable(v) ? "a table" : Array.isArray(v) ? "an array" : typeof v;
}

/** A value as the user wrote it, for "got ..." */
function shown(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint") return String(v);
  if (v instanceof Date) return String(v);
  if (Array.isArray(v)) {
    const json = JSON.stringify(v);
    return json.length <= 60 ? json : "an array";
  }
  if (isTable(v)) return "a table";
  return String(v);
}

/** " (did you mean dtls.listen?)" when a known name is close. */
function suggestion(name: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const dist = distance(name.toLowerCase(), k.toLowerCase());
    if (dist < bestDistance) {
      best = k;
      bestDistance = dist;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(name.length / 5)) ? ` (did you mean ${best}?)` : "";
}

/** Levenshtein distance. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row.push(Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost));
    }
    prev = row;
  }
  return prev[b.length] ?? 0;
}
