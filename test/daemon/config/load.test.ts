/** loadConfig: defaults, file + environment + flags, validation messages, paths. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ConfigError,
  loadConfig,
  parseHostPort,
  settingLabel,
  SETTINGS,
  signingWorkers,
  toDeliveryOptions,
  toStoreOptions,
  type LoadConfigOptions,
} from "../../../src/daemon/config/index.ts";
import { PUSH_FIXED_OVERHEAD } from "../../../src/daemon/config/load.ts";
import { DEFAULT_DELIVERY_OPTIONS } from "../../../src/messaging/options.ts";
import { encodeFrame, pushOverhead } from "../../../src/wire/index.ts";
import { DtlspushError } from "../../../src/util/errors.ts";

let work: string;
let n = 0;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "dtlspush-config-"));
});
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

/** Writes a config file in a fresh directory; returns its path. */
function configFile(text: string, name = "dtlspush.toml"): string {
  n += 1;
  const dir = join(work, `c${n}`);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** The ConfigError loadConfig throws, or a failure. */
async function configError(o: LoadConfigOptions): Promise<ConfigError> {
  try {
    await loadConfig({ env: {}, cwd: work, ...o });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect(e).toBeInstanceOf(DtlspushError);
    expect((e as ConfigError).code).toBe("config_invalid");
    return e as ConfigError;
  }
  throw new Error("loadConfig did not fail");
}

async function message(o: LoadConfigOptions): Promise<string> {
  return (await configError(o)).message;
}

describe("defaults", () => {
  it("are the documented ones, paths resolved against cwd", async () => {
    const c = await loadConfig({ env: {}, cwd: "/srv/push" });
    expect(c.file).toBeUndefined();
    expect(c.dataDir).toBe("/srv/push/data");
    expect(c.dtls).toEqual({
      listen: { host: "127.0.0.1", port: 5684 },
      psk: true,
      certificate: undefined,
      key: undefined,
      clientCa: undefined,
      clientAuth: "request",
      certsDir: "/srv/push/certs",
      mtu: 1200,
      maxSessions: 200_000,
      maxHandshakes: 2000,
      maxHandshakesPerHost: 100,
      maxSessionsPerHost: 32_768,
      handshakeTimeoutSeconds: 30,
      handshakeMemoryBytes: 67_108_864,
      idleTimeoutSeconds: 300,
      sockets: undefined,
      socketBufferBytes: 4 * 1024 * 1024,
      receiveBufferBytes: 1024 * 1024,
      helloVerifyRatePerSecond: 5000,
      helloVerifyRatePerPrefix: 500,
      connectionIdLength: 6,
      resumption: true,
      ticketLifetimeSeconds: 86_400,
      maxSessionAgeSeconds: 604_800,
      sessionCacheSize: 10_000,
      ticketKeyRotationSeconds: 86_400,
      keepSessionsOnRestart: true,
      sessionSnapshotMaxAgeSeconds: 600,
    });
    expect(c.http).toEqual({
      listen: { host: "127.0.0.1", port: 8080 },
      bodyLimitBytes: 65_536,
      batchBodyLimitBytes: 4 * 1024 * 1024,
      requestTimeoutSeconds: 30,
      rateLimitPerMinute: 60_000,
      publicMetrics: false,
    });
    expect(c.store).toEqual({
      kind: "sqlite",
      path: "/srv/push/data/dtlspush.db",
      synchronous: "normal",
      pruneIntervalSeconds: 3600,
      receiptRetentionSeconds: 604_800,
    });
    expect(c.delivery).toEqual({
      window: 32,
      maxQueue: 1000,
      queueFull: "reject",
      maxPayloadBytes: 768,
      defaultTtlSeconds: 86_400,
      maxTtlSeconds: 2_592_000,
      heartbeatSeconds: 30,
      missedHeartbeats: 3,
      sessionTokenTtlSeconds: 3600,
      maxTopics: 100,
      maxInflight: 4096,
    });
    expect(c.log).toEqual({ level: "info" });
    expect(c.shutdown).toEqual({ drainTimeoutSeconds: 10 });
    expect(Object.keys(c.sources)).toEqual(SETTINGS.map((s) => s.name));
    expect(new Set(Object.values(c.sources))).toEqual(new Set(["default"]));
  });

  it("map to the engine's own defaults", async () => {
    const c = await loadConfig({ env: {}, cwd: work });
    const { rtt: _rtt, jitter: _jitter, pumpPerTurn: _pumpPerTurn, ...engineDefaults } = DEFAULT_DELIVERY_OPTIONS;
    expect(toDeliveryOptions(c)).toEqual(engineDefaults);
    expect(toStoreOptions(c)).toEqual({ kind: "sqlite", path: join(work, "data", "dtlspush.db"), synchronous: "normal" });
  });

  it("reserve publishers' ids for longer than a Redis outage may hold their commit", async () => {
    // idReservationSeconds is not a setting of its own: it must outlast cluster.outage_max_seconds
    const long = await loadConfig({ env: { DTLSPUSH_CLUSTER_OUTAGE_MAX_SECONDS: "3600" }, cwd: work });
    expect(toDeliveryOptions(long).idReservationSeconds).toBe(3900);
    const short = await loadConfig({ env: { DTLSPUSH_CLUSTER_OUTAGE_MAX_SECONDS: "60" }, cwd: work });
    expect(toDeliveryOptions(short).idReservationSeconds).toBe(900);
  });

  it("uses process.env and process.cwd() when not given", async () => {
    const c = await loadConfig();
    expect(c.dataDir).toBe(join(process.cwd(), "data"));
  });
});

describe("precedence", () => {
  const file = (): string =>
    configFile(`
data_dir = "file-data"
[dtls]
listen = "10.0.0.1:1111"
mtu = 1400
[http]
listen = "10.0.0.1:2222"
[delivery]
window = 8
max_queue = 50
[log]
level = "warn"
`);

  it("file over defaults", async () => {
    const path = file();
    const c = await loadConfig({ file: path, env: {}, cwd: work });
    expect(c.file).toBe(path);
    expect(c.dtls.listen).toEqual({ host: "10.0.0.1", port: 1111 });
    expect(c.dtls.mtu).toBe(1400);
    expect(c.delivery.window).toBe(8);
    expect(c.delivery.maxQueue).toBe(50);
    expect(c.delivery.missedHeartbeats).toBe(3);
    expect(c.log.level).toBe("warn");
    expect(c.sources["dtls.mtu"]).toBe(`in ${path}`);
    expect(c.sources["dtls.psk"]).toBe("default");
  });

  it("environment over file, flags over environment", async () => {
    const path = file();
    const env = {
      DTLSPUSH_DTLS_LISTEN: "10.0.0.2:3333",
      DTLSPUSH_HTTP_LISTEN: "10.0.0.2:4444",
      DTLSPUSH_DELIVERY_WINDOW: "16",
      DTLSPUSH_DATA_DIR: "env-data",
      DTLSPUSH_LOG_LEVEL: "debug",
      DTLSPUSH_DTLS_PSK: "false",
      DTLSPUSH_DELIVERY_QUEUE_FULL: "drop-oldest",
    };
    const c = await loadConfig({ file: path, env, cwd: work, flags: { listen: "[::1]:5555", logLevel: "error" } });
    expect(c.dtls.listen).toEqual({ host: "::1", port: 5555 });
    expect(c.http.listen).toEqual({ host: "10.0.0.2", port: 4444 });
    expect(c.delivery.window).toBe(16);
    expect(c.delivery.maxQueue).toBe(50);
    expect(c.delivery.queueFull).toBe("drop-oldest");
    expect(c.dtls.psk).toBe(false);
    expect(c.dtls.mtu).toBe(1400);
    expect(c.log.level).toBe("error");
    expect(c.dataDir).toBe(join(work, "env-data"));
    expect(c.sources["dtls.listen"]).toBe("from --listen");
    expect(c.sources["http.listen"]).toBe("from DTLSPUSH_HTTP_LISTEN");
    expect(c.sources["delivery.max_queue"]).toBe(`in ${path}`);
    expect(settingLabel(c, "log.level")).toBe("log.level (from --log-level)");
  });

  it("every flag sets its setting", async () => {
    const c = await loadConfig({
      env: {},
      cwd: work,
      flags: { listen: "0.0.0.0:0", http: "localhost:0", dataDir: "/var/lib/x", logLevel: "silent" },
    });
    expect(c.dtls.listen).toEqual({ host: "0.0.0.0", port: 0 });
    expect(c.http.listen).toEqual({ host: "localhost", port: 0 });
    expect(c.dataDir).toBe("/var/lib/x");
    expect(c.store.path).toBe("/var/lib/x/dtlspush.db");
    expect(c.log.level).toBe("silent");
  });

  it("every setting has a working environment variable", async () => {
    // A non-default value for each kind; the result shows each was applied.
    const env: Record<string, string> = {};
    for (const s of SETTINGS) {
      if (s.kind === "integer" || s.kind === "integer-or-auto") env[s.env] = String(s.min === s.default ? (s.min ?? 0) + 1 : s.min);
      else if (s.kind === "boolean") env[s.env] = String(!s.default);
      else if (s.kind === "enum") env[s.env] = s.values?.find((v) => v !== s.default) ?? "";
      else if (s.kind === "host-port") env[s.env] = "127.0.0.2:1";
      else if (s.kind === "redis-url") env[s.env] = "redis://127.0.0.2:1";
      else if (s.kind === "text") env[s.env] = "x1";
      else env[s.env] = `/p/${s.key}`;
    }
    // Keep the rules between settings satisfied.
    env["DTLSPUSH_DTLS_IDLE_TIMEOUT_SECONDS"] = "60";
    env["DTLSPUSH_DTLS_MTU"] = "1200";
    env["DTLSPUSH_STORE_KIND"] = "sqlite"; // "memory" cannot go with cluster.redis_url
    const c = await loadConfig({ env, cwd: work });
    for (const s of SETTINGS) expect(c.sources[s.name], s.name).toBe(`from ${s.env}`);
    expect(c.delivery.window).toBe(1);
    expect(c.signing.workers).toBe(0);
    expect(c.http.rateLimitPerMinute).toBe(0);
    expect(c.http.publicMetrics).toBe(true);
    expect(c.store.path).toBe("/p/path");
    expect(c.dtls.certificate).toBe("/p/certificate");
    expect(c.dtls.clientCa).toBe("/p/client_ca");
    expect(String(c.cluster.redisUrl)).toBe("redis://127.0.0.2:1");
    expect(c.cluster.nodeId).toBe("x1");
  });

  it("ignores the CLI's variables and DTLSPUSH_ variables that are not settings", async () => {
    const env = {
      DTLSPUSH_TOKEN: "t",
      DTLSPUSH_API: "http://x",
      DTLSPUSH_CONFIG: "/nope.toml",
      DTLSPUSH_DEBUG: "1",
      DTLSPUSH_SOMETHING_ELSE: "1",
      PATH: "/bin",
    };
    const c = await loadConfig({ env, cwd: work });
    expect(c.dtls.listen.port).toBe(5684);
  });
});

describe("paths", () => {
  it("from the file resolve against its directory; store.path against data_dir", async () => {
    const path = configFile(`
data_dir = "state"
[dtls]
certificate = "tls/server.pem"
key = "/abs/server.key"
client_ca = "../ca.pem"
certs_dir = "dev"
[store]
path = "db/push.db"
`);
    const dir = join(path, "..");
    const c = await loadConfig({ file: path, env: {}, cwd: "/elsewhere" });
    expect(c.dataDir).toBe(join(dir, "state"));
    expect(c.dtls.certificate).toBe(join(dir, "tls", "server.pem"));
    expect(c.dtls.key).toBe("/abs/server.key");
    expect(c.dtls.clientCa).toBe(join(dir, "..", "ca.pem"));
    expect(c.dtls.certsDir).toBe(join(dir, "dev"));
    expect(c.store.path).toBe(join(dir, "state", "db", "push.db"));
  });

  it("from the environment, flags and defaults resolve against cwd", async () => {
    const path = configFile(`[store]\npath = "/var/db/push.db"\n`);
    const c = await loadConfig({ file: path, env: { DTLSPUSH_DTLS_CERTS_DIR: "my-certs" }, flags: { dataDir: "d" }, cwd: "/run/x" });
    expect(c.dtls.certsDir).toBe("/run/x/my-certs");
    expect(c.dataDir).toBe("/run/x/d");
    expect(c.store.path).toBe("/var/db/push.db");
  });

  it("a relative file name is read from cwd and reported as written", async () => {
    const path = configFile(`[delivery]\nwindow = 0\n`);
    expect(await message({ file: "dtlspush.toml", cwd: join(path, "..") })).toBe(
      "delivery.window (in dtlspush.toml): expected an integer from 1 to 1024, got 0",
    );
  });
});

describe("errors", () => {
  it("unknown setting in the file, with a suggestion", async () => {
    const path = configFile(`[dtls]\nlisen = "1.2.3.4:5"\n`);
    expect(await message({ file: path })).toBe(`unknown setting dtls.lisen in ${path} (did you mean dtls.listen?)`);
  });

  it("unknown top-level key and unknown table", async () => {
    const a = configFile(`colour = "blue"\n`);
    expect(await message({ file: a })).toBe(`unknown setting colour in ${a}`);
    const b = configFile(`[dtsl]\nmtu = 1200\n`);
    expect(await message({ file: b })).toBe(`unknown table [dtsl] in ${b} (did you mean dtls?)`);
  });

  it("a top-level setting written inside a table", async () => {
    const path = configFile(`[dtls]\nmtu = 1200\ndata_dir = "x"\n`);
    expect(await message({ file: path })).toBe(
      `unknown setting dtls.data_dir in ${path} (data_dir is a top-level setting: write it before the first [table])`,
    );
  });

  it("a table given as a value", async () => {
    const path = configFile(`dtls = 5\n`);
    expect(await message({ file: path })).toBe(`dtls (in ${path}): expected a table ([dtls]), got 5`);
  });

  it("wrong type in the file", async () => {
    const path = configFile(`[delivery]\nwindow = "x"\n`);
    expect(await message({ file: path })).toBe(`delivery.window (in ${path}): expected an integer from 1 to 1024, got "x"`);
    const b = configFile(`[http]\npublic_metrics = "yes"\n`);
    expect(await message({ file: b })).toBe(`http.public_metrics (in ${b}): expected true or false, got "yes"`);
    const c = configFile(`data_dir = 7\n`);
    expect(await message({ file: c })).toBe(`data_dir (in ${c}): expected a non-empty path, got 7`);
  });

  it("not an integer", async () => {
    const path = configFile(`[dtls]\nmtu = 1200.5\n`);
    expect(await message({ file: path })).toBe(`dtls.mtu (in ${path}): expected an integer from 100 to 65507, got 1200.5`);
  });

  it("out of range, from the file and from the environment", async () => {
    const path = configFile(`[delivery]\nwindow = 5000\n`);
    expect(await message({ file: path })).toBe(`delivery.window (in ${path}): expected an integer from 1 to 1024, got 5000`);
    expect(await message({ env: { DTLSPUSH_DELIVERY_MAX_QUEUE: "0" } })).toBe(
      'delivery.max_queue (from DTLSPUSH_DELIVERY_MAX_QUEUE): expected an integer from 1 to 1000000, got "0"',
    );
    expect(await message({ env: { DTLSPUSH_DELIVERY_WINDOW: "x" } })).toBe(
      'delivery.window (from DTLSPUSH_DELIVERY_WINDOW): expected an integer from 1 to 1024, got "x"',
    );
  });

  it("bad enum", async () => {
    expect(await message({ env: { DTLSPUSH_LOG_LEVEL: "loud" } })).toBe(
      'log.level (from DTLSPUSH_LOG_LEVEL): expected one of "trace", "debug", "info", "warn", "error", "fatal", "silent", got "loud"',
    );
    expect(await message({ flags: { logLevel: "verbose" } })).toBe(
      'log.level (from --log-level): expected one of "trace", "debug", "info", "warn", "error", "fatal", "silent", got "verbose"',
    );
    const path = configFile(`[store]\nkind = "postgres"\n`);
    expect(await message({ file: path })).toBe(`store.kind (in ${path}): expected one of "sqlite", "memory", got "postgres"`);
  });

  it("bad boolean from the environment", async () => {
    expect(await message({ env: { DTLSPUSH_DTLS_PSK: "yes" } })).toBe('dtls.psk (from DTLSPUSH_DTLS_PSK): expected true or false, got "yes"');
  });

  it.each([
    ["8080", "expected HOST:PORT"],
    [":8080", "expected HOST:PORT"],
    ["localhost", "expected HOST:PORT"],
    ["host:99999", "expected HOST:PORT with a port from 0 to 65535"],
    ["::1:80", "expected HOST:PORT with an IPv6 host in brackets ([::1]:PORT)"],
    ["[127.0.0.1]:80", "expected HOST:PORT (only an IPv6 host goes in brackets)"],
    ["a b:1", "expected HOST:PORT"],
  ])("bad HOST:PORT %j", async (value, expected) => {
    expect(await message({ env: { DTLSPUSH_HTTP_LISTEN: value } })).toBe(
      `http.listen (from DTLSPUSH_HTTP_LISTEN): ${expected}, got ${JSON.stringify(value)}`,
    );
  });

  it("bad HOST:PORT from a flag", async () => {
    expect(await message({ flags: { listen: "5684" } })).toBe('dtls.listen (from --listen): expected HOST:PORT, got "5684"');
  });

  it("unknown DTLSPUSH_ setting variable", async () => {
    expect(await message({ env: { DTLSPUSH_HTTP_LISTN: "1.2.3.4:5" } })).toBe(
      "unknown setting DTLSPUSH_HTTP_LISTN in the environment (did you mean DTLSPUSH_HTTP_LISTEN?)",
    );
    expect(await message({ env: { DTLSPUSH_DATADIR: "x" } })).toBe(
      "unknown setting DTLSPUSH_DATADIR in the environment (did you mean DTLSPUSH_DATA_DIR?)",
    );
    expect(await message({ env: { DTLSPUSH_STORE_LOCATION: "x" } })).toBe("unknown setting DTLSPUSH_STORE_LOCATION in the environment");
  });

  it("TOML syntax error names the file and line", async () => {
    const path = configFile(`data_dir = "x"\n[dtls]\nlisten = \n`);
    expect(await message({ file: path })).toBe(`${path} line 3, column 10: invalid TOML: invalid value`);
    const dup = configFile(`[delivery]\nwindow = 1\nwindow = 2\n`);
    expect(await message({ file: dup })).toMatch(new RegExp(`^${dup} line 3, column \\d+: invalid TOML: `));
  });

  it("unreadable file", async () => {
    const missing = join(work, "missing.toml");
    expect(await message({ file: missing })).toBe(`cannot read the configuration file ${missing}: no such file or directory`);
    expect(await message({ file: work })).toBe(`cannot read the configuration file ${work}: it is a directory`);
  });

  it("empty path", async () => {
    expect(await message({ env: { DTLSPUSH_DATA_DIR: "" } })).toBe('data_dir (from DTLSPUSH_DATA_DIR): expected a non-empty path, got ""');
  });
});

describe("rules between settings", () => {
  it("key without certificate, certificate without key", async () => {
    expect(await message({ env: { DTLSPUSH_DTLS_KEY: "k.pem" } })).toBe(
      "dtls.key (from DTLSPUSH_DTLS_KEY): set dtls.certificate too, or leave both empty to use the development certificate",
    );
    const path = configFile(`[dtls]\ncertificate = "c.pem"\nclient_auth = "none"\n`);
    expect(await message({ file: path })).toBe(`dtls.certificate (in ${path}): needs dtls.key, the file of the certificate's private key`);
  });

  it("own certificate with client_auth but no client_ca", async () => {
    const path = configFile(`[dtls]\ncertificate = "c.pem"\nkey = "k.pem"\n`);
    expect(await message({ file: path })).toBe(
      'dtls.client_auth (default): "request" needs dtls.client_ca (the CA of device certificates) when dtls.certificate is set; set dtls.client_ca, or dtls.client_auth = "none"',
    );
    const ok = configFile(`[dtls]\ncertificate = "c.pem"\nkey = "k.pem"\nclient_auth = "none"\n`);
    expect((await loadConfig({ file: ok, env: {} })).dtls.clientAuth).toBe("none");
  });

  it("a connection ID too short to be unique (0 is off)", async () => {
    expect(await message({ env: { DTLSPUSH_DTLS_CONNECTION_ID_LENGTH: "3" } })).toBe(
      "dtls.connection_id_length (from DTLSPUSH_DTLS_CONNECTION_ID_LENGTH): 3 is too short to be unguessable and unique; use 0 (off) or at least 4",
    );
    expect((await loadConfig({ env: { DTLSPUSH_DTLS_CONNECTION_ID_LENGTH: "0" }, cwd: work })).dtls.connectionIdLength).toBe(0);
  });

  it("idle timeout not above the heartbeat", async () => {
    expect(await message({ env: { DTLSPUSH_DTLS_IDLE_TIMEOUT_SECONDS: "30" } })).toBe(
      "dtls.idle_timeout_seconds (from DTLSPUSH_DTLS_IDLE_TIMEOUT_SECONDS): 30 must be more than delivery.heartbeat_seconds (30), or sessions close between heartbeats",
    );
  });

  it("payload that cannot fit a record of the MTU beside the Push's signature and numbers", async () => {
    expect(await message({ env: { DTLSPUSH_DTLS_MTU: "1000" } })).toBe(
      "delivery.max_payload_bytes (default): 768 bytes cannot fit one DTLS record at dtls.mtu 1000: the record carries 963 bytes, " +
        "a Push needs 218 of them for its signature and numbers before any id, topic or content type, so at most 745 bytes of payload fit; lower it or raise dtls.mtu",
    );
    expect(await message({ env: { DTLSPUSH_DTLS_MTU: "1400", DTLSPUSH_DELIVERY_MAX_PAYLOAD_BYTES: "1146" } })).toMatch(
      /at most 1145 bytes of payload fit/,
    );
    const c = await loadConfig({ env: { DTLSPUSH_DTLS_MTU: "1400", DTLSPUSH_DELIVERY_MAX_PAYLOAD_BYTES: "1145" }, cwd: work });
    expect(toDeliveryOptions(c).maxRecordPayload).toBe(1363);
    expect(toDeliveryOptions(c).maxPayload).toBe(1145);
  });

  it("the defaults are consistent: a payload of max_payload_bytes fits the default MTU beside a Push with ordinary names", async () => {
    const c = await loadConfig({ env: {}, cwd: work });
    const d = toDeliveryOptions(c);
    const signature = `${Buffer.from(JSON.stringify({ alg: "EdDSA", kid: "k".repeat(43) })).toString("base64url")}..${"s".repeat(86)}`;
    const push = {
      seq: Number.MAX_SAFE_INTEGER,
      createdAt: Number.MAX_SAFE_INTEGER,
      expiresAt: Number.MAX_SAFE_INTEGER,
      priority: 9,
      signature,
      messageId: "0b5c2f4e-8f43-4b8e-9a51-7d1a3c0e9f21",
      device: "d".repeat(64),
      publisher: "p".repeat(32),
      contentType: "application/json",
      payload: new Uint8Array(d.maxPayload ?? 0),
    };
    expect(encodeFrame({ kind: "push", push }).length).toBeLessThanOrEqual(d.maxRecordPayload ?? 0);
    // and the fixed part counted by the rule between settings is what a Push with empty names costs
    expect(PUSH_FIXED_OVERHEAD).toBe(pushOverhead({ ...push, messageId: "", device: "", publisher: "", contentType: "", payload: undefined }));
  });

  it("default TTL above the maximum", async () => {
    expect(await message({ env: { DTLSPUSH_DELIVERY_MAX_TTL_SECONDS: "60" } })).toBe(
      "delivery.default_ttl_seconds (default): 86400 is more than delivery.max_ttl_seconds (60)",
    );
  });
});

describe("parseHostPort", () => {
  it("splits hosts and ports", () => {
    expect(parseHostPort("127.0.0.1:5684")).toEqual({ host: "127.0.0.1", port: 5684 });
    expect(parseHostPort("[::]:0")).toEqual({ host: "::", port: 0 });
    expect(parseHostPort("[fe80::1]:65535")).toEqual({ host: "fe80::1", port: 65_535 });
    expect(parseHostPort("push.example.com:8080")).toEqual({ host: "push.example.com", port: 8080 });
    expect(typeof parseHostPort("push.example.com:")).toBe("string");
  });
});

describe("dtls.ticket_key_rotation_seconds", () => {
  it('is "auto" by default: the ticket lifetime', async () => {
    const c = await loadConfig({ env: { DTLSPUSH_DTLS_TICKET_LIFETIME_SECONDS: "3600" }, cwd: work });
    expect(c.dtls.ticketKeyRotationSeconds).toBe(3600);
    const d = await loadConfig({
      env: { DTLSPUSH_DTLS_TICKET_LIFETIME_SECONDS: "3600", DTLSPUSH_DTLS_TICKET_KEY_ROTATION_SECONDS: "600" },
      cwd: work,
    });
    expect(d.dtls.ticketKeyRotationSeconds).toBe(600);
  });
});

describe("signing.workers", () => {
  it('is "auto" by default: the cores less one, at least 1; 0 signs on the main thread', async () => {
    const c = await loadConfig({ env: {}, cwd: work });
    expect(c.signing.workers).toBe("auto");
    expect(signingWorkers(c, 8)).toBe(7);
    expect(signingWorkers(c, 1)).toBe(1);
    const zero = await loadConfig({ env: { DTLSPUSH_SIGNING_WORKERS: "0" }, cwd: work });
    expect(signingWorkers(zero, 8)).toBe(0);
    await expect(loadConfig({ env: { DTLSPUSH_SIGNING_WORKERS: "many" }, cwd: work })).rejects.toThrow(
      /signing\.workers.*"auto" or an integer from 0 to 256/,
    );
  });
});
