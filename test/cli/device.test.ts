/**
 * `dtlspush device add|list|revoke|remove`: argument parsing, output formats,
 * the API client helpers, and end to end against a real push server + HTTP
 * API (minted and given tokens, scope refusal, the offline fallback).
 */
import { existsSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  ApiError,
  ApiUnreachableError,
  apiErrorBody,
  apiRequest,
  apiUrlForListen,
  formatApiUrl,
  formatCommandFailure,
  isLoopbackUrl,
  parseApiUrl,
} from "../../src/cli/api-client.ts";
import { parseApiOptions } from "../../src/cli/daemon-access.ts";
import { deviceAddBody, parseDeviceAddArgs, parseDeviceIdArgs, parseDeviceListArgs } from "../../src/cli/device.ts";
import {
  credentialsKind,
  deviceItemFromRecord,
  formatDeviceTable,
  formatLastSeen,
  parseDeviceItem,
  type DeviceItem,
} from "../../src/cli/device-format.ts";
import { UsageError } from "../../src/cli/errors.ts";
import { loadConfig, openDataDir } from "../../src/daemon/config/index.ts";
import { clearDtlspushEnv, refusedApiUrl, removeDir, runCommand, startDaemon, tempDir, type TestDaemon } from "./daemon-harness.ts";

const KEY = "00112233445566778899aabbccddeeff";

/** A non-loopback IPv4 address of this machine, if it has one. */
function ownAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return undefined;
}

describe("parseDeviceAddArgs", () => {
  it("takes a PSK, topics and the access options", () => {
    const c = parseDeviceAddArgs([
      "sensor-1",
      "--psk",
      KEY.toUpperCase(),
      "--topic",
      "alerts",
      "--topic",
      "a/b",
      "--topic",
      "alerts",
      "--api",
      "http://h:1",
      "--token",
      "T",
      "--data-dir",
      "d",
      "--json",
    ]);
    expect(c).toMatchObject({
      id: "sensor-1",
      psk: { identity: undefined, keyHex: KEY },
      certIdentity: undefined,
      topics: ["alerts", "a/b"],
      json: true,
      access: { dataDir: "d", configFile: undefined, explicit: true },
      api: { token: "T" },
    });
    expect(c.api.api?.href).toBe("http://h:1/");
    expect(deviceAddBody(c)).toEqual({ psk: { keyHex: KEY }, topics: ["alerts", "a/b"] });
  });

  it("takes a PSK identity or a certificate identity; no --topic keeps the topics", () => {
    const psk = parseDeviceAddArgs(["d1", "--psk", "0102", "--psk-identity", "urn:dev:1"]);
    expect(deviceAddBody(psk)).toEqual({ psk: { identity: "urn:dev:1", keyHex: "0102" } });
    const cert = parseDeviceAddArgs(["gw.2", "--cert-identity", "CN with spaces"]);
    expect(cert.topics).toBeUndefined();
    expect(deviceAddBody(cert)).toEqual({ certificate: { identity: "CN with spaces" } });
  });

  it.each([
    [[], "missing ID (see 'dtlspush device add --help')"],
    [["d1"], "missing --psk HEX or --cert-identity CN (see 'dtlspush device add --help')"],
    [["d1", "--psk", "0102", "--cert-identity", "x"], "--psk and --cert-identity: give one"],
    [["d1", "--cert-identity", "x", "--psk-identity", "y"], "--psk-identity: only with --psk"],
    [["d1", "--psk", "xyz"], "--psk: the key must be hexadecimal digits (0-9, a-f)"],
    [["d1", "--psk", "012"], "--psk: the key must have an even number of hex digits (got 3)"],
    [["d1", "--psk", "00".repeat(65)], "--psk: the key is longer than 64 bytes"],
    [["d1", "--psk", "0102", "--psk-identity", "x".repeat(129)], "--psk-identity: give 1 to 128 bytes of UTF-8"],
    [["-bad", "--psk", "0102"], "unknown option '-b'"],
    [["a b", "--psk", "0102"], 'Device id "a b" contains " "'],
    [["d1", "--psk", "0102", "--topic", "a//b"], '--topic: Topic "a//b" has an empty segment ("//")'],
    [["d1", "--psk", "0102", "--api", "ftp://x"], '--api: expected an http:// or https:// URL, got "ftp://x"'],
    [["d1", "--psk", "0102", "--api", "nope"], '--api: expected a URL such as http://127.0.0.1:8080, got "nope"'],
    [["d1", "--psk", "0102", "--token", ""], "--token: the token is empty"],
    [["d1", "d2", "--psk", "0102"], "unexpected argument 'd2' (see 'dtlspush device add --help')"],
  ])("%j is a usage error", (argv, message) => {
    expect(() => parseDeviceAddArgs(argv)).toThrow(UsageError);
    expect(() => parseDeviceAddArgs(argv)).toThrow(message);
  });

  it("never repeats the key in an error", () => {
    const secret = `${KEY}0`;
    try {
      parseDeviceAddArgs(["d1", "--psk", secret]);
      expect.unreachable();
    } catch (e) {
      expect((e as Error).message).not.toContain(KEY);
    }
  });
});

describe("parseDeviceIdArgs / parseDeviceListArgs", () => {
  it("take an id (revoke, remove) or none (list)", () => {
    expect(parseDeviceIdArgs(["d1"], {}, "dtlspush device remove")).toMatchObject({ id: "d1", json: false });
    expect(() => parseDeviceIdArgs([], {}, "dtlspush device remove")).toThrow("missing ID (see 'dtlspush device remove --help')");
    expect(parseDeviceListArgs(["--json"])).toMatchObject({ json: true });
    expect(() => parseDeviceListArgs(["d1"])).toThrow("unexpected argument 'd1' (see 'dtlspush device list --help')");
  });

  it("read DTLSPUSH_API and DTLSPUSH_TOKEN; flags win", () => {
    const env = { DTLSPUSH_API: "https://api.example:8443", DTLSPUSH_TOKEN: "envtoken" };
    const fromEnv = parseApiOptions({}, env);
    expect(fromEnv.api?.href).toBe("https://api.example:8443/");
    expect(fromEnv.token).toBe("envtoken");
    const fromFlags = parseApiOptions({ api: "http://127.0.0.1:9", token: "flagtoken" }, env);
    expect(fromFlags.api?.href).toBe("http://127.0.0.1:9/");
    expect(fromFlags.token).toBe("flagtoken");
    expect(parseApiOptions({}, { DTLSPUSH_API: "", DTLSPUSH_TOKEN: "" })).toEqual({ api: undefined, token: undefined });
    expect(() => parseApiOptions({}, { DTLSPUSH_API: "x" })).toThrow("DTLSPUSH_API: expected a URL such as");
  });
});

describe("API client helpers", () => {
  it("parses API URLs", () => {
    expect(parseApiUrl("http://[::1]:8080", "--api").hostname).toBe("[::1]");
    expect(() => parseApiUrl("http://h/?a=1", "--api")).toThrow("--api: the URL must not have a query or fragment");
    expect(() => parseApiUrl("http://u:p@h/", "--api")).toThrow("--api: put no credentials in the URL (use --token)");
  });

  it("knows loopback URLs", () => {
    for (const u of ["http://127.0.0.1:1", "http://127.1.2.3", "http://localhost:8080", "http://[::1]:1", "http://api.localhost"]) {
      expect(isLoopbackUrl(new URL(u)), u).toBe(true);
    }
    for (const u of ["http://10.0.0.1", "http://example.com", "http://[::2]:1", "http://128.0.0.1"]) expect(isLoopbackUrl(new URL(u)), u).toBe(false);
  });

  it("reaches wildcard listen addresses over loopback", () => {
    expect(apiUrlForListen("0.0.0.0", 8080).href).toBe("http://127.0.0.1:8080/");
    expect(apiUrlForListen("::", 8080).href).toBe("http://[::1]:8080/");
    expect(apiUrlForListen("10.1.2.3", 80).href).toBe("http://10.1.2.3/");
    expect(apiUrlForListen("fe80::1", 9).href).toBe("http://[fe80::1]:9/");
  });

  it("reports a request that gets no answer as ApiUnreachableError", async () => {
    const refused = new URL(await refusedApiUrl());
    await expect(apiRequest(refused, { method: "GET", path: "/healthz" })).rejects.toMatchObject({
      name: "ApiUnreachableError",
      code: "ECONNREFUSED",
      refused: true,
      message: `cannot reach the API at ${formatApiUrl(refused)}: connection refused`,
    });
    await expect(apiRequest(new URL("http://127.0.0.1:1"), { method: "GET", path: "/" })).rejects.toThrow(
      "cannot reach the API at http://127.0.0.1:1: fetch does not connect to this port (a reserved port number); use another",
    );
  });

  it("reads API error bodies", () => {
    expect(apiErrorBody({ error: { code: "device_unknown", message: "No device." } })).toEqual({ code: "device_unknown", message: "No device." });
    expect(apiErrorBody({ error: { code: "x" } })).toEqual({ code: "x", message: "x" });
    expect(apiErrorBody({ error: "nope" })).toBeUndefined();
    expect(apiErrorBody("text")).toBeUndefined();
  });

  it("formats refusals as one line with the code", () => {
    expect(formatCommandFailure("dtlspush send", new ApiError(404, "device_unknown", 'No device "x" is registered.'))).toBe(
      'dtlspush send: No device "x" is registered (device_unknown)',
    );
    expect(formatCommandFailure("dtlspush send", new ApiUnreachableError("http://h:1", "ENOTFOUND", "host not found"))).toBe(
      "dtlspush send: cannot reach the API at http://h:1: host not found",
    );
    expect(formatCommandFailure("dtlspush send", Object.assign(new Error("two\nlines"), { code: "bad_thing" }))).toBe(
      "dtlspush send: two, lines (bad_thing)",
    );
    expect(formatCommandFailure("dtlspush send", Object.assign(new Error("x"), { code: "ENOENT" }))).toBeUndefined();
    expect(formatCommandFailure("dtlspush send", new Error("plain"))).toBeUndefined();
  });
});

const item = (over: Partial<DeviceItem>): DeviceItem => ({
  id: "d",
  revoked: false,
  psk: null,
  certificate: null,
  topics: [],
  online: false,
  lastSeen: null,
  queueDepth: 0,
  ...over,
});

describe("device output", () => {
  it("prints a padded table", () => {
    const table = formatDeviceTable([
      item({ id: "sensor-1", psk: { identity: "sensor-1" }, online: true, lastSeen: "2026-01-02T03:04:05.678Z", queueDepth: 3 }),
      item({ id: "gw", psk: { identity: "g" }, certificate: { identity: "gw" }, revoked: true, queueDepth: null }),
    ]);
    expect(table).toBe(
      [
        "ID        CREDENTIALS  REVOKED  ONLINE  LAST SEEN             QUEUE",
        "sensor-1  psk          no       yes     2026-01-02T03:04:05Z  3",
        "gw        psk+cert     yes      no      -                     -",
        "",
      ].join("\n"),
    );
    expect(formatDeviceTable([])).toBe("no devices\n");
  });

  it("reads API items and builds them from records without the key", () => {
    expect(
      parseDeviceItem({
        id: "a",
        psk: { identity: "a" },
        certificate: null,
        topics: ["t", 3],
        online: true,
        lastSeen: 5,
        queueDepth: 1,
        revoked: false,
      }),
    ).toEqual(item({ id: "a", psk: { identity: "a" }, topics: ["t"], online: true, lastSeen: 5, queueDepth: 1 }));
    expect(parseDeviceItem({ nope: 1 })).toBeUndefined();
    const fromRecord = deviceItemFromRecord(
      { id: "a", psk: { identity: "pa", key: new Uint8Array([1, 2]) }, certIdentity: "cn", revoked: true, topics: ["x"], createdAt: 1, updatedAt: 2 },
      null,
    );
    expect(fromRecord).toEqual(
      item({ id: "a", psk: { identity: "pa" }, certificate: { identity: "cn" }, revoked: true, topics: ["x"], queueDepth: null }),
    );
    expect(JSON.stringify(fromRecord)).not.toContain("key");
    expect(credentialsKind(item({}))).toBe("none");
    expect(formatLastSeen(0)).toBe("-");
    expect(formatLastSeen(Date.UTC(2026, 0, 1))).toBe("2026-01-01T00:00:00Z");
  });
});

describe("dtlspush device (end to end)", () => {
  let daemon: TestDaemon | undefined;
  const dirs: string[] = [];

  beforeEach(() => clearDtlspushEnv());
  afterEach(async () => {
    await daemon?.close();
    daemon = undefined;
    for (const d of dirs.splice(0)) removeDir(d);
    vi.unstubAllEnvs();
  });

  const at = (d: TestDaemon): string[] => ["--api", d.api, "--data-dir", d.dataDir];

  it("add, update, list, revoke and remove through the API with a minted admin token; the key is printed nowhere", async () => {
    daemon = await startDaemon();
    const d = daemon;
    const add = await runCommand(["device", "add", "sensor-1", "--psk", KEY, "--topic", "alerts", ...at(d)]);
    expect(add).toEqual({ code: 0, stdout: "added device sensor-1 psk-identity=sensor-1 topics=alerts\n", stderr: "" });
    expect(d.server.registry.get("sensor-1")?.psk?.key).toEqual(Uint8Array.from(Buffer.from(KEY, "hex")));

    const update = await runCommand(["device", "add", "sensor-1", "--psk", "0a0b", "--json", ...at(d)]);
    expect(update.code).toBe(0);
    expect(JSON.parse(update.stdout)).toMatchObject({ id: "sensor-1", psk: { identity: "sensor-1" }, topics: ["alerts"], revoked: false });
    expect(d.server.registry.get("sensor-1")?.psk?.key).toEqual(new Uint8Array([10, 11]));

    await runCommand(["device", "add", "cam", "--cert-identity", "cam.example", ...at(d)]);
    const list = await runCommand(["device", "list", ...at(d)]);
    expect(list.code).toBe(0);
    expect(list.stdout.split("\n")[0]).toMatch(/^ID\s+CREDENTIALS\s+REVOKED\s+ONLINE\s+LAST SEEN\s+QUEUE$/);
    expect(list.stdout).toMatch(/^cam\s+cert\s+no\s+no\s+-\s+0$/m);
    expect(list.stdout).toMatch(/^sensor-1\s+psk\s+no\s+no\s+-\s+0$/m);
    const json = await runCommand(["device", "list", "--json", ...at(d)]);
    const devices = (JSON.parse(json.stdout) as { devices: { id: string }[] }).devices;
    expect(devices.map((x) => x.id)).toEqual(["cam", "sensor-1"]);
    for (const out of [add, update, list, json]) expect(out.stdout + out.stderr).not.toMatch(new RegExp(`${KEY}|0a0b`, "i"));

    const revoke = await runCommand(["device", "revoke", "sensor-1", ...at(d)]);
    expect(revoke).toEqual({ code: 0, stdout: "revoked device sensor-1 psk-identity=sensor-1 topics=alerts revoked\n", stderr: "" });
    expect(d.server.registry.get("sensor-1")?.revoked).toBe(true);

    const remove = await runCommand(["device", "remove", "sensor-1", ...at(d)]);
    expect(remove).toEqual({ code: 0, stdout: "removed device sensor-1\n", stderr: "" });
    expect(d.server.registry.get("sensor-1")).toBeUndefined();

    const again = await runCommand(["device", "remove", "sensor-1", ...at(d)]);
    expect(again).toEqual({ code: 1, stdout: "", stderr: 'dtlspush device remove: No device "sensor-1" is registered (device_unknown)\n' });
    const revokeUnknown = await runCommand(["device", "revoke", "nobody", ...at(d)]);
    expect(revokeUnknown.code).toBe(1);
    expect(revokeUnknown.stderr).toMatch(/^dtlspush device revoke: .* \(device_unknown\)\n$/);
    expect(d.server.registry.get("nobody")).toBeUndefined();
  });

  it("uses a given token (--token or DTLSPUSH_TOKEN); a publish token is refused with insufficient_scope", async () => {
    daemon = await startDaemon();
    const d = daemon;
    const admin = (await runCommand(["token", "issue", "--scope", "admin", "--data-dir", d.dataDir])).stdout.trim();
    const publish = (await runCommand(["token", "issue", "--scope", "publish", "--data-dir", d.dataDir])).stdout.trim();
    // no data dir: only the given token can work
    const add = await runCommand(["device", "add", "d1", "--psk", "0102", "--api", d.api, "--token", admin]);
    expect(add.code).toBe(0);
    vi.stubEnv("DTLSPUSH_TOKEN", admin);
    vi.stubEnv("DTLSPUSH_API", d.api);
    expect((await runCommand(["device", "list", "--json"])).stdout).toContain('"d1"');
    const refused = await runCommand(["device", "list", "--token", publish]);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toMatch(/^dtlspush device list: .*admin.* \(insufficient_scope\)\n$/);
  });

  it("says why when a minted token comes from another data directory", async () => {
    daemon = await startDaemon();
    const other = tempDir();
    dirs.push(other);
    await runCommand(["token", "issue", "--scope", "admin", "--data-dir", other]); // creates keys there
    const r = await runCommand(["device", "list", "--api", daemon.api, "--data-dir", other]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`the token was minted from ${other}, which seems not to be this daemon's data directory`);
    expect(r.stderr).toMatch(/\(token_invalid\)\n$/);
  });

  it("without a token and no way to mint one: one line naming the options", async () => {
    const r = await runCommand(["device", "list", "--api", "http://192.0.2.1:8080"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      "dtlspush: error: no publisher token: give --token JWT or set DTLSPUSH_TOKEN (mint one with 'dtlspush token issue' on the daemon's machine); " +
        "none could be minted here because the API at http://192.0.2.1:8080 is not on this machine\n",
    );
  });

  it("falls back to the local store when the daemon is not running, and the daemon sees the change when it starts", async () => {
    daemon = await startDaemon();
    const dataDir = daemon.dataDir;
    await daemon.server.registry.add({ id: "old", psk: { identity: "old", key: new Uint8Array([1]) } });
    await daemon.close();
    daemon = undefined;
    const api = await refusedApiUrl();
    const local = ["--api", api, "--data-dir", dataDir];

    const add = await runCommand(["device", "add", "d2", "--psk", KEY, "--topic", "t1", ...local]);
    expect(add.code).toBe(0);
    expect(add.stdout).toBe("added device d2 psk-identity=d2 topics=t1\n");
    expect(add.stderr).toBe(
      `dtlspush device add: daemon not reachable at ${api}; wrote to ${dataDir} directly; a running daemon picks it up on SIGHUP\n`,
    );

    const list = await runCommand(["device", "list", ...local]);
    expect(list.code).toBe(0);
    expect(list.stderr).toBe(`dtlspush device list: daemon not reachable at ${api}; read ${dataDir} directly (online and last seen unknown)\n`);
    expect(list.stdout).toMatch(/^d2\s+psk\s+no\s+no\s+-\s+0$/m);
    expect(list.stdout).toMatch(/^old\s+psk/m);

    expect((await runCommand(["device", "revoke", "old", ...local])).stdout).toBe("revoked device old psk-identity=old revoked\n");
    expect((await runCommand(["device", "add", "d3", "--cert-identity", "d3", ...local])).code).toBe(0);
    expect((await runCommand(["device", "remove", "d3", ...local])).stdout).toBe("removed device d3\n");
    const unknown = await runCommand(["device", "remove", "d3", ...local]);
    expect(unknown).toEqual({ code: 1, stdout: "", stderr: 'dtlspush device remove: No device "d3" is registered (device_unknown)\n' });

    daemon = await startDaemon(dataDir);
    expect(daemon.server.registry.get("d2")).toMatchObject({ topics: ["t1"], revoked: false });
    expect(daemon.server.registry.get("d2")?.psk?.key).toEqual(Uint8Array.from(Buffer.from(KEY, "hex")));
    expect(daemon.server.registry.get("old")?.revoked).toBe(true);
    expect(daemon.server.registry.get("d3")).toBeUndefined();
  });

  it("offline add creates a missing data directory; offline list does not", async () => {
    const root = tempDir();
    dirs.push(root);
    const api = await refusedApiUrl();
    const listed = await runCommand(["device", "list", "--api", api, "--data-dir", join(root, "none")]);
    expect(listed).toEqual({
      code: 1,
      stdout: "",
      stderr: `dtlspush: error: daemon not reachable at ${api}, and there is no data directory at ${join(root, "none")}\n`,
    });
    expect(existsSync(join(root, "none"))).toBe(false);

    const dataDir = join(root, "fresh");
    const add = await runCommand(["device", "add", "first", "--psk", "0102", "--api", api, "--data-dir", dataDir]);
    expect(add.code).toBe(0);
    expect(add.stderr).toContain("wrote to");
    const config = await loadConfig({ env: {}, flags: { dataDir }, cwd: root });
    const data = await openDataDir(config);
    try {
      expect((await data.store.getDevice("first"))?.psk?.identity).toBe("first");
    } finally {
      await data.close();
    }
  });

  it.skipIf(ownAddress() === undefined)("an API on another address that refuses the connection is an error, not a local write", async () => {
    const root = tempDir();
    dirs.push(root);
    const port = new URL(await refusedApiUrl()).port;
    const api = `http://${ownAddress() ?? ""}:${port}`;
    const r = await runCommand(["device", "add", "x", "--psk", "0102", "--api", api, "--token", "t", "--data-dir", root]);
    expect(r).toEqual({ code: 1, stdout: "", stderr: `dtlspush device add: cannot reach the API at ${api}: connection refused\n` });
  });
});
