import { describe, expect, it } from "vitest";
import { decodeFrame, encodeFrame, encodePushBody, pushFrame, pushFrameSize, WireError, type PushInit } from "../../src/wire/index.ts";

const full: Omit<PushInit, "seq"> = {
  messageId: "0192f0c4-6a1b-7c3d-8e4f-5a6b7c8d9e0f",
  topic: "",
  device: "dev-1",
  payload: new Uint8Array(100).fill(7),
  contentType: "application/json",
  createdAt: 1_765_000_000_000,
  expiresAt: 1_765_000_360_000,
  priority: 5,
  collapseKey: "k",
  publisher: "pub",
  signature: "eyJhbGciOiJFZERTQSJ9..sig",
};

describe("pushFrame", () => {
  // seqs at every varint length boundary, and payloads that move the Frame's length prefix across 1/2/3 bytes
  const seqs = [1, 127, 128, 16_383, 16_384, 2 ** 21, 2 ** 28, 2 ** 35, Number.MAX_SAFE_INTEGER];
  const payloads = [0, 1, 20, 100, 200, 16_000, 20_000];

  it("gives the bytes encodeFrame gives for the whole Push", () => {
    for (const n of payloads) {
      const fields: Omit<PushInit, "seq"> = { ...full, payload: new Uint8Array(n).fill(n % 251) };
      const body = encodePushBody(fields);
      for (const seq of seqs) {
        const expected = encodeFrame({ kind: "push", push: { ...fields, seq } });
        const got = pushFrame(body, seq);
        expect(got).toEqual(expected);
        expect(pushFrameSize(body.length, seq)).toBe(expected.length);
      }
    }
  });

  it("decodes to the Push with its seq", () => {
    const f = decodeFrame(pushFrame(encodePushBody(full), 42));
    expect(f.kind).toBe("push");
    if (f.kind !== "push") return;
    expect(f.push.seq).toBe(42);
    expect(f.push.messageId).toBe(full.messageId);
    expect(f.push.payload).toEqual(full.payload);
    expect(f.push.signature).toBe(full.signature);
  });

  it("refuses a seq that is not a positive safe integer", () => {
    const body = encodePushBody(full);
    for (const seq of [0, -1, 1.5, Number.MAX_SAFE_INTEGER + 1, Number.NaN]) expect(() => pushFrame(body, seq)).toThrow(WireError);
  });

  it("refuses fields encodeFrame refuses", () => {
    expect(() => encodePushBody({ ...full, topic: "\uD800" })).toThrow(WireError);
    expect(() => encodePushBody({ ...full, createdAt: -1 })).toThrow(WireError);
  });
});
