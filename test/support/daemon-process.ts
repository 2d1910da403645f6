/**
 * `bin/dtlspush.js` as real processes for end-to-end tests (it runs dist/:
 * `npm run build` first), with what one test creates around them (temporary
 * directories, redis-servers, SDK clients) ended by `cleanup` (afterEach):
 * children are SIGKILLed, servers stopped, directories removed.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DtlspushClient } from "../../src/client/index.ts";
import { BIN, waitFor } from "../cli/cli-process.ts";
import { RedisServer, type RedisServerOptions } from "./redis-server.ts";

/** How long a command may run, or a daemon take to print its banner. */
export const PROCESS_BOUND_MS = 20_000;

export interface Proc {
  readonly child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  readonly exit: Promise<{ code: number | null; ms: number }>;
  /** the process itself ended (`exit` waits for its output to end too: children that inherited its pipes, e.g. workers, gone as well) */
  readonly exited: Promise<unknown>;
}

export interface Served extends Proc {
  readonly dtlsPort: number;
  /** http://127.0.0.1:port */
  readonly api: string;
}

export class ProcessScope {
  private readonly dirs: string[] = [];
  private readonly redises: RedisServer[] = [];
  private readonly children = new Set<ChildProcessWithoutNullStreams>();
  private readonly clients: DtlspushClient[] = [];

  /** A temporary directory, removed by cleanup. */
  tmp(): string {
    const d = mkdtempSync(join(tmpdir(), "dtlspush-e2e-"));
    this.dirs.push(d);
    return d;
  }

  /** A redis-server of this test (test/support/redis-server.ts). */
  async redis(options: RedisServerOptions = {}): Promise<RedisServer> {
    const r = await RedisServer.start(options);
    this.redises.push(r);
    return r;
  }

  /** Closes `client` at cleanup. */
  client(client: DtlspushClient): DtlspushClient {
    this.clients.push(client);
    return client;
  }

  /** bin/dtlspush.js with `args`, in `cwd`, with `env` added to this process's environment. */
  dtlspush(args: readonly string[], cwd: string, env: Record<string, string>): Proc {
    const t0 = performance.now();
    // one daemon process unless a test asks for workers (cluster.workers defaults to the cores with Redis)
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd,
      env: { ...process.env, DTLSPUSH_DEBUG: "", DTLSPUSH_CLUSTER_WORKERS: "1", ...env },
    });
    this.children.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    const exit = new Promise<{ code: number | null; ms: number }>((resolve) =>
      child.on("close", (code) => {
        this.children.delete(child);
        resolve({ code, ms: performance.now() - t0 });
      }),
    );
    const exited = new Promise((resolve) => child.on("exit", resolve));
    return { child, stdout: () => stdout, stderr: () => stderr, exit, exited };
  }

  /** A finished command: its code and output (rejects after PROCESS_BOUND_MS). */
  async command(
    args: readonly string[],
    cwd: string,
    env: Record<string, string>,
  ): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
    const p = this.dtlspush(args, cwd, env);
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<never>(
      (_, reject) => (timer = setTimeout(() => reject(new Error(`${args.join(" ")} did not exit in time\n${p.stderr()}`)), PROCESS_BOUND_MS)),
    );
    try {
      const { code, ms } = await Promise.race([p.exit, bound]);
      return { code, stdout: p.stdout(), stderr: p.stderr(), ms };
    } finally {
      clearTimeout(timer);
    }
  }

  /** `dtlspush serve` on free ports, data in `dir`/data; resolves once it prints its banner. */
  async serve(dir: string, env: Record<string, string>): Promise<Served> {
    const p = this.dtlspush(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", join(dir, "data")], dir, env);
    const m = await waitFor(p.stderr, p.child, /DTLS \(UDP\)\s+127\.0\.0\.1:(\d+)[\s\S]*HTTP API\s+(http:\/\/127\.0\.0\.1:\d+)/, PROCESS_BOUND_MS);
    return { ...p, dtlsPort: Number(m[1]), api: m[2] as string };
  }

  async cleanup(): Promise<void> {
    for (const c of this.clients.splice(0)) await c.close();
    for (const c of this.children) c.kill("SIGKILL");
    this.children.clear();
    for (const r of this.redises.splice(0)) await r.stop();
    for (const d of this.dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}

/** Waits (bounded, polling every 20 ms) until `cond` holds, which may be asynchronous; throws naming `what` after `ms`. */
export async function waitUntil(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
