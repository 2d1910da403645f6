/**
 * A real `redis-server` for one test: a free 127.0.0.1 port, a temporary
 * directory (append-only file there, no RDB snapshot written anywhere), bound
 * to 127.0.0.1 only. `start` waits until it answers PING; `stop` sends SIGTERM
 * and SIGKILL after a bound; `kill9` and `restart` (same port, same directory)
 * are for durability tests. `describeRedis` skips the suite, saying why, when
 * redis-server is not on PATH.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "redis";
import { describe } from "vitest";

const found = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
/** Why the Redis tests cannot run here, or undefined when redis-server is available. */
export const redisMissing: string | undefined =
  found.error !== undefined || found.status !== 0 ? "redis-server is not on PATH (npm test installs it with scripts/ensure-peers.mjs)" : undefined;

/** `describe`, skipped with the reason in its name when there is no redis-server. */
export function describeRedis(name: string, body: () => void): void {
  if (redisMissing === undefined) describe(name, body);
  else describe.skip(`${name} (skipped: ${redisMissing})`, body);
}

export interface RedisServerOptions {
  /** default "always" */
  readonly appendfsync?: "always" | "everysec" | "no";
  /** default true */
  readonly appendonly?: boolean;
  /** requirepass */
  readonly password?: string;
}

const STOP_BOUND_MS = 5_000;
const START_BOUND_MS = 10_000;

/** A 127.0.0.1 TCP port free a moment ago (nothing listens on it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** True when a PING on a fresh connection gets +PONG (or an auth error: it is up). */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    let buf = "";
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once("error", () => done(false));
    s.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      if (buf.includes("\r\n")) done(buf.startsWith("+PONG") || buf.startsWith("-NOAUTH"));
    });
    s.connect(port, "127.0.0.1", () => s.write("PING\r\n"));
  });
}

export class RedisServer {
  readonly dir: string;
  readonly port: number;
  private readonly options: RedisServerOptions;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private stderr = "";

  private constructor(dir: string, port: number, options: RedisServerOptions) {
    this.dir = dir;
    this.port = port;
    this.options = options;
  }

  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const server = new RedisServer(mkdtempSync(join(tmpdir(), "dtlspush-redis-")), await freePort(), options);
    await server.launch();
    return server;
  }

  /** redis://127.0.0.1:port (with the password when one is set) */
  get url(): string {
    const auth = this.options.password === undefined ? "" : `:${encodeURIComponent(this.options.password)}@`;
    return `redis://${auth}127.0.0.1:${this.port}`;
  }

  private async launch(): Promise<void> {
    const args = [
      "--port",
      String(this.port),
      "--bind",
      "127.0.0.1",
      "--dir",
      this.dir,
      "--save",
      "",
      "--appendonly",
      this.options.appendonly === false ? "no" : "yes",
      "--appendfsync",
      this.options.appendfsync ?? "always",
      "--daemonize",
      "no",
      "--logfile",
      "",
      "--loglevel",
      "warning",
      ...(this.options.password === undefined ? [] : ["--requirepass", this.options.password]),
    ];
    const child = spawn("redis-server", args, { cwd: this.dir, stdio: ["ignore", "ignore", "pipe"] });
    this.child = child;
    child.stderr?.setEncoding("utf8").on("data", (s: string) => (this.stderr += s));
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    const deadline = Date.now() + START_BOUND_MS;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) break;
      if (await ping(this.port)) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    child.kill("SIGKILL");
    throw new Error(`redis-server on port ${this.port} did not answer PING within ${START_BOUND_MS} ms\n${this.stderr}`);
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(sig);
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), STOP_BOUND_MS)));
    const how = await Promise.race([this.exited.then(() => "exited" as const), bound]);
    clearTimeout(timer);
    if (how === "late") {
      child.kill("SIGKILL");
      await this.exited;
    }
  }

  /** SIGKILL: no final fsync, no clean shutdown. */
  kill9(): Promise<void> {
    return this.signal("SIGKILL");
  }

  /** SIGTERM (a clean shutdown), SIGKILL after a bound. */
  async shutdown(): Promise<void> {
    await this.signal("SIGTERM");
  }

  /** Starts it again on the same port and directory (the append-only file is loaded). */
  async restart(): Promise<void> {
    await this.shutdown();
    await this.launch();
  }

  /** A connected client of its own (to look at keys, INFO, CONFIG); close it after use. */
  async client() {
    const c = createClient({ url: this.url });
    c.on("error", () => undefined); // a test that stops the server sees it in its own assertions
    await c.connect();
    return c;
  }

  /** Stops it and removes its directory. */
  async stop(): Promise<void> {
    await this.shutdown();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
