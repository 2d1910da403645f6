/**
 * `bin/dtlspush.js` as a child process for end-to-end tests (`npm run build`
 * first): its output collected, its exit awaited. The caller's set of live
 * children is kept up to date, for an afterEach that kills what is left.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { BIN } from "../cli/cli-process.ts";

export interface DtlspushProcess {
  readonly child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  /** its status once its output ended too (children that inherited its pipes, e.g. workers, gone as well) */
  readonly exit: Promise<{ code: number | null; ms: number }>;
  /** the process itself ended */
  readonly exited: Promise<unknown>;
}

/** bin/dtlspush.js with `args`, in `cwd`, with `env` added to this process's environment. */
export function spawnDtlspush(args: readonly string[], cwd: string, env: Record<string, string>, live: Set<ChildProcessWithoutNullStreams>): DtlspushProcess {
  const t0 = performance.now();
  const child = spawn(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, DTLSPUSH_DEBUG: "", ...env } });
  live.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const exit = new Promise<{ code: number | null; ms: number }>((resolve) =>
    child.on("close", (code) => {
      live.delete(child);
      resolve({ code, ms: performance.now() - t0 });
    }),
  );
  const exited = new Promise((resolve) => child.on("exit", resolve));
  return { child, stdout: () => stdout, stderr: () => stderr, exit, exited };
}
