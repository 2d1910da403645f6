/**
 * A registered device that lies: every number it sends is a claim the engine
 * checks against what it sent, answers with the documented Error, and never
 * stores. Whatever it sends, the engine goes on, the turn's batch commits,
 * and the other devices keep receiving. Also: store state left by an earlier
 * version that trusted such claims, observers and listeners that throw.
 */
import { describe, expect, it } from "vitest";
import { NO_OBSERVER, type DeliveryObserver, type EngineFailure, type FrameRefusal } from "../../src/messaging/observer.ts";
import { openMemoryStore } from "../../src/store/index.ts";
import type { MessageRecord } from "../../src/store/types.ts";
import { encodeFrame, ErrorCode, type FrameInit } from "../../src/wire/index.ts";
import { answered, captureServerSends, connected, enc, publishTo, receiptTrail, untilDelivered, type Captured } from "./helpers.ts";
import { T0, World, type SimDevice } from "./world.ts";

const MAX = Number.MAX_SAFE_INTEGER;

interface Counting {
  readonly observer: DeliveryObserver;
  readonly refused: FrameRefusal[];
  readonly failures: EngineFailure[];
}

function counting(): Counting {
  const refused: FrameRefusal[] = [];
  const failures: EngineFailure[] = [];
  return {
    observer: { ...NO_OBSERVER, frameRefused: (c) => refused.push(c), engineFailure: (c) => failures.push(c) },
    refused,
    failures,
  };
}

/** A world whose engine must never stop: a "fatal" fails the test at its end. */
async function world(o: Parameters<typeof World.create>[0] = {}): Promise<{ w: World; fatal: Error[] }> {
  const w = await World.create(o);
  const fatal: Error[] = [];
  w.engine.on("fatal", (e) => fatal.push(e));
  return { w, fatal };
}

/** Sends one frame (or raw bytes) as the device, bypassing its SDK session; returns what the server answered. */
async function raw(w: World, d: SimDevice, frame: FrameInit | Uint8Array): Promise<Captured[]> {
  const link = d.link;
  if (link === undefined) throw new Error(`device ${d.id} has no session`);
  const sent = captureServerSends(w);
  w.engine.receive(link, frame instanceof Uint8Array ? frame : encodeFrame(frame));
  await w.run(20);
  w.onServerSend = undefined;
  return sent;
}

async function drained(w: World, device: string): Promise<void> {
  await w.run(60_000, () => w.engine.deviceStatus(device).queueDepth === 0);
  expect(w.engine.deviceStatus(device).queueDepth).toBe(0);
}

function errorsIn(sent: readonly Captured[]): { code: number; message: string }[] {
  return sent.flatMap((c) => (c.frame.kind === "error" ? [{ code: c.frame.error.code, message: c.frame.error.message }] : []));
}

describe("Hello.received_seq is a claim", () => {
  it("2^53-1 on a running session (once a crash loop of the daemon): refused, not stored; the next publishes to it and to others go through", async () => {
    const c = counting();
    const { w, fatal } = await world({ observer: c.observer });
    const bad = w.addDevice("bad");
    const good = w.addDevice("good");
    await connected(w, bad);
    await connected(w, good);
    await publishTo(w, "bad", "m1");
    await untilDelivered(w, bad, 1);
    for (const claim of [2, 1000, MAX]) {
      const sent = await raw(w, bad, { kind: "hello", hello: { version: 1, receivedSeq: claim } });
      expect(errorsIn(sent)).toEqual([
        {
          code: ErrorCode.SEQ_AHEAD,
          message: expect.stringContaining(`Hello.received_seq ${claim} is above the last seq this server sent device bad (1)`),
        },
      ]);
      expect(sent.some((s) => s.frame.kind === "welcome")).toBe(false);
    }
    expect(w.engine.deviceStatus("bad")).toMatchObject({ online: true, lastSeq: 1, ackedSeq: 1 });
    const m2 = await publishTo(w, "bad", "m2");
    await publishTo(w, "good", "g1");
    await untilDelivered(w, bad, 2);
    await untilDelivered(w, good, 1);
    await drained(w, "bad");
    expect(bad.delivered.map((x) => [x.seq, x.payload])).toEqual([
      [1, "m1"],
      [2, "m2"],
    ]);
    expect(receiptTrail(w, m2.messageId)).toEqual(["queued@0", "sent@2", "delivered@2"]);
    expect((await w.store.loadDeliveryState()).counters.find((k) => k.device === "bad")).toEqual({ device: "bad", lastSeq: 2, ackedSeq: 2 });
    expect(c.refused).toEqual(["hello_seq_ahead", "hello_seq_ahead", "hello_seq_ahead"]);
    expect(c.failures).toEqual([]);
    expect(fatal).toEqual([]);
  });

  it("0 and exactly the last seq sent are accepted (Welcome)", async () => {
    const { w, fatal } = await world();
    const d = w.addDevice("dev");
    await connected(w, d);
    await publishTo(w, "dev", "m1");
    await publishTo(w, "dev", "m2");
    await untilDelivered(w, d, 2);
    await drained(w, "dev");
    for (const claim of [0, 2]) {
      const sent = await raw(w, d, { kind: "hello", hello: { version: 1, receivedSeq: claim } });
      expect(errorsIn(sent)).toEqual([]);
      expect(sent.find((s) => s.frame.kind === "welcome")?.frame).toMatchObject({ welcome: { ackedSeq: 2 } });
    }
    expect(fatal).toEqual([]);
  });

  it("above 2^53-1 on the wire is an undecodable frame (BAD_FRAME), nothing else happens", async () => {
    const c = counting();
    const { w, fatal } = await world({ observer: c.observer });
    const d = w.addDevice("dev");
    await connected(w, d);
    // Frame { hello (1) { received_seq (3): 2^53 } }
    const hello = new Uint8Array([0x0a, 9, 0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]);
    const sent = await raw(w, d, hello);
    expect(errorsIn(sent)).toEqual([{ code: ErrorCode.BAD_FRAME, message: expect.stringContaining("2^53-1") }]);
    expect(c.refused).toEqual(["undecodable"]);
    await publishTo(w, "dev", "after");
    await untilDelivered(w, d, 1);
    expect(fatal).toEqual([]);
  });
});

describe("Ack is a claim", () => {
  /** A device with seqs 1..3 in flight and none acked (its own acks are muted). */
  async function inFlight(c: Counting): Promise<{ w: World; d: SimDevice; fatal: Error[] }> {
    const { w, fatal } = await world({ observer: c.observer });
    const d = w.addDevice("dev");
    await connected(w, d);
    d.mute = true;
    for (const m of ["m1", "m2", "m3"]) await publishTo(w, "dev", m);
    await w.run(50);
    expect(w.engine.deviceStatus("dev")).toMatchObject({ lastSeq: 3, ackedSeq: 0, queueDepth: 3 });
    return { w, d, fatal };
  }

  const window = 32;
  const hostile: {
    name: string;
    ack: { cumulative?: number; ranges?: { first: number; last: number }[]; rejected?: number[] };
    cause: FrameRefusal;
  }[] = [
    { name: "cumulative one above the last seq sent", ack: { cumulative: 4 }, cause: "ack_seq_ahead" },
    { name: "cumulative 2^53-1", ack: { cumulative: MAX }, cause: "ack_seq_ahead" },
    { name: "a range starting at 0", ack: { ranges: [{ first: 0, last: 1 }] }, cause: "ack_bad_range" },
    { name: "a reversed range", ack: { ranges: [{ first: 3, last: 2 }] }, cause: "ack_bad_range" },
    { name: "a range past the last seq sent", ack: { ranges: [{ first: 2, last: 4 }] }, cause: "ack_bad_range" },
    { name: "a range up to 2^53-1", ack: { ranges: [{ first: 1, last: MAX }] }, cause: "ack_bad_range" },
    {
      name: "a good range and a bad one",
      ack: {
        ranges: [
          { first: 1, last: 1 },
          { first: 3, last: 4 },
        ],
      },
      cause: "ack_bad_range",
    },
    {
      name: "more ranges than a window holds",
      ack: { ranges: Array.from({ length: window + 65 }, () => ({ first: 1, last: 1 })) },
      cause: "ack_too_long",
    },
    { name: "more rejected seqs than a window holds", ack: { rejected: Array.from({ length: window + 65 }, () => 1) }, cause: "ack_too_long" },
    { name: "rejected seq 0", ack: { cumulative: 1, rejected: [0] }, cause: "ack_bad_rejected" },
    { name: "rejected seq above the last sent", ack: { cumulative: 1, rejected: [4] }, cause: "ack_bad_rejected" },
    { name: "rejected seq 2^53-1", ack: { cumulative: 1, rejected: [MAX] }, cause: "ack_bad_rejected" },
  ];
  for (const h of hostile) {
    it(`${h.name}: BAD_FRAME, nothing of it applied`, async () => {
      const c = counting();
      const { w, d, fatal } = await inFlight(c);
      const sent = await raw(w, d, { kind: "ack", ack: { cumulative: 0, ranges: [], rejected: [], ...h.ack } });
      expect(errorsIn(sent)).toEqual([{ code: ErrorCode.BAD_FRAME, message: expect.any(String) }]);
      expect(c.refused).toEqual([h.cause]);
      expect(w.engine.deviceStatus("dev")).toMatchObject({ online: true, lastSeq: 3, ackedSeq: 0, queueDepth: 3 });
      expect(w.receipts.filter((r) => r.state === "delivered" || r.state === "rejected")).toEqual([]);
      // the honest ack that follows works
      d.mute = false;
      await w.run(60_000, () => w.engine.deviceStatus("dev").ackedSeq === 3);
      expect(w.engine.deviceStatus("dev")).toMatchObject({ ackedSeq: 3, queueDepth: 0 });
      expect(d.payloads()).toEqual(["m1", "m2", "m3"]);
      expect(fatal).toEqual([]);
    });
  }

  it("at the bounds (cumulative = last seq sent, ranges and rejected inside 1..last, seqs already acked) it is applied", async () => {
    const c = counting();
    const { w, d, fatal } = await inFlight(c);
    let sent = await raw(w, d, { kind: "ack", ack: { cumulative: 0, ranges: [{ first: 2, last: 3 }], rejected: [] } });
    expect(errorsIn(sent)).toEqual([]);
    sent = await raw(w, d, { kind: "ack", ack: { cumulative: 3, ranges: [], rejected: [3] } });
    expect(errorsIn(sent)).toEqual([]);
    expect(w.engine.deviceStatus("dev")).toMatchObject({ ackedSeq: 3, queueDepth: 0 });
    // a reordered older ack (below what is acked) changes nothing and is no error
    sent = await raw(w, d, { kind: "ack", ack: { cumulative: 1, ranges: [{ first: 2, last: 2 }], rejected: [1] } });
    expect(errorsIn(sent)).toEqual([]);
    expect(w.receipts.filter((r) => r.state === "rejected").map((r) => r.seq)).toEqual([3]);
    expect(c.refused).toEqual([]);
    expect(fatal).toEqual([]);
  });

  it("ranges in any order, overlapping, are applied: the SACKed push is not retransmitted, the others are", async () => {
    const c = counting();
    const { w, d, fatal } = await inFlight(c);
    const ranges = [
      { first: 3, last: 3 },
      { first: 2, last: 3 },
      { first: 2, last: 2 },
    ];
    const sent = await raw(w, d, { kind: "ack", ack: { cumulative: 0, ranges } });
    expect(errorsIn(sent)).toEqual([]);
    const later = captureServerSends(w);
    await w.run(2500);
    const seqs = new Set(later.flatMap((x) => (x.frame.kind === "push" ? [x.frame.push.seq] : [])));
    // 1 was not acked; 2 and 3 are SACKed
    expect([...seqs]).toEqual([1]);
    expect(c.refused).toEqual([]);
    expect(fatal).toEqual([]);
  });
});

describe("uplink Publish, Subscribe and Ping values", () => {
  /** Device "pub" publishes to topic "t", device "sub" receives it. */
  async function publisherAndSubscriber(): Promise<{ c: Counting; w: World; fatal: Error[]; pub: SimDevice; sub: SimDevice }> {
    const c = counting();
    const { w, fatal } = await world({ observer: c.observer });
    const pub = w.addDevice("pub");
    const sub = w.addDevice("sub", ["t"]);
    await connected(w, pub);
    await connected(w, sub);
    return { c, w, fatal, pub, sub };
  }

  it("a payload above Welcome.limits.max_payload is refused with PAYLOAD_TOO_LARGE even when its Push would fit", async () => {
    const { c, w, fatal, pub, sub } = await publisherAndSubscriber();
    const limit = pub.welcomes[0]?.limits?.maxPayload ?? 0;
    expect(limit).toBeGreaterThan(0);
    let sent = await raw(w, pub, { kind: "publish", publish: { requestId: 1, topic: "t", payload: new Uint8Array(limit + 1) } });
    const refused = sent.find((s) => s.frame.kind === "publishAck")?.frame;
    expect(refused).toMatchObject({ publishAck: { requestId: 1, error: { code: ErrorCode.PAYLOAD_TOO_LARGE } } });
    expect(refused?.kind === "publishAck" && refused.publishAck.error?.message).toContain(`the limit is ${limit}`);
    expect(await w.store.getMessage("up:pub:1")).toBeUndefined();
    sent = await raw(w, pub, { kind: "publish", publish: { requestId: 2, topic: "t", payload: new Uint8Array(limit) } });
    expect(sent.find((s) => s.frame.kind === "publishAck")?.frame).toMatchObject({ publishAck: { requestId: 2, messageId: "up:pub:2" } });
    await untilDelivered(w, sub, 1);
    expect(c.refused).toEqual(["publish_too_large"]);
    expect(fatal).toEqual([]);
  });

  it("TTL and priority at 2^32-1 are refused (BAD_FRAME); request id 2^53-1 works", async () => {
    const { c, w, fatal, pub, sub } = await publisherAndSubscriber();
    const U32 = 0xffff_ffff;
    for (const [requestId, extra] of [
      [1, { ttlSeconds: U32 }],
      [2, { priority: U32 }],
    ] as const) {
      const sent = await raw(w, pub, { kind: "publish", publish: { requestId, topic: "t", payload: enc("x"), ...extra } });
      expect(sent.find((s) => s.frame.kind === "publishAck")?.frame).toMatchObject({
        publishAck: { requestId, error: { code: ErrorCode.BAD_FRAME } },
      });
    }
    const sent = await raw(w, pub, { kind: "publish", publish: { requestId: MAX, topic: "t", payload: enc("x") } });
    expect(sent.find((s) => s.frame.kind === "publishAck")?.frame).toMatchObject({ publishAck: { requestId: MAX, messageId: `up:pub:${MAX}` } });
    await untilDelivered(w, sub, 1);
    expect(c.refused).toEqual(["publish_invalid", "publish_invalid"]);
    expect(fatal).toEqual([]);
  });

  it("a Subscribe listing more topics than a request may is refused (TOO_MANY_TOPICS) and stores nothing", async () => {
    const c = counting();
    const { w, fatal } = await world({ observer: c.observer, options: { maxTopics: 5 } });
    const d = w.addDevice("dev");
    await connected(w, d);
    const topics = Array.from({ length: 101 }, (_, i) => `t${i}`);
    for (const kind of ["subscribe", "unsubscribe"] as const) {
      const frame: FrameInit = kind === "subscribe" ? { kind, subscribe: { requestId: 1, topics } } : { kind, unsubscribe: { requestId: 1, topics } };
      const sent = await raw(w, d, frame);
      expect(sent.find((s) => s.frame.kind === "subscribed")?.frame).toMatchObject({
        subscribed: { topics: [], error: { code: ErrorCode.TOO_MANY_TOPICS } },
      });
    }
    expect((await w.store.loadDeliveryState()).subscriptions).toEqual([]);
    expect(c.refused).toEqual(["subscribe_too_long", "subscribe_too_long"]);
    const ok = await answered(w, d.session!.subscribe(["a"], true, w.clock.now()));
    expect(ok).toEqual(["a"]);
    expect(fatal).toEqual([]);
  });

  it("Ping.time 0 and 2^53-1 are echoed", async () => {
    const { w, fatal } = await world();
    const d = w.addDevice("dev");
    await connected(w, d);
    for (const time of [0, MAX]) {
      const sent = await raw(w, d, { kind: "ping", ping: { time } });
      expect(sent.find((s) => s.frame.kind === "pong")?.frame).toMatchObject({ pong: { time } });
    }
    expect(fatal).toEqual([]);
  });
});

function storedMessage(id: string, over: Partial<MessageRecord> = {}): MessageRecord {
  return {
    id,
    topic: "",
    device: "bad",
    payload: enc(id),
    contentType: "",
    createdAt: T0,
    expiresAt: T0 + 3_600_000,
    priority: 5,
    collapseKey: "",
    publisher: "old",
    signature: "x",
    ...over,
  };
}

describe("store state left by an earlier version", () => {
  it("counters at 2^53-1 (a Hello that was trusted): no throw at load or reconnect; its publishes are refused, others go on", async () => {
    const store = openMemoryStore();
    await store.commit({
      messages: [storedMessage("old-1")],
      deliveries: [{ device: "bad", messageId: "old-1", order: 1, seq: 0, tombstone: false }],
      counters: [{ device: "bad", lastSeq: MAX, ackedSeq: MAX }],
    });
    const c = counting();
    const { w, fatal } = await world({ store, observer: c.observer });
    const bad = w.addDevice("bad", ["t"]);
    const good = w.addDevice("good", ["t"]);
    for (let run = 0; run < 2; run++) {
      if (run === 1) {
        await w.restartEngine();
        w.engine.on("fatal", (e) => fatal.push(e));
      }
      bad.hwm = 0;
      bad.crash();
      await connected(w, bad);
      await connected(w, good);
      expect(bad.welcomes.at(-1)).toMatchObject({ ackedSeq: MAX });
      await expect(publishTo(w, "bad", "direct")).rejects.toMatchObject({ name: "MessagingError", code: "sequence_exhausted" });
      const r = await w.publish({ target: { topic: "t" }, payload: enc(`topic-${run}`), publisher: "test" });
      expect(r.rejected).toEqual([{ device: "bad", reason: "sequence_exhausted" }]);
      await untilDelivered(w, good, run + 1);
      await w.run(5000);
    }
    expect(bad.delivered).toEqual([]);
    expect(w.engine.deviceStatus("bad")).toMatchObject({ lastSeq: MAX, queueDepth: 1 });
    expect(c.failures).toContain("sequence_exhausted");
    expect(fatal).toEqual([]);
  });

  it("a stored message that cannot become a Push (priority above 2^32) is rejected as unsendable; the next one arrives", async () => {
    const store = openMemoryStore();
    await store.commit({
      messages: [storedMessage("broken", { device: "dev", priority: 2 ** 40 }), storedMessage("fine", { device: "dev" })],
      deliveries: [
        { device: "dev", messageId: "broken", order: 1, seq: 0, tombstone: false },
        { device: "dev", messageId: "fine", order: 2, seq: 0, tombstone: false },
      ],
    });
    const c = counting();
    const { w, fatal } = await world({ store, observer: c.observer });
    const d = w.addDevice("dev");
    await connected(w, d);
    await w.run(10_000, () => w.engine.deviceStatus("dev").queueDepth === 0);
    expect(receiptTrail(w, "broken")).toEqual(["rejected/unsendable@0"]);
    expect(d.delivered.map((x) => [x.seq, x.messageId])).toEqual([]);
    // "fine" was signed with a fake signature: the device refuses it, but it did get seq 1
    expect(receiptTrail(w, "fine")).toEqual(["sent@1", "rejected/device_refused@1"]);
    expect(c.failures).toEqual(["device"]);
    expect(fatal).toEqual([]);
  });
});

describe("failures stay where they happen", () => {
  it("a publish whose record the store would refuse (empty id) or whose strings cannot be encoded fails alone, with bad_request", async () => {
    const { w, fatal } = await world();
    const d = w.addDevice("dev");
    await connected(w, d);
    await expect(publishTo(w, "dev", "x", { id: "" })).rejects.toMatchObject({ name: "MessagingError", code: "bad_request" });
    await expect(publishTo(w, "dev", "x", { contentType: "text/\ud800" })).rejects.toMatchObject({ name: "MessagingError", code: "bad_request" });
    await publishTo(w, "dev", "after");
    await untilDelivered(w, d, 1);
    expect(d.payloads()).toEqual(["after"]);
    expect(fatal).toEqual([]);
  });

  it("an observer and listeners that throw fail nothing", async () => {
    const throwing = Object.fromEntries(
      Object.keys(NO_OBSERVER).map((k) => [
        k,
        () => {
          throw new Error(`observer ${k} fails`);
        },
      ]),
    ) as unknown as DeliveryObserver;
    const { w, fatal } = await world({ observer: throwing });
    const failures: string[] = [];
    w.engine.on("failure", (f) => failures.push(f.cause));
    w.engine.on("receipt", () => {
      throw new Error("receipt listener fails");
    });
    w.engine.on("presence", () => {
      throw new Error("presence listener fails");
    });
    const seen: string[] = [];
    w.engine.on("receipt", (r) => seen.push(r.state));
    const d = w.addDevice("dev");
    await connected(w, d);
    const r = await publishTo(w, "dev", "m");
    expect(r.recipients).toBe(1);
    await untilDelivered(w, d, 1);
    await w.run(5000, () => seen.includes("delivered"));
    expect(seen).toEqual(["queued", "sent", "delivered"]);
    expect(failures.length).toBeGreaterThan(0);
    expect(new Set(failures)).toEqual(new Set(["listener"]));
    expect(fatal).toEqual([]);
  });
});
