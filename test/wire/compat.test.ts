/**
 * Cross-checks against protobufjs reflection: our codec and the library agree
 * on the real schema in both directions, and our decoder reads what a newer
 * schema (an extra Push field, an extra Frame body) writes.
 */
import { readFileSync } from "node:fs";
import protobuf from "protobufjs";
import { describe, expect, it } from "vitest";
import { decodeFrame, encodeFrame, ErrorCode } from "../../src/wire/index.ts";
import type { FrameBody } from "../../src/wire/index.ts";
import { bodyOf, FULL, fullOf, hex } from "./samples.ts";

const PROTO = readFileSync(new URL("../../proto/dtlspush/v1/frame.proto", import.meta.url), "utf8");

function frameType(source: string): protobuf.Type {
  // Default (camelCase) field names: the same property names as our TypeScript types.
  return protobuf.parse(source).root.lookupType("dtlspush.v1.Frame");
}

const Frame = frameType(PROTO);

/** A newer schema: Push gains fields 14-16, Frame gains a body at field 20. */
function newerSchema(): string {
  let s = PROTO.replace(
    /(  bool expired = 13;[^\n]*\n(?:\s*\/\/[^\n]*\n)*)/,
    "$1  string region = 14;\n  repeated uint64 hops = 15;\n  Limits extra = 16;\n",
  );
  s = s.replace("    Bye bye = 13;", "    Bye bye = 13;\n    Future future = 20;");
  s += "\nmessage Future {\n  string note = 1;\n  uint64 at = 2;\n}\n";
  if (!s.includes("region = 14") || !s.includes("Future future = 20")) throw new Error("schema edit did not apply");
  return s;
}

/** Our decoded frame in protobufjs's object form (oneof name + body). */
function reflected(bytes: Uint8Array, type: protobuf.Type = Frame): Record<string, unknown> {
  return type.toObject(type.decode(bytes), { longs: Number, enums: Number, bytes: Array, defaults: true, arrays: true, oneofs: true });
}

/** What reflected() gives for a FrameBody of ours. */
function expectedReflection(frame: FrameBody): Record<string, unknown> {
  const toPlain = (v: unknown): unknown => {
    if (v instanceof Uint8Array) return Array.from(v);
    if (Array.isArray(v)) return v.map(toPlain);
    if (v !== null && typeof v === "object") {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = toPlain(x);
      return out;
    }
    return v;
  };
  return { body: frame.kind, [frame.kind]: toPlain(bodyOf(frame)) };
}

describe("against protobufjs reflection of the real schema", () => {
  it.each(FULL.map((f) => [f.kind, f] as const))("%s: our bytes decode with reflection to the same values", (_kind, frame) => {
    expect(reflected(encodeFrame(frame))).toEqual(expectedReflection(frame));
  });

  it.each(FULL.map((f) => [f.kind, f] as const))("%s: reflection's bytes are ours, byte for byte, and decode with ours", (_kind, frame) => {
    const theirs = Frame.encode(Frame.fromObject({ [frame.kind]: bodyOf(frame) })).finish();
    expect(hex(theirs)).toBe(hex(encodeFrame(frame)));
    expect(decodeFrame(theirs)).toEqual(frame);
  });

  it("has the schema's ErrorCode values", () => {
    const e = protobuf.parse(PROTO).root.lookupEnum("dtlspush.v1.ErrorCode");
    expect({ ...ErrorCode }).toEqual({ ...e.values });
  });

  it("has the schema's Frame bodies and field numbers", () => {
    const kinds = FULL.map((f) => f.kind);
    const oneof = Frame.oneofs["body"] as protobuf.OneOf;
    expect(oneof.oneof).toEqual(kinds);
  });
});

describe("against a newer schema", () => {
  const Newer = frameType(newerSchema());

  it("ignores fields added to Push", () => {
    const push = { ...fullOf("push").push, region: "eu-west", hops: [1, 2 ** 40], extra: { window: 3 } };
    const bytes = Newer.encode(Newer.fromObject({ push })).finish();
    expect(bytes.length).toBeGreaterThan(encodeFrame(fullOf("push")).length);
    expect(decodeFrame(bytes)).toEqual(fullOf("push"));
  });

  it("decodes a new Frame body as kind unknown with its field number", () => {
    const bytes = Newer.encode(Newer.fromObject({ future: { note: "from v2", at: 5 } })).finish();
    expect(decodeFrame(bytes)).toEqual({ kind: "unknown", field: 20 });
  });

  it("writes frames the newer schema reads", () => {
    const obj = reflected(encodeFrame(fullOf("push")), Newer);
    expect(obj["body"]).toBe("push");
    expect(obj["push"]).toMatchObject({ seq: fullOf("push").push.seq, region: "", hops: [] });
  });
});
