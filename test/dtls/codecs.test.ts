import { describe, expect, it } from "vitest";
import { ContentType, HandshakeType, MAX_PLAINTEXT, RECORD_HEADER_LENGTH } from "../../src/dtls/constants.ts";
import {
  encodeFragment,
  encodeHandshake,
  MAX_HANDSHAKE_MESSAGE,
  parseHandshakeFragments,
  type HandshakeFragment,
} from "../../src/dtls/handshake-codec.ts";
import {
  decodeClientHello,
  decodeEmpty,
  decodeFinished,
  decodeHelloVerifyRequest,
  decodePskIdentity,
  decodeRenegotiationInfo,
  decodeServerHello,
  EMPTY,
  EMPTY_RENEGOTIATION_INFO,
  encodeClientHello,
  encodeHelloVerifyRequest,
  encodePskIdentity,
  encodeServerHello,
  findExtension,
  type ClientHello,
  type Extension,
  type ServerHello,
} from "../../src/dtls/messages.ts";
import { encodePlainRecord, MAX_RECORD_BODY, parseRecords, writeRecordHeader, writeSeq48, type RawRecord } from "../../src/dtls/record.ts";
import { concatBytes, fromHex } from "../../src/util/bytes.ts";
import { DecodeError } from "../../src/util/errors.ts";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const seqBytes = (n: number, start = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
const withByte = (b: Uint8Array, extra = 0x00): Uint8Array => concatBytes([b, new Uint8Array([extra])]);

/**
 * Every strict prefix of `enc` must make `decode` throw DecodeError, except the
 * prefix lengths in `allowed`, which are themselves valid encodings (checked by
 * the callback).
 */
function expectEveryTruncationRejected<T>(
  enc: Uint8Array,
  decode: (b: Uint8Array) => T,
  allowed: ReadonlyMap<number, (v: T) => void> = new Map(),
): void {
  let checkedAllowed = 0;
  for (let n = 0; n < enc.length; n++) {
    // a fresh copy so the decoder cannot see the rest of the buffer
    const prefix = enc.slice(0, n);
    const ok = allowed.get(n);
    if (ok !== undefined) {
      ok(decode(prefix));
      checkedAllowed++;
      continue;
    }
    let threw: unknown;
    try {
      decode(prefix);
    } catch (e) {
      threw = e;
    }
    expect(threw, `prefix of ${n}/${enc.length} bytes must throw DecodeError`).toBeInstanceOf(DecodeError);
  }
  expect(checkedAllowed).toBe(allowed.size);
}

function expectTrailingRejected<T>(enc: Uint8Array, decode: (b: Uint8Array) => T): void {
  for (const extra of [0x00, 0x01, 0xff]) expect(() => decode(withByte(enc, extra))).toThrow(DecodeError);
}

const RANDOM = seqBytes(32, 0xa0);
const COOKIE = seqBytes(16, 0x10);

const CH_NO_EXT: ClientHello = {
  version: 0xfefd,
  random: RANDOM,
  sessionId: EMPTY,
  cookie: COOKIE,
  cipherSuites: [0xc0a8, 0x00a8, 0x00ff],
  compressionMethods: new Uint8Array([0]),
  extensions: undefined,
};
const CH_NO_EXT_HEX = "fefd" + hex(RANDOM) + "00" + "10" + hex(COOKIE) + "0006" + "c0a800a800ff" + "01" + "00";

const EXTS: Extension[] = [
  { type: 23, data: EMPTY },
  { type: 0xff01, data: new Uint8Array([0]) },
  { type: 10, data: fromHex("0004001d0017") },
];
const EXTS_HEX = "0013" + "0017" + "0000" + "ff01" + "0001" + "00" + "000a" + "0006" + "0004001d0017";
const CH_EXT: ClientHello = { ...CH_NO_EXT, sessionId: seqBytes(32, 0x40), extensions: EXTS };
const CH_EXT_PREFIX_HEX = "fefd" + hex(RANDOM) + "20" + hex(seqBytes(32, 0x40)) + "10" + hex(COOKIE) + "0006" + "c0a800a800ff" + "01" + "00";
const CH_EXT_HEX = CH_EXT_PREFIX_HEX + EXTS_HEX;

describe("ClientHello codec", () => {
  it("encodes a hello without extensions byte-exactly and decodes it back with extensions === undefined", () => {
    const enc = encodeClientHello(CH_NO_EXT);
    expect(hex(enc)).toBe(CH_NO_EXT_HEX);
    const dec = decodeClientHello(enc);
    expect(dec.extensions).toBeUndefined();
    expect(dec).toEqual(CH_NO_EXT);
    expect(hex(dec.random)).toBe(hex(RANDOM));
    expect(hex(dec.cookie)).toBe(hex(COOKIE));
    expect(dec.cipherSuites).toEqual([0xc0a8, 0x00a8, 0x00ff]);
  });

  it("encodes a hello with an extensions block byte-exactly and decodes it back", () => {
    const enc = encodeClientHello(CH_EXT);
    expect(hex(enc)).toBe(CH_EXT_HEX);
    const dec = decodeClientHello(enc);
    expect(dec).toEqual(CH_EXT);
    expect(dec.extensions?.map((e) => [e.type, hex(e.data)])).toEqual([
      [23, ""],
      [0xff01, "00"],
      [10, "0004001d0017"],
    ]);
    expect(hex(encodeClientHello(dec))).toBe(CH_EXT_HEX);
  });

  it("an empty extensions block (00 00) decodes to [] and is distinct from no block", () => {
    const enc = encodeClientHello({ ...CH_NO_EXT, extensions: [] });
    expect(hex(enc)).toBe(CH_NO_EXT_HEX + "0000");
    expect(decodeClientHello(enc).extensions).toEqual([]);
    expect(decodeClientHello(fromHex(CH_NO_EXT_HEX)).extensions).toBeUndefined();
  });

  it("rejects truncation at every offset (no extensions)", () => {
    expectEveryTruncationRejected(encodeClientHello(CH_NO_EXT), decodeClientHello);
  });

  it("rejects truncation at every offset (with extensions), except exactly before the block", () => {
    const enc = encodeClientHello(CH_EXT);
    const boundary = CH_EXT_PREFIX_HEX.length / 2;
    // Cutting off the whole extensions block leaves a valid extension-less hello.
    expectEveryTruncationRejected(
      enc,
      decodeClientHello,
      new Map([[boundary, (v: ClientHello) => expect(v).toEqual({ ...CH_EXT, extensions: undefined })]]),
    );
  });

  it("rejects one trailing byte", () => {
    expectTrailingRejected(encodeClientHello(CH_NO_EXT), decodeClientHello);
    expectTrailingRejected(encodeClientHello(CH_EXT), decodeClientHello);
    expectTrailingRejected(encodeClientHello({ ...CH_NO_EXT, extensions: [] }), decodeClientHello);
  });

  it("rejects duplicate extensions", () => {
    const enc = encodeClientHello({
      ...CH_NO_EXT,
      extensions: [
        { type: 23, data: EMPTY },
        { type: 23, data: EMPTY },
      ],
    });
    expect(() => decodeClientHello(enc)).toThrow(DecodeError);
    expect(() => decodeClientHello(enc)).toThrow(/duplicate extension 23/);
    const enc2 = encodeClientHello({
      ...CH_NO_EXT,
      extensions: [
        { type: 0xff01, data: new Uint8Array([0]) },
        { type: 10, data: EMPTY },
        { type: 0xff01, data: EMPTY },
      ],
    });
    expect(() => decodeClientHello(enc2)).toThrow(DecodeError);
  });

  it("accepts cookies of 0 and 255 bytes", () => {
    for (const n of [0, 1, 32, 255]) {
      const h = { ...CH_NO_EXT, cookie: seqBytes(n, 7) };
      const dec = decodeClientHello(encodeClientHello(h));
      expect(hex(dec.cookie)).toBe(hex(h.cookie));
      expect(dec).toEqual(h);
    }
  });

  it("accepts session_id of 32 bytes and rejects 33", () => {
    const ok = { ...CH_NO_EXT, sessionId: seqBytes(32) };
    expect(decodeClientHello(encodeClientHello(ok))).toEqual(ok);
    const bad = encodeClientHello({ ...CH_NO_EXT, sessionId: seqBytes(33) });
    expect(() => decodeClientHello(bad)).toThrow(DecodeError);
    expect(() => decodeClientHello(bad)).toThrow(/session_id length 33/);
  });

  it("rejects empty cipher_suites", () => {
    const enc = encodeClientHello({ ...CH_NO_EXT, cipherSuites: [] });
    expect(hex(enc)).toContain("0000" + "0100");
    expect(() => decodeClientHello(enc)).toThrow(DecodeError);
  });

  it("rejects an odd cipher_suites length", () => {
    const odd = "fefd" + hex(RANDOM) + "00" + "00" + "0003" + "c0a800" + "0100";
    expect(() => decodeClientHello(fromHex(odd))).toThrow(DecodeError);
    expect(() => decodeClientHello(fromHex(odd))).toThrow(/odd cipher_suites/);
    const one = "fefd" + hex(RANDOM) + "00" + "00" + "0001" + "c0" + "0100";
    expect(() => decodeClientHello(fromHex(one))).toThrow(DecodeError);
  });

  it("rejects empty compression_methods", () => {
    const enc = encodeClientHello({ ...CH_NO_EXT, compressionMethods: EMPTY });
    expect(() => decodeClientHello(enc)).toThrow(DecodeError);
  });

  it("rejects an extensions block whose contents do not parse exactly", () => {
    const base = CH_NO_EXT_HEX;
    // block of 3 bytes: a type and a lone length byte
    expect(() => decodeClientHello(fromHex(base + "0003" + "0017" + "00"))).toThrow(DecodeError);
    // extension data length running past the block end (but not past the hello)
    expect(() => decodeClientHello(fromHex(base + "0004" + "0017" + "0001" + "aa"))).toThrow(DecodeError);
    // block length longer than what follows
    expect(() => decodeClientHello(fromHex(base + "0005" + "0017" + "0000"))).toThrow(DecodeError);
    // a lone byte where the block length should be
    expect(() => decodeClientHello(fromHex(base + "00"))).toThrow(DecodeError);
  });

  it("decoded fields are views of the input (random is exactly 32 bytes)", () => {
    const enc = encodeClientHello(CH_EXT);
    const dec = decodeClientHello(enc);
    expect(dec.random.length).toBe(32);
    expect(dec.random.buffer).toBe(enc.buffer);
    expect(dec.sessionId.length).toBe(32);
  });

  it("findExtension finds by type or returns undefined", () => {
    expect(findExtension(EXTS, 10)?.data).toBe(EXTS[2]?.data);
    expect(findExtension(EXTS, 11)).toBeUndefined();
    expect(findExtension(undefined, 10)).toBeUndefined();
  });
});

const SH: ServerHello = {
  version: 0xfefd,
  random: seqBytes(32, 0x60),
  sessionId: seqBytes(4, 0x90),
  cipherSuite: 0xccab,
  compressionMethod: 0,
  extensions: [
    { type: 0xff01, data: new Uint8Array([0]) },
    { type: 23, data: EMPTY },
  ],
};
const SH_PREFIX_HEX = "fefd" + hex(seqBytes(32, 0x60)) + "04" + "90919293" + "ccab" + "00";
const SH_HEX = SH_PREFIX_HEX + "0009" + "ff01" + "0001" + "00" + "0017" + "0000";

describe("ServerHello codec", () => {
  it("round-trips byte-exactly with extensions", () => {
    const enc = encodeServerHello(SH);
    expect(hex(enc)).toBe(SH_HEX);
    expect(decodeServerHello(enc)).toEqual(SH);
  });

  it("round-trips without an extensions block (extensions === undefined)", () => {
    const h = { ...SH, extensions: undefined };
    const enc = encodeServerHello(h);
    expect(hex(enc)).toBe(SH_PREFIX_HEX);
    const dec = decodeServerHello(enc);
    expect(dec.extensions).toBeUndefined();
    expect(dec).toEqual(h);
  });

  it("rejects truncation at every offset, except exactly before the extensions block", () => {
    expectEveryTruncationRejected(
      encodeServerHello(SH),
      decodeServerHello,
      new Map([[SH_PREFIX_HEX.length / 2, (v: ServerHello) => expect(v).toEqual({ ...SH, extensions: undefined })]]),
    );
    expectEveryTruncationRejected(encodeServerHello({ ...SH, extensions: undefined }), decodeServerHello);
  });

  it("rejects one trailing byte", () => {
    expectTrailingRejected(encodeServerHello(SH), decodeServerHello);
    expectTrailingRejected(encodeServerHello({ ...SH, extensions: undefined }), decodeServerHello);
  });

  it("rejects duplicate extensions and session_id > 32", () => {
    expect(() =>
      decodeServerHello(
        encodeServerHello({
          ...SH,
          extensions: [
            { type: 5, data: EMPTY },
            { type: 5, data: EMPTY },
          ],
        }),
      ),
    ).toThrow(DecodeError);
    expect(decodeServerHello(encodeServerHello({ ...SH, sessionId: seqBytes(32) })).sessionId.length).toBe(32);
    expect(() => decodeServerHello(encodeServerHello({ ...SH, sessionId: seqBytes(33) }))).toThrow(DecodeError);
  });
});

describe("HelloVerifyRequest codec", () => {
  it("round-trips byte-exactly", () => {
    const h = { version: 0xfeff, cookie: seqBytes(20, 0x33) };
    const enc = encodeHelloVerifyRequest(h);
    expect(hex(enc)).toBe("feff" + "14" + hex(seqBytes(20, 0x33)));
    expect(decodeHelloVerifyRequest(enc)).toEqual(h);
  });

  it("accepts cookies of 0 and 255 bytes", () => {
    for (const n of [0, 255]) {
      const h = { version: 0xfefd, cookie: seqBytes(n) };
      expect(decodeHelloVerifyRequest(encodeHelloVerifyRequest(h))).toEqual(h);
    }
    expect(() => encodeHelloVerifyRequest({ version: 0xfefd, cookie: seqBytes(256) })).toThrow(RangeError);
  });

  it("rejects truncation at every offset and a trailing byte", () => {
    const enc = encodeHelloVerifyRequest({ version: 0xfefd, cookie: seqBytes(8) });
    expectEveryTruncationRejected(enc, decodeHelloVerifyRequest);
    expectTrailingRejected(enc, decodeHelloVerifyRequest);
    const empty = encodeHelloVerifyRequest({ version: 0xfefd, cookie: EMPTY });
    expectEveryTruncationRejected(empty, decodeHelloVerifyRequest);
    expectTrailingRejected(empty, decodeHelloVerifyRequest);
  });
});

describe("PSK identity (ServerKeyExchange hint / ClientKeyExchange identity)", () => {
  const id = new TextEncoder().encode("device-1");

  it("round-trips byte-exactly", () => {
    const enc = encodePskIdentity(id);
    expect(hex(enc)).toBe("0008" + Buffer.from("device-1").toString("hex"));
    expect(hex(decodePskIdentity(enc, "psk_identity"))).toBe(hex(id));
    expect(hex(encodePskIdentity(EMPTY))).toBe("0000");
    expect(decodePskIdentity(fromHex("0000"), "hint").length).toBe(0);
  });

  it("round-trips the maximum 0xffff-byte identity", () => {
    const big = seqBytes(0xffff);
    const dec = decodePskIdentity(encodePskIdentity(big), "psk_identity");
    expect(dec.length).toBe(0xffff);
    expect(dec[0xfffe]).toBe(0xfe);
  });

  it("rejects truncation at every offset and a trailing byte", () => {
    const dec = (b: Uint8Array): Uint8Array => decodePskIdentity(b, "psk_identity");
    expectEveryTruncationRejected(encodePskIdentity(id), dec);
    expectTrailingRejected(encodePskIdentity(id), dec);
    expectTrailingRejected(encodePskIdentity(EMPTY), dec);
  });
});

describe("empty bodies, Finished, renegotiation_info", () => {
  it("decodeEmpty accepts only an empty body", () => {
    expect(() => decodeEmpty(EMPTY, "ServerHelloDone")).not.toThrow();
    expectTrailingRejected(EMPTY, (b) => decodeEmpty(b, "ServerHelloDone"));
    expect(() => decodeEmpty(new Uint8Array(5), "ServerHelloDone")).toThrow(/ServerHelloDone must be empty, has 5 bytes/);
  });

  it("decodeFinished accepts exactly 12 bytes", () => {
    const vd = seqBytes(12, 0x51);
    expect(hex(decodeFinished(vd))).toBe(hex(vd));
    expectEveryTruncationRejected(vd, decodeFinished);
    expectTrailingRejected(vd, decodeFinished);
  });

  it("renegotiation_info round-trips and rejects truncation / trailing bytes", () => {
    expect(hex(EMPTY_RENEGOTIATION_INFO)).toBe("00");
    expect(decodeRenegotiationInfo(EMPTY_RENEGOTIATION_INFO).length).toBe(0);
    const vd = seqBytes(12, 0x70);
    const enc = concatBytes([new Uint8Array([12]), vd]);
    expect(hex(decodeRenegotiationInfo(enc))).toBe(hex(vd));
    expectEveryTruncationRejected(enc, decodeRenegotiationInfo);
    expectTrailingRejected(enc, decodeRenegotiationInfo);
    expectTrailingRejected(EMPTY_RENEGOTIATION_INFO, decodeRenegotiationInfo);
  });
});

describe("handshake fragments", () => {
  it("encodeHandshake writes an unfragmented 12-byte header byte-exactly", () => {
    const body = fromHex("aabbcc");
    expect(hex(encodeHandshake(HandshakeType.client_hello, 5, body))).toBe("01" + "000003" + "0005" + "000000" + "000003" + "aabbcc");
    expect(hex(encodeHandshake(HandshakeType.server_hello_done, 0xffff, EMPTY))).toBe("0e" + "000000" + "ffff" + "000000" + "000000");
  });

  it("encodeFragment writes the whole-message length, offset and fragment length", () => {
    const body = seqBytes(0x10203);
    const f = encodeFragment(HandshakeType.finished, 0x0102, body, 0x10000, 0x203);
    expect(hex(f.subarray(0, 12))).toBe("14" + "010203" + "0102" + "010000" + "000203");
    expect(f.length).toBe(12 + 0x203);
    expect(hex(f.subarray(12))).toBe(hex(body.subarray(0x10000, 0x10203)));
  });

  const body = seqBytes(40, 0x80);
  const frags = [
    encodeFragment(HandshakeType.client_hello, 3, body, 0, 10),
    encodeFragment(HandshakeType.client_hello, 3, body, 10, 0),
    encodeFragment(HandshakeType.client_hello, 3, body, 10, 30),
    encodeHandshake(HandshakeType.server_hello_done, 4, EMPTY),
  ];
  const record = concatBytes(frags);
  const expected: Omit<HandshakeFragment, "body">[] = [
    { msgType: 1, length: 40, messageSeq: 3, fragmentOffset: 0, fragmentLength: 10 },
    { msgType: 1, length: 40, messageSeq: 3, fragmentOffset: 10, fragmentLength: 0 },
    { msgType: 1, length: 40, messageSeq: 3, fragmentOffset: 10, fragmentLength: 30 },
    { msgType: 14, length: 0, messageSeq: 4, fragmentOffset: 0, fragmentLength: 0 },
  ];
  const bodies = [hex(body.subarray(0, 10)), "", hex(body.subarray(10)), ""];
  const strip = (f: HandshakeFragment): Omit<HandshakeFragment, "body"> => {
    const { body: _b, ...rest } = f;
    return rest;
  };

  it("parses several fragments of a record and round-trips them", () => {
    const parsed = parseHandshakeFragments(record);
    expect(parsed.map(strip)).toEqual(expected);
    expect(parsed.map((f) => hex(f.body))).toEqual(bodies);
    // body is a view into the record
    expect(parsed[0]?.body.buffer).toBe(record.buffer);
    // re-encoding each parsed fragment gives back the record
    const re = concatBytes(
      parsed.map((f) => {
        // encodeFragment takes the whole message body: rebuild it from the original
        const whole = new Uint8Array(f.length);
        whole.set(f.body, f.fragmentOffset);
        return encodeFragment(f.msgType, f.messageSeq, whole, f.fragmentOffset, f.fragmentLength);
      }),
    );
    expect(hex(re)).toBe(hex(record));
    expect(parseHandshakeFragments(EMPTY)).toEqual([]);
  });

  it("truncation: at fragment boundaries returns the complete fragments, anywhere else throws DecodeError", () => {
    const boundaries = new Map<number, number>();
    let off = 0;
    boundaries.set(0, 0);
    frags.forEach((f, i) => {
      off += f.length;
      boundaries.set(off, i + 1);
    });
    for (let n = 0; n < record.length; n++) {
      const prefix = record.slice(0, n);
      const count = boundaries.get(n);
      if (count !== undefined) {
        const got = parseHandshakeFragments(prefix);
        expect(got.map(strip)).toEqual(expected.slice(0, count));
      } else {
        expect(() => parseHandshakeFragments(prefix), `prefix ${n}`).toThrow(DecodeError);
      }
    }
  });

  it("rejects one trailing byte (a partial header)", () => {
    expectTrailingRejected(record, parseHandshakeFragments);
    expectTrailingRejected(frags[0] as Uint8Array, parseHandshakeFragments);
  });

  it("rejects a fragment extending beyond the message length", () => {
    // length 10, offset 5, fragment_length 6
    const bad = fromHex("01" + "00000a" + "0000" + "000005" + "000006" + "aabbccddeeff");
    expect(() => parseHandshakeFragments(bad)).toThrow(DecodeError);
    // offset == length with a zero-length fragment is fine
    const edge = fromHex("01" + "00000a" + "0000" + "00000a" + "000000");
    expect(parseHandshakeFragments(edge).map(strip)).toEqual([{ msgType: 1, length: 10, messageSeq: 0, fragmentOffset: 10, fragmentLength: 0 }]);
    // offset + length overflowing 24 bits is still caught
    const big = fromHex("01" + "ffffff" + "0000" + "ffffff" + "000001" + "00");
    expect(() => parseHandshakeFragments(big)).toThrow(DecodeError);
  });

  it("rejects messages longer than MAX_HANDSHAKE_MESSAGE, accepts exactly the maximum", () => {
    const lenHex = (n: number): string => n.toString(16).padStart(6, "0");
    const at = fromHex("0b" + lenHex(MAX_HANDSHAKE_MESSAGE) + "0000" + "000000" + "000000");
    expect(parseHandshakeFragments(at)[0]?.length).toBe(MAX_HANDSHAKE_MESSAGE);
    const over = fromHex("0b" + lenHex(MAX_HANDSHAKE_MESSAGE + 1) + "0000" + "000000" + "000000");
    expect(() => parseHandshakeFragments(over)).toThrow(DecodeError);
  });
});

describe("records", () => {
  it("encodePlainRecord writes the 13-byte header byte-exactly", () => {
    const rec = encodePlainRecord(ContentType.handshake, 0xfefd, 0, 1, fromHex("010203"));
    expect(hex(rec)).toBe("16" + "fefd" + "0000" + "000000000001" + "0003" + "010203");
    const rec2 = encodePlainRecord(ContentType.alert, 0xfeff, 0xabcd, 281474976710655, EMPTY);
    expect(hex(rec2)).toBe("15" + "feff" + "abcd" + "ffffffffffff" + "0000");
  });

  it("writeRecordHeader writes at an offset; writeSeq48 is exact across the 2^32 boundary", () => {
    const out = new Uint8Array(16).fill(0xee);
    writeRecordHeader(out, 2, 23, 0xfefd, 1, 0x1_0000_0002, 0x1234);
    expect(hex(out)).toBe("eeee" + "17" + "fefd" + "0001" + "000100000002" + "1234" + "ee");
    const s = new Uint8Array(6);
    for (const [v, h] of [
      [0, "000000000000"],
      [0xffff_ffff, "0000ffffffff"],
      [0x1_0000_0000, "000100000000"],
      [2 ** 48 - 1, "ffffffffffff"],
    ] as const) {
      writeSeq48(s, 0, v);
      expect(hex(s)).toBe(h);
    }
  });

  const r1 = encodePlainRecord(ContentType.handshake, 0xfefd, 0, 0, seqBytes(5, 1));
  const r2 = encodePlainRecord(ContentType.change_cipher_spec, 0xfefd, 0, 1, fromHex("01"));
  const r3 = encodePlainRecord(ContentType.application_data, 0xfeff, 1, 2 ** 48 - 1, EMPTY);
  const r4 = encodePlainRecord(ContentType.alert, 0xfefd, 0xffff, 0x1_0000_0000, seqBytes(20, 9));
  const parts = [r1, r2, r3, r4];
  const datagram = concatBytes(parts);
  const want = [
    { type: 22, version: 0xfefd, epoch: 0, seq: 0, body: hex(seqBytes(5, 1)) },
    { type: 20, version: 0xfefd, epoch: 0, seq: 1, body: "01" },
    { type: 23, version: 0xfeff, epoch: 1, seq: 2 ** 48 - 1, body: "" },
    { type: 21, version: 0xfefd, epoch: 0xffff, seq: 0x1_0000_0000, body: hex(seqBytes(20, 9)) },
  ];
  const view = (r: RawRecord) => ({ type: r.type, version: r.version, epoch: r.epoch, seq: r.seq, body: hex(r.body) });

  /** Every record's header and body are views inside `input` (same buffer, within its byte range). */
  function expectWithin(recs: readonly RawRecord[], input: Uint8Array): void {
    for (const r of recs) {
      for (const v of [r.header, r.body]) {
        expect(v.buffer).toBe(input.buffer);
        expect(v.byteOffset).toBeGreaterThanOrEqual(input.byteOffset);
        expect(v.byteOffset + v.length).toBeLessThanOrEqual(input.byteOffset + input.length);
      }
      expect(r.header.length).toBe(RECORD_HEADER_LENGTH);
      expect(r.body.byteOffset).toBe(r.header.byteOffset + RECORD_HEADER_LENGTH);
    }
  }

  it("parseRecords splits a datagram into records (round trip)", () => {
    const recs = parseRecords(datagram);
    expect(recs.map(view)).toEqual(want);
    expectWithin(recs, datagram);
    expect(hex(concatBytes(recs.map((r) => concatBytes([r.header, r.body]))))).toBe(hex(datagram));
    expect(parseRecords(EMPTY)).toEqual([]);
  });

  it("truncation at every offset returns exactly the complete records, none extending past the input", () => {
    // Prefixes are views into a larger buffer, so an overrun would be observable.
    const ends: number[] = [];
    let off = 0;
    for (const p of parts) {
      off += p.length;
      ends.push(off);
    }
    for (let n = 0; n < datagram.length; n++) {
      const prefix = datagram.subarray(0, n);
      const recs = parseRecords(prefix);
      const complete = ends.filter((e) => e <= n).length;
      expect(recs.map(view), `prefix ${n}`).toEqual(want.slice(0, complete));
      expectWithin(recs, prefix);
    }
    // also truncation at the front of a view with a non-zero byteOffset
    const mid = datagram.subarray(r1.length, datagram.length - 1);
    const recs = parseRecords(mid);
    expect(recs.map(view)).toEqual(want.slice(1, 3));
    expectWithin(recs, mid);
  });

  it("a trailing byte (less than a header) is ignored, not parsed", () => {
    for (const extra of [0x00, 0x16, 0xff]) {
      const recs = parseRecords(withByte(datagram, extra));
      expect(recs.map(view)).toEqual(want);
    }
    // up to 12 trailing bytes are ignored too
    expect(parseRecords(concatBytes([r2, new Uint8Array(12).fill(0x16)])).map(view)).toEqual([want[1]]);
  });

  it("stops at a record with a non-DTLS version but keeps the ones before", () => {
    const tls = encodePlainRecord(22, 0x0303, 0, 0, fromHex("aa"));
    expect(parseRecords(concatBytes([r1, tls, r2])).map(view)).toEqual([want[0]]);
    expect(parseRecords(tls)).toEqual([]);
    // any 0xfeXX version passes the framing check
    expect(parseRecords(encodePlainRecord(22, 0xfe00, 0, 0, EMPTY)).length).toBe(1);
  });

  it("stops at an oversized record, accepts one of exactly MAX_RECORD_BODY", () => {
    expect(MAX_RECORD_BODY).toBe(MAX_PLAINTEXT + 2048);
    const max = encodePlainRecord(23, 0xfefd, 1, 7, new Uint8Array(MAX_RECORD_BODY));
    const got = parseRecords(concatBytes([max, r2]));
    expect(got.length).toBe(2);
    expect(got[0]?.body.length).toBe(MAX_RECORD_BODY);
    const over = encodePlainRecord(23, 0xfefd, 1, 7, new Uint8Array(MAX_RECORD_BODY + 1));
    expect(parseRecords(concatBytes([r1, over, r2])).map(view)).toEqual([want[0]]);
  });

  it("a record whose length field runs past the datagram ends parsing", () => {
    const lying = new Uint8Array(r4);
    lying[12] = (lying[12] as number) + 1; // claims one byte more than present
    expect(parseRecords(concatBytes([r1, lying])).map(view)).toEqual([want[0]]);
  });
});
