/**
 * In-process harness for the operator commands (device, token, send, listen):
 * runs command lines through the CLI's `main` with captured standard streams,
 * and starts a real push server + HTTP API on 127.0.0.1 port 0 over a SQLite
 * store in a temporary data directory (the directory the commands open too).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import { vi } from "vitest";
import type { CliIo } from "../../src/cli/command.ts";
import { main } from "../../src/cli/main.ts";
import { loadConfig, openDataDir, type DataDir } from "../../src/daemon/config/index.ts";
import { startHttpApi, type HttpApi } from "../../src/daemon/http/index.ts";
import { startPushServer, type PushServer, type PushServerOptions } from "../../src/daemon/push-server.ts";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A CliIo over strings; `signal()` calls the command's SIGINT/SIGTERM handlers. */
export interface TestIo extends CliIo {
  out(): string;
  err(): string;
  signal(name?: string): void;
}

export function testIo(stdin = ""): TestIo {
  let out = "";
  let err = "";
  const handlers = new Set<(signal: string) => void>();
  const sink = (append: (s: string) => void): Writable =>
    new Writable({
      write(chunk: Buffer | string, _enc, cb) {
        append(typeof chunk === "string" ? chunk : chunk.toString("utf8"));
        cb();
      },
    });
  return {
    stdout: sink((s) => (out += s)),
    stderr: sink((s) => (err += s)),
    stdin: () => {
      const input = new PassThrough();
      input.end(stdin);
      return input;
    },
    onShutdownSignal(handler) {
      handlers.add(handler);
      return () => handlers.delete(handler);
    },
    out: () => out,
    err: () => err,
    signal(name = "SIGINT") {
      for (const h of [...handlers]) h(name);
    },
  };
}

/** Runs one command line in-process. */
export async function runCommand(argv: readonly string[], stdin = ""): Promise<CliResult> {
  const io = testIo(stdin);
  const code = await main(argv, io);
  return { code, stdout: io.out(), stderr: io.err() };
}

/** Starts a command without waiting for it (for `listen`). */
export function startCommand(argv: readonly string[]): { io: TestIo; done: Promise<number> } {
  const io = testIo();
  return { io, done: main(argv, io) };
}

/** The process environment without any DTLSPUSH_* variable of the machine running the tests. */
export function clearDtlspushEnv(): void {
  for (const key of Object.keys(process.env)) if (key.startsWith("DTLSPUSH_")) vi.stubEnv(key, undefined);
}

export function tempDir(prefix = "dtlspush-cli-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface TestDaemon {
  readonly dataDir: string;
  readonly api: string;
  readonly dtls: string;
  readonly server: PushServer;
  readonly http: HttpApi;
  readonly data: DataDir;
  close(): Promise<void>;
}

/** The daemon's parts on loopback port 0, over a SQLite store in `dataDir` (a new temporary directory by default). */
export async function startDaemon(dataDir = join(tempDir(), "data"), dtls: Partial<PushServerOptions["dtls"]> = {}): Promise<TestDaemon> {
  const config = await loadConfig({ env: {}, flags: { dataDir }, cwd: dataDir });
  const data = await openDataDir(config);
  const server = await startPushServer({ store: data.store, dtls: { ...dtls, host: "127.0.0.1", port: 0 } });
  const http = await startHttpApi({ server, store: data.store }, { host: "127.0.0.1", port: 0 });
  const a = http.address();
  let closed = false;
  return {
    dataDir,
    api: `http://127.0.0.1:${a.port}`,
    dtls: `127.0.0.1:${server.address().port}`,
    server,
    http,
    data,
    async close() {
      if (closed) return;
      closed = true;
      await http.close();
      await server.close();
      await data.close();
    },
  };
}

/** A loopback URL where nothing listens (a port that was just free). */
export async function refusedApiUrl(): Promise<string> {
  const { createServer } = await import("node:net");
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const address = srv.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export async function waitUntil(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}
