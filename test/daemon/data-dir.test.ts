/** openDataDir: the data directory, the store and the three key rings. */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig, NODE_ID_FILE, nodeIdFor, openDataDir } from "../../src/daemon/config/index.ts";

let work: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "dtlspush-data-"));
});
afterAll(() => {
  chmodSync(work, 0o700);
  rmSync(work, { recursive: true, force: true });
});

const isRoot = process.getuid?.() === 0;

describe("openDataDir", () => {
  it("creates the directory (0700) and the keys once, then reopens the same kids", async () => {
    const config = await loadConfig({ env: { DTLSPUSH_DATA_DIR: "state/a" }, cwd: work });
    expect(existsSync(config.dataDir)).toBe(false);

    const one = await openDataDir(config, { now: 1_000 });
    expect(statSync(config.dataDir).mode & 0o777).toBe(0o700);
    expect(existsSync(join(config.dataDir, "dtlspush.db"))).toBe(true);
    expect(one.store.kind).toBe("sqlite");
    const kids = [one.contentKeys.kids(), one.sessionKeys.kids(), one.publisherKeys.kids()];
    for (const k of kids) expect(k).toHaveLength(1);
    // Three distinct rings.
    expect(new Set(kids.flat()).size).toBe(3);
    expect([one.contentKeys.name, one.sessionKeys.name, one.publisherKeys.name]).toEqual(["content", "session", "publisher"]);
    await one.close();
    await one.close();

    const two = await openDataDir(config);
    expect([two.contentKeys.kids(), two.sessionKeys.kids(), two.publisherKeys.kids()]).toEqual(kids);
    expect(two.publisherKeys.currentKid).toBe(kids[2]?.[0]);
    await two.close();
  });

  it("keeps an existing directory's mode", async () => {
    const dir = join(work, "existing");
    mkdirSync(dir, { mode: 0o750 });
    chmodSync(dir, 0o750);
    const data = await openDataDir(await loadConfig({ env: { DTLSPUSH_DATA_DIR: dir }, cwd: work }));
    expect(statSync(dir).mode & 0o777).toBe(0o750);
    await data.close();
  });

  it("with a memory store: no directory", async () => {
    const config = await loadConfig({ env: { DTLSPUSH_DATA_DIR: "never", DTLSPUSH_STORE_KIND: "memory" }, cwd: work });
    const data = await openDataDir(config);
    expect(data.store.kind).toBe("memory");
    expect(existsSync(join(work, "never"))).toBe(false);
    await data.close();
  });

  it("a data_dir that is a file is an error naming the setting", async () => {
    writeFileSync(join(work, "plain"), "x");
    const config = await loadConfig({ env: { DTLSPUSH_DATA_DIR: "plain" }, cwd: work });
    await expect(openDataDir(config)).rejects.toThrow(
      new ConfigError(`data_dir (from DTLSPUSH_DATA_DIR): ${join(work, "plain")} is not a directory`),
    );
  });

  it("a data_dir under a file cannot be created", async () => {
    const config = await loadConfig({ env: { DTLSPUSH_DATA_DIR: "plain/sub" }, cwd: work });
    await expect(openDataDir(config)).rejects.toThrow(
      `data_dir (from DTLSPUSH_DATA_DIR): cannot use ${join(work, "plain", "sub")}: a part of the path is not a directory`,
    );
  });

  it.skipIf(isRoot)("a read-only data_dir is an error naming the setting", async () => {
    const dir = join(work, "read-only");
    mkdirSync(dir);
    chmodSync(dir, 0o500);
    const config = await loadConfig({ env: { DTLSPUSH_DATA_DIR: dir }, cwd: work });
    await expect(openDataDir(config)).rejects.toThrow(`data_dir (from DTLSPUSH_DATA_DIR): ${dir} is not writable: permission denied`);
  });
});

describe("nodeIdFor (cluster.node_id, else kept in the data directory)", () => {
  const clusterEnv = (dir: string, extra: Record<string, string> = {}): Record<string, string> => ({
    DTLSPUSH_DATA_DIR: dir,
    DTLSPUSH_CLUSTER_REDIS_URL: "redis://127.0.0.1:1",
    ...extra,
  });

  it("is generated once per data directory: the same across restarts, different between directories", async () => {
    const a = await loadConfig({ env: clusterEnv("node/a"), cwd: work });
    const b = await loadConfig({ env: clusterEnv("node/b"), cwd: work });
    const first = await nodeIdFor(a);
    expect(first).toMatch(/^n-[0-9a-f]{12}$/);
    expect(readFileSync(join(a.dataDir, NODE_ID_FILE), "utf8")).toBe(`${first}\n`);
    expect(statSync(join(a.dataDir, NODE_ID_FILE)).mode & 0o777).toBe(0o600);
    // a restart: a fresh configuration load of the same directory
    expect(await nodeIdFor(await loadConfig({ env: clusterEnv("node/a"), cwd: work }))).toBe(first);
    const other = await nodeIdFor(b);
    expect(other).toMatch(/^n-[0-9a-f]{12}$/);
    expect(other).not.toBe(first);
  });

  it("two starts racing on a new directory agree", async () => {
    const c = await loadConfig({ env: clusterEnv("node/race"), cwd: work });
    const ids = await Promise.all([nodeIdFor(c), nodeIdFor(c), nodeIdFor(c)]);
    expect(new Set(ids).size).toBe(1);
  });

  it("cluster.node_id wins and writes nothing", async () => {
    const c = await loadConfig({ env: clusterEnv("node/named", { DTLSPUSH_CLUSTER_NODE_ID: "edge-1" }), cwd: work });
    expect(await nodeIdFor(c)).toBe("edge-1");
    expect(existsSync(join(c.dataDir, NODE_ID_FILE))).toBe(false);
  });

  it("a damaged node-id file is an error naming it", async () => {
    const c = await loadConfig({ env: clusterEnv("node/damaged"), cwd: work });
    mkdirSync(c.dataDir, { recursive: true });
    writeFileSync(join(c.dataDir, NODE_ID_FILE), "not a node id!\n");
    await expect(nodeIdFor(c)).rejects.toThrow(new RegExp(`${join(c.dataDir, NODE_ID_FILE)} does not hold a node id`));
  });
});
