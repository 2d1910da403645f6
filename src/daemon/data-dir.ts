/**
 * The data directory: the store and the three signing key rings kept in it.
 * The daemon opens it at start; `dtlspush token issue` and offline
 * `dtlspush device add` open the same one.
 */
import { constants } from "node:fs";
import { access, chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KeyRing } from "../auth/index.ts";
import { randomBytes } from "../crypto/index.ts";
import { openStore, type Store } from "../store/index.ts";
import { storeBackend, toStoreOptions, settingLabel, type DaemonConfig } from "./config/load.ts";
import { ConfigError, shortReason } from "./config/errors.ts";
import { NODE_ID_PATTERN } from "./config/schema.ts";

export interface DataDir {
  readonly store: Store;
  /** signs pushed content */
  readonly contentKeys: KeyRing;
  /** signs device session tokens */
  readonly sessionKeys: KeyRing;
  /** signs publisher (API) tokens */
  readonly publisherKeys: KeyRing;
  /** Closes the store (after every operation called before). */
  close(): Promise<void>;
}

export const DATA_DIR_MODE = 0o700;

/**
 * Creates data_dir (mode 0700) when missing, checks it is a writable
 * directory, opens the store and the key rings "content", "session" and
 * "publisher" (a first key is generated and stored on first use). With
 * store.kind "memory" the directory is not touched.
 *
 * The one place that decides which store: Redis (cluster.redis_url, its
 * keys under cluster.key_prefix; the directory then keeps only the node id
 * and the development certificates) or the store of [store].
 */
export async function openDataDir(c: DaemonConfig, options: { now?: number } = {}): Promise<DataDir> {
  if (storeBackend(c) !== "memory") await prepareDataDir(c);
  const store = await openConfiguredStore(c);
  try {
    const now = options.now ?? Date.now();
    const contentKeys = await KeyRing.open(store, "content", { now });
    const sessionKeys = await KeyRing.open(store, "session", { now });
    const publisherKeys = await KeyRing.open(store, "publisher", { now });
    let closed = false;
    return {
      store,
      contentKeys,
      sessionKeys,
      publisherKeys,
      async close(): Promise<void> {
        if (closed) return;
        closed = true;
        await store.close();
      },
    };
  } catch (e) {
    await store.close();
    throw e;
  }
}

async function openConfiguredStore(c: DaemonConfig): Promise<Store> {
  const url = c.cluster.redisUrl;
  if (url === undefined) return openStore(toStoreOptions(c));
  // loaded only with Redis: the embedded stores never load the Redis client
  const { openRedisStore } = await import("../store/redis-store.ts");
  return openRedisStore({
    url: url.reveal(),
    keyPrefix: c.cluster.keyPrefix,
    connectTimeoutMs: c.cluster.connectTimeoutSeconds * 1000,
    outageMaxMs: c.cluster.outageMaxSeconds * 1000,
  });
}

async function prepareDataDir(c: DaemonConfig): Promise<void> {
  const dir = c.dataDir;
  const label = settingLabel(c, "data_dir");
  const existing = await stat(dir).catch((e: unknown) => {
    if ((e as { code?: unknown }).code === "ENOENT") return undefined;
    throw new ConfigError(`${label}: cannot use ${dir}: ${shortReason(e)}`, { cause: e });
  });
  if (existing === undefined) {
    try {
      await mkdir(dir, { recursive: true, mode: DATA_DIR_MODE });
      // mkdir's mode is filtered by the umask; the directory holds private keys.
      await chmod(dir, DATA_DIR_MODE);
    } catch (e) {
      throw new ConfigError(`${label}: cannot create ${dir}: ${shortReason(e)}`, { cause: e });
    }
  } else if (!existing.isDirectory()) {
    throw new ConfigError(`${label}: ${dir} is not a directory`);
  }
  try {
    await access(dir, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw new ConfigError(`${label}: ${dir} is not writable: ${shortReason(e)}`, { cause: e });
  }
}

/** The file in data_dir that keeps the generated node id. */
export const NODE_ID_FILE = "node-id";

/**
 * This node's id: cluster.node_id when set, else the one kept in
 * data_dir/node-id, generated on first use ("n-" and 12 hex digits): stable
 * across restarts of one data directory, different between data directories.
 * Two processes starting together on a new directory agree (the file is
 * created exclusively; the loser reads the winner's).
 */
export async function nodeIdFor(c: DaemonConfig): Promise<string> {
  if (c.cluster.nodeId !== undefined) return c.cluster.nodeId;
  await prepareDataDir(c);
  const file = join(c.dataDir, NODE_ID_FILE);
  const fresh = `n-${Buffer.from(randomBytes(6)).toString("hex")}`;
  try {
    await writeFile(file, `${fresh}\n`, { flag: "wx", mode: 0o600 });
    return fresh;
  } catch (e) {
    if ((e as { code?: unknown }).code !== "EEXIST")
      throw new ConfigError(`${settingLabel(c, "data_dir")}: cannot write ${file}: ${shortReason(e)}`, { cause: e });
  }
  let kept: string;
  try {
    kept = (await readFile(file, "utf8")).trim();
  } catch (e) {
    throw new ConfigError(`${settingLabel(c, "data_dir")}: cannot read ${file}: ${shortReason(e)}`, { cause: e });
  }
  if (!NODE_ID_PATTERN.test(kept)) {
    throw new ConfigError(
      `${file} does not hold a node id (1 to 64 letters, digits, '.', '_' or '-'); delete it to have a new one generated, or set cluster.node_id`,
    );
  }
  return kept;
}
