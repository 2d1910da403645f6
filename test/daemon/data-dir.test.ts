/** openDataDir: the data directory, the store and the three key rings. */
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig, openDataDir } from "../../src/daemon/config/index.ts";

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
    await expect(openDataDir(config)).rejects.toThrow(new ConfigError(`data_dir (from DTLSPUSH_DATA_DIR): ${join(work, "plain")} is not a directory`));
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
