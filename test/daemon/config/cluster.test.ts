/** [cluster]: redis_url checked (scheme, shape) with its password never in a message or printed form; defaults; rules. */
import { inspect } from "node:util";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  clusterWorkers,
  ConfigError,
  loadConfig,
  redactRedisUrl,
  RedisUrl,
  storeBackend,
  storeDescription,
  type LoadConfigOptions,
} from "../../../src/daemon/config/index.ts";

let work: string;
let n = 0;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "dtlspush-cluster-config-"));
});
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

function configFile(text: string): string {
  n += 1;
  const dir = join(work, `c${n}`);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "dtlspush.toml");
  writeFileSync(path, text);
  return path;
}

async function message(o: LoadConfigOptions): Promise<string> {
  try {
    await loadConfig({ env: {}, cwd: work, ...o });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).message;
  }
  throw new Error("loadConfig did not fail");
}

const PASSWORD = "s3cr3t-Pa55";

describe("[cluster] defaults", () => {
  it("no Redis: the store of [store], nothing else changes", async () => {
    const c = await loadConfig({ env: {}, cwd: work });
    expect(c.cluster).toEqual({
      redisUrl: undefined,
      nodeId: undefined,
      keyPrefix: "dtlspush:",
      connectTimeoutSeconds: 5,
      outageMaxSeconds: 300,
      allowNoPersistence: false,
      workers: "auto",
      forwardRatePerSecond: 10_000,
    });
    expect(storeBackend(c)).toBe("sqlite");
  });

  it("redis_url from the environment, with user and password; the store is Redis", async () => {
    const c = await loadConfig({ env: { DTLSPUSH_CLUSTER_REDIS_URL: `redis://push:${PASSWORD}@127.0.0.1:6380/2` }, cwd: work });
    expect(c.sources["cluster.redis_url"]).toBe("from DTLSPUSH_CLUSTER_REDIS_URL");
    expect(storeBackend(c)).toBe("redis");
    expect(c.cluster.redisUrl?.reveal()).toBe(`redis://push:${PASSWORD}@127.0.0.1:6380/2`);
    expect(c.cluster.redisUrl?.address).toBe("127.0.0.1:6380");
    expect(storeDescription(c)).toBe("Redis redis://push:***@127.0.0.1:6380/2");
  });

  it("rediss:// (TLS) and a file's settings", async () => {
    const path = configFile(
      `[cluster]\nredis_url = "rediss://cache.example.com"\nnode_id = "node-a.1"\nkey_prefix = "staging:"\nallow_no_persistence = true\n`,
    );
    const c = await loadConfig({ file: path, env: {}, cwd: work });
    expect(c.cluster.redisUrl?.tls).toBe(true);
    expect(c.cluster.redisUrl?.address).toBe("cache.example.com:6379");
    expect(c.cluster.nodeId).toBe("node-a.1");
    expect(c.cluster.keyPrefix).toBe("staging:");
    expect(c.cluster.allowNoPersistence).toBe(true);
  });
});

describe("[cluster] redis_url validation", () => {
  it.each([
    ["http://127.0.0.1:6379", "the scheme http:// is not redis:// or rediss://"],
    ["unix:///run/redis.sock", "the scheme unix:// is not redis:// or rediss://"],
    ["127.0.0.1:6379", "not a URL"],
    ["redis://", "no host"],
    ["redis://127.0.0.1:99999", "not a URL"],
    ["redis://127.0.0.1/x", "the path must be a database number"],
    ["redis://127.0.0.1/0?timeout=1", "query (?...) and fragment (#...) are not supported"],
    ["redis:// spaces in host", "not a URL"],
  ])("%s is refused with a message naming the setting", async (url, why) => {
    const m = await message({ env: { DTLSPUSH_CLUSTER_REDIS_URL: url } });
    expect(m).toMatch(/^cluster\.redis_url \(from DTLSPUSH_CLUSTER_REDIS_URL\): /);
    expect(m).toContain(why);
  });

  it.each([
    [`redis://push:${PASSWORD}@127.0.0.1/x`, 'got "redis://push:***@127.0.0.1/x"'],
    [`http://push:${PASSWORD}@127.0.0.1:6379`, 'got "http://push:***@127.0.0.1:6379/"'],
    [`redis://:${PASSWORD}@127.0.0.1:99999`, 'got "redis://***@127.0.0.1:99999"'],
    [`redis://push:${PASSWORD}/with@slash@host:6379`, 'got "redis://***@host:6379"'],
    [`redis://u:${PASSWORD}@[::1`, 'got "redis://***@[::1"'],
  ])("a bad URL's message shows it without its password (%s)", async (url, shown) => {
    const m = await message({ env: { DTLSPUSH_CLUSTER_REDIS_URL: url } });
    expect(m).not.toContain(PASSWORD);
    expect(m).not.toContain(PASSWORD.slice(0, 5));
    expect(m).toContain(shown);
  });

  it("a bad URL in the file: the same, with the file named", async () => {
    const path = configFile(`[cluster]\nredis_url = "memcached://u:${PASSWORD}@h:1"\n`);
    const m = await message({ file: path });
    expect(m).toBe(`cluster.redis_url (in ${path}): the scheme memcached:// is not redis:// or rediss://, got "memcached://u:***@h:1"`);
  });

  it("a redis_url that is not text says its type, not its value", async () => {
    const path = configFile(`[cluster]\nredis_url = 6379\n`);
    expect(await message({ file: path })).toBe(`cluster.redis_url (in ${path}): expected a redis:// or rediss:// URL (or ""), got number`);
  });

  it("cannot go with store.kind memory", async () => {
    const m = await message({ env: { DTLSPUSH_CLUSTER_REDIS_URL: "redis://127.0.0.1", DTLSPUSH_STORE_KIND: "memory" } });
    expect(m).toMatch(/^store\.kind \(from DTLSPUSH_STORE_KIND\): "memory" cannot go with cluster\.redis_url/);
  });

  it("node_id and key_prefix are checked", async () => {
    expect(await message({ env: { DTLSPUSH_CLUSTER_NODE_ID: "-a" } })).toMatch(
      /^cluster\.node_id \(from DTLSPUSH_CLUSTER_NODE_ID\): expected 1 to 64 letters/,
    );
    expect(await message({ env: { DTLSPUSH_CLUSTER_NODE_ID: "a".repeat(65) } })).toMatch(/^cluster\.node_id/);
    expect(await message({ env: { DTLSPUSH_CLUSTER_KEY_PREFIX: "two words" } })).toMatch(
      /^cluster\.key_prefix \(from DTLSPUSH_CLUSTER_KEY_PREFIX\): expected 1 to 64 printable ASCII/,
    );
    expect(await message({ env: { DTLSPUSH_CLUSTER_KEY_PREFIX: "" } })).toMatch(/^cluster\.key_prefix/);
  });
});

describe("[cluster] workers (serve --workers)", () => {
  const URL = "redis://127.0.0.1:6379";
  it('"auto": the cores with redis_url, 1 without; a number as given; the flag wins', async () => {
    expect(clusterWorkers(await loadConfig({ env: {}, cwd: work }), 8)).toBe(1);
    expect(clusterWorkers(await loadConfig({ env: { DTLSPUSH_CLUSTER_REDIS_URL: URL }, cwd: work }), 8)).toBe(8);
    expect(clusterWorkers(await loadConfig({ env: { DTLSPUSH_CLUSTER_REDIS_URL: URL, DTLSPUSH_CLUSTER_WORKERS: "3" }, cwd: work }), 8)).toBe(3);
    const flagged = await loadConfig({ env: { DTLSPUSH_CLUSTER_REDIS_URL: URL, DTLSPUSH_CLUSTER_WORKERS: "3" }, flags: { workers: "1" }, cwd: work });
    expect(clusterWorkers(flagged, 8)).toBe(1);
    expect(flagged.sources["cluster.workers"]).toBe("from --workers");
    // 1 without Redis is today's single process, allowed
    expect(clusterWorkers(await loadConfig({ env: { DTLSPUSH_CLUSTER_WORKERS: "1" }, cwd: work }), 8)).toBe(1);
  });

  it("more than 1 without redis_url is one clear line; out of range and words are refused", async () => {
    expect(await message({ env: { DTLSPUSH_CLUSTER_WORKERS: "2" } })).toBe(
      "cluster.workers (from DTLSPUSH_CLUSTER_WORKERS): 2 worker processes need cluster.redis_url (the embedded SQLite store belongs to one process); set cluster.redis_url or use 1 worker",
    );
    expect(await message({ env: { DTLSPUSH_CLUSTER_REDIS_URL: URL }, flags: { workers: "0" } })).toMatch(
      /^cluster\.workers \(from --workers\): expected "auto" or an integer from 1 to 64/,
    );
    expect(await message({ env: { DTLSPUSH_CLUSTER_REDIS_URL: URL }, flags: { workers: "65" } })).toMatch(/^cluster\.workers/);
    expect(await message({ env: { DTLSPUSH_CLUSTER_REDIS_URL: URL }, flags: { workers: "many" } })).toMatch(/^cluster\.workers/);
    expect(await message({ env: { DTLSPUSH_CLUSTER_FORWARD_RATE_PER_SECOND: "-1" } })).toMatch(/^cluster\.forward_rate_per_second/);
  });
});

describe("the password is never printed", () => {
  it("every printed form of the loaded configuration redacts it", async () => {
    const c = await loadConfig({ env: { DTLSPUSH_CLUSTER_REDIS_URL: `rediss://admin:${PASSWORD}@10.0.0.5:6390/1` }, cwd: work });
    const forms = [JSON.stringify(c), inspect(c, { depth: 10 }), String(c.cluster.redisUrl), `${c.cluster.redisUrl}`, storeDescription(c)];
    for (const form of forms) {
      expect(form).not.toContain(PASSWORD);
      expect(form).toContain("admin:***@10.0.0.5:6390");
    }
  });

  it("redactRedisUrl keeps the user, hides the password, leaves a URL without one alone", () => {
    expect(redactRedisUrl(`redis://u:${PASSWORD}@h:1/0`)).toBe("redis://u:***@h:1/0");
    expect(redactRedisUrl("redis://h:1")).toBe("redis://h:1");
    expect(redactRedisUrl(`redis://:${PASSWORD}@h`)).toBe("redis://:***@h");
    expect(() => new RedisUrl("ftp://x")).toThrow(RangeError);
  });
});
