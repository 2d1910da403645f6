/**
 * A full garbage collection from inside a test (vitest starts workers
 * without --expose-gc): V8's flag is set at run time and `gc` is read from a
 * fresh context. WeakRefs are cleared only after the current job, so it
 * yields to the event loop between collections.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

export async function collectGarbage(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
}
