/**
 * Fuzz: the device protocol after DTLS, against the real push server (DTLS on
 * 127.0.0.1, delivery engine, store) and its HTTP API. A registered device
 * sends hostile frames: every numeric field of Hello, Ack, Publish,
 * Subscribe/Unsubscribe and Ping at 0, 1, 2^32-1, 2^32, 2^53-1, 2^53 and
 * 2^64-1 (raw protobuf varints, which the codec would refuse to write),
 * random bytes, truncated frames, unknown fields, frames only a server sends.
 * After each case: the engine has not stopped, the answer is what
 * docs/protocol.md documents (BAD_FRAME for what does not decode, never
 * INTERNAL, the session lives on), the device's claims were not stored beyond
 * what the server sent, an HTTP publish to the hostile device is accepted, and
 * a second, honest device still receives a publish and acknowledges it.
 */
import fc from "fast-check";
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFailed } from "vitest";
import type { DeviceStatus } from "../../src/messaging/delivery-engine.ts";
import { decodeFrame, ErrorCode, type FrameBody, type UnknownFrameBody } from "../../src/wire/index.ts";
import { KEY, startHarness, waitFor, type Device, type Harness } from "../daemon/http/harness.ts";
import { fcShared, fuzzAssert, fuzzSeed, pbBytes, pbString, pbUint, pbVarint } from "../support/fuzz.ts";
import { RawDevice, type Received } from "../support/raw-device.ts";

const HONEST = "honest";
const EVIL = "evil";
const MAX_SAFE = 2n ** 53n - 1n;
/** The values every numeric field is tried at. */
const EDGES: readonly bigint[] = [0n, 1n, 2n ** 32n - 1n, 2n ** 32n, MAX_SAFE, 2n ** 53n, 2n ** 64n - 1n];

/** Error codes a hostile frame may be answered with (docs/protocol.md section 5); INTERNAL is a server fault. */
const DOCUMENTED_ANSWERS = new Set<number>([
  ErrorCode.BAD_FRAME,
  ErrorCode.UNSUPPORTED_VERSION,
  ErrorCode.HELLO_REQUIRED,
  ErrorCode.TOKEN_INVALID,
  ErrorCode.TOKEN_EXPIRED,
  ErrorCode.TOKEN_IDENTITY_MISMATCH,
  ErrorCode.PAYLOAD_TOO_LARGE,
  ErrorCode.QUEUE_FULL,
  ErrorCode.RATE_LIMITED,
  ErrorCode.BAD_TOPIC,
  ErrorCode.TOO_MANY_TOPICS,
  ErrorCode.SEQ_AHEAD,
]);

// Frame body field numbers (proto/dtlspush/v1/frame.proto)
const F = {
  hello: 1,
  welcome: 2,
  push: 3,
  ack: 4,
  publish: 5,
  publishAck: 6,
  subscribe: 7,
  unsubscribe: 8,
  subscribed: 9,
  ping: 10,
  pong: 11,
  error: 12,
  bye: 13,
} as const;

const frame = (field: number, body: number[]): Uint8Array => new Uint8Array(pbBytes(field, body));

/** Every numeric field a device sends, as (name, frame with that field at `v`). */
const NUMERIC_FIELDS: readonly { readonly name: string; readonly hello: boolean; readonly make: (v: bigint) => Uint8Array }[] = [
  { name: "Hello.version", hello: true, make: (v) => frame(F.hello, pbUint(1, v)) },
  { name: "Hello.received_seq", hello: true, make: (v) => frame(F.hello, [...pbUint(1, 1n), ...pbUint(3, v)]) },
  { name: "Hello.max_payload", hello: true, make: (v) => frame(F.hello, [...pbUint(1, 1n), ...pbUint(4, v)]) },
  { name: "Ack.cumulative", hello: false, make: (v) => frame(F.ack, pbUint(1, v)) },
  { name: "Ack.ranges.first", hello: false, make: (v) => frame(F.ack, pbBytes(2, [...pbUint(1, v), ...pbUint(2, v)])) },
  { name: "Ack.ranges.last", hello: false, make: (v) => frame(F.ack, pbBytes(2, [...pbUint(1, 1n), ...pbUint(2, v)])) },
  { name: "Ack.rejected (packed)", hello: false, make: (v) => frame(F.ack, [...pbUint(1, 0n), ...pbBytes(3, pbVarint(v))]) },
  { name: "Ack.rejected (unpacked)", hello: false, make: (v) => frame(F.ack, pbUint(3, v)) },
  { name: "Publish.request_id", hello: false, make: (v) => frame(F.publish, [...pbUint(1, v), ...pbString(2, "fuzz/t"), ...pbString(3, "p")]) },
  {
    name: "Publish.ttl_seconds",
    hello: false,
    make: (v) => frame(F.publish, [...pbUint(1, 7n), ...pbString(2, "fuzz/t"), ...pbString(3, "p"), ...pbUint(5, v)]),
  },
  {
    name: "Publish.priority",
    hello: false,
    make: (v) => frame(F.publish, [...pbUint(1, 8n), ...pbString(2, "fuzz/t"), ...pbString(3, "p"), ...pbUint(6, v)]),
  },
  { name: "Subscribe.request_id", hello: false, make: (v) => frame(F.subscribe, [...pbUint(1, v), ...pbString(2, "fuzz/t")]) },
  { name: "Unsubscribe.request_id", hello: false, make: (v) => frame(F.unsubscribe, [...pbUint(1, v), ...pbString(2, "fuzz/t")]) },
  { name: "Ping.time", hello: false, make: (v) => frame(F.ping, pbUint(1, v)) },
];

let h: Harness;
let port = 0;
let honest: Device;
let evil: RawDevice | undefined;
const fatal: Error[] = [];
let published = 0;

async function start(): Promise<void> {
  h = await startHarness();
  port = h.server.address().port;
  h.server.engine.on("fatal", (e: Error) => fatal.push(e));
  await h.server.registry.add({ id: HONEST, psk: { identity: HONEST, key: KEY } });
  await h.server.registry.add({ id: EVIL, psk: { identity: EVIL, key: KEY } });
  honest = await h.device(HONEST, KEY);
}

beforeAll(start);

// After a failed case (the engine may have stopped, or hold a stored claim) the next case gets a new
// server, so each failure stands alone.
let dirty = false;
beforeEach(async () => {
  onTestFailed(() => {
    dirty = true;
  });
  if (fatal.length === 0 && !dirty) return;
  dirty = false;
  await evil?.close();
  evil = undefined;
  await h.close();
  fatal.length = 0;
  await start();
});

afterAll(async () => {
  await evil?.close();
  await h?.close();
});

/** A fresh session of the hostile device; with `welcome`, after a valid Hello and its Welcome. */
async function freshEvil(welcome: boolean): Promise<RawDevice> {
  await evil?.close();
  evil = await RawDevice.open(port, EVIL, KEY);
  if (welcome) {
    evil.sendFrame({ kind: "hello", hello: { version: 1 } });
    expect(await evil.until(() => evil!.received.some((f) => f.kind === "welcome")), "the hostile device's valid Hello got no Welcome").toBe(true);
  }
  return evil;
}

type Decoded = FrameBody | UnknownFrameBody | "undecodable";

function decodeLocally(bytes: Uint8Array): Decoded {
  try {
    return decodeFrame(bytes);
  } catch {
    return "undecodable";
  }
}

function errorsIn(frames: readonly Received[]): number[] {
  const codes: number[] = [];
  for (const f of frames) {
    if (f.kind === "error") codes.push(f.error.code);
    if (f.kind === "publishAck" && f.publishAck.error !== undefined && f.publishAck.error.code !== 0) codes.push(f.publishAck.error.code);
    if (f.kind === "subscribed" && f.subscribed.error !== undefined && f.subscribed.error.code !== 0) codes.push(f.subscribed.error.code);
    if (f.kind === "bye") codes.push(f.bye.reason?.code ?? 0);
  }
  return codes;
}

/** What is wrong with the answers to one frame ("" when they are what docs/protocol.md says). */
function judgeAnswers(d: Decoded, answers: readonly Received[]): string {
  const replies = answers.filter((f) => f.kind !== "push");
  const codes = errorsIn(replies);
  const bad = codes.filter((c) => !DOCUMENTED_ANSWERS.has(c));
  if (bad.length > 0) return `answered with error code(s) ${bad.join(",")} (INTERNAL=14 is a server fault); answers: ${JSON.stringify(replies)}`;
  if (replies.some((f) => f.kind === "bye")) return `the server ended the session: ${JSON.stringify(replies)}`;
  if (d === "undecodable")
    return codes.includes(ErrorCode.BAD_FRAME) ? "" : `an undecodable frame got no BAD_FRAME; answers: ${JSON.stringify(replies)}`;
  switch (d.kind) {
    case "unknown":
      return codes.length === 0 ? "" : `a frame with an unknown body (field ${d.field}) must be ignored; answers: ${JSON.stringify(replies)}`;
    case "ping":
      return replies.some((f) => f.kind === "pong" && f.pong.time === d.ping.time)
        ? ""
        : `Ping ${d.ping.time} got no Pong; answers: ${JSON.stringify(replies)}`;
    case "publish":
      return ""; // answered after the store commit, so after the Pong: see hostileFrame
    case "subscribe":
    case "unsubscribe": {
      const id = d.kind === "subscribe" ? d.subscribe.requestId : d.unsubscribe.requestId;
      return replies.some((f) => (f.kind === "subscribed" && f.subscribed.requestId === id) || f.kind === "error")
        ? ""
        : `${d.kind} ${id} got no Subscribed or Error; answers: ${JSON.stringify(replies)}`;
    }
    case "welcome":
    case "push":
    case "publishAck":
    case "subscribed":
    case "pong":
      return codes.includes(ErrorCode.BAD_FRAME) ? "" : `a ${d.kind} from a device got no BAD_FRAME; answers: ${JSON.stringify(replies)}`;
    default:
      return "";
  }
}

/**
 * The server has not stored a device claim beyond what it sent: since
 * `before` (when no publish happened since) it assigned at most one seq per
 * message it had queued, and the device's ack is at most its last seq.
 */
function claimsNotStored(before?: DeviceStatus): string {
  const s = h.server.engine.deviceStatus(EVIL);
  if (!Number.isSafeInteger(s.lastSeq) || !Number.isSafeInteger(s.ackedSeq)) return `device state holds unsafe numbers: ${JSON.stringify(s)}`;
  if (before !== undefined && s.lastSeq > before.lastSeq + before.queueDepth) {
    return `the device's claim moved the server's last seq from ${before.lastSeq} to ${s.lastSeq} (${before.queueDepth} messages were queued)`;
  }
  if (s.ackedSeq > s.lastSeq) return `the device's ack claim was stored: ackedSeq ${s.ackedSeq} > lastSeq ${s.lastSeq}`;
  return "";
}

function expectNoStoredClaim(label: string, before?: DeviceStatus): void {
  const problem = claimsNotStored(before);
  expect(problem, `${label}: ${problem}`).toBe("");
}

/** An HTTP publish to the hostile device: accepted (or refused with a documented 4xx), never a 5xx or a stopped engine. */
async function publishToEvil(label: string): Promise<string> {
  const id = `evil-${++published}`;
  const r = await h.call("POST", `/v1/devices/${EVIL}/messages`, { token: h.publisher, body: { payload: "x", id } });
  expect(r.status, `${label}: HTTP publish to the hostile device: ${r.status} ${await r.clone().text()}`).toBeLessThan(500);
  return id;
}

/** The engine lives and a second, honest device still receives a publish and acknowledges it. */
async function honestStillServed(label: string): Promise<void> {
  expect(
    fatal.map((e) => e.message),
    `${label}: the delivery engine stopped (fatal)`,
  ).toEqual([]);
  const id = `honest-${++published}`;
  const r = await h.call("POST", `/v1/devices/${HONEST}/messages`, { token: h.publisher, body: { payload: "hello", id } });
  expect(r.status, `${label}: HTTP publish to the honest device: ${await r.clone().text()}`).toBe(202);
  await waitFor(() => honest.received.some((m) => m.id === id), 5_000, `${label}: the honest device to receive ${id}`);
  const seq = honest.received.find((m) => m.id === id)!.seq;
  await waitFor(() => h.server.engine.deviceStatus(HONEST).ackedSeq >= seq, 5_000, `${label}: the honest device's ack of ${id}`);
  expect(
    fatal.map((e) => e.message),
    `${label}: the delivery engine stopped (fatal)`,
  ).toEqual([]);
}

/** A hostile Hello as the first frame of a fresh session, then a publish to that device. */
async function hostileHello(bytes: Uint8Array, label: string): Promise<void> {
  const dev = await freshEvil(false);
  const before = h.server.engine.deviceStatus(EVIL);
  dev.send(bytes);
  const answered = await dev.until(() => dev.received.some((f) => f.kind === "welcome" || f.kind === "error"));
  const d = decodeLocally(bytes);
  expect(answered, `${label}: a Hello must be answered (Welcome or Error); got ${JSON.stringify(dev.received)}`).toBe(true);
  const codes = errorsIn(dev.received);
  expect(
    codes.filter((c) => !DOCUMENTED_ANSWERS.has(c)),
    `${label}: undocumented or INTERNAL answer: ${JSON.stringify(dev.received)}`,
  ).toEqual([]);
  if (d === "undecodable") expect(codes, `${label}: an undecodable Hello must get BAD_FRAME`).toContain(ErrorCode.BAD_FRAME);
  // judged last: the publish and the honest device first show whether the claim hurts the daemon (a stored seq claim once stopped it)
  const claim = claimsNotStored(before);
  await publishToEvil(label);
  if (dev.received.some((f) => f.kind === "welcome")) {
    // its queue is sent oldest first: some push must come, with a seq the server assigned
    const got = await dev.until(() => dev.received.some((f) => f.kind === "push"), 3_000);
    const push = dev.received.find((f): f is Extract<Received, { kind: "push" }> => f.kind === "push");
    expect(
      got,
      `${label}: the welcomed hostile device got no push after a publish to it${fatal.length > 0 ? ` (engine stopped: ${fatal[0]!.message})` : ""}`,
    ).toBe(true);
    const seq = push!.push.seq;
    expect(Number.isSafeInteger(seq) && seq > 0 && seq <= h.server.engine.deviceStatus(EVIL).lastSeq, `${label}: push seq ${seq}`).toBe(true);
  }
  await honestStillServed(label);
  expect(claim, `${label}: ${claim}`).toBe("");
  expectNoStoredClaim(label);
  // the session may be without a Welcome now: later cases start from a welcomed one
  await evil?.close();
  evil = undefined;
}

/** A hostile frame on a welcomed session. */
async function hostileFrame(bytes: Uint8Array, label: string): Promise<void> {
  const d = decodeLocally(bytes);
  if (d !== "undecodable" && d.kind === "hello") return hostileHello(bytes, label);
  const dev = evil !== undefined && !evil.closed ? evil : await freshEvil(true);
  const from = dev.received.length;
  const before = h.server.engine.deviceStatus(EVIL);
  dev.send(bytes);
  const answers = await dev.barrier(from);
  const endsSession = d !== "undecodable" && d.kind === "bye";
  if (!endsSession) {
    expect(
      answers,
      `${label}: no Pong after the frame (session ${dev.closed ? "closed" : "silent"}); got ${JSON.stringify(dev.received.slice(from))}`,
    ).toBeDefined();
    const problem = judgeAnswers(d, answers!);
    expect(problem, `${label}: ${problem}`).toBe("");
    if (d !== "undecodable" && d.kind === "publish") {
      const id = d.publish.requestId;
      const answered = (f: Received): boolean =>
        (f.kind === "publishAck" && f.publishAck.requestId === id) || (f.kind === "error" && f.error.requestId === id);
      const got = await dev.until(() => dev.received.slice(from).some(answered), 3_000);
      expect(
        got,
        `${label}: Publish ${id} got no PublishAck or Error; got ${JSON.stringify(dev.received.slice(from).filter((f) => f.kind !== "push"))}`,
      ).toBe(true);
      const codes = errorsIn(dev.received.slice(from).filter(answered));
      expect(
        codes.filter((c) => !DOCUMENTED_ANSWERS.has(c)),
        `${label}: Publish ${id} answered with an undocumented or INTERNAL code`,
      ).toEqual([]);
    }
  } else {
    await freshEvil(true);
  }
  expectNoStoredClaim(label, before);
  await publishToEvil(label);
  expectNoStoredClaim(label);
  await honestStillServed(label);
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

describe("device protocol: hostile field values", () => {
  const cases = NUMERIC_FIELDS.flatMap((f) => EDGES.map((v) => ({ field: f, v })));
  it.each(cases.map((c) => [c.field.name, c.v.toString(), c] as const))("%s = %s", async (_n, _v, c) => {
    const bytes = c.field.make(c.v);
    const label = `${c.field.name}=${c.v} (frame ${hex(bytes)})`;
    if (c.field.hello) await hostileHello(bytes, label);
    else await hostileFrame(bytes, label);
  });
});

// ---- random frames ----

const u64 = fc.oneof(fc.constantFrom(...EDGES), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 1000n }));
const str = fc.oneof(fc.constantFrom("", "fuzz/t", "a//b", "/", "x".repeat(200), "é", "\u0000"), fc.string({ maxLength: 40 }));
/** An unknown field (number 20..2000) of any wire type, to append inside a message. */
const unknownField = fc.oneof(
  fc.tuple(fc.integer({ min: 20, max: 2000 }), u64).map(([n, v]) => pbUint(n, v)),
  fc.tuple(fc.integer({ min: 20, max: 2000 }), fc.uint8Array({ maxLength: 20 })).map(([n, b]) => pbBytes(n, b)),
  fc.tuple(fc.integer({ min: 20, max: 2000 }), fc.uint8Array({ minLength: 4, maxLength: 4 })).map(([n, b]) => [...pbVarint(BigInt(n * 8 + 5)), ...b]),
  fc.tuple(fc.integer({ min: 20, max: 2000 }), fc.uint8Array({ minLength: 8, maxLength: 8 })).map(([n, b]) => [...pbVarint(BigInt(n * 8 + 1)), ...b]),
);
const extras = fc.array(unknownField, { maxLength: 2 }).map((a) => a.flat());

const messageBody = fc.oneof(
  fc.tuple(u64, str, u64, u64, str, extras).map(([ver, tok, rs, mp, cl, x]) => ({
    field: F.hello,
    body: [...pbUint(1, ver), ...pbString(2, tok), ...pbUint(3, rs), ...pbUint(4, mp), ...pbString(5, cl), ...x],
  })),
  fc.tuple(u64, fc.array(fc.tuple(u64, u64), { maxLength: 3 }), fc.array(u64, { maxLength: 3 }), extras).map(([c, rs, rej, x]) => ({
    field: F.ack,
    body: [...pbUint(1, c), ...rs.flatMap(([a, b]) => pbBytes(2, [...pbUint(1, a), ...pbUint(2, b)])), ...rej.flatMap((r) => pbUint(3, r)), ...x],
  })),
  fc.tuple(u64, str, fc.uint8Array({ maxLength: 64 }), str, u64, u64, extras).map(([id, t, p, ct, ttl, pr, x]) => ({
    field: F.publish,
    body: [...pbUint(1, id), ...pbString(2, t), ...pbBytes(3, p), ...pbString(4, ct), ...pbUint(5, ttl), ...pbUint(6, pr), ...x],
  })),
  fc
    .tuple(fc.constantFrom(F.subscribe, F.unsubscribe), u64, fc.array(str, { maxLength: 4 }), extras)
    .map(([f, id, ts, x]) => ({ field: f, body: [...pbUint(1, id), ...ts.flatMap((t) => pbString(2, t)), ...x] })),
  fc.tuple(u64, extras).map(([t, x]) => ({ field: F.ping, body: [...pbUint(1, t), ...x] })),
  // frames only a server sends, with random bodies
  fc
    .tuple(fc.constantFrom(F.welcome, F.push, F.publishAck, F.subscribed, F.pong, F.error), fc.uint8Array({ maxLength: 30 }))
    .map(([f, b]) => ({ field: f, body: [...b] })),
  // a body field this version does not know
  fc.tuple(fc.integer({ min: 14, max: 500 }), fc.uint8Array({ maxLength: 20 })).map(([f, b]) => ({ field: f, body: [...b] })),
);

const hostileBytes = fc.oneof(
  { weight: 5, arbitrary: messageBody.map((m) => new Uint8Array(pbBytes(m.field, m.body))) },
  // truncated at a random point
  {
    weight: 2,
    arbitrary: fc
      .tuple(messageBody, fc.nat())
      .map(([m, cut]) => {
        const b = pbBytes(m.field, m.body);
        return new Uint8Array(b.slice(0, cut % b.length));
      })
      .filter((b) => b.length > 0),
  },
  // a message body with one byte changed
  {
    weight: 2,
    arbitrary: fc.tuple(messageBody, fc.nat(), fc.integer({ min: 1, max: 255 })).map(([m, at, x]) => {
      const b = pbBytes(m.field, m.body);
      b[at % b.length]! ^= x;
      return new Uint8Array(b);
    }),
  },
  { weight: 2, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 64 }) },
);

describe("device protocol: random hostile frames", () => {
  it("mutated, truncated and random frames on a welcomed session", async () => {
    let n = 0;
    await fuzzAssert(
      fc.asyncProperty(hostileBytes, async (bytes) => {
        await hostileFrame(bytes, `random case ${++n} (seed ${fuzzSeed()}; frame ${hex(bytes)})`);
      }),
      fcShared(150, 21),
    );
  });

  it("hostile Hellos as the first frame, each followed by a publish to that device", async () => {
    let n = 0;
    const hello = fc
      .tuple(u64, str, u64, u64, extras)
      .map(
        ([ver, tok, rs, mp, x]) =>
          new Uint8Array(pbBytes(F.hello, [...pbUint(1, ver), ...pbString(2, tok), ...pbUint(3, rs), ...pbUint(4, mp), ...x])),
      );
    await fuzzAssert(
      fc.asyncProperty(hello, async (bytes) => {
        await hostileHello(bytes, `hello case ${++n} (seed ${fuzzSeed()}; frame ${hex(bytes)})`);
      }),
      fcShared(30, 22),
    );
  });
});
