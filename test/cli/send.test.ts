/** `dtlspush send`: argument parsing, the request it makes, and end to end against a real push server + HTTP API. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CliError, UsageError } from "../../src/cli/errors.ts";
import { parseSendArgs, parseSendCommand, sendBody, sendPath } from "../../src/cli/send.ts";
import { batchChunks, parseBatchLines } from "../../src/cli/send-batch.ts";
import { clearDtlspushEnv, refusedApiUrl, removeDir, runCommand, startDaemon, tempDir, type TestDaemon } from "./daemon-harness.ts";

describe("parseSendArgs", () => {
  it("parses a device message with every option", () => {
    const c = parseSendArgs([
      "--device",
      "sensor-1",
      "--data",
      "hello",
      "--ttl",
      "60",
      "--priority",
      "9",
      "--collapse-key",
      "k",
      "--content-type",
      "text/plain",
      "--id",
      "m-1",
      "--api",
      "http://127.0.0.1:1",
      "--token",
      "T",
      "--json",
    ]);
    expect(c).toMatchObject({
      target: { device: "sensor-1" },
      data: { kind: "text", text: "hello" },
      ttlSeconds: 60,
      priority: 9,
      collapseKey: "k",
      contentType: "text/plain",
      id: "m-1",
      json: true,
      api: { token: "T" },
    });
    expect(sendPath(c.target)).toBe("/v1/devices/sensor-1/messages");
    expect(sendBody(c)).toEqual({ payload: "hello", contentType: "text/plain", ttlSeconds: 60, priority: 9, collapseKey: "k", id: "m-1" });
  });

  it("sends base64 and files as payloadBase64; topics are one path segment", () => {
    const b = parseSendArgs(["--topic", "site/a", "--data-base64", "AAEC /w=="]);
    expect(b.data).toEqual({ kind: "base64", base64: "AAEC/w==" });
    expect(sendBody(b)).toEqual({ payloadBase64: "AAEC/w==" });
    expect(sendPath(b.target)).toBe("/v1/topics/site%2Fa/messages");
    const f = parseSendArgs(["--device", "d", "--file", "-"]);
    expect(f.data).toEqual({ kind: "file", path: "-" });
    expect(sendBody(f, new Uint8Array([0, 255]))).toEqual({ payloadBase64: "AP8=" });
    expect(parseSendArgs(["--device", "d", "--data", ""]).data).toEqual({ kind: "text", text: "" });
  });

  it.each([
    [["--data", "x"], "missing --device ID or --topic TOPIC (see 'dtlspush send --help')"],
    [["--device", "d", "--topic", "t", "--data", "x"], "--device and --topic: give one"],
    [["--device", "d"], "missing --data TEXT, --file PATH or --data-base64 B64 (see 'dtlspush send --help')"],
    [["--device", "d", "--data", "x", "--file", "f"], "--data, --file and --data-base64: give one"],
    [["--device", "d", "--data-base64", "abc"], "--data-base64: not valid base64"],
    [["--device", "d", "--data-base64", "ab!="], "--data-base64: not valid base64"],
    [["--device", "d", "--file", ""], "--file: the file name is empty"],
    [["--device", "d", "--data", "x", "--priority", "10"], "--priority: 10 is out of range (0-9)"],
    [["--device", "d", "--data", "x", "--ttl", "0"], "--ttl: 0 is out of range (1-315360000)"],
    [["--device", "d", "--data", "x", "--id", ""], "--id: the id is empty"],
    [["--device", "d", "--data", "x", "--content-type", ""], "--content-type: the type is empty"],
    [["--device", "d", "--data", "x", "--collapse-key", ""], "--collapse-key: the key is empty"],
    [["--device", "-x", "--data", "x"], "option '--device' needs a value"],
    [["--device", "a b", "--data", "x"], 'Device id "a b" contains " "'],
    [["--topic", "/t", "--data", "x"], '--topic: Topic "/t" must start with a letter or digit'],
    [["--device", "d", "--data", "x", "extra"], "unexpected argument 'extra' (see 'dtlspush send --help')"],
  ])("%j is a usage error", (argv, message) => {
    expect(() => parseSendArgs(argv)).toThrow(UsageError);
    expect(() => parseSendArgs(argv)).toThrow(message);
  });
});

describe("dtlspush send (end to end)", () => {
  let daemon: TestDaemon | undefined;
  const dirs: string[] = [];

  beforeEach(() => clearDtlspushEnv());
  afterEach(async () => {
    await daemon?.close();
    daemon = undefined;
    for (const d of dirs.splice(0)) removeDir(d);
    vi.unstubAllEnvs();
  });

  async function withDevices(): Promise<{ d: TestDaemon; at: string[] }> {
    daemon = await startDaemon();
    const key = new Uint8Array(16);
    await daemon.server.registry.add({ id: "d1", psk: { identity: "d1", key }, topics: ["site/a"] });
    await daemon.server.registry.add({ id: "d2", psk: { identity: "d2", key }, topics: ["site/a"] });
    return { d: daemon, at: ["--api", daemon.api, "--data-dir", daemon.dataDir] };
  }

  it("prints the message id; the message is stored with every option", async () => {
    const { d, at } = await withDevices();
    const r = await runCommand([
      "send",
      "--device",
      "d1",
      "--data",
      "héllo",
      "--content-type",
      "text/plain",
      "--priority",
      "7",
      "--collapse-key",
      "ck",
      "--ttl",
      "600",
      ...at,
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^\S+\n$/);
    const id = r.stdout.trim();
    const m = await d.data.store.getMessage(id);
    expect(m).toMatchObject({ device: "d1", topic: "", contentType: "text/plain", priority: 7, collapseKey: "ck", publisher: "dtlspush-cli" });
    expect(Buffer.from(m?.payload ?? []).toString("utf8")).toBe("héllo");
    expect((m?.expiresAt ?? 0) - (m?.createdAt ?? 0)).toBe(600_000);
  });

  it("--json prints the whole 202 answer; a topic with '/' reaches its devices", async () => {
    const { at } = await withDevices();
    const r = await runCommand(["send", "--topic", "site/a", "--data", "t", "--id", "my-id-1", "--json", ...at]);
    expect(r.code).toBe(0);
    const body = JSON.parse(r.stdout) as { id: string; createdAt: string; expiresAt: string; recipients: number; rejected: unknown[] };
    expect(body).toMatchObject({ id: "my-id-1", recipients: 2, rejected: [] });
    expect(Date.parse(body.createdAt)).not.toBeNaN();
    expect(Date.parse(body.expiresAt)).toBeGreaterThan(Date.parse(body.createdAt));
  });

  it("--file and --file - send bytes; --data-base64 too", async () => {
    const { d, at } = await withDevices();
    const root = tempDir();
    dirs.push(root);
    const file = join(root, "blob.bin");
    writeFileSync(file, Buffer.from([0, 1, 2, 255]));
    const fromFile = await runCommand(["send", "--device", "d1", "--file", file, ...at]);
    expect(fromFile.code).toBe(0);
    expect([...((await d.data.store.getMessage(fromFile.stdout.trim()))?.payload ?? [])]).toEqual([0, 1, 2, 255]);
    const fromStdin = await runCommand(["send", "--device", "d1", "--file", "-", ...at], "line one\nline two\n");
    expect(Buffer.from((await d.data.store.getMessage(fromStdin.stdout.trim()))?.payload ?? []).toString()).toBe("line one\nline two\n");
    const fromB64 = await runCommand(["send", "--device", "d1", "--data-base64", "3q2+7w==", ...at]);
    expect(Buffer.from((await d.data.store.getMessage(fromB64.stdout.trim()))?.payload ?? []).toString("hex")).toBe("deadbeef");
    const missing = await runCommand(["send", "--device", "d1", "--file", join(root, "nope"), ...at]);
    expect(missing).toMatchObject({ code: 1, stdout: "" });
    expect(missing.stderr).toMatch(/^dtlspush: error: --file .*nope: cannot read the file: /);
  });

  it("API refusals are one line '<command>: <message> (<code>)', exit 1", async () => {
    const { d, at } = await withDevices();
    const unknown = await runCommand(["send", "--device", "nobody", "--data", "x", ...at]);
    expect(unknown).toMatchObject({ code: 1, stdout: "" });
    expect(unknown.stderr).toMatch(/^dtlspush send: [^\n]+ \(device_unknown\)\n$/);

    expect((await runCommand(["send", "--device", "d1", "--data", "x", "--id", "dup-1", ...at])).code).toBe(0);
    const dup = await runCommand(["send", "--device", "d1", "--data", "x", "--id", "dup-1", ...at]);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toMatch(/^dtlspush send: [^\n]+ \(duplicate_message\)\n$/);

    const big = await runCommand(["send", "--device", "d1", "--data", "x".repeat(5000), ...at]);
    expect(big.code).toBe(1);
    expect(big.stderr).toMatch(/^dtlspush send: [^\n]+ \(payload_too_large\)\n$/);

    await d.server.registry.revoke("d2");
    const revoked = await runCommand(["send", "--device", "d2", "--data", "x", ...at]);
    expect(revoked.stderr).toMatch(/^dtlspush send: [^\n]+ \(device_revoked\)\n$/);

    const badToken = await runCommand(["send", "--device", "d1", "--data", "x", "--api", d.api, "--token", "not.a.jwt"]);
    expect(badToken.code).toBe(1);
    expect(badToken.stderr).toMatch(/^dtlspush send: [^\n]+ \(token_invalid\)\n$/);
  });

  it("a daemon that is not running is one line, exit 1 (no local fallback for messages)", async () => {
    const root = tempDir();
    dirs.push(root);
    const api = await refusedApiUrl();
    await runCommand(["token", "issue", "--scope", "publish", "--data-dir", root]);
    const r = await runCommand(["send", "--device", "d1", "--data", "x", "--api", api, "--data-dir", root]);
    expect(r).toEqual({ code: 1, stdout: "", stderr: `dtlspush send: cannot reach the API at ${api}: connection refused\n` });
  });

  it("sends a file's messages and prints one line each; a refused one makes the exit status 1", async () => {
    const { d, at } = await withDevices();
    const root = tempDir();
    dirs.push(root);
    const file = join(root, "m.ndjson");
    writeFileSync(
      file,
      [
        '{"device":"d1","payload":"one","id":"f-1"}',
        "",
        '{"topic":"site/a","payloadBase64":"AP8=","id":"f-2"}',
        '{"device":"nobody","payload":"x"}',
        '{"device":"d1","payload":"three"}',
      ].join("\n") + "\n",
    );
    const r = await runCommand(["send", "--batch", file, ...at]);
    expect(r.code).toBe(1);
    const out = r.stdout.trimEnd().split("\n");
    expect(out).toHaveLength(4);
    expect(out[0]).toBe("1 f-1");
    expect(out[1]).toBe("3 f-2");
    expect(out[2]).toMatch(/^4 error device_unknown: /);
    expect(out[3]).toMatch(/^5 [0-9a-f-]{36}$/);
    expect(r.stderr).toBe("dtlspush send: 1 of 4 messages were refused\n");
    expect((await d.data.store.getMessage("f-1"))?.publisher).toBe("dtlspush-cli");
    expect([...((await d.data.store.getMessage("f-2"))?.payload ?? [])]).toEqual([0, 255]);
    expect(Buffer.from((await d.data.store.getMessage(out[3]?.split(" ")[1] ?? ""))?.payload ?? []).toString()).toBe("three");

    // the same file again: what has an id is a duplicate now
    const again = await runCommand(["send", "--batch", file, "--json", ...at]);
    expect(again.code).toBe(1);
    const json = again.stdout
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l) as { line: number; id?: string; error?: { code: string } });
    expect(json.map((j) => [j.line, j.error?.code ?? "ok"])).toEqual([
      [1, "duplicate_message"],
      [3, "duplicate_message"],
      [4, "device_unknown"],
      [5, "ok"],
    ]);
  });

  it("reads standard input with '-', in requests of at most 1000; exit 0 when all are published", async () => {
    const { d, at } = await withDevices();
    // the daemon refuses a request of more than 1000 (and d1, d2 each queue at most 1000)
    const input = Array.from({ length: 1500 }, (_, i) => JSON.stringify({ device: `d${1 + (i % 2)}`, payload: `m${i}`, id: `in-${i}` })).join("\n");
    const r = await runCommand(["send", "--batch", "-", ...at], input);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    const out = r.stdout.trimEnd().split("\n");
    expect(out).toHaveLength(1500);
    expect(out[1499]).toBe("1500 in-1499");
    expect(await d.data.store.getMessage("in-0")).toBeDefined();
    expect(await d.data.store.getMessage("in-1499")).toBeDefined();
  });

  it("an invalid line stops it before anything is sent, naming the line", async () => {
    const { d, at } = await withDevices();
    const r = await runCommand(["send", "--batch", "-", ...at], '{"device":"d1","payload":"ok","id":"bad-1"}\n{"device":"d1",\n');
    expect(r).toEqual({ code: 1, stdout: "", stderr: expect.stringMatching(/^dtlspush: error: --batch -: line 2 is not valid JSON \(/) });
    expect(await d.data.store.getMessage("bad-1")).toBeUndefined();
    const missing = await runCommand(["send", "--batch", "/nonexistent/m.ndjson", ...at]);
    expect(missing.stderr).toMatch(/^dtlspush: error: --batch \/nonexistent\/m.ndjson: cannot read the file: /);
  });
});

describe("send --batch: parsing", () => {
  it("takes a file or '-', with --json and the API options only", () => {
    expect(parseSendCommand(["--batch", "m.ndjson", "--json", "--token", "T"])).toMatchObject({ batch: "m.ndjson", json: true, api: { token: "T" } });
    expect(parseSendCommand(["--batch", "-"])).toMatchObject({ batch: "-", json: false });
    expect(() => parseSendCommand(["--batch", "m", "--device", "d"])).toThrow("--batch and --device: the file gives each message's fields");
    expect(() => parseSendCommand(["--batch", "m", "--ttl", "5"])).toThrow("--batch and --ttl");
    expect(() => parseSendCommand(["--batch", ""])).toThrow("--batch: the file name is empty");
    expect(parseSendCommand(["--device", "d", "--data", "x"])).toMatchObject({ target: { device: "d" } });
  });

  it("reads one JSON object a line, skips blank lines, names the line that is not", () => {
    const lines = parseBatchLines('{"device":"a","payload":"1"}\r\n\n  \n{"topic":"t","payload":"2"}\n', "f");
    expect(lines.map((l) => [l.line, l.entry])).toEqual([
      [1, { device: "a", payload: "1" }],
      [4, { topic: "t", payload: "2" }],
    ]);
    for (const [text, message] of [
      ['{"device":"a","payload":"1"}\n{"device":', "--batch f: line 2 is not valid JSON"],
      ['{"device":"a"}\n\n[1,2]', "--batch f: line 3 is not a JSON object"],
      ["null", "--batch f: line 1 is not a JSON object"],
    ] as const) {
      expect(() => parseBatchLines(text, "f")).toThrow(CliError);
      expect(() => parseBatchLines(text, "f")).toThrow(message);
    }
  });

  it("sends at most 1000 entries and about 3 MiB a request", () => {
    const lines = Array.from({ length: 2500 }, (_, i) => ({ line: i + 1, entry: {}, bytes: 10 }));
    expect(batchChunks(lines).map((c) => c.length)).toEqual([1000, 1000, 500]);
    expect(batchChunks(lines, 1000, 100).map((c) => c.length)).toEqual([...Array.from({ length: 277 }, () => 9), 7]);
    // one entry larger than the byte budget still goes, alone
    expect(
      batchChunks(
        [
          { line: 1, entry: {}, bytes: 500 },
          { line: 2, entry: {}, bytes: 1 },
        ],
        1000,
        100,
      ).map((c) => c.length),
    ).toEqual([1, 1]);
  });
});
