/**
 * Mutations of a DTLS client's datagrams for the server fuzz tests: bytes,
 * record and handshake header fields, ClientHello extensions, records dropped,
 * duplicated, swapped, datagrams truncated or sent twice.
 */
import fc from "fast-check";
import { recordRanges } from "./dtls-net.ts";

export const OPS = [
  "flip byte",
  "set byte",
  "truncate",
  "record type",
  "record version",
  "record epoch",
  "record sequence",
  "record length",
  "handshake type",
  "handshake length",
  "message_seq",
  "fragment offset",
  "fragment length",
  "drop record",
  "duplicate record",
  "swap records",
  "insert bytes",
  "duplicate datagram",
  "extensions byte",
  "extension length",
] as const;
export type Op = (typeof OPS)[number];

export interface Mutation {
  /** which datagram of the client: 0 first ClientHello, 1 with cookie, 2.. flight 3 (and on), then data */
  readonly stage: number;
  readonly op: Op;
  /** random numbers the op picks positions and values from */
  readonly a: number;
  readonly b: number;
  readonly v: number;
}

const EDGE16 = [0, 1, 0xfefd, 0xfeff, 0x0303, 0x7fff, 0xffff];
const pick = <T>(xs: readonly T[], n: number): T => xs[n % xs.length]!;

function put(d: Uint8Array, at: number, width: number, value: number): void {
  for (let i = width - 1; i >= 0; i--) {
    if (at + i < d.length) d[at + i] = value & 0xff;
    value = Math.floor(value / 256);
  }
}

/** The datagram after the mutation (several datagrams for a duplicate). */
export function mutate(d: Uint8Array, m: Mutation): Uint8Array[] {
  const recs = recordRanges(d);
  const r = recs.length > 0 ? pick(recs, m.a) : ([0, d.length] as [number, number]);
  const out = new Uint8Array(d);
  const hs = r[0] + 13; // handshake header, when the record is an epoch-0 handshake record
  const edge = (width: number): number => (m.v % 3 === 0 ? pick(EDGE16, m.v) : m.v % 2 ** (8 * Math.min(width, 4)));
  switch (m.op) {
    case "flip byte": {
      const i = m.b % out.length;
      out[i] = out[i]! ^ (1 + (m.v % 255));
      return [out];
    }
    case "set byte":
      out[m.b % out.length] = m.v & 0xff;
      return [out];
    case "truncate":
      return [out.subarray(0, m.b % out.length)];
    case "record type":
      out[r[0]] = pick([20, 21, 22, 23, 24, 25, 0, 255], m.v);
      return [out];
    case "record version":
      put(out, r[0] + 1, 2, edge(2));
      return [out];
    case "record epoch":
      put(out, r[0] + 3, 2, pick([0, 1, 2, 0xffff], m.v));
      return [out];
    case "record sequence":
      put(out, r[0] + 5, 6, pick([0, 1, 2, 63, 64, 2 ** 48 - 1, m.v], m.b));
      return [out];
    case "record length":
      put(out, r[0] + 11, 2, edge(2));
      return [out];
    case "handshake type":
      out[hs] = pick([0, 1, 2, 3, 11, 12, 13, 14, 15, 16, 20, 255], m.v);
      return [out];
    case "handshake length":
      put(out, hs + 1, 3, pick([0, 1, 0xffff, 0x10000, 0xffffff, m.v & 0xffffff], m.b));
      return [out];
    case "message_seq":
      put(out, hs + 4, 2, edge(2));
      return [out];
    case "fragment offset":
      put(out, hs + 6, 3, pick([0, 1, 0xffff, 0xffffff, m.v & 0xffffff], m.b));
      return [out];
    case "fragment length":
      put(out, hs + 9, 3, pick([0, 1, 0xffff, 0xffffff, m.v & 0xffffff], m.b));
      return [out];
    case "drop record":
      return [new Uint8Array([...d.subarray(0, r[0]), ...d.subarray(r[1])])];
    case "duplicate record":
      return [new Uint8Array([...d.subarray(0, r[1]), ...d.subarray(r[0], r[1]), ...d.subarray(r[1])])];
    case "swap records": {
      if (recs.length < 2) return [out];
      const s = pick(recs, m.b);
      const [x, y] = r[0] < s[0] ? [r, s] : [s, r];
      if (x === y) return [out];
      return [
        new Uint8Array([
          ...d.subarray(0, x[0]),
          ...d.subarray(y[0], y[1]),
          ...d.subarray(x[1], y[0]),
          ...d.subarray(x[0], x[1]),
          ...d.subarray(y[1]),
        ]),
      ];
    }
    case "insert bytes": {
      const at = m.b % (d.length + 1);
      const junk = Array.from({ length: 1 + (m.v % 40) }, (_, i) => (m.v * (i + 7)) & 0xff);
      return [new Uint8Array([...d.subarray(0, at), ...junk, ...d.subarray(at)])];
    }
    case "duplicate datagram":
      return [out, new Uint8Array(d)];
    case "extensions byte":
    case "extension length": {
      const ext = clientHelloExtensions(out, r[0]);
      if (ext === undefined) return [out];
      const [start, end] = ext;
      if (m.op === "extensions byte") out[start + (m.b % (end - start))] = m.v & 0xff;
      else {
        // the block's length, or the length of the extension at a random index
        const lengths = [start - 2];
        for (let at = start; at + 4 <= end; at += 4 + ((out[at + 2]! << 8) | out[at + 3]!)) lengths.push(at + 2);
        put(out, pick(lengths, m.b), 2, edge(2));
      }
      return [out];
    }
  }
}

/** [start, end) of the extensions in a ClientHello record at `rec` (after the block's 2-byte length), if any. */
export function clientHelloExtensions(d: Uint8Array, rec: number): [number, number] | undefined {
  if (d[rec] !== 22 || d[rec + 13] !== 1) return undefined;
  let at = rec + 13 + 12 + 2 + 32; // record header, handshake header, version, random
  const skip = (lenBytes: number): void => {
    let n = 0;
    for (let i = 0; i < lenBytes; i++) n = n * 256 + (d[at + i] ?? 0);
    at += lenBytes + n;
  };
  skip(1); // session id
  skip(1); // cookie
  skip(2); // suites
  skip(1); // compression methods
  if (at + 2 > d.length) return undefined;
  const len = (d[at]! << 8) | d[at + 1]!;
  const start = at + 2;
  const end = Math.min(start + len, d.length);
  return end > start ? [start, end] : undefined;
}

export const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ stage: fc.integer({ min: 0, max: 4 }), op: fc.constantFrom(...OPS), a: fc.nat(), b: fc.nat(), v: fc.nat() }) },
  // the ClientHello with its cookie: what is not covered by the cookie reaches the handshake
  {
    weight: 1,
    arbitrary: fc.record({
      stage: fc.constant(1),
      op: fc.constantFrom<Op>("extensions byte", "extension length"),
      a: fc.nat(),
      b: fc.nat(),
      v: fc.nat(),
    }),
  },
);
