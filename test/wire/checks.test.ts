/**
 * The protocol's field checks (src/wire/checks.ts) that the generated codec
 * leaves out, each attacked through the public codec: the ones
 * frame-codec.test.ts does not already cover, plus the field tables the checks
 * derive from the generator's file descriptor.
 */
import { readFileSync } from "node:fs";
import protobuf from "protobufjs";
import { describe, expect, it } from "vitest";
import { buildRules, MAX_GROUP_DEPTH, messageRule } from "../../src/wire/checks.ts";
import { protoMetadata } from "../../src/wire/generated/dtlspush/v1/frame.ts";
import { decodeFrame, encodeFrame, encodePushBody, pushOverhead } from "../../src/wire/index.ts";
import type { FrameInit } from "../../src/wire/index.ts";
import { rawFrame, wireErrorOf } from "./helpers.ts";

const PROTO = readFileSync(new URL("../../proto/dtlspush/v1/frame.proto", import.meta.url), "utf8");

const ACK = 4;
const WELCOME = 2;
const PUSH = 3;

describe("field tables from the generator's file descriptor", () => {
  it("hold every message and field of the schema, with its number, kind and repetition", () => {
    const root = protobuf.parse(PROTO, { keepCase: true }).root;
    root.resolveAll();
    const pkg = root.lookup("dtlspush.v1") as protobuf.Namespace;
    const types = pkg.nestedArray.filter((t): t is protobuf.Type => t instanceof protobuf.Type);
    expect(types.length).toBeGreaterThan(10);
    for (const t of types) {
      const rule = messageRule(t.name);
      expect(rule.list.map((f) => f.label)).toEqual(t.fieldsArray.map((f) => `${t.name}.${f.name}`));
      for (const f of t.fieldsArray) {
        const r = rule.fields.get(f.id);
        const kind = f.resolvedType instanceof protobuf.Type ? "message" : f.resolvedType instanceof protobuf.Enum ? "enum" : f.type;
        expect({ kind: r?.kind, repeated: r?.repeated, message: r?.message?.name }).toEqual({
          kind,
          repeated: f.repeated,
          message: f.resolvedType instanceof protobuf.Type ? f.resolvedType.name : undefined,
        });
      }
    }
  });

  interface EditableMessage {
    name: string;
    field: Record<string, unknown>[];
    nestedType: unknown[];
    oneofDecl: unknown[];
  }
  /** The generated file descriptor, copied and changed by `edit`. */
  const fileWith = (edit: (messages: Map<string, EditableMessage>) => void): Parameters<typeof buildRules>[0] => {
    const file = structuredClone(protoMetadata.fileDescriptor) as unknown as { messageType: EditableMessage[] };
    edit(new Map(file.messageType.map((m) => [m.name, m])));
    return file as unknown as Parameters<typeof buildRules>[0];
  };
  type Edit = (messages: Map<string, EditableMessage>) => unknown;
  const msg = (messages: Map<string, EditableMessage>, name: string): EditableMessage => messages.get(name) as EditableMessage;

  it("build the tables of the real schema", () => {
    expect(buildRules(protoMetadata.fileDescriptor).size).toBe(protoMetadata.fileDescriptor.messageType.length);
  });

  it.each([
    ["a map (a nested type)", ((m) => msg(m, "Push").nestedType.push({ name: "MapEntry" })) as Edit, /nested types/],
    ["an optional field", ((m) => ((msg(m, "Push").field[0] as { proto3Optional: boolean }).proto3Optional = true)) as Edit, /optional fields/],
    ["a oneof next to plain fields", ((m) => msg(m, "Push").oneofDecl.push({ name: "o" })) as Edit, /oneof only as the whole content/],
    ["a second oneof in Frame", ((m) => msg(m, "Frame").oneofDecl.push({ name: "o" })) as Edit, /oneof only as the whole content/],
    [
      "the envelope held by another message",
      ((m) => ((msg(m, "PublishAck").field[2] as { typeName: string }).typeName = ".dtlspush.v1.Frame")) as Edit,
      /oneof only in a message no other holds/,
    ],
  ])("refuse a schema with %s, which the checks would let through unchecked", (_what, edit, message) => {
    expect(() => buildRules(fileWith(edit))).toThrow(message);
  });

  it("refuse a proto2 schema", () => {
    const proto2 = { ...protoMetadata.fileDescriptor, syntax: "" } as unknown as Parameters<typeof buildRules>[0];
    expect(() => buildRules(proto2)).toThrow(/proto3 only/);
  });

  it.each([
    ["double", 1],
    ["sint64", 18],
    ["fixed32", 7],
  ])("refuse to load a schema with a %s field, which the checks do not know", (_name, type) => {
    expect(() => buildRules(fileWith((m) => ((msg(m, "Hello").field[0] as { type: number }).type = type)))).toThrow(/does not know the type/);
  });
});

describe("decoding checks the generated decoder does not make", () => {
  it("refuses a uint64 above 2^53-1 in a packed repeated field and in a nested message", () => {
    const packed = rawFrame(ACK, (w) =>
      w
        .uint32((3 << 3) | 2)
        .fork()
        .uint32(1)
        .uint64(2 ** 53)
        .ldelim(),
    );
    expect(wireErrorOf(() => decodeFrame(packed)).message).toMatch(/Ack\.rejected is above 2\^53-1/);
    const nested = rawFrame(ACK, (w) =>
      w
        .uint32((2 << 3) | 2)
        .fork()
        .uint32(8)
        .uint64(2 ** 60)
        .ldelim(),
    );
    expect(wireErrorOf(() => decodeFrame(nested)).message).toMatch(/SeqRange\.first is above 2\^53-1/);
    // 2^53-1 itself is exact and accepted, packed too
    const max = rawFrame(ACK, (w) =>
      w
        .uint32((3 << 3) | 2)
        .fork()
        .uint64(Number.MAX_SAFE_INTEGER)
        .ldelim(),
    );
    expect(decodeFrame(max)).toMatchObject({ kind: "ack", ack: { rejected: [Number.MAX_SAFE_INTEGER] } });
  });

  it("refuses a packed run whose last varint runs past the packed field", () => {
    // rejected: length 2, then 0x81 0x81 (a varint not ended inside the 2 bytes), then 0x01 outside
    const bytes = Uint8Array.of(0x22, 0x05, 0x1a, 0x02, 0x81, 0x81, 0x01);
    expect(wireErrorOf(() => decodeFrame(bytes)).message).toMatch(/truncated: Ack\.rejected/);
  });

  it("refuses a message, a repeated string and a bool field with the wrong wire type", () => {
    expect(wireErrorOf(() => decodeFrame(rawFrame(WELCOME, (w) => w.uint32(8 << 3).uint32(1)))).message).toMatch(
      /Welcome\.limits arrived with wire type 0, expected 2/,
    );
    expect(wireErrorOf(() => decodeFrame(rawFrame(WELCOME, (w) => w.uint32((11 << 3) | 5).fixed32(1)))).message).toMatch(
      /Welcome\.topics arrived with wire type 5, expected 2/,
    );
    expect(wireErrorOf(() => decodeFrame(rawFrame(PUSH, (w) => w.uint32((13 << 3) | 2).bytes(Uint8Array.of(1))))).message).toMatch(
      /Push\.expired arrived with wire type 2, expected 0/,
    );
  });

  it("refuses invalid UTF-8 in a repeated string and in a nested message's string", () => {
    const bad = Uint8Array.of(0xc3, 0x28);
    expect(wireErrorOf(() => decodeFrame(rawFrame(WELCOME, (w) => w.uint32((11 << 3) | 2).bytes(bad)))).message).toMatch(
      /Welcome\.topics is not valid UTF-8/,
    );
    const inPublishAck = rawFrame(6, (w) =>
      w
        .uint32((3 << 3) | 2)
        .fork()
        .uint32((2 << 3) | 2)
        .bytes(bad)
        .ldelim(),
    );
    expect(wireErrorOf(() => decodeFrame(inPublishAck)).message).toMatch(/Error\.message is not valid UTF-8/);
    // valid multi-byte UTF-8 passes
    expect(decodeFrame(rawFrame(PUSH, (w) => w.uint32((3 << 3) | 2).string("größe/✓")))).toMatchObject({ push: { topic: "größe/✓" } });
  });

  it("refuses a tag above 2^32-1 and a varint longer than 10 bytes in an unknown field", () => {
    const tag = Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00); // 2^35: field 2^32, which uint32 arithmetic would read as 0
    expect(wireErrorOf(() => decodeFrame(tag)).message).toMatch(/field tag above 2\^32-1/);
    const body = [0x98, 0x06, ...Array<number>(10).fill(0x80), 0x01]; // field 99 varint, 11 bytes long
    const bytes = Uint8Array.from([0x1a, body.length, ...body]);
    expect(wireErrorOf(() => decodeFrame(bytes)).message).toMatch(/longer than 10 bytes/);
  });

  it("refuses unknown fixed-size fields cut short", () => {
    wireErrorOf(() => decodeFrame(Uint8Array.of(0x1a, 0x04, (99 << 3) | 1, 1, 2, 3)));
    wireErrorOf(() => decodeFrame(Uint8Array.of(0x1a, 0x03, (99 << 3) | 5, 1, 2)));
  });

  it("refuses wire types 6 and 7 and an end-group outside a group, naming them", () => {
    expect(wireErrorOf(() => decodeFrame(Uint8Array.of(0x1a, 0x02, 0x7e, 0x00))).message).toMatch(/field 15 with invalid wire type 6/);
    expect(wireErrorOf(() => decodeFrame(Uint8Array.of(0x1a, 0x02, 0x7f, 0x00))).message).toMatch(/field 15 with invalid wire type 7/);
    expect(wireErrorOf(() => decodeFrame(Uint8Array.of(0x1a, 0x01, 0x0c))).message).toMatch(/field 1 with invalid wire type 4/);
  });

  it("refuses an end-group of another field than the open group", () => {
    const bytes = rawFrame(PUSH, (w) => w.uint32((100 << 3) | 3).uint32((101 << 3) | 4));
    expect(wireErrorOf(() => decodeFrame(bytes)).message).toMatch(/end-group of field 101 without its start/);
  });

  it(`skips unknown groups nested ${MAX_GROUP_DEPTH} deep and refuses one more`, () => {
    const nested = (depth: number): Uint8Array =>
      rawFrame(PUSH, (w) => {
        for (let i = 0; i < depth; i++) w.uint32((100 << 3) | 3);
        for (let i = 0; i < depth; i++) w.uint32((100 << 3) | 4);
        w.uint32(8).uint32(7); // seq = 7, after the groups
      });
    expect(decodeFrame(nested(MAX_GROUP_DEPTH))).toMatchObject({ kind: "push", push: { seq: 7 } });
    expect(wireErrorOf(() => decodeFrame(nested(MAX_GROUP_DEPTH + 1))).message).toMatch(/depth/);
  });
});

describe("encoding checks the generated encoder does not make", () => {
  it.each([
    ["a uint64 in a repeated field", { kind: "ack", ack: { rejected: [1, 2 ** 53] } }, /Ack\.rejected must be an integer from 0 to 2\^53-1/],
    ["a uint64 in a nested message", { kind: "ack", ack: { ranges: [{ first: 1.5, last: 2 }] } }, /SeqRange\.first must be an integer/],
    ["a fractional uint32", { kind: "push", push: { priority: 0.5 } }, /Push\.priority must be an integer from 0 to 2\^32-1/],
    ["a uint32 above 2^32-1", { kind: "push", push: { priority: 2 ** 32 } }, /Push\.priority must be an integer from 0 to 2\^32-1/],
    ["bytes that are not bytes", { kind: "push", push: { payload: "AAEC" } }, /Push\.payload must be a Uint8Array/],
    ["a fractional enum", { kind: "error", error: { code: 1.5 } }, /Error\.code must be a 32-bit integer/],
    ["an enum below -2^31", { kind: "error", error: { code: -(2 ** 31) - 1 } }, /Error\.code must be a 32-bit integer/],
    ["a lone surrogate in a repeated string", { kind: "subscribe", subscribe: { topics: ["ok", "\uDC00"] } }, /Subscribe\.topics is not well-formed/],
    ["a lone surrogate in a nested message", { kind: "bye", bye: { reason: { message: "x\uD800" } } }, /Error\.message is not well-formed/],
    ["a string that is not a string", { kind: "push", push: { topic: 5 } }, /Push\.topic must be a string/],
    ["a bool that is not a boolean", { kind: "push", push: { expired: 1 } }, /Push\.expired must be a boolean/],
    ["a repeated field that is not an array", { kind: "welcome", welcome: { topics: "a" } }, /Welcome\.topics must be an array/],
    ["a message field that is not an object", { kind: "welcome", welcome: { limits: 3 } }, /Welcome\.limits must be a message object/],
    ["a Frame without its body", { kind: "hello" }, /Frame\.hello must be a message object/],
  ])("refuses %s", (_what, frame, message) => {
    const e = wireErrorOf(() => encodeFrame(frame as unknown as FrameInit));
    expect(e.code).toBe("bad_frame");
    expect(e.message).toMatch(message);
  });

  it("makes the same checks for encodePushBody and pushOverhead", () => {
    expect(wireErrorOf(() => encodePushBody({ topic: "\uD800" })).message).toMatch(/Push\.topic is not well-formed/);
    expect(wireErrorOf(() => pushOverhead({ createdAt: 2 ** 53 })).message).toMatch(/Push\.created_at must be an integer/);
  });

  it("accepts the extremes of every range", () => {
    const frames: FrameInit[] = [
      { kind: "push", push: { seq: Number.MAX_SAFE_INTEGER, priority: 2 ** 32 - 1, payload: Buffer.from([1, 2]) } },
      { kind: "error", error: { code: -(2 ** 31) } },
      { kind: "error", error: { code: 2 ** 31 - 1 } },
    ];
    for (const f of frames) expect(() => decodeFrame(encodeFrame(f))).not.toThrow();
  });
});
