/**
 * The configuration file (`dtlspush.toml`) as a zod schema: strict tables
 * (an unknown key is an error), every setting documented, with its default
 * and bounds. The same table of settings drives the environment overrides,
 * the documentation check and the error messages.
 */
import { z } from "zod";
import { MIN_MTU } from "../../dtls/index.ts";
import { redisUrlProblem, redactRedisUrl } from "./redis-url.ts";

/** How a setting's value is written, for the environment overrides and the docs. */
export type SettingKind = "integer" | "integer-or-auto" | "boolean" | "enum" | "host-port" | "path" | "optional-path" | "redis-url" | "text";

/** One setting of the file, as the docs and the overrides see it. */
export interface SettingInfo {
  /** As written in the file: "data_dir", "dtls.listen", ... */
  readonly name: string;
  /** The table it lives in; undefined at the top level. */
  readonly section: string | undefined;
  readonly key: string;
  /** Its environment variable: DTLSPUSH_<SECTION>_<KEY>. */
  readonly env: string;
  readonly kind: SettingKind;
  /** The expectation an error states: "expected an integer from 1 to 1024". */
  readonly expected: string;
  readonly default: string | number | boolean;
  readonly description: string;
  /** enum values */
  readonly values?: readonly string[];
  readonly min?: number;
  readonly max?: number;
  /** its value may hold a secret (a password in a URL): messages show it redacted */
  readonly secret?: boolean;
}

export const ENV_PREFIX = "DTLSPUSH_";

type Info = Omit<SettingInfo, "name" | "section" | "key" | "env">;
const infoOf = new WeakMap<z.ZodType, Info>();

function register<T extends z.ZodType>(schema: T, info: Info): T {
  infoOf.set(schema, info);
  return schema;
}

function int(min: number, max: number, def: number, description: string) {
  const expected = `expected an integer from ${min} to ${max}`;
  const schema = z.int({ error: expected }).min(min, { error: expected }).max(max, { error: expected }).default(def).describe(description);
  return register(schema, { kind: "integer", expected, default: def, description, min, max });
}

/** An integer, or "auto" (the default) for a value the daemon works out at start. */
function intOrAuto(min: number, max: number, description: string) {
  const expected = `expected "auto" or an integer from ${min} to ${max}`;
  const schema = z
    .union([z.literal("auto"), z.int({ error: expected }).min(min, { error: expected }).max(max, { error: expected })], { error: expected })
    .default("auto")
    .describe(description);
  return register(schema, { kind: "integer-or-auto", expected, default: "auto", description, min, max });
}

function bool(def: boolean, description: string) {
  const expected = "expected true or false";
  return register(z.boolean({ error: expected }).default(def).describe(description), { kind: "boolean", expected, default: def, description });
}

function choice<const V extends readonly [string, ...string[]]>(values: V, def: V[number], description: string) {
  const expected = `expected one of ${values.map((v) => JSON.stringify(v)).join(", ")}`;
  const schema = z
    .enum(values, { error: expected })
    .default(def as never)
    .describe(description);
  return register(schema, { kind: "enum", expected, default: def, description, values });
}

/** Splits HOST:PORT ("127.0.0.1:5684", "[::1]:5684", "localhost:8080"); a string says what is wrong. */
export function parseHostPort(text: string): { host: string; port: number } | string {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  if (m === null)
    return /:.*:/.test(text) && !text.startsWith("[") ? "expected HOST:PORT with an IPv6 host in brackets ([::1]:PORT)" : "expected HOST:PORT";
  const port = Number(m[3]);
  if (port > 65_535) return "expected HOST:PORT with a port from 0 to 65535";
  const host = m[1] ?? m[2] ?? "";
  if (m[1] !== undefined && !m[1].includes(":")) return "expected HOST:PORT (only an IPv6 host goes in brackets)";
  return { host, port };
}

function hostPort(def: string, description: string) {
  const expected = "expected HOST:PORT";
  const schema = z
    .string({ error: expected })
    .superRefine((value, ctx) => {
      const r = parseHostPort(value);
      if (typeof r === "string") ctx.addIssue({ code: "custom", message: r });
    })
    .default(def)
    .describe(description);
  return register(schema, { kind: "host-port", expected, default: def, description });
}

function path(def: string, description: string) {
  const expected = "expected a non-empty path";
  const schema = z.string({ error: expected }).min(1, { error: expected }).max(4096, { error: expected }).default(def).describe(description);
  return register(schema, { kind: "path", expected, default: def, description });
}

/** A path where "" means "none" (the development default). */
function optionalPath(description: string) {
  const expected = 'expected a path (or "")';
  const schema = z.string({ error: expected }).max(4096, { error: expected }).default("").describe(description);
  return register(schema, { kind: "optional-path", expected, default: "", description });
}

/** A Redis URL, or "" for none; the message of a bad one shows it with its password redacted. */
function redisUrl(description: string) {
  const expected = 'expected a redis:// or rediss:// URL (or "")';
  const schema = z
    .string({ error: expected })
    .max(4096, { error: expected })
    .superRefine((value, ctx) => {
      if (value === "") return;
      const problem = redisUrlProblem(value);
      if (problem !== undefined) ctx.addIssue({ code: "custom", message: `${problem}, got ${JSON.stringify(redactRedisUrl(value))}` });
    })
    .default("")
    .describe(description);
  return register(schema, { kind: "redis-url", expected, default: "", description, secret: true });
}

/** Text matching a pattern (the expectation says which). */
function text(pattern: RegExp, expected: string, def: string, description: string) {
  const schema = z.string({ error: expected }).regex(pattern, { error: expected }).default(def).describe(description);
  return register(schema, { kind: "text", expected, default: def, description });
}

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const CLIENT_AUTH_MODES = ["none", "request", "require"] as const;
export const QUEUE_FULL_POLICIES = ["reject", "drop-oldest"] as const;

const DAY = 86_400;

/**
 * Default delivery.max_payload_bytes: at the default dtls.mtu (1200) a record
 * carries 1163 bytes of Push; the signature, sequence number, times and
 * priority take 218 (PUSH_FIXED_OVERHEAD), which leaves 177 bytes for the
 * message id, device id or topic, publisher, content type and collapse key
 * (each costs its length + 2) beside a payload of this size: a generated id,
 * a 64-character device id, a 32-character publisher and
 * "application/json" fit.
 */
export const DEFAULT_MAX_PAYLOAD_BYTES = 768;

export const dtlsSection = z
  .strictObject({
    listen: hostPort("127.0.0.1:5684", "UDP address the DTLS endpoint binds, HOST:PORT ([v6]:PORT for IPv6; port 0 picks a free one)."),
    psk: bool(true, "Offer the PSK cipher suites; device keys come from the device registry."),
    certificate: optionalPath(
      'PEM certificate chain file (leaf first). "" uses the development certificate server-p256.pem in certs_dir, generated on first run.',
    ),
    key: optionalPath('PEM private key of the certificate. "" with the development certificate: server-p256.key in certs_dir.'),
    client_ca: optionalPath(
      'PEM CA certificate(s) device certificates must lead to. "" with the development certificate: ca.pem in certs_dir; with your own certificate: no device certificates (client_auth must be "none").',
    ),
    client_auth: choice(
      CLIENT_AUTH_MODES,
      "request",
      'Device certificates: "none" (PSK only), "request" (optional) or "require" (certificate suites need one).',
    ),
    certs_dir: path("certs", "Directory where the development CA and server certificates are generated and kept."),
    mtu: int(MIN_MTU, 65_507, 1200, "Largest datagram sent, bytes; a Push must fit one record of it."),
    max_sessions: int(1, 10_000_000, 200_000, "Established DTLS sessions at most; new handshakes beyond it are refused."),
    max_handshakes: int(1, 1_000_000, 2000, "Handshakes in progress at most."),
    max_handshakes_per_host: int(
      1,
      1_000_000,
      100,
      "Handshakes in progress from one source (IPv4 address, IPv6 /64) at most; its further ClientHellos are refused (host_handshakes_exceeded).",
    ),
    max_sessions_per_host: int(
      1,
      10_000_000,
      32_768,
      "Sessions and handshakes from one source (IPv4 address, IPv6 /64) at most; its further handshakes are refused (host_sessions_exceeded). Established sessions are never evicted.",
    ),
    handshake_timeout_seconds: int(
      1,
      3600,
      30,
      "A handshake not finished this long after its cookie-valid ClientHello is dropped and frees its slot, seconds.",
    ),
    handshake_memory_bytes: int(
      1_048_576,
      68_719_476_736,
      67_108_864,
      "Bytes all handshakes in progress may hold (their state and what their peers sent); new handshakes beyond it are refused (handshake_memory_exceeded).",
    ),
    idle_timeout_seconds: int(
      10,
      7 * DAY,
      300,
      "A session without traffic for this long is closed, seconds; must exceed delivery.heartbeat_seconds.",
    ),
    sockets: int(
      0,
      16,
      0,
      "UDP sockets sharing the DTLS port (SO_REUSEPORT): each is read up to 32 datagrams per event-loop turn. 0: 4 on Linux, 1 elsewhere.",
    ),
    socket_buffer_bytes: int(
      65_536,
      1024 * 1024 * 1024,
      4 * 1024 * 1024,
      "Send buffer asked for each DTLS socket, bytes (receive: dtls.receive_buffer_bytes); the kernel caps it at net.core.wmem_max.",
    ),
    receive_buffer_bytes: int(
      65_536,
      1024 * 1024 * 1024,
      1024 * 1024,
      "Receive buffer asked for each DTLS socket, bytes; when the process falls behind, a record waits behind all that is queued, so bigger buffers absorb longer bursts but add latency. The kernel caps it at net.core.rmem_max.",
    ),
    hello_verify_rate_per_second: int(
      0,
      10_000_000,
      5000,
      "HelloVerifyRequests per second, whole server; first ClientHellos beyond it are dropped before any crypto (the client retransmits). 0: no limit.",
    ),
    hello_verify_rate_per_prefix: int(
      0,
      10_000_000,
      500,
      "HelloVerifyRequests per second per source network (/24 IPv4, /64 IPv6); first ClientHellos beyond it are dropped. 0: no limit.",
    ),
    connection_id_length: int(
      0,
      255,
      6,
      "Length of the Connection IDs (RFC 9146) handed to devices that offer one, bytes: their records then find their session whatever address they come from (NAT rebinding). 0: off; otherwise at least 4.",
    ),
    resumption: bool(
      true,
      "Session resumption (abbreviated handshakes): session tickets sealed under keys kept in the store, and a session-ID cache.",
    ),
    ticket_lifetime_seconds: int(60, 7 * DAY, DAY, "A session ticket is accepted this long after it was issued, seconds."),
    max_session_age_seconds: int(
      60,
      365 * DAY,
      7 * DAY,
      "No resumption this long after the session's full handshake, however fresh its ticket, seconds.",
    ),
    session_cache_size: int(0, 10_000_000, 10_000, "Sessions kept for session-ID resumption (least recently used go first); 0: tickets only."),
    keep_sessions_on_restart: bool(
      true,
      "On an orderly stop (SIGTERM, SIGINT) the established sessions are saved (sealed, in the data directory) and taken over on the next start: devices carry on with no handshake. Only with store.kind sqlite.",
    ),
    session_snapshot_max_age_seconds: int(
      1,
      DAY,
      600,
      "A saved-sessions file older than this is refused at start (devices then resume or handshake), seconds.",
    ),
    ticket_key_rotation_seconds: intOrAuto(
      60,
      7 * DAY,
      'How long one ticket key seals new tickets before the next one takes over, seconds; a key is deleted a ticket lifetime after. "auto": ticket_lifetime_seconds.',
    ),
  })
  .prefault({})
  .describe("The DTLS endpoint devices connect to.");

export const httpSection = z
  .strictObject({
    listen: hostPort("127.0.0.1:8080", "TCP address of the HTTP API, HOST:PORT ([v6]:PORT for IPv6; port 0 picks a free one)."),
    body_limit_bytes: int(1024, 16 * 1024 * 1024, 65_536, "Largest request body, bytes."),
    batch_body_limit_bytes: int(
      1024,
      64 * 1024 * 1024,
      4 * 1024 * 1024,
      "Largest body of a batch publish (POST /v1/messages, up to 1000 messages), bytes; the other routes keep body_limit_bytes.",
    ),
    request_timeout_seconds: int(
      1,
      3600,
      30,
      "A request not received in full within this many seconds is answered 408 request_timeout and its connection closed (slow or short bodies).",
    ),
    rate_limit_per_minute: int(0, 10_000_000, 60_000, "Requests per minute per token (per IP address without one); 0 turns the limit off."),
    public_metrics: bool(false, "Serve /metrics without a token (otherwise an admin token is needed)."),
  })
  .prefault({})
  .describe("The HTTP API publishers and operators use.");

export const storeSection = z
  .strictObject({
    kind: choice(["sqlite", "memory"], "sqlite", '"sqlite" (durable) or "memory" (everything is lost on exit, signing keys included).'),
    path: path("dtlspush.db", "SQLite database file; a relative path is inside data_dir."),
    synchronous: choice(["normal", "full"], "normal", 'SQLite synchronous mode: "normal" (WAL; a power loss may lose the last commits) or "full".'),
    prune_interval_seconds: int(10, 7 * DAY, 3600, "How often expired messages and old receipts are pruned, seconds."),
    receipt_retention_seconds: int(60, 3650 * DAY, 7 * DAY, "How long delivery receipts are kept (and replayable with Last-Event-ID), seconds."),
  })
  .prefault({})
  .describe("Where devices, messages, receipts and signing keys are kept.");

export const deliverySection = z
  .strictObject({
    window: int(1, 1024, 32, "Pushes per device sent and not yet acknowledged."),
    max_queue: int(1, 1_000_000, 1000, "Messages per device queued or in flight."),
    queue_full: choice(
      QUEUE_FULL_POLICIES,
      "reject",
      'A full queue: "reject" refuses the publish (429 queue_full); "drop-oldest" expires the oldest unsent message.',
    ),
    max_payload_bytes: int(
      1,
      65_000,
      DEFAULT_MAX_PAYLOAD_BYTES,
      "Largest message payload, bytes; the Push around it (signature, ids, topic, content type) must also fit one DTLS record of dtls.mtu. The default fits the default MTU with 177 bytes left for those names.",
    ),
    default_ttl_seconds: int(1, 3650 * DAY, DAY, "Time to live of a message published without one, seconds; at most max_ttl_seconds."),
    max_ttl_seconds: int(1, 3650 * DAY, 30 * DAY, "Largest time to live a publisher may ask for, seconds."),
    heartbeat_seconds: int(1, 3600, 30, "Heartbeat interval announced to devices, seconds."),
    missed_heartbeats: int(1, 100, 3, "Missed heartbeat intervals before a device counts as offline."),
    session_token_ttl_seconds: int(60, 30 * DAY, 3600, "Lifetime of the session tokens devices resume with, seconds."),
    max_topics: int(0, 10_000, 100, "Topics a device may subscribe itself to."),
    max_inflight: int(
      1,
      100_000_000,
      4096,
      "Pushes sent and not yet acknowledged, all online devices together; beyond it devices wait for acks to free room (a large fan-out is paced by the acks).",
    ),
  })
  .prefault({})
  .describe("Reliable delivery to devices.");

export const logSection = z
  .strictObject({
    level: choice(LOG_LEVELS, "info", "Least severe level logged (JSON lines on stdout)."),
  })
  .prefault({})
  .describe("Logging.");

export const shutdownSection = z
  .strictObject({
    drain_timeout_seconds: int(0, 3600, 10, "On SIGTERM/SIGINT: how long to wait for in-flight work before closing, seconds."),
  })
  .prefault({})
  .describe("Graceful shutdown.");

export const signingSection = z
  .strictObject({
    workers: intOrAuto(
      0,
      256,
      'Worker threads that make the content signatures of publishes, off the event loop. "auto": the CPU cores less one, at least 1; 0: sign on the main thread.',
    ),
  })
  .prefault({})
  .describe("Content signatures.");

/** Most worker processes `serve --workers` starts (a CID prefix byte each). */
export const MAX_WORKERS = 64;

/** A node id: what the cluster's logs and presence name a node by. */
export const NODE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export const clusterSection = z
  .strictObject({
    redis_url: redisUrl(
      'Redis the nodes share their state through: redis://[user:password@]host[:port][/db], rediss:// for TLS. "": no cluster, the embedded SQLite store.',
    ),
    node_id: text(
      /^(?:|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$/,
      "expected 1 to 64 letters, digits, '.', '_' or '-' starting with a letter or digit (or \"\")",
      "",
      'This node\'s name in the cluster (logs, presence). "": one generated on first start and kept in data_dir (file node-id).',
    ),
    key_prefix: text(
      /^[\x21-\x7e]{1,64}$/,
      "expected 1 to 64 printable ASCII characters without spaces",
      "dtlspush:",
      "Prefix of every Redis key the daemon writes, so several deployments share one Redis.",
    ),
    connect_timeout_seconds: int(1, 300, 5, "How long a start (and a CLI command) waits for Redis before giving up with one line, seconds."),
    outage_max_seconds: int(
      1,
      86_400,
      300,
      "How long Redis may be unreachable while the daemon runs: meanwhile publishes and API calls answer 503 store_unavailable, devices keep their sessions and the store reconnects by itself; longer, the store fails and the daemon exits (status 1), seconds.",
    ),
    allow_no_persistence: bool(
      false,
      "Start even when Redis has no persistence at all (appendonly no and no save points): a Redis restart then loses everything, 202'd messages included. A warning is logged at every start.",
    ),
    workers: intOrAuto(
      1,
      MAX_WORKERS,
      'Daemon processes on this machine sharing the DTLS and HTTP ports (SO_REUSEPORT), each a node of the cluster (node_id-w0, -w1, ...), under one supervisor. "auto": the CPU cores with redis_url, else 1; more than 1 needs redis_url. 1: one process, no supervisor.',
    ),
    forward_rate_per_second: int(
      0,
      1_000_000,
      10_000,
      "With workers > 1: DTLS records per second one worker forwards at most to the worker holding their Connection ID (a device whose NAT rebinding made the kernel send its datagrams elsewhere); 0: no limit. Beyond it they are dropped and counted.",
    ),
  })
  .prefault({})
  .describe("Several nodes sharing their state through Redis.");

export const configSchema = z.strictObject({
  data_dir: path("data", "Directory of the store and the signing keys; created (mode 0700) when missing."),
  dtls: dtlsSection,
  http: httpSection,
  store: storeSection,
  delivery: deliverySection,
  log: logSection,
  signing: signingSection,
  shutdown: shutdownSection,
  cluster: clusterSection,
});

/** The file with every default applied (snake_case, paths as written). */
export type ConfigFile = z.output<typeof configSchema>;

/** The tables of the file, in order. */
export const SECTIONS = ["dtls", "http", "store", "delivery", "log", "signing", "shutdown", "cluster"] as const;
export type SectionName = (typeof SECTIONS)[number];

function infoFor(schema: z.ZodType, name: string): Info {
  const info = infoOf.get(schema);
  if (info === undefined) throw new Error(`setting ${name} has no description`);
  return info;
}

function envName(section: string | undefined, key: string): string {
  return `${ENV_PREFIX}${section === undefined ? "" : `${section.toUpperCase()}_`}${key.toUpperCase()}`;
}

function sectionShape(section: SectionName): Record<string, z.ZodType> {
  // Each section is strictObject(...).prefault({}): the shape is on the inner object.
  return configSchema.shape[section].unwrap().shape;
}

function buildSettings(): SettingInfo[] {
  const out: SettingInfo[] = [
    {
      name: "data_dir",
      section: undefined,
      key: "data_dir",
      env: envName(undefined, "data_dir"),
      ...infoFor(configSchema.shape.data_dir, "data_dir"),
    },
  ];
  for (const section of SECTIONS) {
    for (const [key, schema] of Object.entries(sectionShape(section))) {
      const name = `${section}.${key}`;
      out.push({ name, section, key, env: envName(section, key), ...infoFor(schema, name) });
    }
  }
  return out;
}

/** Every setting of the file, in file order. */
export const SETTINGS: readonly SettingInfo[] = buildSettings();

/** The settings by name ("dtls.listen") and by environment variable. */
export const SETTINGS_BY_NAME: ReadonlyMap<string, SettingInfo> = new Map(SETTINGS.map((s) => [s.name, s]));
export const SETTINGS_BY_ENV: ReadonlyMap<string, SettingInfo> = new Map(SETTINGS.map((s) => [s.env, s]));

/** A table's description (for the docs). */
export function sectionDescription(section: SectionName): string {
  return configSchema.shape[section].description ?? "";
}
