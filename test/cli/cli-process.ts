/**
 * Child processes for the CLI end-to-end tests: run bin/dtlspush.js (needs
 * `npm run build`) or a peer, collect its output, wait for a line, and kill
 * whatever is left after each test.
 */
import { spawn, spawnSync } from "node:child_process";
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const BIN = join(ROOT, "bin", "dtlspush.js");
export const HAVE_ENGINE = existsSync(join(ROOT, "src", "dtls", "index.ts"));
export const HAVE_OPENSSL = spawnSync("openssl", ["version"], { encoding: "utf8" }).status === 0;
export const EXIT_TIMEOUT_MS = 15_000;

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcessWithoutNullStreams>();

export function start(command: string, args: readonly string[]): ChildProcessWithoutNullStreams {
  const child = spawn(command, [...args], { cwd: ROOT, env: { ...process.env, DTLSPUSH_DEBUG: "" } });
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

export interface Collected {
  stdout: () => string;
  stderr: () => string;
  done: Promise<Result>;
}

export function collect(child: ChildProcessWithoutNullStreams): Collected {
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const done = new Promise<Result>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`'${child.spawnargs.join(" ")}' did not exit within ${EXIT_TIMEOUT_MS} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, EXIT_TIMEOUT_MS);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  // A process we kill on purpose must not be reported as an unhandled rejection.
  done.catch(() => {});
  return { stdout: () => stdout, stderr: () => stderr, done };
}

export function run(args: readonly string[], input = ""): Promise<Result> {
  const child = start(process.execPath, [BIN, ...args]);
  const out = collect(child);
  child.stdin.end(input);
  return out.done;
}

/** Resolves when `pattern` matches the accumulated output; rejects if the process exits first. */
export function waitFor(get: () => string, child: ChildProcessWithoutNullStreams, pattern: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      const m = pattern.exec(get());
      if (m === null) return false;
      cleanup();
      resolve(m);
      return true;
    };
    const onExit = (): void => {
      if (check()) return;
      cleanup();
      reject(new Error(`process exited before ${pattern}; output so far:\n${get()}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out waiting for ${pattern}; output so far:\n${get()}`));
    }, timeoutMs);
    const onData = (): void => void check();
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout.off("data", onData);
      child.stderr.off("data", onData);
      child.off("close", onExit);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("close", onExit);
    setImmediate(check);
  });
}

export interface Server {
  child: ChildProcessWithoutNullStreams;
  out: Collected;
  port: number;
}

/** Kills every child still running (call from afterEach). */
export function killChildren(): void {
  for (const child of children) child.kill("SIGKILL");
  children.clear();
}
