import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeFrame, encodeFrame, pushOverhead, WireError } from "../../src/wire/index.ts";
import type { Ack, Push } from "../../src/wire/index.ts";
import { FULL } from "./samples.ts";

const FC = { seed: 42, numRuns: 300 } as const;

const u64 = fc.maxSafeNat();
const u32 = fc.nat({ max: 0xffff_ffff });
const text = fc.string({ unit: "binary", maxLength: 40 });

const pushArb: fc.Arbitrary<Push> = fc.record({
  seq: u64,
  messageId: text,
  topic: text,
  device: text,
  payload: fc.uint8Array({ maxLength: 600 }),
  contentType: text,
  createdAt: u64,
  expiresAt: u64,
  priority: u32,
  collapseKey: text,
  publisher: text,
  signature: fc.string({ unit: "binary-ascii", maxLength: 200 }),
  expired: fc.boolean(),
});

const ackArb: fc.Arbitrary<Ack> = fc.record({
  cumulative: u64,
  ranges: fc.array(fc.record({ first: u64, last: u64 }), { maxLength: 20 }),
  rejected: fc.array(u64, { maxLength: 20 }),
});

/** Decodes, and fails the property unless the outcome is a frame or a WireError. */
function decodeOrWireError(bytes: Uint8Array): void {
  try {
    decodeFrame(bytes);
  } catch (e) {
    if (!(e instanceof WireError)) throw e;
  }
}

describe("round trip properties", () => {
  it("any Push round-trips, and pushOverhead is exact for it", () => {
    fc.assert(
      fc.property(pushArb, (push) => {
        const bytes = encodeFrame({ kind: "push", push });
        expect(decodeFrame(bytes)).toEqual({ kind: "push", push });
        expect(pushOverhead(push)).toBe(bytes.length - push.payload.length);
      }),
      FC,
    );
  });

  it("any Ack round-trips", () => {
    fc.assert(
      fc.property(ackArb, (ack) => {
        expect(decodeFrame(encodeFrame({ kind: "ack", ack }))).toEqual({ kind: "ack", ack });
      }),
      FC,
    );
  });
});

describe("hostile input", () => {
  it("random bytes decode or throw WireError, nothing else", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => decodeOrWireError(bytes)),
      { ...FC, numRuns: 2000 },
    );
  });

  it("valid frames with bytes changed decode or throw WireError", () => {
    const frames = FULL.map((f) => encodeFrame(f));
    const arb = fc
      .record({
        which: fc.nat({ max: frames.length - 1 }),
        edits: fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 4 }),
      })
      .map(({ which, edits }) => {
        const bytes = new Uint8Array(frames[which] as Uint8Array);
        for (const [at, value] of edits) bytes[at % bytes.length] = value;
        return bytes;
      });
    fc.assert(
      fc.property(arb, (bytes) => decodeOrWireError(bytes)),
      { ...FC, numRuns: 2000 },
    );
  });
});
