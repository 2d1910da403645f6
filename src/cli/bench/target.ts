/**
 * The daemon under test: one that already runs (reached through its HTTP API,
 * with an admin token given or minted from the local data directory), or one
 * the bench starts in its own process (`--in-process`: a temporary data
 * directory, ports chosen by the system, publishes by a direct call).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApiError, formatApiUrl, isLoopbackUrl } from "../api-client.ts";
import type { HostPort } from "../args.ts";
import type { DaemonConfig } from "../../daemon/config/index.ts";
import { DaemonAccess, type ApiOptions, type DataDirOptions, type Env } from "../daemon-access.ts";
import { CliError } from "../errors.ts";
import { BenchHttpClient } from "./http-client.ts";
import { benchNow } from "./ipc.ts";
import { ScrapedLoopDelay, type LoopDelayWindow } from "./loop-delay.ts";
import { snapshotOf, type DaemonSnapshot } from "./prometheus.ts";

/** Lifetime of the admin token the bench mints for itself: long enough for a 100k-device run. */
export const BENCH_TOKEN_TTL_SECONDS = 6 * 3600;
export const BENCH_PUBLISHER = "dtlspush-bench";

export interface BenchTarget {
  readonly kind: "api" | "in-process";
  readonly apiUrl: URL;
  /** where devices connect */
  readonly dtls: HostPort;
  /** API client (admin token) with `connections` keep-alive sockets */
  readonly http: BenchHttpClient;
  /**
   * The daemon's configuration, when it is known: the one it was started with
   * (in process), or the local one (--config/--data-dir, or an API on this
   * machine) when asked for with `wantConfig`.
   */
  readonly config: DaemonConfig | undefined;
  /** the daemon's figures from /metrics */
  snapshot(): Promise<DaemonSnapshot>;
  /** starts measuring the daemon's event-loop delay (see loop-delay.ts) */
  watchLoopDelay(): LoopDelayWindow;
  /** one message to one device; resolves when the daemon has it durably */
  publishToDevice(device: string, payload: string): Promise<void>;
  /**
   * Messages to devices in one request of the batch API (POST /v1/messages);
   * resolves when the daemon has answered, with each entry's error code
   * (undefined: published, durably).
   */
  publishBatch(entries: readonly { readonly device: string; readonly payload: string }[]): Promise<(string | undefined)[]>;
  /** one message to a topic; resolves with its recipients */
  publishToTopic(topic: string, payload: string, id: string): Promise<{ recipients: number }>;
  close(): Promise<void>;
}

function rateLimitHint(e: unknown): unknown {
  if (e instanceof ApiError && e.code === "rate_limited") {
    return new CliError(
      "the daemon's API rate limit refused the bench (rate_limited); run the daemon under test with http.rate_limit_per_minute = 0 (e.g. DTLSPUSH_HTTP_RATE_LIMIT_PER_MINUTE=0)",
    );
  }
  return e;
}

async function metricsText(http: BenchHttpClient, url: URL): Promise<string> {
  const { status, text } = await http.raw("GET", "/metrics");
  if (status === 200) return text;
  if (status === 401 || status === 403)
    throw new CliError(`the daemon at ${formatApiUrl(url)} refused /metrics (${status}): the bench needs an admin token`);
  throw new CliError(`the daemon at ${formatApiUrl(url)} answered ${status} for /metrics`);
}

function publishBody(payload: string, id?: string): string {
  return id === undefined ? `{"payload":${JSON.stringify(payload)}}` : `{"payload":${JSON.stringify(payload)},"id":${JSON.stringify(id)}}`;
}

/** push --batch: one request of the batch API, through the API client (in process too). */
function publishBatch(
  http: BenchHttpClient,
  entries: readonly { readonly device: string; readonly payload: string }[],
): Promise<(string | undefined)[]> {
  const body = `{"messages":[${entries.map((e) => `{"device":${JSON.stringify(e.device)},"payload":${JSON.stringify(e.payload)}}`).join(",")}]}`;
  return http.request("POST", "/v1/messages", body).then(
    (a) => {
      const results = (a.body as { results?: unknown } | undefined)?.results;
      if (!Array.isArray(results) || results.length !== entries.length) throw new CliError("the API did not answer one result per batch entry");
      return results.map((r) => {
        const code = (r as { error?: { code?: unknown } } | null)?.error?.code;
        return typeof code === "string" ? code : undefined;
      });
    },
    (e: unknown) => Promise.reject(rateLimitHint(e)),
  );
}

function recipientsOf(body: unknown): number {
  const r = (body as { recipients?: unknown } | undefined)?.recipients;
  return typeof r === "number" ? r : Array.isArray(r) ? r.length : 0;
}

/** A running daemon reached through its API. */
export async function apiTarget(o: {
  access: DataDirOptions;
  api: ApiOptions;
  server: HostPort | undefined;
  connections: number;
  env: Env;
  cwd: string;
  /** load the daemon's configuration (when it can be the daemon's) for `config` */
  wantConfig?: boolean;
}): Promise<BenchTarget> {
  const access = new DaemonAccess(o.access, o.api, o.env, o.cwd);
  try {
    const url = await access.apiUrl();
    let token = access.givenToken;
    if (token === undefined) {
      if (!(await access.canMint(url))) throw await access.noTokenError(url);
      token = (await access.mint(["admin"], BENCH_TOKEN_TTL_SECONDS, BENCH_PUBLISHER)).token;
    }
    let dtls = o.server;
    if (dtls === undefined) {
      const listen = (await access.loadConfig()).dtls.listen;
      const host = listen.host === "0.0.0.0" || listen.host === "" ? "127.0.0.1" : listen.host === "::" ? "::1" : listen.host;
      dtls = { host, port: listen.port };
    }
    if (!isLoopbackUrl(url) && o.server === undefined) {
      throw new CliError(`the API ${formatApiUrl(url)} is not on this machine: give the daemon's DTLS address with --server HOST:PORT`);
    }
    // as for minting a token: the local configuration is the daemon's when named, or when the API is on this machine
    const config = o.wantConfig === true && (o.access.explicit || isLoopbackUrl(url)) ? await access.loadConfig() : undefined;
    const http = new BenchHttpClient(url, token, o.connections);
    try {
      await http.request("GET", "/healthz");
      await metricsText(http, url);
    } catch (e) {
      http.close();
      throw e;
    }
    const loopDelay = new ScrapedLoopDelay();
    return {
      kind: "api",
      apiUrl: url,
      dtls,
      http,
      config,
      snapshot: async () => {
        const s = snapshotOf(await metricsText(http, url), benchNow());
        loopDelay.scraped(s.loopDelayMs);
        return s;
      },
      watchLoopDelay: () => loopDelay.watch(),
      publishToDevice: (device, payload) =>
        http.request("POST", `/v1/devices/${encodeURIComponent(device)}/messages`, publishBody(payload)).then(
          () => undefined,
          (e: unknown) => Promise.reject(rateLimitHint(e)),
        ),
      publishBatch: (entries) => publishBatch(http, entries),
      publishToTopic: (topic, payload, id) =>
        http.request("POST", `/v1/topics/${encodeURIComponent(topic)}/messages`, publishBody(payload, id)).then(
          (a) => ({ recipients: recipientsOf(a.body) }),
          (e: unknown) => Promise.reject(rateLimitHint(e)),
        ),
      close: () => {
        http.close();
        return Promise.resolve();
      },
    };
  } finally {
    await access.close();
  }
}

/** A daemon started in this process over a temporary data directory. */
export async function inProcessTarget(o: { store: "sqlite" | "memory"; configFile: string | undefined; connections: number }): Promise<BenchTarget> {
  const [{ loadConfig }, { startDaemon }, { createLogger }, { issuePublisherToken }] = await Promise.all([
    import("../../daemon/config/index.ts"),
    import("../../daemon/daemon.ts"),
    import("../../daemon/logger.ts"),
    import("../../auth/publisher-tokens.ts"),
  ]);
  const dir = await mkdtemp(join(tmpdir(), "dtlspush-bench-"));
  try {
    const config = await loadConfig({
      ...(o.configFile !== undefined ? { file: o.configFile } : {}),
      env: {
        DTLSPUSH_STORE_KIND: o.store,
        // the bench registers its devices through the API: thousands of requests a second
        DTLSPUSH_HTTP_RATE_LIMIT_PER_MINUTE: "0",
        // the devices share a few loopback source addresses: each holds thousands of them
        DTLSPUSH_DTLS_MAX_HANDSHAKES_PER_HOST: "1000000",
        DTLSPUSH_DTLS_MAX_SESSIONS_PER_HOST: "10000000",
        // and all of them are in 127.0.0.0/24: the HelloVerifyRequest rate limits would pace the fleet's handshakes
        DTLSPUSH_DTLS_HELLO_VERIFY_RATE_PER_SECOND: "0",
        DTLSPUSH_DTLS_HELLO_VERIFY_RATE_PER_PREFIX: "0",
        DTLSPUSH_DTLS_CERTS_DIR: join(dir, "certs"),
      },
      flags: { dataDir: join(dir, "data"), listen: "127.0.0.1:0", http: "127.0.0.1:0", logLevel: "warn" },
      cwd: dir,
    });
    const daemon = await startDaemon(config, { logger: createLogger({ level: "warn", destination: process.stderr }) });
    const { token } = await issuePublisherToken(daemon.push.publisherKeys, {
      subject: BENCH_PUBLISHER,
      scopes: ["admin"],
      now: Date.now(),
      ttlSeconds: BENCH_TOKEN_TTL_SECONDS,
    });
    const a = daemon.http.address();
    const url = new URL(`http://127.0.0.1:${a.port}`);
    const http = new BenchHttpClient(url, token, o.connections);
    const utf8 = new TextEncoder();
    const d = daemon.push.address();
    const loopDelay = new ScrapedLoopDelay();
    return {
      kind: "in-process",
      apiUrl: url,
      dtls: { host: "127.0.0.1", port: d.port },
      http,
      config,
      snapshot: async () => {
        const s = snapshotOf(await daemon.metrics.text(), benchNow());
        loopDelay.scraped(s.loopDelayMs);
        return s;
      },
      // read from the daemon's own sampler (prom-client's), as for a daemon in another process: a second
      // sampler on this loop lengthened the in-process fan-out's all-acked time in our A/B runs
      watchLoopDelay: () => loopDelay.watch(),
      publishToDevice: (device, payload) =>
        daemon.push.publish({ target: { device }, payload: utf8.encode(payload), publisher: BENCH_PUBLISHER }).then(() => undefined),
      // the batch API has no in-process shortcut: it is what is measured
      publishBatch: (entries) => publishBatch(http, entries),
      publishToTopic: async (topic, payload, id) => {
        const r = await daemon.push.publish({ target: { topic }, payload: utf8.encode(payload), publisher: BENCH_PUBLISHER, id });
        return { recipients: recipientsOf(r) };
      },
      close: async () => {
        http.close();
        await daemon.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
