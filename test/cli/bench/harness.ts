/**
 * For the `dtlspush bench` end-to-end tests: a daemon started here
 * (startDaemon, memory store, ports 0, temporary directory with its
 * development certificates in `certs/`), the bench run through the CLI's
 * dispatcher with captured streams, and its JSON report.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { issuePublisherToken } from "../../../src/auth/publisher-tokens.ts";
import { benchCommand } from "../../../src/cli/bench.ts";
import type { BenchReport } from "../../../src/cli/bench/report.ts";
import { main } from "../../../src/cli/main.ts";
import { loadConfig } from "../../../src/daemon/config/index.ts";
import { startDaemon, type Daemon } from "../../../src/daemon/daemon.ts";
import { createLogger } from "../../../src/daemon/logger.ts";
import { testIo, type TestIo } from "../daemon-harness.ts";

export { testIo, type TestIo };

export interface BenchTestDaemon {
  readonly daemon: Daemon;
  readonly dir: string;
  /** the daemon's dtls.certs_dir: ca.pem, ca.key, server-*.pem */
  readonly certsDir: string;
  /** --api, --token (admin) and --server for the bench */
  readonly args: string[];
}

export interface StartOptions {
  readonly rateLimitPerMinute?: number;
  /** a configuration file (written by the test) the daemon reads, paths in it absolute */
  readonly file?: string;
  /** a directory for the daemon (default: a new temporary one) */
  readonly dir?: string;
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "dtlspush-bench-test-"));
}

export async function startBenchDaemon(o: StartOptions = {}): Promise<BenchTestDaemon> {
  const dir = o.dir ?? tempDir();
  const config = await loadConfig({
    ...(o.file !== undefined ? { file: o.file } : {}),
    env: { DTLSPUSH_STORE_KIND: "memory", DTLSPUSH_HTTP_RATE_LIMIT_PER_MINUTE: String(o.rateLimitPerMinute ?? 0) },
    flags: { dataDir: join(dir, "data"), listen: "127.0.0.1:0", http: "127.0.0.1:0", logLevel: "silent" },
    cwd: dir,
  });
  const daemon = await startDaemon(config, { logger: createLogger({ level: "silent" }) });
  const { token } = await issuePublisherToken(daemon.push.publisherKeys, {
    subject: "bench-test",
    scopes: ["admin"],
    now: Date.now(),
    ttlSeconds: 600,
  });
  const args = ["--api", `http://127.0.0.1:${daemon.http.address().port}`, "--token", token, "--server", `127.0.0.1:${daemon.push.address().port}`];
  return { daemon, dir, certsDir: config.dtls.certsDir, args };
}

export async function stopBenchDaemon(d: BenchTestDaemon): Promise<void> {
  await d.daemon.stop();
  rmSync(d.dir, { recursive: true, force: true });
}

/** The CLI's dispatcher with only the bench command: errors are reported as `dtlspush` reports them. */
export function runBench(argv: string[], io: TestIo): Promise<number> {
  return main(["bench", ...argv], io, { root: { kind: "group", name: "dtlspush", summary: "", children: [benchCommand] } });
}

/** Runs a bench that must succeed (`--json` in argv) and parses its report. */
export async function bench(argv: string[]): Promise<{ code: number; report: BenchReport; io: TestIo }> {
  const io = testIo();
  const code = await runBench(argv, io);
  if (code !== 0) throw new Error(`bench exited ${code}: ${io.err()}`);
  return { code, report: JSON.parse(io.out()) as BenchReport, io };
}

/** The bench-<i> devices registered in the daemon. */
export function benchDevices(d: BenchTestDaemon): string[] {
  return d.daemon.push.registry
    .list()
    .map((x) => x.id)
    .filter((id) => id.startsWith("bench-"));
}
