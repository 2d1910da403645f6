/**
 * `dtlspush listen`: argument parsing, output formats, and end to end as a
 * device of a real push server + HTTP API: messages sent with `dtlspush send`
 * printed and acked, --count/--timeout/signals, refusals, state files,
 * certificates.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { UsageError } from "../../src/cli/errors.ts";
import { formatMessageJson, formatMessageLine, type PrintableMessage } from "../../src/cli/listen-format.ts";
import { caFromChain, parseListenArgs } from "../../src/cli/listen.ts";
import { clearDtlspushEnv, removeDir, runCommand, startCommand, startDaemon, tempDir, waitUntil, type TestDaemon } from "./daemon-harness.ts";

const KEY = "00112233445566778899aabbccddeeff";
const base = ["--server", "127.0.0.1:5684", "--device", "d1"];

describe("parseListenArgs", () => {
  it("parses a PSK device with every option", () => {
    const c = parseListenArgs([
      ...base,
      "--psk",
      KEY,
      "--psk-identity",
      "id-1",
      "--state",
      "s.json",
      "--json",
      "--count",
      "3",
      "--timeout",
      "9",
      "--probe-idle",
      "2",
      "--transport",
      "nodertc",
    ]);
    expect(c).toMatchObject({
      server: { host: "127.0.0.1", port: 5684 },
      device: "d1",
      psk: { identity: "id-1" },
      certificate: undefined,
      caFile: undefined,
      stateFile: "s.json",
      json: true,
      count: 3,
      timeoutSeconds: 9,
      probeIdleSeconds: 2,
      transport: "nodertc",
    });
    expect(Buffer.from(c.psk?.key ?? []).toString("hex")).toBe(KEY);
  });

  it("has defaults; the PSK identity is the device id", () => {
    const c = parseListenArgs([...base, "--psk", "0102"]);
    expect(c).toMatchObject({
      psk: { identity: "d1" },
      stateFile: undefined,
      json: false,
      count: undefined,
      timeoutSeconds: undefined,
      probeIdleSeconds: undefined,
      transport: "dtlspush",
    });
    const cert = parseListenArgs(["--server", "[::1]:1", "--device", "d1", "--cert", "c.pem", "--key", "c.key", "--ca", "ca.pem"]);
    expect(cert).toMatchObject({ server: { host: "::1", port: 1 }, psk: undefined, certificate: { cert: "c.pem", key: "c.key" }, caFile: "ca.pem" });
  });

  it("takes --server more than once, in order", () => {
    expect(parseListenArgs([...base, "--psk", "0102"]).servers).toEqual([{ host: "127.0.0.1", port: 5684 }]);
    const c = parseListenArgs(["--server", "10.0.0.1:1", "--server", "[::1]:2", "--device", "d1", "--psk", "0102"]);
    expect(c.servers).toEqual([
      { host: "10.0.0.1", port: 1 },
      { host: "::1", port: 2 },
    ]);
    expect(c.server).toEqual({ host: "10.0.0.1", port: 1 });
    expect(() => parseListenArgs(["--server", "10.0.0.1:1", "--server", "x", "--device", "d1", "--psk", "0102"])).toThrow(
      "--server: expected HOST:PORT, got 'x'",
    );
  });

  it.each([
    [["--device", "d1", "--psk", "01"], "missing --server HOST:PORT (see 'dtlspush listen --help')"],
    [["--server", "h:1", "--psk", "01"], "missing --device ID (see 'dtlspush listen --help')"],
    [base, "missing --psk HEX or --cert FILE --key FILE (see 'dtlspush listen --help')"],
    [[...base, "--psk", "01", "--cert", "c", "--key", "k"], "--psk and --cert: give one"],
    [[...base, "--cert", "c"], "--cert c has no --key (give --cert FILE --key FILE in pairs)"],
    [[...base, "--psk", "01", "--ca", "ca.pem"], "--ca: only with --cert/--key"],
    [[...base, "--cert", "c", "--key", "k", "--psk-identity", "x"], "--psk-identity: only with --psk"],
    [[...base, "--psk", "0g"], "--psk: the key must be hexadecimal digits (0-9, a-f)"],
    [[...base, "--psk", "123"], "--psk: the key must have an even number of hex digits (got 3)"],
    [[...base, "--psk", "01", "--count", "0"], "--count: 0 is out of range (1-1000000000)"],
    [[...base, "--psk", "01", "--timeout", "1.5"], "--timeout: '1.5' is not a whole number"],
    [[...base, "--psk", "01", "--probe-idle", "0"], "--probe-idle: 0 is out of range (1-86400)"],
    [[...base, "--psk", "01", "--transport", "openssl"], "--transport: 'openssl' is not one of dtlspush, node-dtls-client, nodertc"],
    [[...base, "--cert", "c", "--key", "k", "--transport", "node-dtls-client"], "--transport node-dtls-client: supports pre-shared keys only"],
    [[...base, "--psk", "01", "--state", ""], "--state: the file name is empty"],
    [["--server", "5684", "--device", "d1", "--psk", "01"], "--server: expected HOST:PORT, got '5684'"],
    [["--server", "h:1", "--device", "a b", "--psk", "01"], 'Device id "a b" contains " "'],
    [[...base, "--psk", "01", "extra"], "unexpected argument 'extra' (see 'dtlspush listen --help')"],
  ])("%j is a usage error", (argv, message) => {
    expect(() => parseListenArgs(argv)).toThrow(UsageError);
    expect(() => parseListenArgs(argv)).toThrow(message);
  });
});

const msg = (payload: Uint8Array | string, over: Partial<PrintableMessage> = {}): PrintableMessage => ({
  id: "m1",
  seq: 4,
  topic: "",
  contentType: "",
  payload: typeof payload === "string" ? new TextEncoder().encode(payload) : payload,
  createdAt: Date.UTC(2026, 0, 2, 3, 4, 5),
  ...over,
});

describe("listen output", () => {
  it("prints UTF-8 without newlines as is, anything else as base64: …", () => {
    expect(formatMessageLine(msg("hello wörld"))).toBe("hello wörld");
    expect(formatMessageLine(msg(""))).toBe("");
    expect(formatMessageLine(msg("two\nlines"))).toBe(`base64:${Buffer.from("two\nlines").toString("base64")}`);
    expect(formatMessageLine(msg("cr\r"))).toBe(`base64:${Buffer.from("cr\r").toString("base64")}`);
    expect(formatMessageLine(msg(new Uint8Array([0xff, 0x00])))).toBe("base64:/wA=");
    // valid UTF-8, but control characters would garble a terminal; a tab is fine
    expect(formatMessageLine(msg(new Uint8Array([0x00, 0x01])))).toBe("base64:AAE=");
    expect(formatMessageLine(msg("bell\u0007"))).toBe(`base64:${Buffer.from("bell\u0007").toString("base64")}`);
    expect(formatMessageLine(msg("a\tb"))).toBe("a\tb");
    // text that itself looks like the prefix is encoded, so the output stays unambiguous
    expect(formatMessageLine(msg("base64:abc"))).toBe(`base64:${Buffer.from("base64:abc").toString("base64")}`);
  });

  it("prints one JSON object a line; binary payloads as payloadBase64", () => {
    expect(JSON.parse(formatMessageJson(msg("a\nb", { topic: "t", contentType: "text/plain" })))).toEqual({
      id: "m1",
      seq: 4,
      topic: "t",
      contentType: "text/plain",
      payload: "a\nb",
      createdAt: "2026-01-02T03:04:05.000Z",
    });
    expect(JSON.parse(formatMessageJson(msg(new Uint8Array([0xff]))))).toMatchObject({ payload: null, payloadBase64: "/w==" });
    expect(formatMessageJson(msg("x"))).not.toContain("\n");
  });

  it("takes the CA from the end of a certificate chain", () => {
    const block = (n: string): string => `-----BEGIN CERTIFICATE-----\n${n}\n-----END CERTIFICATE-----`;
    expect(caFromChain(`${block("LEAF")}\n${block("MID")}\n${block("ROOT")}\n`)).toBe(`${block("ROOT")}\n`);
    expect(caFromChain(`${block("LEAF")}\n`)).toBeUndefined();
    expect(caFromChain("junk")).toBeUndefined();
  });
});

describe("dtlspush listen (end to end)", () => {
  let daemon: TestDaemon | undefined;
  const dirs: string[] = [];
  const running: { io: { signal(): void }; done: Promise<number> }[] = [];

  beforeEach(() => clearDtlspushEnv());
  afterEach(async () => {
    for (const r of running.splice(0)) {
      r.io.signal();
      await r.done;
    }
    await daemon?.close();
    daemon = undefined;
    for (const d of dirs.splice(0)) removeDir(d);
    vi.unstubAllEnvs();
  });

  function listen(argv: readonly string[]): ReturnType<typeof startCommand> {
    const r = startCommand(["listen", ...argv]);
    running.push(r);
    return r;
  }

  it("device add, then listen with that PSK prints what send sends, acks it, and exits after --count", async () => {
    daemon = await startDaemon();
    const d = daemon;
    const at = ["--api", d.api, "--data-dir", d.dataDir];
    expect((await runCommand(["device", "add", "sensor-1", "--psk", KEY, "--topic", "alerts", ...at])).code).toBe(0);
    const l = listen(["--server", d.dtls, "--device", "sensor-1", "--psk", KEY, "--count", "3"]);
    await waitUntil(() => l.io.err().includes("connected"));
    expect(l.io.err()).toBe(`connected device=sensor-1 server=${d.dtls} transport=dtlspush topics=alerts\n`);

    const ids: string[] = [];
    for (const argv of [
      ["--device", "sensor-1", "--data", "hello device"],
      ["--topic", "alerts", "--data-base64", "AAH/"],
      ["--device", "sensor-1", "--data", "a\nb"],
    ]) {
      const sent = await runCommand(["send", ...argv, ...at]);
      expect(sent.code).toBe(0);
      ids.push(sent.stdout.trim());
    }
    expect(await l.done).toBe(0);
    expect(l.io.out()).toBe(`hello device\nbase64:AAH/\nbase64:${Buffer.from("a\nb").toString("base64")}\n`);
    await waitUntil(() => d.server.engine.deviceStatus("sensor-1").ackedSeq === 3);
    const res = await fetch(`${d.api}/v1/messages/${ids[0] ?? ""}`, {
      headers: { authorization: `Bearer ${(await runCommand(["token", "issue", "--scope", "publish", "--data-dir", d.dataDir])).stdout.trim()}` },
    });
    const status = (await res.json()) as { receipts: { state: string }[] };
    expect(status.receipts.map((r) => r.state)).toContain("delivered");
  });

  it("--json prints one object a line", async () => {
    daemon = await startDaemon();
    const d = daemon;
    await d.server.registry.add({ id: "d1", psk: { identity: "psk-d1", key: Buffer.from(KEY, "hex") } });
    const l = listen(["--server", d.dtls, "--device", "d1", "--psk", KEY, "--psk-identity", "psk-d1", "--count", "1", "--json"]);
    await waitUntil(() => l.io.err().includes("connected"));
    const sent = await runCommand([
      "send",
      "--device",
      "d1",
      "--data",
      '{"on":true}',
      "--content-type",
      "application/json",
      "--json",
      "--api",
      d.api,
      "--data-dir",
      d.dataDir,
    ]);
    const answer = JSON.parse(sent.stdout) as { id: string; createdAt: string };
    expect(await l.done).toBe(0);
    const lines = l.io.out().trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? "")).toEqual({
      id: answer.id,
      seq: 1,
      topic: "",
      contentType: "application/json",
      payload: '{"on":true}',
      createdAt: answer.createdAt,
    });
  });

  it("--server A --server B: A down at the start, prints the messages of B", async () => {
    const gone = await startDaemon(); // its port, closed: nothing answers there (ICMP port unreachable)
    await gone.close();
    daemon = await startDaemon();
    const d = daemon;
    await d.server.registry.add({ id: "d1", psk: { identity: "d1", key: Buffer.from(KEY, "hex") } });
    const l = listen(["--server", gone.dtls, "--server", d.dtls, "--device", "d1", "--psk", KEY, "--count", "1", "--timeout", "20"]);
    await waitUntil(() => l.io.err().includes("connected"));
    expect(l.io.err()).toBe(`connected device=d1 server=${d.dtls} transport=dtlspush\n`);
    expect((await runCommand(["send", "--device", "d1", "--data", "from B", "--api", d.api, "--data-dir", d.dataDir])).code).toBe(0);
    expect(await l.done).toBe(0);
    expect(l.io.out()).toBe("from B\n");
  });

  it("--timeout exits 2 when not done; SIGINT closes cleanly with 0", async () => {
    daemon = await startDaemon();
    const d = daemon;
    await d.server.registry.add({ id: "d1", psk: { identity: "d1", key: Buffer.from(KEY, "hex") } });
    const timed = listen(["--server", d.dtls, "--device", "d1", "--psk", KEY, "--count", "2", "--timeout", "1"]);
    expect(await timed.done).toBe(2);
    expect(timed.io.err()).toMatch(/\ndtlspush: error: timed out after 1 s \(0 of 2 received\)\n$/);
    await waitUntil(() => !d.server.engine.deviceStatus("d1").online);

    const l = listen(["--server", d.dtls, "--device", "d1", "--psk", KEY]);
    await waitUntil(() => l.io.err().includes("connected"));
    await waitUntil(() => d.server.engine.deviceStatus("d1").online);
    l.io.signal("SIGTERM");
    expect(await l.done).toBe(0);
    expect(l.io.err()).not.toContain("error");
    await waitUntil(() => !d.server.engine.deviceStatus("d1").online);
  });

  it("--state keeps the place across runs: nothing twice, nothing skipped", async () => {
    daemon = await startDaemon();
    const d = daemon;
    const root = tempDir();
    dirs.push(root);
    const state = join(root, "state.json");
    await d.server.registry.add({ id: "d1", psk: { identity: "d1", key: Buffer.from(KEY, "hex") } });
    for (const p of ["one", "two", "three"])
      await d.server.publish({ target: { device: "d1" }, payload: new TextEncoder().encode(p), publisher: "t" });
    const first = listen(["--server", d.dtls, "--device", "d1", "--psk", KEY, "--state", state, "--count", "2"]);
    expect(await first.done).toBe(0);
    expect(first.io.out()).toBe("one\ntwo\n");
    expect(JSON.parse(readFileSync(state, "utf8"))).toMatchObject({ hwm: 2 });
    expect(first.io.err()).toBe(`connected device=d1 server=${d.dtls} transport=dtlspush\n`);
    const second = listen(["--server", d.dtls, "--device", "d1", "--psk", KEY, "--state", state, "--count", "1"]);
    expect(await second.done).toBe(0);
    expect(second.io.out()).toBe("three\n");
    // the DTLS session kept in the state file: the second run's handshake is an abbreviated one
    expect(second.io.err()).toBe(`connected device=d1 server=${d.dtls} transport=dtlspush resumed\n`);
    expect(d.server.dtls.stats.handshakesResumed).toBe(1);
    await waitUntil(() => d.server.engine.deviceStatus("d1").ackedSeq === 3);
  });

  it("refusals are one line and exit 1: wrong key, unknown device, another device's identity, revoked while listening", async () => {
    daemon = await startDaemon();
    const d = daemon;
    await d.server.registry.add({ id: "d1", psk: { identity: "d1", key: Buffer.from(KEY, "hex") } });

    const wrongKey = await runCommand(["listen", "--server", d.dtls, "--device", "d1", "--psk", "ffff"]);
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stdout).toBe("");
    expect(wrongKey.stderr).toMatch(
      new RegExp(`^dtlspush: error: cannot connect to ${d.dtls} as d1: [^\\n]+ \\(is the pre-shared key right\\?\\)\\n$`),
    );

    const unknown = await runCommand(["listen", "--server", d.dtls, "--device", "ghost", "--psk", KEY]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(
      /^dtlspush: error: cannot connect to \S+ as ghost: [^\n]+ \(no enabled device has PSK identity "ghost": is it registered, and not revoked\?\)\n$/,
    );

    const mismatch = await runCommand(["listen", "--server", d.dtls, "--device", "d9", "--psk", KEY, "--psk-identity", "d1"]);
    expect(mismatch).toEqual({ code: 1, stdout: "", stderr: `dtlspush: error: the server at ${d.dtls} knows this device as "d1", not "d9"\n` });

    const l = listen(["--server", d.dtls, "--device", "d1", "--psk", KEY]);
    await waitUntil(() => d.server.engine.deviceStatus("d1").online);
    expect((await runCommand(["device", "revoke", "d1", "--api", d.api, "--data-dir", d.dataDir])).code).toBe(0);
    expect(await l.done).toBe(1);
    expect(l.io.err()).toMatch(new RegExp(`\\ndtlspush: error: ${d.dtls} ended the session: [^\\n]*\\(device_revoked\\)\\n$`));

    const revoked = await runCommand(["listen", "--server", d.dtls, "--device", "d1", "--psk", KEY]);
    expect(revoked.code).toBe(1);
    expect(revoked.stderr).toMatch(
      /^dtlspush: error: cannot connect to \S+ as d1: [^\n]+ \(no enabled device has PSK identity "d1": is it registered, and not revoked\?\)\n$/,
    );

    await d.close();
    const down = await runCommand(["listen", "--server", d.dtls, "--device", "d1", "--psk", KEY]);
    expect(down).toEqual({ code: 1, stdout: "", stderr: `dtlspush: error: cannot connect to ${d.dtls} as d1: connection refused\n` });
  });

  it("a device certificate works, with the CA taken from the end of its chain", async () => {
    const root = tempDir();
    dirs.push(root);
    const certs = join(root, "certs");
    expect((await runCommand(["certs", "init", "--dir", certs])).code).toBe(0);
    expect((await runCommand(["certs", "device", "cam-1", "--dir", certs])).code).toBe(0);
    daemon = await startDaemon(join(root, "data"), {
      certificates: [{ cert: readFileSync(join(certs, "server-p256.pem")), key: readFileSync(join(certs, "server-p256.key")) }],
      clientAuth: "require",
      clientCa: readFileSync(join(certs, "ca.pem")),
    });
    const d = daemon;
    await d.server.registry.add({ id: "cam-1", certIdentity: "cam-1" });
    const l = listen([
      "--server",
      d.dtls,
      "--device",
      "cam-1",
      "--cert",
      join(certs, "device-cam-1.pem"),
      "--key",
      join(certs, "device-cam-1.key"),
      "--count",
      "1",
    ]);
    await waitUntil(() => l.io.err().includes("connected"));
    await d.server.publish({ target: { device: "cam-1" }, payload: new TextEncoder().encode("snap"), publisher: "t" });
    expect(await l.done).toBe(0);
    expect(l.io.out()).toBe("snap\n");

    const { writeFileSync } = await import("node:fs");
    const leafOnly = join(root, "leaf.pem");
    writeFileSync(
      leafOnly,
      (readFileSync(join(certs, "device-cam-1.pem"), "utf8").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/) ?? [""])[0],
    );
    const noCa = await runCommand(["listen", "--server", d.dtls, "--device", "cam-1", "--cert", leafOnly, "--key", join(certs, "device-cam-1.key")]);
    expect(noCa).toEqual({
      code: 1,
      stdout: "",
      stderr: `dtlspush: error: --cert ${leafOnly}: holds no CA certificate after the device certificate; give --ca FILE to verify the server\n`,
    });
  });
});
