import { Writer } from "protobufjs/minimal.js";
import { expect } from "vitest";
import { WireError } from "../../src/wire/index.ts";

/** Runs f and returns the WireError it throws (fails the test otherwise). */
export function wireErrorOf(f: () => unknown): WireError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(WireError);
    return e as WireError;
  }
  throw new Error("expected a WireError, nothing was thrown");
}

/** A Frame whose body (Frame field `field`, e.g. 3 for push) is written raw by `fill`, for hand-made inputs. */
export function rawFrame(field: number, fill: (w: Writer) => void): Uint8Array {
  const w = Writer.create();
  w.uint32((field << 3) | 2).fork();
  fill(w);
  w.ldelim();
  return w.finish();
}
