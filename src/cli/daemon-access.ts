/**
 * How the operator commands (`device`, `token`, `send`) find the daemon: its
 * configuration and data directory (`--config`, `--data-dir`), its HTTP API
 * (`--api`) and a publisher token (`--token`, or one minted from the local
 * data directory). The daemon's modules (configuration, store, keys) are
 * loaded on first use, so `--help` and usage errors stay fast.
 */
import { stat } from "node:fs/promises";
import type { Scope } from "../auth/publisher-tokens.ts";
import type { DeviceRegistry } from "../auth/device-registry.ts";
import type { DaemonConfig } from "../daemon/config/index.ts";
import type { DataDir } from "../daemon/data-dir.ts";
import type { Store } from "../store/types.ts";
import {
  ApiError,
  ApiUnreachableError,
  DEFAULT_API_URL,
  apiRequest,
  apiUrlForListen,
  formatApiUrl,
  formatCommandFailure,
  isLoopbackUrl,
  parseApiUrl,
} from "./api-client.ts";
import type { OptionSpecs, ParsedCommandLine } from "./args.ts";
import { stringOption } from "./args.ts";
import { PROGRAM } from "./command.ts";
import { CliError, UsageError, errorCode } from "./errors.ts";

export type Env = Readonly<Record<string, string | undefined>>;

/** Lifetime of the admin/publish token minted when no --token is given. */
export const MINTED_TOKEN_TTL_SECONDS = 300;
/** Subject of tokens the CLI mints for itself. */
export const MINTED_TOKEN_SUBJECT = "dtlspush-cli";

/** `--config` and `--data-dir`: where the daemon's configuration and data directory are. */
export const DATA_DIR_OPTIONS: OptionSpecs = {
  config: {
    type: "string",
    value: "FILE",
    description: "The daemon's configuration file (TOML; env DTLSPUSH_CONFIG)",
  },
  "data-dir": {
    type: "string",
    value: "DIR",
    description: "The daemon's data directory (default: data_dir of the\nconfiguration, else ./data; env DTLSPUSH_DATA_DIR)",
  },
};

/** `--api` and `--token`: the daemon's HTTP API and the publisher token for it. */
export const API_OPTIONS: OptionSpecs = {
  api: {
    type: "string",
    value: "URL",
    description: `The daemon's HTTP API (env DTLSPUSH_API; default: from the\nconfiguration's http.listen, else ${DEFAULT_API_URL})`,
  },
  token: {
    type: "string",
    value: "JWT",
    description:
      "Publisher token (env DTLSPUSH_TOKEN). Without one, a 5-minute token\n" + "is minted from the local data directory (on the daemon's machine)",
  },
};

export interface DataDirOptions {
  /** `--config` or DTLSPUSH_CONFIG. */
  readonly configFile: string | undefined;
  /** `--data-dir` (DTLSPUSH_DATA_DIR is read by the configuration loader). */
  readonly dataDir: string | undefined;
  /** True when the operator named the configuration or data directory (flag or environment). */
  readonly explicit: boolean;
}

export interface ApiOptions {
  /** `--api` or DTLSPUSH_API; undefined: from the configuration. */
  readonly api: URL | undefined;
  /** `--token` or DTLSPUSH_TOKEN. */
  readonly token: string | undefined;
}

/** Reads `--config`/`--data-dir` (and DTLSPUSH_CONFIG) from parsed options (pure). */
export function parseDataDirOptions(values: ParsedCommandLine["values"], env: Env): DataDirOptions {
  const flagConfig = stringOption(values, "config");
  if (flagConfig === "") throw new UsageError("--config: the file name is empty");
  const envConfig = nonEmpty(env["DTLSPUSH_CONFIG"]);
  const dataDir = stringOption(values, "data-dir");
  if (dataDir === "") throw new UsageError("--data-dir: the directory is empty");
  const configFile = flagConfig ?? envConfig;
  return {
    configFile,
    dataDir,
    explicit: configFile !== undefined || dataDir !== undefined || nonEmpty(env["DTLSPUSH_DATA_DIR"]) !== undefined,
  };
}

/** Reads `--api`/`--token` (and DTLSPUSH_API, DTLSPUSH_TOKEN) from parsed options (pure). */
export function parseApiOptions(values: ParsedCommandLine["values"], env: Env): ApiOptions {
  const flagApi = stringOption(values, "api");
  const envApi = nonEmpty(env["DTLSPUSH_API"]);
  const api = flagApi !== undefined ? parseApiUrl(flagApi, "--api") : envApi !== undefined ? parseApiUrl(envApi, "DTLSPUSH_API") : undefined;
  const flagToken = stringOption(values, "token");
  if (flagToken !== undefined && flagToken.trim() === "") throw new UsageError("--token: the token is empty");
  const token = flagToken?.trim() ?? nonEmpty(env["DTLSPUSH_TOKEN"])?.trim();
  return { api, token };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

/** The daemon's store and keys, opened from the local data directory. */
export interface LocalStore {
  readonly dir: string;
  readonly store: Store;
  readonly registry: DeviceRegistry;
}

/**
 * Lazily loads the daemon's configuration and opens its data directory; one
 * per command run. `close()` closes whatever was opened.
 */
export class DaemonAccess {
  private readonly options: DataDirOptions;
  private readonly apiOptions: ApiOptions;
  private readonly env: Env;
  private readonly cwd: string;
  private config: Promise<DaemonConfig> | undefined;
  private opened: DataDir | undefined;

  constructor(options: DataDirOptions, apiOptions: ApiOptions, env: Env, cwd: string) {
    this.options = options;
    this.apiOptions = apiOptions;
    this.env = env;
    this.cwd = cwd;
  }

  /** The daemon's configuration, as `serve` would load it (file, environment, --data-dir). */
  loadConfig(): Promise<DaemonConfig> {
    this.config ??= (async () => {
      const { loadConfig } = await loadDaemonModule(() => import("../daemon/config/index.ts"));
      try {
        return await loadConfig({
          ...(this.options.configFile !== undefined ? { file: this.options.configFile } : {}),
          env: this.env,
          flags: this.options.dataDir !== undefined ? { dataDir: this.options.dataDir } : {},
          cwd: this.cwd,
        });
      } catch (e) {
        throw asCliError(e);
      }
    })();
    return this.config;
  }

  /** The data directory this command would use (absolute). */
  async dataDir(): Promise<string> {
    return (await this.loadConfig()).dataDir;
  }

  /** Opens the data directory (creating it and its keys when missing). */
  async open(): Promise<DataDir> {
    if (this.opened !== undefined) return this.opened;
    const config = await this.loadConfig();
    const { openDataDir } = await loadDaemonModule(() => import("../daemon/data-dir.ts"));
    try {
      this.opened = await openDataDir(config);
    } catch (e) {
      throw asCliError(e);
    }
    return this.opened;
  }

  /** The base URL of the API: --api, DTLSPUSH_API, else the configuration's http.listen. */
  async apiUrl(): Promise<URL> {
    if (this.apiOptions.api !== undefined) return this.apiOptions.api;
    const { host, port } = (await this.loadConfig()).http.listen;
    return apiUrlForListen(host, port);
  }

  /** The token given with --token or DTLSPUSH_TOKEN. */
  get givenToken(): string | undefined {
    return this.apiOptions.token;
  }

  /**
   * Whether a token may be minted from the local data directory for this API:
   * the directory exists, and the API is on this machine or the operator named
   * the configuration or data directory.
   */
  async canMint(url: URL): Promise<boolean> {
    if (!isLoopbackUrl(url) && !this.options.explicit) return false;
    return await isDirectory(await this.dataDir());
  }

  /** Mints a short-lived token from the local data directory's publisher keys. */
  async mint(scopes: Scope[], ttlSeconds = MINTED_TOKEN_TTL_SECONDS, subject = MINTED_TOKEN_SUBJECT): Promise<{ token: string; expiresAt: number }> {
    const config = await this.loadConfig();
    const { storeBackend } = await loadDaemonModule(() => import("../daemon/config/index.ts"));
    if (storeBackend(config) === "memory") {
      throw new CliError(
        `cannot issue tokens with store.kind = "${config.store.kind}": the daemon's keys live only in its memory (use a sqlite store)`,
      );
    }
    const opened = await this.open();
    const { issuePublisherToken } = await import("../auth/publisher-tokens.ts");
    try {
      return await issuePublisherToken(opened.publisherKeys, { subject, scopes, now: Date.now(), ttlSeconds });
    } catch (e) {
      if (e instanceof RangeError) throw new UsageError(e.message.replace(/\.$/, ""));
      throw e;
    }
  }

  /** The error for a command that needs a token and can neither use one nor mint one. */
  async noTokenError(url: URL): Promise<CliError> {
    const dir = await this.dataDir().catch(() => undefined);
    const why =
      !isLoopbackUrl(url) && !this.options.explicit
        ? `the API at ${formatApiUrl(url)} is not on this machine`
        : `there is no data directory at ${dir ?? "the configured data_dir"}`;
    return new CliError(
      `no publisher token: give --token JWT or set DTLSPUSH_TOKEN (mint one with '${PROGRAM} token issue' on the daemon's machine); ` +
        `none could be minted here because ${why}`,
    );
  }

  /**
   * The token to call the API with: the given one, or a freshly minted one
   * (with `scopes`); undefined when neither is possible.
   */
  async tokenFor(url: URL, scopes: Scope[]): Promise<string | undefined> {
    if (this.givenToken !== undefined) return this.givenToken;
    if (!(await this.canMint(url))) return undefined;
    return (await this.mint(scopes)).token;
  }

  /** True when the API cannot be reached because nothing listens there (GET /healthz refused). */
  async apiRefused(url: URL): Promise<boolean> {
    try {
      await apiRequest(url, { method: "GET", path: "/healthz", timeoutMs: 5_000 });
      return false;
    } catch (e) {
      return e instanceof ApiUnreachableError && e.refused;
    }
  }

  /**
   * The store of the local data directory with a device registry over it, for
   * writing directly while the daemon is not running. Only for a SQLite store.
   */
  async localStore(url: URL): Promise<LocalStore> {
    const config = await this.loadConfig();
    const { storeBackend, storeDescription } = await loadDaemonModule(() => import("../daemon/config/index.ts"));
    if (storeBackend(config) === "memory") {
      throw new CliError(
        `daemon not reachable at ${formatApiUrl(url)}, and its store is in memory (store.kind = "${config.store.kind}"): nothing to write to`,
      );
    }
    const opened = await this.open();
    const { DeviceRegistry } = await import("../auth/device-registry.ts");
    // with Redis the commands write the cluster's store, not the directory
    const dir = storeBackend(config) === "redis" ? storeDescription(config) : config.dataDir;
    return { dir, store: opened.store, registry: await DeviceRegistry.open(opened.store, { now: () => Date.now() }) };
  }

  /** True when the data directory exists. */
  async hasDataDir(): Promise<boolean> {
    return await isDirectory(await this.dataDir());
  }

  /**
   * Runs `online` against the API with an admin token (given or minted). When
   * the API is on this machine and refuses the connection (the daemon is not
   * running), runs `offline` on the local store instead and reports where it
   * wrote in `local`. `createDataDir`: whether the offline path may create a
   * missing data directory (adding a device before the first start may).
   */
  async apiOrLocal<T>(
    scopes: Scope[],
    online: (url: URL, token: string) => Promise<T>,
    offline: (local: LocalStore) => T | Promise<T>,
    createDataDir: boolean,
  ): Promise<{ value: T; local?: { url: string; dir: string } }> {
    const url = await this.apiUrl();
    const goLocal = async (): Promise<{ value: T; local: { url: string; dir: string } }> => {
      if (!createDataDir && !(await this.hasDataDir())) {
        throw new CliError(`daemon not reachable at ${formatApiUrl(url)}, and there is no data directory at ${await this.dataDir()}`);
      }
      const local = await this.localStore(url);
      return { value: await offline(local), local: { url: formatApiUrl(url), dir: local.dir } };
    };
    const token = await this.tokenFor(url, scopes);
    if (token === undefined) {
      if (isLoopbackUrl(url) && (await this.apiRefused(url))) return await goLocal();
      throw await this.noTokenError(url);
    }
    try {
      return { value: await online(url, token) };
    } catch (e) {
      if (e instanceof ApiUnreachableError && e.refused && isLoopbackUrl(url)) return await goLocal();
      throw await this.explainMintedTokenRefusal(e);
    }
  }

  /** A minted token the API refuses was signed by another data directory's keys: say so. */
  async explainMintedTokenRefusal(e: unknown): Promise<unknown> {
    if (!(e instanceof ApiError) || e.status !== 401 || this.givenToken !== undefined) return e;
    const dir = await this.dataDir();
    return new ApiError(
      e.status,
      e.code,
      `${e.message.replace(/\.$/, "")}; the token was minted from ${dir}, which seems not to be this daemon's data directory (give its --config or --data-dir, or --token)`,
    );
  }

  async close(): Promise<void> {
    const opened = this.opened;
    this.opened = undefined;
    await opened?.close();
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function loadDaemonModule<T>(load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (e) {
    if (errorCode(e) === "ERR_MODULE_NOT_FOUND") {
      throw new CliError("the daemon's modules are missing from this build; run 'npm run build'");
    }
    throw e;
  }
}

/** Configuration and data-directory errors are one sentence already: report them as they are. */
function asCliError(e: unknown): unknown {
  if (e instanceof CliError || e instanceof UsageError) return e;
  const code = errorCode(e);
  if (code !== undefined && e instanceof Error) return new CliError(e.message.replace(/\.$/, ""));
  return e;
}

/**
 * Runs a command's work with a DaemonAccess that is closed afterwards; API
 * refusals and the store's coded errors become one line
 * (`dtlspush send: <message> (<code>)`) and exit 1.
 */
export async function withDaemonAccess(
  command: string,
  io: { readonly stderr: NodeJS.WritableStream },
  options: { readonly access: DataDirOptions; readonly api: ApiOptions },
  work: (access: DaemonAccess) => Promise<number>,
): Promise<number> {
  const access = new DaemonAccess(options.access, options.api, process.env, process.cwd());
  try {
    return await work(access);
  } catch (e) {
    const line = formatCommandFailure(command, e);
    if (line === undefined) throw e;
    io.stderr.write(`${line}\n`);
    return 1;
  } finally {
    await access.close();
  }
}
