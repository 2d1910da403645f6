/** `dtlspush token issue`: argument parsing, and tokens the daemon's API accepts (or refuses by scope). */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { verifyPublisherToken } from "../../src/auth/publisher-tokens.ts";
import { UsageError } from "../../src/cli/errors.ts";
import { DEFAULT_TOKEN_SUBJECT, DEFAULT_TOKEN_TTL_SECONDS, parseTokenIssueArgs } from "../../src/cli/token.ts";
import { clearDtlspushEnv, removeDir, runCommand, startDaemon, tempDir, type TestDaemon } from "./daemon-harness.ts";

describe("parseTokenIssueArgs", () => {
  it("has defaults", () => {
    expect(parseTokenIssueArgs(["--scope", "publish"])).toEqual({
      scopes: ["publish"],
      subject: DEFAULT_TOKEN_SUBJECT,
      ttlSeconds: DEFAULT_TOKEN_TTL_SECONDS,
      json: false,
      access: { configFile: undefined, dataDir: undefined, explicit: false },
    });
    expect(DEFAULT_TOKEN_TTL_SECONDS).toBe(86_400);
  });

  it("takes every option; repeated scopes once each", () => {
    const c = parseTokenIssueArgs([
      "--scope",
      "admin",
      "--scope",
      "PUBLISH",
      "--scope",
      "admin",
      "--subject",
      "ci",
      "--ttl",
      "60",
      "--data-dir",
      "d",
      "--json",
    ]);
    expect(c).toMatchObject({ scopes: ["admin", "publish"], subject: "ci", ttlSeconds: 60, json: true, access: { dataDir: "d", explicit: true } });
  });

  it("reads DTLSPUSH_CONFIG, and --config wins over it", () => {
    expect(parseTokenIssueArgs(["--scope", "admin"], { DTLSPUSH_CONFIG: "a.toml" }).access).toEqual({
      configFile: "a.toml",
      dataDir: undefined,
      explicit: true,
    });
    expect(parseTokenIssueArgs(["--scope", "admin", "--config", "b.toml"], { DTLSPUSH_CONFIG: "a.toml" }).access.configFile).toBe("b.toml");
    expect(parseTokenIssueArgs(["--scope", "admin"], { DTLSPUSH_DATA_DIR: "/x" }).access.explicit).toBe(true);
  });

  it.each([
    [[], "missing --scope publish|admin (see 'dtlspush token issue --help')"],
    [["--scope", "root"], "--scope: 'root' is not one of publish, admin"],
    [["--scope", "admin", "--ttl", "0"], "--ttl: 0 is out of range (1-315360000)"],
    [["--scope", "admin", "--ttl", "1h"], "--ttl: '1h' is not a whole number"],
    [["--scope", "admin", "--subject", ""], "--subject: give 1 to 256 characters"],
    [["--scope", "admin", "--data-dir", ""], "--data-dir: the directory is empty"],
    [["--scope", "admin", "extra"], "unexpected argument 'extra' (see 'dtlspush token issue --help')"],
    [["--scope", "admin", "--api", "http://x"], "unknown option '--api' (see 'dtlspush token issue --help')"],
  ])("%j is a usage error", (argv, message) => {
    expect(() => parseTokenIssueArgs(argv)).toThrow(UsageError);
    expect(() => parseTokenIssueArgs(argv)).toThrow(message);
  });
});

describe("dtlspush token issue (end to end)", () => {
  let daemon: TestDaemon | undefined;
  const dirs: string[] = [];

  beforeEach(() => clearDtlspushEnv());
  afterEach(async () => {
    await daemon?.close();
    daemon = undefined;
    for (const d of dirs.splice(0)) removeDir(d);
    vi.unstubAllEnvs();
  });

  it("prints the token alone; the API accepts an admin token on device routes", async () => {
    daemon = await startDaemon();
    const r = await runCommand(["token", "issue", "--scope", "admin", "--data-dir", daemon.dataDir]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    const token = r.stdout.trim();
    const res = await fetch(`${daemon.api}/v1/devices`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ devices: [] });
  });

  it("a publish token is refused on device routes (403 insufficient_scope) and accepted for publishing", async () => {
    daemon = await startDaemon();
    await daemon.server.registry.add({ id: "d1", psk: { identity: "d1", key: new Uint8Array(16) } });
    const r = await runCommand(["token", "issue", "--scope", "publish", "--subject", "tester", "--data-dir", daemon.dataDir, "--json"]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { token: string; expiresAt: string; scopes: string[]; subject: string };
    expect(out.scopes).toEqual(["publish"]);
    expect(out.subject).toBe("tester");
    expect(Date.parse(out.expiresAt) - Date.now()).toBeGreaterThan(86_300_000);
    expect(Date.parse(out.expiresAt) - Date.now()).toBeLessThanOrEqual(86_400_000);
    const auth = { authorization: `Bearer ${out.token}` };
    const devices = await fetch(`${daemon.api}/v1/devices`, { headers: auth });
    expect(devices.status).toBe(403);
    expect(((await devices.json()) as { error: { code: string } }).error.code).toBe("insufficient_scope");
    const sent = await fetch(`${daemon.api}/v1/devices/d1/messages`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ payload: "hi" }),
    });
    expect(sent.status).toBe(202);
    const claims = await verifyPublisherToken(daemon.server.publisherKeys, out.token, { scope: "publish", now: Date.now() });
    expect(claims).toMatchObject({ subject: "tester", scopes: ["publish"] });
  });

  it("works without a daemon: creates the data directory and keys, and the daemon started later accepts the token", async () => {
    const root = tempDir();
    dirs.push(root);
    const dataDir = join(root, "data");
    const r = await runCommand(["token", "issue", "--scope", "admin", "--ttl", "120", "--data-dir", dataDir]);
    expect(r.code).toBe(0);
    expect(existsSync(join(dataDir, "dtlspush.db"))).toBe(true);
    daemon = await startDaemon(dataDir);
    const claims = await verifyPublisherToken(daemon.server.publisherKeys, r.stdout.trim(), { scope: "admin", now: Date.now() });
    expect(claims.expiresAt - claims.issuedAt).toBe(120_000);
  });

  it("reads the data directory from a configuration file", async () => {
    const root = tempDir();
    dirs.push(root);
    const { writeFileSync } = await import("node:fs");
    writeFileSync(join(root, "dtlspush.toml"), 'data_dir = "var"\n');
    const r = await runCommand(["token", "issue", "--scope", "publish", "--config", join(root, "dtlspush.toml")]);
    expect(r.code).toBe(0);
    expect(existsSync(join(root, "var", "dtlspush.db"))).toBe(true);
  });

  it("refuses a memory store (its keys would not be the daemon's)", async () => {
    vi.stubEnv("DTLSPUSH_STORE_KIND", "memory");
    const r = await runCommand(["token", "issue", "--scope", "publish", "--data-dir", "/nonexistent/dtlspush"]);
    expect(r).toEqual({
      code: 1,
      stdout: "",
      stderr: 'dtlspush: error: cannot issue tokens with store.kind = "memory": the daemon\'s keys live only in its memory (use a sqlite store)\n',
    });
  });

  it("a broken configuration file is one error line, exit 1", async () => {
    const root = tempDir();
    dirs.push(root);
    const { writeFileSync } = await import("node:fs");
    writeFileSync(join(root, "bad.toml"), "[http]\nlisten = 8080\n");
    const r = await runCommand(["token", "issue", "--scope", "publish", "--config", join(root, "bad.toml")]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^dtlspush: error: http\.listen .*\n$/);
  });
});
