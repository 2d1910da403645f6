/**
 * What the memory benches share: the server runs in a child process (with
 * --expose-gc) and reports samples over IPC; this side waits for its messages.
 */
import type { ChildProcess } from "node:child_process";

/** The parts of process.memoryUsage() the memory benches report. */
export interface MemorySample {
  readonly heapUsed: number;
  /** V8 heap reserved, used or not */
  readonly heapTotal: number;
  /** ArrayBuffer backing stores (Buffers) outside the V8 heap */
  readonly arrayBuffers: number;
  readonly external: number;
  readonly rss: number;
}

/** What the bench asks of its server process. */
export type ToServer = { readonly kind: "measure"; readonly label: string } | { readonly kind: "stop" };

/** Collects garbage a few times (yielding in between) and reads process.memoryUsage(). */
export async function settledMemory(): Promise<NodeJS.MemoryUsage> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("the server process needs --expose-gc");
  for (let i = 0; i < 4; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  return process.memoryUsage();
}

/** The child's next IPC message of `kind` (rejects when it exits first). */
export function nextMessage<M extends { readonly kind: string }>(child: ChildProcess, kind: M["kind"]): Promise<M> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: M): void => {
      if (m.kind !== kind) return;
      child.off("message", onMessage);
      child.off("exit", onExit);
      resolve(m);
    };
    const onExit = (code: number | null): void => reject(new Error(`the server process exited (${code}) before sending "${kind}"`));
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}
