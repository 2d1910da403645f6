import vm from "node:vm";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RECORD_HEADER_LENGTH } from "../../src/dtls/constants.ts";
import { encodeFragment, MAX_HANDSHAKE_MESSAGE, parseHandshakeFragments, type HandshakeFragment } from "../../src/dtls/handshake-codec.ts";
import {
  decodeClientHello,
  decodeEmpty,
  decodeFinished,
  decodeHelloVerifyRequest,
  decodePskIdentity,
  decodeRenegotiationInfo,
  decodeServerHello,
  encodeClientHello,
  encodeHelloVerifyRequest,
  encodePskIdentity,
  encodeServerHello,
  type ClientHello,
  type Extension,
  type HelloVerifyRequest,
  type ServerHello,
} from "../../src/dtls/messages.ts";
import { MemoryBudget } from "../../src/dtls/memory-budget.ts";
import { Reassembler, type AddResult } from "../../src/dtls/reassembly.ts";
import { encodePlainRecord, MAX_RECORD_BODY, parseRecords } from "../../src/dtls/record.ts";
import { concatBytes } from "../../src/util/bytes.ts";
import { DecodeError } from "../../src/util/errors.ts";

const FC = { seed: 42, numRuns: 200 } as const;
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** Runs f under a watchdog so an infinite loop fails the test instead of hanging the run. */
function withinMs(ms: number, f: () => void): void {
  vm.runInNewContext("f()", { f }, { timeout: ms });
}

// ---- arbitraries ---------------------------------------------------------

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const bytes = (minLength: number, maxLength: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ minLength, maxLength });

const extensions: fc.Arbitrary<Extension[] | undefined> = fc.option(
  fc.uniqueArray(fc.record({ type: u16, data: bytes(0, 40) }), { selector: (e) => e.type, maxLength: 8 }),
  { nil: undefined, freq: 3 },
);

const clientHello: fc.Arbitrary<ClientHello> = fc.record({
  version: u16,
  random: bytes(32, 32),
  sessionId: bytes(0, 32),
  cookie: bytes(0, 255),
  cipherSuites: fc.array(u16, { minLength: 1, maxLength: 60 }),
  compressionMethods: bytes(1, 16),
  extensions,
});

const serverHello: fc.Arbitrary<ServerHello> = fc.record({
  version: u16,
  random: bytes(32, 32),
  sessionId: bytes(0, 32),
  cipherSuite: u16,
  compressionMethod: u8,
  extensions,
});

const helloVerifyRequest: fc.Arbitrary<HelloVerifyRequest> = fc.record({ version: u16, cookie: bytes(0, 255) });

type Mutation = { kind: "flip" | "set" | "insert" | "delete"; at: number; value: number } | { kind: "truncate"; at: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constantFrom("flip" as const, "set" as const, "insert" as const, "delete" as const), at: fc.nat(), value: u8 }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
);

function mutate(input: Uint8Array, ms: readonly Mutation[]): Uint8Array {
  const b = Array.from(input);
  for (const m of ms) {
    const at = b.length === 0 ? 0 : m.at % (b.length + 1);
    switch (m.kind) {
      case "flip":
        if (at < b.length) b[at] = (b[at] as number) ^ (1 << (m.value & 7));
        break;
      case "set":
        if (at < b.length) b[at] = m.value;
        break;
      case "insert":
        b.splice(at, 0, m.value);
        break;
      case "delete":
        b.splice(at, 1);
        break;
      case "truncate":
        b.length = Math.min(b.length, at);
        break;
    }
  }
  return new Uint8Array(b);
}

/** Arbitrary bytes, or a valid encoding damaged by 0..3 mutations (reaches deeper decoder paths). */
function hostile(valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    { weight: 1, arbitrary: bytes(0, 300) },
    { weight: 3, arbitrary: fc.tuple(valid, fc.array(mutation, { maxLength: 3 })).map(([v, ms]) => mutate(v, ms)) },
  );
}

// ---- round trips ------------------------------------------------------------

describe("hello round trips (property)", () => {
  it("ClientHello: decode(encode(h)) equals h and re-encodes byte-exactly", () => {
    fc.assert(
      fc.property(clientHello, (h) => {
        const enc = encodeClientHello(h);
        const dec = decodeClientHello(enc);
        expect(dec).toEqual(h);
        expect(dec.extensions === undefined).toBe(h.extensions === undefined);
        expect(hex(encodeClientHello(dec))).toBe(hex(enc));
      }),
      FC,
    );
  });

  it("ServerHello: decode(encode(h)) equals h and re-encodes byte-exactly", () => {
    fc.assert(
      fc.property(serverHello, (h) => {
        const enc = encodeServerHello(h);
        const dec = decodeServerHello(enc);
        expect(dec).toEqual(h);
        expect(dec.extensions === undefined).toBe(h.extensions === undefined);
        expect(hex(encodeServerHello(dec))).toBe(hex(enc));
      }),
      FC,
    );
  });

  it("HelloVerifyRequest: decode(encode(h)) equals h", () => {
    fc.assert(
      fc.property(helloVerifyRequest, (h) => {
        const enc = encodeHelloVerifyRequest(h);
        expect(enc.length).toBe(3 + h.cookie.length);
        expect(decodeHelloVerifyRequest(enc)).toEqual(h);
      }),
      FC,
    );
  });
});

// ---- hostile input ------------------------------------------------------------

/** Calls decode; returns its result, or undefined when it threw DecodeError; any other throw fails. */
function decodeOrDecodeError<T>(decode: () => T): T | undefined {
  try {
    return decode();
  } catch (e) {
    if (!(e instanceof DecodeError)) throw new Error(`decoder threw a non-DecodeError: ${String(e)}`, { cause: e });
    return undefined;
  }
}

describe("decoders on hostile bytes (property)", () => {
  it("ClientHello decoder returns or throws DecodeError; what it accepts re-encodes to the same bytes", () => {
    withinMs(8000, () =>
      fc.assert(
        fc.property(hostile(clientHello.map(encodeClientHello)), (b) => {
          const h = decodeOrDecodeError(() => decodeClientHello(b));
          if (h !== undefined) expect(hex(encodeClientHello(h))).toBe(hex(b));
        }),
        { ...FC, numRuns: 400 },
      ),
    );
  });

  it("ServerHello decoder returns or throws DecodeError; what it accepts re-encodes to the same bytes", () => {
    withinMs(8000, () =>
      fc.assert(
        fc.property(hostile(serverHello.map(encodeServerHello)), (b) => {
          const h = decodeOrDecodeError(() => decodeServerHello(b));
          if (h !== undefined) expect(hex(encodeServerHello(h))).toBe(hex(b));
        }),
        { ...FC, numRuns: 400 },
      ),
    );
  });

  it("HelloVerifyRequest / PSK identity / renegotiation_info / Finished / empty decoders return or throw DecodeError", () => {
    withinMs(8000, () =>
      fc.assert(
        fc.property(hostile(helloVerifyRequest.map(encodeHelloVerifyRequest)), (b) => {
          const hvr = decodeOrDecodeError(() => decodeHelloVerifyRequest(b));
          if (hvr !== undefined) expect(hex(encodeHelloVerifyRequest(hvr))).toBe(hex(b));
          const id = decodeOrDecodeError(() => decodePskIdentity(b, "psk_identity"));
          if (id !== undefined) expect(hex(encodePskIdentity(id))).toBe(hex(b));
          const ri = decodeOrDecodeError(() => decodeRenegotiationInfo(b));
          if (ri !== undefined) expect(ri.length + 1).toBe(b.length);
          const fin = decodeOrDecodeError(() => decodeFinished(b));
          expect(fin !== undefined).toBe(b.length === 12);
          decodeOrDecodeError(() => decodeEmpty(b, "empty"));
        }),
        { ...FC, numRuns: 400 },
      ),
    );
  });
});

/** A handshake record body: some well-formed fragments, possibly damaged. */
const fragmentBytes: fc.Arbitrary<Uint8Array> = fc
  .array(
    fc.tuple(u8, u16, bytes(0, 60), fc.nat(), fc.nat()).map(([type, seq, body, a, b]) => {
      const off = body.length === 0 ? 0 : a % (body.length + 1);
      const len = body.length - off === 0 ? 0 : b % (body.length - off + 1);
      return encodeFragment(type, seq, body, off, len);
    }),
    { maxLength: 4 },
  )
  .map(concatBytes);

describe("parseHandshakeFragments on hostile bytes (property)", () => {
  it("throws only DecodeError; when it returns, fragments tile the input and are within bounds", () => {
    withinMs(8000, () =>
      fc.assert(
        fc.property(hostile(fragmentBytes), fc.nat({ max: 16 }), (raw, pad) => {
          // place the input inside a larger buffer so an overrun would be visible
          const backing = new Uint8Array(pad + raw.length + 16).fill(0xa5);
          backing.set(raw, pad);
          const input = backing.subarray(pad, pad + raw.length);
          const frags = decodeOrDecodeError(() => parseHandshakeFragments(input));
          if (frags === undefined) return;
          let off = input.byteOffset;
          for (const f of frags) {
            expect(f.fragmentOffset + f.fragmentLength).toBeLessThanOrEqual(f.length);
            expect(f.length).toBeLessThanOrEqual(MAX_HANDSHAKE_MESSAGE);
            expect(f.body.length).toBe(f.fragmentLength);
            expect(f.body.buffer).toBe(backing.buffer);
            expect(f.body.byteOffset).toBe(off + 12);
            off = f.body.byteOffset + f.body.length;
          }
          expect(off).toBe(input.byteOffset + input.length);
        }),
        { ...FC, numRuns: 400 },
      ),
    );
  });

  it("well-formed fragment sequences always parse back to what was encoded", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(u8, u16, bytes(0, 60), fc.nat(), fc.nat()), { maxLength: 5 }), (specs) => {
        const want = specs.map(([type, seq, body, a, b]) => {
          const off = a % (body.length + 1);
          const len = b % (body.length - off + 1);
          return {
            msgType: type,
            length: body.length,
            messageSeq: seq,
            fragmentOffset: off,
            fragmentLength: len,
            body: hex(body.subarray(off, off + len)),
          };
        });
        const input = concatBytes(
          specs.map(([type, seq, body], i) => encodeFragment(type, seq, body, want[i]?.fragmentOffset ?? 0, want[i]?.fragmentLength ?? 0)),
        );
        const got = parseHandshakeFragments(input).map((f) => ({ ...f, body: hex(f.body) }));
        expect(got).toEqual(want);
      }),
      FC,
    );
  });
});

/** Datagrams made of record-shaped chunks with sometimes-lying lengths and versions. */
const recordish: fc.Arbitrary<Uint8Array> = fc
  .array(
    fc.oneof(
      {
        weight: 6,
        arbitrary: fc
          .tuple(u8, fc.constantFrom(0xfefd, 0xfefd, 0xfeff, 0xfe00, 0x0303, 0x00fe), u16, fc.bigInt({ min: 0n, max: 2n ** 48n - 1n }), bytes(0, 50))
          .map(([t, v, e, s, b]) => encodePlainRecord(t, v, e, Number(s), b)),
      },
      {
        weight: 1,
        arbitrary: fc.tuple(bytes(0, 50), fc.integer({ min: 0, max: 0xffff })).map(([b, lie]) => {
          const r = encodePlainRecord(23, 0xfefd, 1, 1, b);
          r[11] = lie >>> 8;
          r[12] = lie & 0xff;
          return r;
        }),
      },
      { weight: 1, arbitrary: bytes(0, 20) },
    ),
    { maxLength: 5 },
  )
  .map(concatBytes);

describe("parseRecords on hostile bytes (property)", () => {
  it("never throws and every record lies inside the input, contiguous from its start", () => {
    withinMs(8000, () =>
      fc.assert(
        fc.property(
          fc.oneof({ weight: 1, arbitrary: bytes(0, 200) }, { weight: 3, arbitrary: recordish }),
          fc.nat({ max: 16 }),
          fc.nat({ max: 16 }),
          (raw, pad, tail) => {
            const backing = new Uint8Array(pad + raw.length + tail).fill(0xfe);
            backing.set(raw, pad);
            const input = backing.subarray(pad, pad + raw.length);
            const recs = parseRecords(input);
            let off = input.byteOffset;
            for (const r of recs) {
              expect(r.header.buffer).toBe(backing.buffer);
              expect(r.header.byteOffset).toBe(off);
              expect(r.header.length).toBe(RECORD_HEADER_LENGTH);
              expect(r.body.byteOffset).toBe(off + RECORD_HEADER_LENGTH);
              expect(r.body.length).toBeLessThanOrEqual(MAX_RECORD_BODY);
              expect(r.body.byteOffset + r.body.length).toBeLessThanOrEqual(input.byteOffset + input.length);
              expect(r.version & 0xff00).toBe(0xfe00);
              expect(((r.header[11] as number) << 8) | (r.header[12] as number)).toBe(r.body.length);
              off = r.body.byteOffset + r.body.length;
            }
          },
        ),
        { ...FC, numRuns: 400 },
      ),
    );
  });

  it("concatenated valid DTLS records parse back exactly", () => {
    fc.assert(
      fc.property(
        // any type but tls12_cid (25), whose header is longer by a CID (see the Connection ID tests)
        fc.array(
          fc.tuple(
            u8.filter((t) => t !== 25),
            fc.constantFrom(0xfefd, 0xfeff),
            u16,
            fc.bigInt({ min: 0n, max: 2n ** 48n - 1n }),
            bytes(0, 80),
          ),
          {
            maxLength: 6,
          },
        ),
        (specs) => {
          const dg = concatBytes(specs.map(([t, v, e, s, b]) => encodePlainRecord(t, v, e, Number(s), b)));
          const got = parseRecords(dg).map((r) => [r.type, r.version, r.epoch, r.seq, hex(r.body)]);
          expect(got).toEqual(specs.map(([t, v, e, s, b]) => [t, v, e, Number(s), hex(b)]));
        },
      ),
      FC,
    );
  });
});

// ---- reassembly ------------------------------------------------------------

function fragment(msgType: number, seq: number, body: Uint8Array, start: number, end: number): HandshakeFragment {
  const parsed = parseHandshakeFragments(encodeFragment(msgType, seq, body, start, end - start));
  expect(parsed.length).toBe(1);
  return parsed[0] as HandshakeFragment;
}

interface Msg {
  msgType: number;
  epoch: number;
  body: Uint8Array;
}

/** Fragment [start, end) ranges for a message of length n: a tiling at cut points plus extra (overlapping) ranges and duplicates. */
function fragmentPlan(n: number): fc.Arbitrary<[number, number][]> {
  const cuts = fc.uniqueArray(fc.integer({ min: 1, max: Math.max(1, n - 1) }), { maxLength: Math.min(12, Math.max(0, n - 1)) });
  const extra = fc.array(fc.tuple(fc.integer({ min: 0, max: n }), fc.integer({ min: 0, max: n })), { maxLength: 4 });
  return fc.tuple(cuts, extra, fc.array(fc.nat(), { maxLength: 4 })).map(([cs, ex, dups]) => {
    const points = [0, ...cs.filter((c) => c > 0 && c < n).sort((a, b) => a - b), n];
    const tiles: [number, number][] = [];
    for (let i = 0; i + 1 < points.length; i++) tiles.push([points[i] as number, points[i + 1] as number]);
    if (tiles.length === 0) tiles.push([0, 0]);
    const overl: [number, number][] = ex.map(([a, b]) => [Math.min(a, b), Math.max(a, b)]);
    const dupl: [number, number][] = dups.map((d) => tiles[d % tiles.length] as [number, number]);
    return [...tiles, ...overl, ...dupl];
  });
}

const messages: fc.Arbitrary<Msg[]> = fc.array(fc.record({ msgType: u8, epoch: fc.integer({ min: 0, max: 1 }), body: bytes(0, 200) }), {
  minLength: 1,
  maxLength: 4,
});

describe("Reassembler (examples)", () => {
  const body = Uint8Array.from({ length: 30 }, (_, i) => i);

  it("hands out a message only when complete and only in message_seq order", () => {
    const r = new Reassembler(2);
    expect(r.nextSeq).toBe(2);
    expect(r.add(fragment(2, 3, body, 0, 30), 0)).toBe("buffered"); // seq 3 ahead of 2
    expect(r.pop()).toBeUndefined();
    expect(r.add(fragment(1, 2, body, 10, 30), 0)).toBe("buffered");
    expect(r.pop()).toBeUndefined();
    expect(r.add(fragment(1, 2, body, 0, 10), 0)).toBe("buffered");
    const m2 = r.pop();
    expect(m2).toEqual({ msgType: 1, messageSeq: 2, body, epoch: 0 });
    const m3 = r.pop();
    expect(m3?.messageSeq).toBe(3);
    expect(m3?.msgType).toBe(2);
    expect(r.pop()).toBeUndefined();
    expect(r.nextSeq).toBe(4);
    expect(r.add(fragment(1, 2, body, 0, 30), 0)).toBe("old");
    expect(r.add(fragment(2, 3, body, 0, 5), 0)).toBe("old");
  });

  it("rejects fragments inconsistent with the buffered message: type, length or epoch", () => {
    const r = new Reassembler(0);
    expect(r.add(fragment(1, 0, body, 0, 10), 0)).toBe("buffered");
    expect(r.add(fragment(2, 0, body, 10, 20), 0)).toBe("inconsistent");
    expect(r.add(fragment(1, 0, body.subarray(0, 29), 10, 20), 0)).toBe("inconsistent");
    expect(r.add(fragment(1, 0, body, 10, 20), 1)).toBe("inconsistent");
    expect(r.pop()).toBeUndefined(); // none of those filled anything
    expect(r.add(fragment(1, 0, body, 10, 30), 0)).toBe("buffered");
    expect(r.pop()?.body).toEqual(body);
  });

  it("a zero-length message is complete at once; zero-length fragments of longer messages add nothing", () => {
    const r = new Reassembler(0);
    expect(r.add(fragment(14, 0, new Uint8Array(0), 0, 0), 0)).toBe("buffered");
    expect(r.pop()).toEqual({ msgType: 14, messageSeq: 0, body: new Uint8Array(0), epoch: 0 });
    expect(r.add(fragment(1, 1, body, 5, 5), 0)).toBe("buffered");
    expect(r.add(fragment(1, 1, body, 0, 0), 0)).toBe("buffered");
    expect(r.pop()).toBeUndefined();
  });

  it("ignores messages maxAhead or more beyond the next expected one", () => {
    const r = new Reassembler(0, 4);
    expect(r.add(fragment(1, 4, body, 0, 30), 0)).toBe("ignored");
    expect(r.add(fragment(1, 3, body, 0, 30), 0)).toBe("buffered");
    for (const seq of [0, 1, 2]) expect(r.add(fragment(1, seq, body, 0, 30), 0)).toBe("buffered");
    expect(r.pop()?.messageSeq).toBe(0);
    // the window moved: 4 now fits, 5 does not
    expect(r.add(fragment(1, 5, body, 0, 30), 0)).toBe("ignored");
    expect(r.add(fragment(1, 4, body, 0, 30), 0)).toBe("buffered");
    expect([r.pop(), r.pop(), r.pop(), r.pop(), r.pop()].map((m) => m?.messageSeq)).toEqual([1, 2, 3, 4, undefined]);
  });

  it("keeps what arrived, not what a header declares: maxBytes counts bytes received, duplicates once; pop and clear free them", () => {
    const r = new Reassembler(0, 8, 64);
    expect(r.add(fragment(1, 0, body, 0, 1), 0)).toBe("buffered"); // declares 30, holds 1
    expect(r.add(fragment(1, 1, body, 0, 1), 0)).toBe("buffered");
    expect(r.bytes).toBe(2);
    expect(r.add(fragment(1, 0, body, 0, 1), 0)).toBe("buffered"); // a duplicate is kept once
    expect(r.add(fragment(1, 0, body, 0, 30), 0)).toBe("buffered"); // overlapping: only the 29 new bytes
    expect(r.bytes).toBe(31);
    expect(r.pop()?.body).toEqual(body);
    expect(r.bytes).toBe(1);
    expect(r.add(fragment(1, 2, body, 0, 30), 0)).toBe("buffered");
    expect(r.add(fragment(1, 3, body, 0, 30), 0)).toBe("buffered"); // 61
    expect(r.add(fragment(1, 4, body, 0, 5), 0)).toBe("ignored"); // 66 > 64
    expect(r.add(fragment(1, 4, new Uint8Array(100), 0, 1), 0)).toBe("ignored"); // declares more than maxBytes
    expect(r.add(fragment(1, 4, new Uint8Array(0), 0, 0), 0)).toBe("buffered"); // 0 bytes fit
    r.clear();
    expect(r.bytes).toBe(0);
    expect(r.pop()).toBeUndefined();
    expect(r.add(fragment(1, 5, new Uint8Array(60), 0, 60), 0)).toBe("buffered");
  });

  it("takes every byte from a shared budget and gives it back", () => {
    const budget = new MemoryBudget(40);
    const a = new Reassembler(0, 8, 0x20000, budget);
    const b = new Reassembler(0, 8, 0x20000, budget);
    expect(a.add(fragment(1, 0, body, 0, 30), 0)).toBe("buffered");
    expect(b.add(fragment(1, 0, body, 0, 30), 0)).toBe("ignored"); // 60 > 40
    expect(b.add(fragment(1, 0, body, 0, 10), 0)).toBe("buffered");
    expect(budget.used).toBe(40);
    a.clear();
    expect(budget.used).toBe(10);
    expect(b.add(fragment(1, 0, body, 10, 30), 0)).toBe("buffered");
    expect(b.pop()?.body).toEqual(body);
    expect(budget.used).toBe(0);
  });
});

describe("Reassembler (property)", () => {
  it("any fragmentation (random cuts, order, duplicates, overlaps) reassembles exactly, in order, as soon as complete", () => {
    const scenario = fc.tuple(messages, fc.integer({ min: 0, max: 1000 })).chain(([msgs, firstSeq]) =>
      fc.tuple(
        fc.constant(msgs),
        fc.constant(firstSeq),
        fc.tuple(...msgs.map((m) => fragmentPlan(m.body.length))).chain((plans) => {
          const all: [number, number, number][] = [];
          plans.forEach((p, i) => {
            for (const [s, e] of p) all.push([i, s, e]);
          });
          return fc.shuffledSubarray(all, { minLength: all.length, maxLength: all.length });
        }),
      ),
    );
    fc.assert(
      fc.property(scenario, ([msgs, firstSeq, order]) => {
        const r = new Reassembler(firstSeq);
        const covered = msgs.map((m) => new Uint8Array(m.body.length));
        const seen = msgs.map(() => false);
        let popped = 0;
        const complete = (i: number): boolean => seen[i] === true && (covered[i] as Uint8Array).every((c) => c === 1);
        for (const [i, s, e] of order) {
          const m = msgs[i] as Msg;
          const res = r.add(fragment(m.msgType, firstSeq + i, m.body, s, e), m.epoch);
          expect(res).toBe(i < popped ? "old" : "buffered");
          if (i >= popped) {
            seen[i] = true;
            (covered[i] as Uint8Array).fill(1, s, e);
          }
          while (popped < msgs.length && complete(popped)) {
            const got = r.pop();
            const want = msgs[popped] as Msg;
            expect(got).toBeDefined();
            expect(got?.messageSeq).toBe(firstSeq + popped);
            expect(got?.msgType).toBe(want.msgType);
            expect(got?.epoch).toBe(want.epoch);
            expect(hex(got?.body ?? new Uint8Array(0))).toBe(hex(want.body));
            popped++;
            expect(r.nextSeq).toBe(firstSeq + popped);
          }
          expect(r.pop()).toBeUndefined();
        }
        // every message was fully covered by its tiles, so all came out
        expect(popped).toBe(msgs.length);
      }),
      FC,
    );
  });

  it("respects maxAhead and maxBytes against a model", () => {
    type Op = { kind: "add"; ahead: number; len: number; type: number; epoch: number } | { kind: "pop" };
    const op: fc.Arbitrary<Op> = fc.oneof(
      {
        weight: 4,
        arbitrary: fc.record({
          kind: fc.constant("add" as const),
          ahead: fc.integer({ min: -2, max: 12 }),
          len: fc.oneof(fc.constantFrom(0, 10, 60), fc.integer({ min: 0, max: 120 })),
          type: fc.integer({ min: 1, max: 2 }),
          epoch: fc.integer({ min: 0, max: 1 }),
        }),
      },
      { weight: 1, arbitrary: fc.constant({ kind: "pop" as const }) },
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 0, max: 400 }), fc.array(op, { maxLength: 60 }), (maxAhead, maxBytes, ops) => {
        const r = new Reassembler(10, maxAhead, maxBytes);
        // model
        let next = 10;
        const pending = new Map<number, { len: number; type: number; epoch: number }>();
        let used = 0;
        for (const o of ops) {
          if (o.kind === "pop") {
            const p = pending.get(next);
            const got = r.pop();
            if (p === undefined) {
              expect(got).toBeUndefined();
            } else {
              // every add below is a whole-message fragment, so a pending message is complete
              expect(got?.messageSeq).toBe(next);
              expect(got?.body.length).toBe(p.len);
              pending.delete(next);
              used -= p.len;
              next++;
            }
            continue;
          }
          const seq = next + o.ahead;
          if (seq < 0) continue;
          let want: AddResult;
          const p = pending.get(seq);
          if (seq < next) want = "old";
          else if (seq >= next + maxAhead) want = "ignored";
          else if (p === undefined) {
            if (used + o.len > maxBytes) want = "ignored";
            else {
              want = "buffered";
              pending.set(seq, { len: o.len, type: o.type, epoch: o.epoch });
              used += o.len;
            }
          } else if (p.type !== o.type || p.len !== o.len || p.epoch !== o.epoch) want = "inconsistent";
          else want = "buffered";
          const body = new Uint8Array(o.len).fill(seq & 0xff);
          expect(r.add(fragment(o.type, seq, body, 0, o.len), o.epoch)).toBe(want);
          // memory bound: what the model holds never exceeds the limits
          expect(used).toBeLessThanOrEqual(maxBytes);
          for (const s of pending.keys()) expect(s - next).toBeLessThan(maxAhead);
        }
      }),
      FC,
    );
  });
});
