import vm from "node:vm";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ByteReader, ByteWriter, bytesEqual, concatBytes, copyBytes, fromHex, toHex } from "../../src/util/bytes.ts";
import { DecodeError, DtlspushError } from "../../src/util/errors.ts";

const FC = { seed: 42, numRuns: 200 } as const;
const TWO_48_MINUS_1 = 281474976710655;

function u8(...xs: number[]): Uint8Array {
  return new Uint8Array(xs);
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

/** Runs f and returns the DecodeError it throws (fails the test otherwise). */
function decodeErrorOf(f: () => unknown): DecodeError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(DecodeError);
    return e as DecodeError;
  }
  throw new Error("expected a DecodeError, nothing was thrown");
}

describe("DecodeError", () => {
  it("is a DtlspushError with the stable code decode_error", () => {
    const e = new DecodeError("x");
    expect(e).toBeInstanceOf(DtlspushError);
    expect(e).toBeInstanceOf(Error);
    expect(e.code).toBe("decode_error");
    expect(e.name).toBe("DecodeError");
    expect(e.message).toBe("x");
  });
});

describe("ByteReader fixed-width reads", () => {
  it("reads u8/u16/u24/u32/u48 big-endian and tracks offset and remaining", () => {
    const r = new ByteReader(fromHex("ab" + "1234" + "56789a" + "bcdef012" + "3456789abcde" + "ff"));
    expect(r.offset).toBe(0);
    expect(r.remaining()).toBe(17);
    expect(r.u8()).toBe(0xab);
    expect(r.offset).toBe(1);
    expect(r.u16()).toBe(0x1234);
    expect(r.offset).toBe(3);
    expect(r.u24()).toBe(0x56789a);
    expect(r.offset).toBe(6);
    expect(r.u32()).toBe(0xbcdef012);
    expect(r.offset).toBe(10);
    expect(r.u48()).toBe(0x3456_789abcde);
    expect(r.offset).toBe(16);
    expect(r.remaining()).toBe(1);
    expect(r.u8()).toBe(0xff);
    expect(r.remaining()).toBe(0);
    r.expectEnd("test");
  });

  it("reads the all-ones values as unsigned, never negative", () => {
    expect(new ByteReader(fromHex("ff")).u8()).toBe(255);
    expect(new ByteReader(fromHex("ffff")).u16()).toBe(65535);
    expect(new ByteReader(fromHex("ffffff")).u24()).toBe(16777215);
    expect(new ByteReader(fromHex("ffffffff")).u32()).toBe(4294967295);
    expect(new ByteReader(fromHex("80000000")).u32()).toBe(2147483648);
    expect(new ByteReader(fromHex("ffffffffffff")).u48()).toBe(TWO_48_MINUS_1);
  });

  it("u48 is exact at the 2^32 boundary and up to 2^48-1", () => {
    const cases: [string, number][] = [
      ["000000000000", 0],
      ["000000000001", 1],
      ["0000ffffffff", 0xffff_ffff],
      ["000100000000", 0x1_0000_0000],
      ["000100000001", 0x1_0000_0001],
      ["800000000000", 2 ** 47],
      ["fffffffffffe", TWO_48_MINUS_1 - 1],
      ["ffffffffffff", TWO_48_MINUS_1],
    ];
    for (const [h, v] of cases) {
      expect(new ByteReader(fromHex(h)).u48()).toBe(v);
      expect(hex(new ByteWriter(1).u48(v).finish())).toBe(h);
    }
  });

  it("u48 round-trips every value in 0..2^48-1 exactly (property)", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 48n - 1n }), (big) => {
        const v = Number(big);
        const enc = new ByteWriter(2).u48(v).finish();
        expect(hex(enc)).toBe(big.toString(16).padStart(12, "0"));
        const r = new ByteReader(enc);
        expect(r.u48()).toBe(v);
        r.expectEnd("u48");
      }),
      FC,
    );
  });

  it("every fixed-width read throws DecodeError when short by one byte, without consuming", () => {
    const widths: [keyof ByteReader & ("u8" | "u16" | "u24" | "u32" | "u48"), number][] = [
      ["u8", 1],
      ["u16", 2],
      ["u24", 3],
      ["u32", 4],
      ["u48", 6],
    ];
    for (const [m, n] of widths) {
      const r = new ByteReader(new Uint8Array(n - 1).fill(7));
      const e = decodeErrorOf(() => r[m]("my field"));
      expect(e.message).toContain("my field");
      expect(r.offset).toBe(0);
      expect(r.remaining()).toBe(n - 1);
    }
  });

  it("u48 short read does not consume the u16 half", () => {
    const r = new ByteReader(fromHex("0102030405"));
    decodeErrorOf(() => r.u48());
    expect(r.offset).toBe(0);
    expect(r.u8()).toBe(1);
  });
});

describe("ByteReader start/end window", () => {
  it("reads only inside [start, end) of the underlying buffer", () => {
    const buf = fromHex("00112233445566");
    const r = new ByteReader(buf, 2, 5);
    expect(r.offset).toBe(2);
    expect(r.remaining()).toBe(3);
    expect(r.u16()).toBe(0x2233);
    // one byte left inside the window although the buffer has three more
    decodeErrorOf(() => r.u16());
    expect(r.u8()).toBe(0x44);
    decodeErrorOf(() => r.u8());
    r.expectEnd("window");
  });

  it("bytes() returns a view into the buffer, not a copy", () => {
    const buf = fromHex("0102030405");
    const r = new ByteReader(buf);
    r.u8();
    const v = r.bytes(3);
    expect(hex(v)).toBe("020304");
    expect(v.buffer).toBe(buf.buffer);
    expect(v.byteOffset).toBe(1);
    buf[2] = 0xee;
    expect(v[1]).toBe(0xee);
    expect(r.offset).toBe(4);
  });

  it("bytes(0) at the end is fine, bytes(n+1) throws without consuming", () => {
    const r = new ByteReader(fromHex("aabb"));
    expect(r.bytes(0).length).toBe(0);
    decodeErrorOf(() => r.bytes(3, "blob"));
    expect(r.offset).toBe(0);
    expect(hex(r.bytes(2))).toBe("aabb");
    expect(r.bytes(0).length).toBe(0);
  });

  // Regression (fixed in 360039f): the constructor did not validate `end`, so a
  // window larger than the buffer let reads run past the data (u32() returned
  // 0x01020000 from two missing bytes, bytes(5) silently returned 2 bytes).
  it("rejects a window that does not lie inside the buffer", () => {
    const buf = u8(1, 2);
    expect(() => new ByteReader(buf, 0, 6)).toThrow(RangeError);
    expect(() => new ByteReader(buf, 0, 3)).toThrow(RangeError);
    expect(() => new ByteReader(buf, -1)).toThrow(RangeError);
    expect(() => new ByteReader(buf, 2, 1)).toThrow(RangeError);
    expect(() => new ByteReader(buf, 3)).toThrow(RangeError);
    expect(new ByteReader(buf, 2).remaining()).toBe(0);
    expect(new ByteReader(buf, 1, 1).remaining()).toBe(0);
    expect(new ByteReader(buf, 0, 2).u16()).toBe(0x0102);
  });
});

describe("ByteReader vectors", () => {
  it("vec8/vec16/vec24 read their length prefix and body", () => {
    const r = new ByteReader(fromHex("02aabb" + "0003ccddee" + "000001ff" + "00" + "0000" + "000000"));
    expect(hex(r.vec8())).toBe("aabb");
    expect(hex(r.vec16())).toBe("ccddee");
    expect(hex(r.vec24())).toBe("ff");
    expect(r.vec8().length).toBe(0);
    expect(r.vec16().length).toBe(0);
    expect(r.vec24().length).toBe(0);
    r.expectEnd("vectors");
  });

  it("vec8 accepts lengths exactly at min and max and rejects one outside", () => {
    expect(hex(new ByteReader(fromHex("02aabb")).vec8("v", 2, 3))).toBe("aabb");
    expect(hex(new ByteReader(fromHex("03aabbcc")).vec8("v", 2, 3))).toBe("aabbcc");
    expect(decodeErrorOf(() => new ByteReader(fromHex("01aa")).vec8("v", 2, 3)).message).toContain("v length 1 outside 2..3");
    expect(decodeErrorOf(() => new ByteReader(fromHex("04aabbccdd")).vec8("v", 2, 3)).message).toContain("v length 4 outside 2..3");
    // default bounds 0..255
    const full = new Uint8Array(256);
    full[0] = 255;
    expect(new ByteReader(full).vec8().length).toBe(255);
  });

  it("vec16 accepts lengths exactly at min and max and rejects one outside", () => {
    expect(new ByteReader(fromHex("0002aabb")).vec16("v", 2, 4).length).toBe(2);
    expect(new ByteReader(fromHex("0004aabbccdd")).vec16("v", 2, 4).length).toBe(4);
    decodeErrorOf(() => new ByteReader(fromHex("0001aa")).vec16("v", 2, 4));
    decodeErrorOf(() => new ByteReader(fromHex("0005aabbccddee")).vec16("v", 2, 4));
    const big = new Uint8Array(2 + 0xffff);
    big[0] = 0xff;
    big[1] = 0xff;
    expect(new ByteReader(big).vec16().length).toBe(0xffff);
  });

  it("vec24 accepts lengths exactly at min and max and rejects one outside", () => {
    expect(new ByteReader(fromHex("000001aa")).vec24("v", 1, 2).length).toBe(1);
    expect(new ByteReader(fromHex("000002aabb")).vec24("v", 1, 2).length).toBe(2);
    decodeErrorOf(() => new ByteReader(fromHex("000000")).vec24("v", 1, 2));
    decodeErrorOf(() => new ByteReader(fromHex("000003aabbcc")).vec24("v", 1, 2));
  });

  it("a vector whose declared length exceeds the input throws DecodeError", () => {
    decodeErrorOf(() => new ByteReader(fromHex("03aabb")).vec8());
    decodeErrorOf(() => new ByteReader(fromHex("0003aabb")).vec16());
    decodeErrorOf(() => new ByteReader(fromHex("000003aabb")).vec24());
    decodeErrorOf(() => new ByteReader(fromHex("00")).vec16());
    decodeErrorOf(() => new ByteReader(fromHex("0000")).vec24());
    decodeErrorOf(() => new ByteReader(new Uint8Array(0)).vec8());
  });

  it("the bound check comes before the body read (oversized length names the bound)", () => {
    const e = decodeErrorOf(() => new ByteReader(fromHex("21")).vec8("session_id", 0, 32));
    expect(e.message).toBe("session_id length 33 outside 0..32");
  });
});

describe("ByteReader.expectEnd", () => {
  it("passes only when every byte was consumed and reports how many remain", () => {
    const r = new ByteReader(fromHex("010203"));
    expect(decodeErrorOf(() => r.expectEnd("Thing")).message).toBe("3 trailing bytes after Thing");
    r.u16();
    expect(decodeErrorOf(() => r.expectEnd("Thing")).message).toBe("1 trailing bytes after Thing");
    r.u8();
    expect(() => r.expectEnd("Thing")).not.toThrow();
    new ByteReader(new Uint8Array(0)).expectEnd("empty");
  });
});

describe("ByteWriter", () => {
  it("writes u8/u16/u24/u32/u48 big-endian, masking to width", () => {
    const w = new ByteWriter(4);
    w.u8(0xab).u16(0x1234).u24(0x56789a).u32(0xbcdef012).u48(0x3456_789abcde);
    expect(w.length).toBe(16);
    expect(hex(w.finish())).toBe("ab123456789abcdef0123456789abcde");
    const m = new ByteWriter(4).u8(0x1ff).u16(0x1_0002).u24(0x1_000003).finish();
    expect(hex(m)).toBe("ff0002000003");
    expect(hex(new ByteWriter(4).u32(0xffffffff).finish())).toBe("ffffffff");
  });

  it("grows past its initial capacity and keeps earlier bytes", () => {
    const w = new ByteWriter(1);
    const expected: number[] = [];
    for (let i = 0; i < 1000; i++) {
      w.u8(i);
      expected.push(i & 0xff);
    }
    w.bytes(new Uint8Array(5000).fill(9));
    for (let i = 0; i < 5000; i++) expected.push(9);
    expect(w.length).toBe(6000);
    expect(bytesEqual(w.finish(), new Uint8Array(expected))).toBe(true);
  });

  it("finish() returns a copy that later writes do not change", () => {
    const w = new ByteWriter(16).u16(0x0102);
    const a = w.finish();
    w.u8(3);
    const b = w.finish();
    a[0] = 0xff;
    expect(hex(a)).toBe("ff02");
    expect(hex(b)).toBe("010203");
    expect(hex(w.finish())).toBe("010203");
  });

  it("bytes() copies its argument", () => {
    const src = u8(1, 2, 3);
    const w = new ByteWriter(8).bytes(src);
    src[0] = 9;
    expect(hex(w.finish())).toBe("010203");
  });

  it("vec8/vec16/vec24 write length prefixes and accept the maximum sizes", () => {
    expect(hex(new ByteWriter(1).vec8(u8(0xaa, 0xbb)).vec16(u8(0xcc)).vec24(u8()).finish())).toBe("02aabb" + "0001cc" + "000000");
    const v8 = new ByteWriter(1).vec8(new Uint8Array(255)).finish();
    expect(v8.length).toBe(256);
    expect(v8[0]).toBe(255);
    const v16 = new ByteWriter(1).vec16(new Uint8Array(0xffff)).finish();
    expect(v16.length).toBe(0x10001);
    expect(hex(v16.subarray(0, 2))).toBe("ffff");
  });

  it("vec8/vec16/vec24 throw RangeError one byte over the maximum", () => {
    expect(() => new ByteWriter().vec8(new Uint8Array(256))).toThrow(RangeError);
    expect(() => new ByteWriter().vec16(new Uint8Array(0x10000))).toThrow(RangeError);
    expect(() => new ByteWriter().vec24(new Uint8Array(0x1000000))).toThrow(RangeError);
  });

  it("vec24 accepts 2^24-1 bytes", () => {
    const w = new ByteWriter(16).vec24(new Uint8Array(0xffffff));
    expect(w.length).toBe(0xffffff + 3);
    expect(hex(w.finish().subarray(0, 3))).toBe("ffffff");
  });

  it("lengthPrefixed16 patches the length of what fill wrote", () => {
    const w = new ByteWriter(2).u8(0xee);
    w.lengthPrefixed16((b) => {
      b.u16(0x0102).vec8(u8(3, 4, 5));
    });
    w.u8(0xdd);
    expect(hex(w.finish())).toBe("ee" + "0006" + "0102" + "03030405" + "dd");
    expect(hex(new ByteWriter(1).lengthPrefixed16(() => {}).finish())).toBe("0000");
    // nested
    const n = new ByteWriter(1).lengthPrefixed16((b) => {
      b.lengthPrefixed16((c) => {
        c.u8(7);
      });
    });
    expect(hex(n.finish())).toBe("0003" + "0001" + "07");
  });

  it("lengthPrefixed16 accepts exactly 0xffff bytes and throws RangeError at 0x10000", () => {
    const ok = new ByteWriter(1).lengthPrefixed16((b) => {
      b.bytes(new Uint8Array(0xffff));
    });
    expect(hex(ok.finish().subarray(0, 2))).toBe("ffff");
    expect(() =>
      new ByteWriter(1).lengthPrefixed16((b) => {
        b.bytes(new Uint8Array(0x10000));
      }),
    ).toThrow(RangeError);
  });

  it("writer output decodes back through the reader (property)", () => {
    type Op =
      | { k: "u8"; v: number }
      | { k: "u16"; v: number }
      | { k: "u24"; v: number }
      | { k: "u32"; v: number }
      | { k: "u48"; v: number }
      | { k: "vec8" | "vec16" | "vec24"; b: Uint8Array };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.integer({ min: 0, max: 0xff }).map((v) => ({ k: "u8" as const, v })),
      fc.integer({ min: 0, max: 0xffff }).map((v) => ({ k: "u16" as const, v })),
      fc.integer({ min: 0, max: 0xffffff }).map((v) => ({ k: "u24" as const, v })),
      fc.bigInt({ min: 0n, max: 0xffffffffn }).map((v) => ({ k: "u32" as const, v: Number(v) })),
      fc.bigInt({ min: 0n, max: 2n ** 48n - 1n }).map((v) => ({ k: "u48" as const, v: Number(v) })),
      fc.tuple(fc.constantFrom("vec8" as const, "vec16" as const, "vec24" as const), fc.uint8Array({ maxLength: 40 })).map(([k, b]) => ({ k, b })),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), fc.integer({ min: 1, max: 64 }), (ops, initial) => {
        const w = new ByteWriter(initial);
        for (const o of ops) {
          if ("v" in o) w[o.k](o.v);
          else w[o.k](o.b);
        }
        const r = new ByteReader(w.finish());
        for (const o of ops) {
          if ("v" in o) expect(r[o.k]()).toBe(o.v);
          else expect(hex(r[o.k]())).toBe(hex(o.b));
        }
        r.expectEnd("ops");
      }),
      FC,
    );
  });

  it("new ByteWriter(1) can grow (harness check for the zero-capacity test below)", () => {
    const n = vm.runInNewContext("f()", { f: () => new ByteWriter(1).u8(1).u32(2).length }, { timeout: 1000 });
    expect(n).toBe(5);
  });

  // Regression (fixed in 360039f): with initial capacity 0 the growth loop
  // computed size = 0 * 2 = 0 and `while (size < pos + n) size *= 2` never
  // terminated, so `new ByteWriter(0).u8(1)` hung the process. Run under vm
  // with a timeout so a hang turns into a test failure instead of a stuck run.
  it("new ByteWriter(0) grows on the first write instead of hanging", () => {
    const n = vm.runInNewContext("f()", { f: () => new ByteWriter(0).u8(1).u16(2).length }, { timeout: 300 });
    expect(n).toBe(3);
    const w = vm.runInNewContext("f()", { f: () => new ByteWriter(0).bytes(new Uint8Array(100).fill(7)).finish() }, { timeout: 300 }) as Uint8Array;
    expect(w.length).toBe(100);
    expect(w.every((x) => x === 7)).toBe(true);
  });
});

describe("hex and byte helpers", () => {
  it("fromHex accepts even-length hex in either case, including empty", () => {
    expect(Array.from(fromHex("00ff10Ab"))).toEqual([0, 255, 16, 171]);
    expect(fromHex("").length).toBe(0);
    expect(fromHex("00")).toBeInstanceOf(Uint8Array);
  });

  it("fromHex rejects odd length and non-hex with DecodeError", () => {
    for (const bad of ["0", "abc", "0g", "g0", "zz", " 00", "00 ", "00\n", "0x00", "-1", "é0", "00:11"]) {
      expect(() => fromHex(bad), JSON.stringify(bad)).toThrow(DecodeError);
    }
  });

  it("toHex is lowercase and respects views", () => {
    const buf = fromHex("00AB10ff");
    expect(toHex(buf)).toBe("00ab10ff");
    expect(toHex(buf.subarray(1, 3))).toBe("ab10");
    expect(toHex(new Uint8Array(0))).toBe("");
  });

  it("toHex/fromHex round-trip (property)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
        expect(bytesEqual(fromHex(toHex(b)), b)).toBe(true);
        expect(bytesEqual(fromHex(toHex(b).toUpperCase()), b)).toBe(true);
      }),
      FC,
    );
  });

  it("concatBytes joins in order", () => {
    expect(hex(concatBytes([u8(1), u8(), u8(2, 3), fromHex("0405").subarray(1)]))).toBe("01020305");
    expect(concatBytes([]).length).toBe(0);
  });

  it("copyBytes returns a plain Uint8Array in fresh memory, also for Buffer views", () => {
    const datagram = Buffer.from("00112233445566", "hex");
    const view = datagram.subarray(2, 5);
    const c = copyBytes(view);
    expect(hex(c)).toBe("223344");
    expect(c.buffer).not.toBe(datagram.buffer);
    expect(c.byteOffset).toBe(0);
    expect(c.buffer.byteLength).toBe(3);
    expect(Buffer.isBuffer(c)).toBe(false);
    datagram[2] = 0xff;
    expect(c[0]).toBe(0x22);
    c[1] = 0;
    expect(view[1]).toBe(0x33);
    expect(copyBytes(new Uint8Array(0)).length).toBe(0);
  });

  it("bytesEqual compares length and content", () => {
    expect(bytesEqual(u8(), u8())).toBe(true);
    expect(bytesEqual(u8(1, 2), u8(1, 2))).toBe(true);
    expect(bytesEqual(u8(1, 2), u8(1, 3))).toBe(false);
    expect(bytesEqual(u8(1, 2), u8(1, 2, 0))).toBe(false);
    expect(bytesEqual(u8(0), u8())).toBe(false);
  });
});
