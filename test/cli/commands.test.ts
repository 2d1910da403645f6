import { PassThrough, Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { CliIo, CommandGroup } from "../../src/cli/command.ts";
import { DEFAULT_TIMEOUT_MS, DEFAULT_WAIT_MS, parseConnectArgs } from "../../src/cli/dtls-connect.ts";
import { parseServeArgs } from "../../src/cli/dtls-serve.ts";
import { UsageError } from "../../src/cli/errors.ts";
import { main } from "../../src/cli/main.ts";

function usageMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error("expected a UsageError");
}

const KEY = "00112233445566778899aabbccddeeff";

describe("parseServeArgs", () => {
  it("parses a full command line", () => {
    const config = parseServeArgs([
      "--listen",
      "[::1]:0",
      "--psk",
      `dev1:${KEY}`,
      "--psk",
      "dev2:0102",
      "--echo",
      "--suites",
      "TLS_PSK_WITH_AES_128_CCM_8",
      "--mtu",
      "500",
      "--require-ems",
      "--psk-hint",
      "hello",
    ]);
    expect(config.listen).toEqual({ host: "::1", port: 0 });
    expect(config.psks.map((p) => p.identity)).toEqual(["dev1", "dev2"]);
    expect(config).toMatchObject({ echo: true, suites: "TLS_PSK_WITH_AES_128_CCM_8", mtu: 500, requireEms: true, pskHint: "hello" });
  });

  it("has defaults", () => {
    expect(parseServeArgs(["--listen", "127.0.0.1:5684", "--psk", "a:01"])).toMatchObject({
      echo: false,
      suites: undefined,
      mtu: undefined,
      requireEms: false,
      pskHint: undefined,
    });
  });

  it.each([
    [["--psk", "a:01"], "missing --listen HOST:PORT (see 'dtlspush dtls serve --help')"],
    [["--listen", "127.0.0.1:1"], "missing --psk ID:HEXKEY or --cert FILE --key FILE (see 'dtlspush dtls serve --help')"],
    [["--listen", "127.0.0.1:1", "--cert", "a.pem"], "--cert a.pem has no --key (give --cert FILE --key FILE in pairs)"],
    [["--listen", "127.0.0.1:1", "--key", "a.key"], "--key a.key has no --cert (give --cert FILE --key FILE in pairs)"],
    [
      ["--listen", "127.0.0.1:1", "--cert", "a.pem", "--key", "a.key", "--cert", "b.pem"],
      "--cert b.pem has no --key (give --cert FILE --key FILE in pairs)",
    ],
    [
      ["--listen", "127.0.0.1:1", "--psk", "a:01", "--legacy-sha1-signatures"],
      "--legacy-sha1-signatures: only with --cert/--key (PSK suites sign nothing)",
    ],
    [["--listen", "127.0.0.1:1", "--cert", "a.pem", "--key", "a.key", "--psk-hint", "h"], "--psk-hint: only with --psk"],
    [["--listen", "127.0.0.1:1", "--psk", "a:1"], "--psk a: the key must have an even number of hex digits (got 1)"],
    [["--listen", "127.0.0.1", "--psk", "a:01"], "--listen: expected HOST:PORT, got '127.0.0.1'"],
    [["--listen", "127.0.0.1:1", "--psk", "a:01", "--mtu", "20"], "--mtu: 20 is out of range (100-65507)"],
    [["--listen", "127.0.0.1:1", "--psk", "a:01", "--psk-hint", ""], "--psk-hint: the hint is empty"],
    [["--listen", "127.0.0.1:1", "--psk", "a:01", "--suites", " "], "--suites: no suite given"],
    [["--listen", "127.0.0.1:1", "--psk", "a:01", "extra"], "unexpected argument 'extra' (see 'dtlspush dtls serve --help')"],
    [["--listen", "127.0.0.1:1", "--psk", "a:01", "--port", "1"], "unknown option '--port' (see 'dtlspush dtls serve --help')"],
  ])("rejects %j", (argv, message) => {
    expect(usageMessage(() => parseServeArgs(argv))).toBe(message);
  });

  it("takes certificate pairs in order, with or without PSKs", () => {
    const certsOnly = parseServeArgs([
      "--listen",
      "127.0.0.1:0",
      "--cert",
      "p256.pem",
      "--key",
      "p256.key",
      "--cert",
      "rsa.pem",
      "--key",
      "rsa.key",
      "--legacy-sha1-signatures",
    ]);
    expect(certsOnly).toMatchObject({
      psks: [],
      certificates: [
        { cert: "p256.pem", key: "p256.key" },
        { cert: "rsa.pem", key: "rsa.key" },
      ],
      legacySha1Signatures: true,
    });
    const both = parseServeArgs(["--listen", "127.0.0.1:0", "--psk", "a:01", "--key", "k", "--cert", "c"]);
    expect(both.psks.map((p) => p.identity)).toEqual(["a"]);
    expect(both).toMatchObject({ certificates: [{ cert: "c", key: "k" }], legacySha1Signatures: false });
    expect(parseServeArgs(["--listen", "127.0.0.1:0", "--psk", "a:01"])).toMatchObject({ certificates: [], legacySha1Signatures: false });
  });
});

describe("parseConnectArgs", () => {
  it("parses a full command line", () => {
    const config = parseConnectArgs(["127.0.0.1:5684", "--psk", `dev1:${KEY}`, "--timeout", "2000", "--wait", "0", "--mtu", "1400"]);
    expect(config.target).toEqual({ host: "127.0.0.1", port: 5684 });
    expect(config.psk?.identity).toBe("dev1");
    expect(config).toMatchObject({ timeoutMs: 2000, waitMs: 0, mtu: 1400, suites: undefined });
  });

  it("has defaults", () => {
    expect(parseConnectArgs(["[::1]:5684", "--psk", "a:01"])).toMatchObject({
      target: { host: "::1", port: 5684 },
      timeoutMs: DEFAULT_TIMEOUT_MS,
      waitMs: DEFAULT_WAIT_MS,
    });
  });

  it.each([
    [["--psk", "a:01"], "missing HOST:PORT (see 'dtlspush dtls connect --help')"],
    [["127.0.0.1:5684"], "missing --psk ID:HEXKEY, --ca FILE or --fingerprint SHA256HEX (see 'dtlspush dtls connect --help')"],
    [["127.0.0.1:1", "--ca", ""], "--ca: the file name is empty"],
    [["127.0.0.1:1", "--fingerprint", "abcd"], "--fingerprint: a SHA-256 fingerprint has 64 hex digits, got 4"],
    [
      ["127.0.0.1:1", "--ca", "ca.pem", "--fingerprint", "ab".repeat(32)],
      "--ca and --fingerprint: give one (with a pinned fingerprint the CA is not used)",
    ],
    [
      ["127.0.0.1:1", "--fingerprint", "ab".repeat(32), "--servername", "x"],
      "--servername: the name is not checked with --fingerprint (the pin alone decides)",
    ],
    [["127.0.0.1:1", "--psk", "a:01", "--servername", "x"], "--servername: only with --ca (it names what the server certificate must be issued for)"],
    [["127.0.0.1:1", "--ca", "ca.pem", "--servername", "bad name"], "--servername: 'bad name' is not a valid host name or IP address"],
    [["127.0.0.1:0", "--psk", "a:01"], "HOST:PORT: port 0 is out of range (1-65535)"],
    [["127.0.0.1:1", "--psk", "a:01", "--psk", "b:02"], "--psk: give it once (a client has one identity)"],
    [["127.0.0.1:1", "--psk", "a:01", "--timeout", "0"], "--timeout: 0 is out of range (1-86400000)"],
    [["127.0.0.1:1", "--psk", "a:01", "--wait", "soon"], "--wait: 'soon' is not a whole number"],
    [["127.0.0.1:1", "extra", "--psk", "a:01"], "unexpected argument 'extra' (see 'dtlspush dtls connect --help')"],
    [["127.0.0.1:1", "--psk", "a:01", "--echo"], "unknown option '--echo' (see 'dtlspush dtls connect --help')"],
  ])("rejects %j", (argv, message) => {
    expect(usageMessage(() => parseConnectArgs(argv))).toBe(message);
  });

  it("takes certificate trust instead of (or with) a PSK", () => {
    const fp = "AB:".repeat(31) + "AB";
    expect(parseConnectArgs(["localhost:5684", "--ca", "ca.pem"])).toMatchObject({
      psk: undefined,
      caFile: "ca.pem",
      fingerprint: undefined,
      servername: undefined,
    });
    expect(parseConnectArgs(["localhost:5684", "--ca", "ca.pem", "--servername", "dtls.example.com", "--psk", "a:01"])).toMatchObject({
      psk: { identity: "a" },
      caFile: "ca.pem",
      servername: "dtls.example.com",
    });
    expect(parseConnectArgs(["127.0.0.1:5684", "--fingerprint", fp])).toMatchObject({ caFile: undefined, fingerprint: "ab".repeat(32) });
    expect(parseConnectArgs(["127.0.0.1:5684", "--psk", "a:01"])).toMatchObject({ caFile: undefined, fingerprint: undefined, servername: undefined });
  });
});

// ---------------------------------------------------------------------------
// The dispatcher, in process, with captured output.

function capture(): { io: CliIo; out: () => string; err: () => string } {
  let out = "";
  let err = "";
  const sink = (append: (s: string) => void): Writable =>
    new Writable({
      write(chunk: Buffer | string, _enc, cb) {
        append(chunk.toString());
        cb();
      },
    });
  return {
    io: {
      stdout: sink((s) => (out += s)),
      stderr: sink((s) => (err += s)),
      stdin: () => new PassThrough(),
      onShutdownSignal: () => () => {},
    },
    out: () => out,
    err: () => err,
  };
}

describe("main", () => {
  it.each([[["--help"]], [["-h"]]])("%j prints the command list", async (argv) => {
    const c = capture();
    expect(await main(argv, c.io)).toBe(0);
    expect(c.out()).toMatch(/^Usage: dtlspush <command>/);
    expect(c.out()).toContain("dtls serve");
    expect(c.out()).toContain("dtls connect");
    expect(c.out()).toContain("--version");
    expect(c.err()).toBe("");
  });

  it("--version prints the package version", async () => {
    const c = capture();
    expect(await main(["--version"], c.io)).toBe(0);
    expect(c.out()).toMatch(/^dtlspush \d+\.\d+\.\d+/);
  });

  it.each([
    [["dtls", "--help"], "Usage: dtlspush dtls <command>"],
    [["dtls", "serve", "--help"], "Usage: dtlspush dtls serve --listen HOST:PORT --psk ID:HEXKEY"],
    [["dtls", "serve", "-h"], "--require-ems"],
    [["dtls", "connect", "--help"], "Usage: dtlspush dtls connect HOST:PORT --psk ID:HEXKEY"],
    [["dtls", "connect", "--psk", "bad", "-h"], "--wait MS"],
  ])("%j prints help", async (argv, expected) => {
    const c = capture();
    expect(await main(argv, c.io)).toBe(0);
    expect(c.out()).toContain(expected);
    expect(c.err()).toBe("");
  });

  it.each([
    [[], "dtlspush: error: missing command (try 'dtlspush --help')\n"],
    [["nope"], "dtlspush: error: unknown command 'nope' (try 'dtlspush --help')\n"],
    [["--nope"], "dtlspush: error: unknown option '--nope' (try 'dtlspush --help')\n"],
    [["dtls"], "dtlspush: error: missing subcommand for 'dtlspush dtls' (one of: serve, connect)\n"],
    [["dtls", "bogus"], "dtlspush: error: unknown command 'dtls bogus' (try 'dtlspush dtls --help')\n"],
    [["dtls", "serve", "--listen", "x"], "dtlspush: error: --listen: expected HOST:PORT, got 'x'\n"],
    [["dtls", "connect", "h:1", "--psk", "a:zz"], "dtlspush: error: --psk a: the key must be hexadecimal digits (0-9, a-f)\n"],
  ])("%j is a usage error (exit 2, one line)", async (argv, expected) => {
    const c = capture();
    expect(await main(argv, c.io)).toBe(2);
    expect(c.err()).toBe(expected);
    expect(c.out()).toBe("");
  });

  it("reports runtime failures with exit 1 and unexpected ones as internal errors", async () => {
    const root: CommandGroup = {
      kind: "group",
      name: "dtlspush",
      summary: "",
      children: [
        { kind: "command", name: "boom", summary: "", help: () => "", run: () => Promise.reject(new TypeError("oops")) },
        {
          kind: "command",
          name: "bind",
          summary: "",
          help: () => "",
          run: () => Promise.reject(Object.assign(new Error("bind EADDRINUSE"), { code: "EADDRINUSE" })),
        },
      ],
    };
    let c = capture();
    expect(await main(["boom"], c.io, { root })).toBe(1);
    expect(c.err()).toBe("dtlspush: error: internal error: oops (set DTLSPUSH_DEBUG=1 for details)\n");
    c = capture();
    expect(await main(["bind"], c.io, { root })).toBe(1);
    expect(c.err()).toBe("dtlspush: error: address already in use\n");
  });
});
