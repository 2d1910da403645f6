import { Writer } from "protobufjs/minimal.js";
import { describe, expect, it } from "vitest";
import { DtlspushError } from "../../src/util/errors.ts";
import { decodeFrame, encodeFrame, ErrorCode, errorCodeName, pushOverhead, WireError } from "../../src/wire/index.ts";
import type { FrameBody, FrameInit, Push } from "../../src/wire/index.ts";
import { DEFAULTS, FULL, fullOf, hex, MAX_SAFE, unhex } from "./samples.ts";
import { rawFrame, wireErrorOf } from "./helpers.ts";

/** A Frame holding a Push whose body is written by `fill`. */
const rawPush = (fill: (w: Writer) => void): Uint8Array => rawFrame(3, fill);

describe("WireError", () => {
  it("is a DtlspushError with the stable code bad_frame", () => {
    const e = new WireError("x");
    expect(e).toBeInstanceOf(DtlspushError);
    expect(e.code).toBe("bad_frame");
    expect(e.name).toBe("WireError");
  });
});

describe("round trip", () => {
  it.each(FULL.map((f) => [f.kind, f] as const))("%s with every field set", (_kind, frame) => {
    const bytes = encodeFrame(frame);
    expect(decodeFrame(bytes)).toEqual(frame);
  });

  it.each(DEFAULTS.map((f) => [f.kind, f] as const))("%s with an empty body decodes to all defaults", (kind, expected) => {
    const bytes = encodeFrame({ kind, [kind]: {} } as FrameInit);
    expect(bytes.length).toBe(2); // tag + zero length: nothing else on the wire
    expect(decodeFrame(bytes)).toEqual(expected);
  });

  it("does not write fields set to their defaults", () => {
    for (const frame of DEFAULTS) {
      const bytes = encodeFrame(frame);
      // Welcome.limits is a message: present (even empty) means written, 2 more bytes.
      expect(hex(bytes), frame.kind).toBe(
        frame.kind === "welcome" ? "12024200" : hex(encodeFrame({ kind: frame.kind, [frame.kind]: {} } as FrameInit)),
      );
    }
  });

  it("encodes an empty Hello as two bytes", () => {
    expect(hex(encodeFrame({ kind: "hello", hello: {} }))).toBe("0a00");
  });

  it("writes the protobuf bytes a known-answer Push expects", () => {
    // Frame.push (3, LEN) { seq (1, varint) = 300, topic (3, LEN) = "t", expired (13, varint) = true }
    expect(hex(encodeFrame({ kind: "push", push: { seq: 300, topic: "t", expired: true } }))).toBe("1a0808ac021a01746801");
  });

  it("keeps uint64 values exact up to 2^53-1", () => {
    for (const seq of [1, 127, 128, 2 ** 32 - 1, 2 ** 32, 2 ** 35, 2 ** 49 + 1, MAX_SAFE]) {
      const f = decodeFrame(encodeFrame({ kind: "push", push: { seq } }));
      expect(f).toMatchObject({ kind: "push", push: { seq } });
    }
  });

  it("decodes a Push from a Buffer and from a view at an offset", () => {
    const bytes = encodeFrame(fullOf("push"));
    expect(decodeFrame(Buffer.from(bytes))).toEqual(fullOf("push"));
    const big = new Uint8Array(bytes.length + 10);
    big.set(bytes, 7);
    expect(decodeFrame(big.subarray(7, 7 + bytes.length))).toEqual(fullOf("push"));
  });

  it("returns payload bytes that do not alias the input", () => {
    const input = Buffer.from(encodeFrame(fullOf("push")));
    const f = decodeFrame(input);
    if (f.kind !== "push") throw new Error("not a push");
    expect(Object.getPrototypeOf(f.push.payload)).toBe(Uint8Array.prototype);
    expect(f.push.payload.buffer).not.toBe(input.buffer);
    input.fill(0);
    expect(f.push.payload).toEqual(fullOf("push").push.payload);
  });

  it("returns frames that own their memory and survive later encodes", () => {
    const frames: [Uint8Array, string][] = [];
    for (let i = 0; i < 100; i++) {
      const bytes = encodeFrame({ kind: "push", push: { seq: i + 1, payload: new Uint8Array(i * 37).fill(i) } });
      expect(bytes.byteOffset).toBe(0);
      expect(bytes.buffer.byteLength).toBe(bytes.length);
      frames.push([bytes, hex(bytes)]);
    }
    for (const [bytes, h] of frames) expect(hex(bytes)).toBe(h);
  });

  it("encodes a large frame, and small ones after it", () => {
    const payload = new Uint8Array(200_000).fill(0xab);
    const f = decodeFrame(encodeFrame({ kind: "publish", publish: { requestId: 1, payload } }));
    expect(f).toMatchObject({ kind: "publish", publish: { requestId: 1, payload } });
    expect(hex(encodeFrame({ kind: "ping", ping: { time: 5 } }))).toBe("52020805");
  });
});

describe("forward compatibility", () => {
  it("skips unknown fields of every wire type inside a known message", () => {
    const bytes = rawPush((w) => {
      w.uint32((1 << 3) | 0).uint32(5); // seq = 5
      w.uint32((99 << 3) | 0).uint64(2 ** 60); // unknown varint (larger than we could represent: still skipped)
      w.uint32((100 << 3) | 2).bytes(Uint8Array.of(1, 2, 3)); // unknown LEN
      w.uint32((101 << 3) | 5).fixed32(7); // unknown I32
      w.uint32((102 << 3) | 1).fixed64(8); // unknown I64
      w.uint32((103 << 3) | 3)
        .uint32((1 << 3) | 0)
        .uint32(1)
        .uint32((103 << 3) | 4); // unknown group
      w.uint32((3 << 3) | 2).string("after"); // topic, after the unknowns
    });
    expect(decodeFrame(bytes)).toMatchObject({ kind: "push", push: { seq: 5, topic: "after" } });
  });

  it("decodes a Frame whose only body is a newer field as kind unknown", () => {
    const w = Writer.create();
    w.uint32((14 << 3) | 2).bytes(Uint8Array.of(8, 1));
    expect(decodeFrame(w.finish())).toEqual({ kind: "unknown", field: 14 });
  });

  it("prefers a known body over an unknown Frame field next to it", () => {
    const w = Writer.create();
    w.uint32((20 << 3) | 0).uint32(1); // e.g. a future envelope field
    w.uint32((10 << 3) | 2).bytes(Uint8Array.of(8, 9)); // ping { time: 9 }
    expect(decodeFrame(w.finish())).toEqual({ kind: "ping", ping: { time: 9 } });
  });

  it("accepts Ack.rejected both packed and unpacked", () => {
    const w = Writer.create();
    w.uint32((4 << 3) | 2).fork();
    w.uint32((3 << 3) | 0).uint32(10);
    w.uint32((3 << 3) | 2)
      .fork()
      .uint32(11)
      .uint64(2 ** 40)
      .ldelim();
    w.uint32((3 << 3) | 0).uint32(12);
    w.ldelim();
    expect(decodeFrame(w.finish())).toEqual({ kind: "ack", ack: { cumulative: 0, ranges: [], rejected: [10, 11, 2 ** 40, 12] } });
  });

  it("keeps enum values it does not know", () => {
    const f = decodeFrame(encodeFrame({ kind: "error", error: { code: 99 } }));
    expect(f).toEqual({ kind: "error", error: { code: 99, message: "", requestId: 0 } });
  });
});

describe("malformed input", () => {
  it("refuses an empty record and a Frame without a body", () => {
    expect(wireErrorOf(() => decodeFrame(new Uint8Array(0))).message).toMatch(/empty/);
    expect(wireErrorOf(() => decodeFrame(unhex("0a"))).message).toMatch(/truncated/);
  });

  it("refuses a uint64 above 2^53-1", () => {
    const e = wireErrorOf(() => decodeFrame(rawPush((w) => w.uint32(8).uint64(2 ** 53))));
    expect(e.code).toBe("bad_frame");
    expect(e.message).toMatch(/Push\.seq is above 2\^53-1/);
    wireErrorOf(() => decodeFrame(unhex("1a0b08ffffffffffffffffff01"))); // 2^64-1
    wireErrorOf(() => decodeFrame(unhex("1a0c08ffffffffffffffffffff01"))); // an 11-byte varint
  });

  it("refuses a known field with the wrong wire type", () => {
    const e = wireErrorOf(() => decodeFrame(rawPush((w) => w.uint32((1 << 3) | 2).bytes(Uint8Array.of(1)))));
    expect(e.message).toMatch(/Push\.seq arrived with wire type 2, expected 0/);
    wireErrorOf(() => decodeFrame(unhex("1801"))); // Frame.welcome as a varint
  });

  it("refuses invalid UTF-8 in a string", () => {
    const e = wireErrorOf(() => decodeFrame(rawPush((w) => w.uint32((3 << 3) | 2).bytes(Uint8Array.of(0x61, 0xff)))));
    expect(e.message).toMatch(/Push\.topic is not valid UTF-8/);
  });

  it("refuses field number 0, end-group without a group, and wire types 6 and 7", () => {
    for (const h of ["1a020000", "1a020c00", "1a027e00", "1a020f00", "0001"]) {
      wireErrorOf(() => decodeFrame(unhex(h)));
    }
  });

  it("refuses unknown groups nested deeper than the reader's recursion limit, without overflowing the stack", () => {
    const nested = rawPush((w) => {
      for (let i = 0; i < 100_000; i++) w.uint32((100 << 3) | 3); // field 100, start group, never closed
    });
    expect(wireErrorOf(() => decodeFrame(nested)).message).toMatch(/depth/);
  });

  it("refuses a nested message that claims more bytes than its parent holds", () => {
    // Welcome (3 bytes) { limits: length 5 } followed by bytes outside the Welcome.
    const e = wireErrorOf(() => decodeFrame(unhex("120342050801020304")));
    expect(e.message).toMatch(/Welcome\.limits/);
  });

  it.each(["push", "welcome"] as const)("throws WireError at every truncation of a full %s frame", (kind) => {
    const bytes = encodeFrame(fullOf(kind));
    for (let i = 0; i < bytes.length; i++) {
      const e = wireErrorOf(() => decodeFrame(bytes.subarray(0, i)));
      expect(e.code).toBe("bad_frame");
    }
    expect(decodeFrame(bytes)).toEqual(fullOf(kind));
  });
});

describe("encoding checks", () => {
  it.each([-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, 2 ** 64])("refuses uint64 %s", (seq) => {
    const e = wireErrorOf(() => encodeFrame({ kind: "push", push: { seq } }));
    expect(e.code).toBe("bad_frame");
    expect(e.message).toMatch(/Push\.seq must be an integer from 0 to 2\^53-1/);
  });

  it("refuses uint32 and enum values outside their range", () => {
    wireErrorOf(() => encodeFrame({ kind: "push", push: { priority: 2 ** 32 } }));
    wireErrorOf(() => encodeFrame({ kind: "push", push: { priority: -1 } }));
    wireErrorOf(() => encodeFrame({ kind: "error", error: { code: 2 ** 31 } }));
    expect(decodeFrame(encodeFrame({ kind: "error", error: { code: -2 } }))).toMatchObject({ error: { code: -2 } });
  });

  it("refuses strings that are not well-formed Unicode and bytes that are not bytes", () => {
    expect(wireErrorOf(() => encodeFrame({ kind: "push", push: { topic: "a\uD800b" } })).message).toMatch(/lone surrogate/);
    const notBytes = "AAEC" as unknown as Uint8Array; // protobufjs alone would read this as base64
    wireErrorOf(() => encodeFrame({ kind: "push", push: { payload: notBytes } }));
    wireErrorOf(() => encodeFrame({ kind: "nope" } as unknown as FrameInit));
  });

  it("encodes correctly after a failed encode", () => {
    wireErrorOf(() => encodeFrame({ kind: "ack", ack: { ranges: [{ first: 1, last: -1 }] } }));
    expect(hex(encodeFrame({ kind: "ack", ack: { ranges: [{ first: 1, last: 2 }] } }))).toBe("2206120408011002");
  });
});

describe("pushOverhead", () => {
  const fields: Partial<Push> = { ...fullOf("push").push };
  delete fields.payload;

  it.each([0, 1, 100, 127, 128, 1000, 16_383, 16_384, 70_000])("is exact with a payload of %i bytes", (n) => {
    const push = { ...fields, payload: new Uint8Array(n) };
    expect(pushOverhead(push)).toBe(encodeFrame({ kind: "push", push }).length - n);
  });

  it("without a payload, bounds every payload up to 2 MiB from above, by at most 4 bytes", () => {
    const bound = pushOverhead(fields);
    for (const n of [1, 100, 1000, 16_383, 16_384, 100_000, 2_000_000]) {
      const exact = encodeFrame({ kind: "push", push: { ...fields, payload: new Uint8Array(n) } }).length - n;
      expect(bound).toBeGreaterThanOrEqual(exact);
      expect(bound - exact).toBeLessThanOrEqual(4);
    }
  });

  it("reports a field it cannot encode as WireError", () => {
    wireErrorOf(() => pushOverhead({ seq: -5 }));
  });
});

describe("errorCodeName", () => {
  it("names known codes and marks unknown ones", () => {
    expect(errorCodeName(ErrorCode.QUEUE_FULL)).toBe("QUEUE_FULL");
    expect(errorCodeName(0)).toBe("ERROR_CODE_UNSPECIFIED");
    expect(errorCodeName(99)).toBe("UNKNOWN_99");
    expect(errorCodeName(-1)).toBe("UNKNOWN_-1");
  });

  it("has a name for every ErrorCode value", () => {
    for (const [name, value] of Object.entries(ErrorCode)) expect(errorCodeName(value)).toBe(name);
  });
});

describe("types", () => {
  it("accepts decoded frames as encoder input", () => {
    const decoded: FrameBody = decodeFrame(encodeFrame(fullOf("welcome"))) as FrameBody;
    expect(decodeFrame(encodeFrame(decoded))).toEqual(fullOf("welcome"));
  });
});
