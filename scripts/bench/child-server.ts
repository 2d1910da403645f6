/**
 * What the memory benches share: the server runs in a child process (with
 * --expose-gc) and reports samples over IPC; this side waits for its messages.
 */
import type { ChildProcess } from "node:child_process";

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
