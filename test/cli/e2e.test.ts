/**
 * End to end: runs bin/dtlspush.js (built CLI in dist/) as child processes.
 * Needs `npm run build` first. The DTLS tests also need the engine.
 */
import { spawn } from "node:child_process";
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { waitFor } from "./cli-process.ts";
import { afterEach, beforeAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(ROOT, "bin", "dtlspush.js");
const HAVE_ENGINE = existsSync(join(ROOT, "src", "dtls", "index.ts"));
const KEY = "00112233445566778899aabbccddeeff";

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcessWithoutNullStreams>();

function start(args: readonly string[], bin = BIN): ChildProcessWithoutNullStreams {
  const child = spawn(process.execPath, [bin, ...args], { cwd: ROOT, env: { ...process.env, DTLSPUSH_DEBUG: "" } });
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** A process that has not exited this long after `done` was first awaited is killed and reported. */
const EXIT_TIMEOUT_MS = 15_000;

function collect(child: ChildProcessWithoutNullStreams): { stdout: () => string; stderr: () => string; done: Promise<Result> } {
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const exited = new Promise<Result>((resolve) => child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr })));
  let done: Promise<Result> | undefined;
  return {
    stdout: () => stdout,
    stderr: () => stderr,
    get done(): Promise<Result> {
      done ??= new Promise<Result>((resolve, reject) => {
        const timer = setTimeout(() => {
          child.kill("SIGKILL");
          reject(
            new Error(
              `'dtlspush ${child.spawnargs.slice(2).join(" ")}' did not exit within ${EXIT_TIMEOUT_MS} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`,
            ),
          );
        }, EXIT_TIMEOUT_MS);
        void exited.then((r) => {
          clearTimeout(timer);
          resolve(r);
        });
      });
      return done;
    },
  };
}

function run(args: readonly string[], input = "", bin = BIN): Promise<Result> {
  const child = start(args, bin);
  const result = collect(child).done;
  child.stdin.end(input);
  return result;
}

afterEach(() => {
  for (const child of children) child.kill("SIGKILL");
  children.clear();
});

beforeAll(() => {
  if (!existsSync(join(ROOT, "dist", "cli", "main.js"))) {
    throw new Error("dist/cli/main.js is missing: run 'npm run build' before these tests");
  }
});

describe("dtlspush CLI (help, version, usage errors)", () => {
  it.each([
    [["--help"], /^Usage: dtlspush <command>/],
    [["-h"], /dtls serve/],
    [["dtls", "--help"], /^Usage: dtlspush dtls <command>/],
    [["dtls", "-h"], /connect/],
    [["dtls", "serve", "--help"], /^Usage: dtlspush dtls serve --listen HOST:PORT --psk ID:HEXKEY/],
    [["dtls", "serve", "-h"], /--echo/],
    [["dtls", "connect", "--help"], /^Usage: dtlspush dtls connect HOST:PORT --psk ID:HEXKEY/],
    [["dtls", "connect", "-h"], /--timeout MS/],
  ])("%j prints help and exits 0", async (args, pattern) => {
    const r = await run(args);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(pattern);
  });

  it("--version prints the version", async () => {
    const r = await run(["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^dtlspush \d+\.\d+\.\d+\S*\n$/);
  });

  it.each([
    [
      ["dtls", "serve", "--listen", "127.0.0.1:0", "--psk", "dev1:abc"],
      "dtlspush: error: --psk dev1: the key must have an even number of hex digits (got 3)\n",
    ],
    [["dtls", "serve", "--bogus"], "dtlspush: error: unknown option '--bogus' (see 'dtlspush dtls serve --help')\n"],
    [["dtls", "connect", "--psk", "a:01"], "dtlspush: error: missing HOST:PORT (see 'dtlspush dtls connect --help')\n"],
    [["frobnicate"], "dtlspush: error: unknown command 'frobnicate' (try 'dtlspush --help')\n"],
  ])("%j is a usage error: exit 2, one line on stderr", async (args, expected) => {
    const r = await run(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(expected);
    expect(r.stdout).toBe("");
  });

  it("says to build when dist is missing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dtlspush-nodist-"));
    try {
      mkdirSync(join(dir, "bin"));
      copyFileSync(BIN, join(dir, "bin", "dtlspush.js"));
      const r = await run(["--help"], "", join(dir, "bin", "dtlspush.js"));
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^dtlspush: error: .*npm run build.*\n$/);
      expect(r.stderr.split("\n")).toHaveLength(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!HAVE_ENGINE)("dtlspush dtls serve + connect (needs the DTLS engine)", () => {
  async function startServer(extra: readonly string[] = []): Promise<{
    child: ChildProcessWithoutNullStreams;
    out: ReturnType<typeof collect>;
    port: number;
  }> {
    const child = start(["dtls", "serve", "--listen", "127.0.0.1:0", "--psk", `dev1:${KEY}`, "--psk", "dev2:0102", ...extra]);
    const out = collect(child);
    const m = await waitFor(out.stdout, child, /^listening on 127\.0\.0\.1:(\d+)$/m);
    const port = Number(m[1]);
    expect(port).toBeGreaterThan(0);
    return { child, out, port };
  }

  async function stop(server: { child: ChildProcessWithoutNullStreams; out: ReturnType<typeof collect> }): Promise<Result> {
    server.child.kill("SIGTERM");
    return await server.out.done;
  }

  it("echoes lines and logs the session", async () => {
    const server = await startServer(["--echo"]);
    const r = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--psk", `dev1:${KEY}`, "--timeout", "10000"], "hello\nworld\n");
    expect(r.stderr).toMatch(/^connected suite=TLS_PSK_WITH_[A-Z0-9_]+ ems=(yes|no) peer=127\.0\.0\.1:\d+\n$/);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("hello\nworld\n");

    await waitFor(server.out.stdout, server.child, /^closed peer=127\.0\.0\.1:\d+ identity=dev1 /m);
    const s = await stop(server);
    expect(s.stdout).toMatch(/^established peer=127\.0\.0\.1:\d+ identity=dev1 suite=TLS_PSK_WITH_[A-Z0-9_]+ ems=(yes|no)$/m);
    const suite = /suite=(\S+)/.exec(s.stdout)?.[1];
    expect(r.stderr).toContain(`suite=${suite} `);
    expect(s.stderr).toBe("");
    expect(s.code).toBe(0);
  });

  it("negotiates the suite asked for", async () => {
    const server = await startServer(["--echo", "--suites", "TLS_PSK_WITH_AES_128_GCM_SHA256,TLS_PSK_WITH_AES_128_CCM_8"]);
    const r = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--psk", "dev2:0102", "--suites", "TLS_PSK_WITH_AES_128_GCM_SHA256"], "x\n");
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^connected suite=TLS_PSK_WITH_AES_128_GCM_SHA256 /);
    expect(r.stdout).toBe("x\n");
    const s = await stop(server);
    expect(s.stdout).toMatch(/^established peer=127\.0\.0\.1:\d+ identity=dev2 suite=TLS_PSK_WITH_AES_128_GCM_SHA256 ems=/m);
    expect(s.code).toBe(0);
  });

  it("prints received records without --echo", async () => {
    const server = await startServer();
    const r = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--psk", `dev1:${KEY}`, "--wait", "100"], "ping 1\n");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("");
    await waitFor(server.out.stdout, server.child, /^data peer=127\.0\.0\.1:\d+ identity=dev1 bytes=6 text="ping 1"$/m);
    const s = await stop(server);
    expect(s.code).toBe(0);
  });

  it("fails the handshake with a wrong key: exit 1, one line; the server logs it", async () => {
    const server = await startServer();
    const r = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--psk", "dev1:ffff", "--timeout", "5000"], "x\n");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^dtlspush: error: handshake with 127\.0\.0\.1:\d+ failed: .+\n$/);
    await waitFor(server.out.stdout, server.child, /^handshake-failed peer=127\.0\.0\.1:\d+ /m);
    const s = await stop(server);
    expect(s.code).toBe(0);
  });

  it("reports a bad suite name as a usage error", async () => {
    const r = await run(["dtls", "connect", "127.0.0.1:9", "--psk", "a:01", "--suites", "TLS_NOPE"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^dtlspush: error: --suites: .*TLS_NOPE.*\n$/);
  });

  it("reports a busy port as a runtime error", async () => {
    const server = await startServer();
    const r = await run(["dtls", "serve", "--listen", `127.0.0.1:${server.port}`, "--psk", "a:01"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`dtlspush: error: cannot listen on 127.0.0.1:${server.port}: address already in use\n`);
    await stop(server);
  });

  it("connect closes with close_notify on SIGINT", async () => {
    const server = await startServer(["--echo"]);
    const client = start(["dtls", "connect", `127.0.0.1:${server.port}`, "--psk", `dev1:${KEY}`]);
    const c = collect(client);
    await waitFor(c.stderr, client, /^connected /m);
    client.kill("SIGINT");
    const r = await c.done;
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^connected [^\n]*\n$/);
    await waitFor(server.out.stdout, server.child, /^closed peer=127\.0\.0\.1:\d+ identity=dev1 reason=closed$/m);
    expect((await stop(server)).code).toBe(0);
  });

  it("closes sessions with close_notify on SIGINT", async () => {
    const server = await startServer(["--echo"]);
    const client = start(["dtls", "connect", `127.0.0.1:${server.port}`, "--psk", `dev1:${KEY}`]);
    const c = collect(client);
    await waitFor(c.stderr, client, /^connected /m);
    client.stdin.write("one\n");
    await waitFor(c.stdout, client, /^one$/m);
    server.child.kill("SIGINT");
    const s = await server.out.done;
    expect(s.code).toBe(0);
    expect(s.stdout).toMatch(/^closed peer=127\.0\.0\.1:\d+ identity=dev1 /m);
    // The client sees the server's close_notify and ends on its own.
    const r = await c.done;
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^closed by peer reason=/m);
  });
});
