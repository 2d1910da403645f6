import { describe, expect, it } from "vitest";
import { MessagingError } from "../../src/messaging/errors.ts";
import { captureServerSends, connected, enc, publishTo, pushes, receiptTrail, untilDelivered } from "./helpers.ts";
import { World } from "./world.ts";

/** Runs until the server has nothing queued or in flight for the device. */
async function drained(w: World, device: string): Promise<void> {
  await w.run(60_000, () => w.engine.deviceStatus(device).queueDepth === 0);
  expect(w.engine.deviceStatus(device).queueDepth).toBe(0);
}

describe("expiry of queued messages", () => {
  it("a message that expires while the device is offline is dropped unsent: receipt expired/ttl, no seq used", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    await publishTo(w, "dev", "m1");
    await untilDelivered(w, d, 1);
    await drained(w, "dev");
    d.disconnect();
    const sent = captureServerSends(w);
    const m2 = await publishTo(w, "dev", "m2", { ttlSeconds: 10 });
    expect(w.engine.deviceStatus("dev")).toMatchObject({ online: false, queueDepth: 1, lastSeq: 1 });
    await w.run(15_000);
    expect(receiptTrail(w, m2.messageId)).toEqual(["queued@0", "expired/ttl@0"]);
    expect(w.receiptsOf(m2.messageId)[1]?.at).toBe(m2.expiresAt);
    expect(w.engine.deviceStatus("dev")).toMatchObject({ queueDepth: 0, lastSeq: 1 });
    // also in the store: a restarted daemon would not send it either
    expect((await w.store.loadDeliveryState()).deliveries).toEqual([]);
    const m3 = await publishTo(w, "dev", "m3");
    await connected(w, d);
    await untilDelivered(w, d, 2);
    expect(d.delivered.map((x) => [x.seq, x.payload])).toEqual([
      [1, "m1"],
      [2, "m3"],
    ]);
    expect(pushes(sent).some((c) => c.frame.push.messageId === m2.messageId)).toBe(false);
    await drained(w, "dev");
    expect(receiptTrail(w, m3.messageId)).toEqual(["queued@0", "sent@2", "delivered@2"]);
  });

  it("a message sent but unacknowledged that expires while the device is offline arrives as a tombstone", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    d.dropIncoming = (f) => f.kind === "push";
    const m1 = await publishTo(w, "dev", "m1", { ttlSeconds: 30 });
    await w.run(100);
    d.disconnect();
    d.dropIncoming = undefined;
    await w.run(60_000);
    expect(receiptTrail(w, m1.messageId)).toEqual(["queued@0", "sent@1", "expired/ttl@1"]);
    expect(w.engine.deviceStatus("dev")).toMatchObject({ queueDepth: 1, lastSeq: 1, ackedSeq: 0 });
    const m2 = await publishTo(w, "dev", "m2");
    const sent = captureServerSends(w);
    await connected(w, d);
    await untilDelivered(w, d, 1);
    expect(d.delivered.map((x) => [x.seq, x.payload])).toEqual([[2, "m2"]]);
    expect(d.hwm).toBe(2);
    expect(pushes(sent).map((c) => [c.frame.push.seq, c.frame.push.expired])).toEqual([
      [1, true],
      [2, false],
    ]);
    await drained(w, "dev");
    expect(receiptTrail(w, m1.messageId)).toEqual(["queued@0", "sent@1", "expired/ttl@1"]);
    expect(receiptTrail(w, m2.messageId)).toEqual(["queued@0", "sent@2", "delivered@2"]);
  });
});

describe("queue limit", () => {
  it("reject policy: a direct publish to a full queue throws queue_full and stores nothing", async () => {
    const w = await World.create({ options: { maxQueue: 3 } });
    const d = w.addDevice("dev");
    for (let i = 1; i <= 3; i++) await publishTo(w, "dev", `m${i}`);
    const refused = publishTo(w, "dev", "m4", { id: "m4" });
    await expect(refused).rejects.toBeInstanceOf(MessagingError);
    await expect(refused).rejects.toMatchObject({ code: "queue_full" });
    expect(await w.store.getMessage("m4")).toBeUndefined();
    expect(w.receiptsOf("m4")).toEqual([]);
    expect(w.engine.deviceStatus("dev").queueDepth).toBe(3);
    expect((await w.store.loadDeliveryState()).deliveries).toHaveLength(3);
    await connected(w, d);
    await untilDelivered(w, d, 3);
    await w.run(2000);
    expect(d.payloads()).toEqual(["m1", "m2", "m3"]);
    // room again once delivered
    await publishTo(w, "dev", "m5");
    await untilDelivered(w, d, 4);
    expect(d.delivered.map((x) => x.seq)).toEqual([1, 2, 3, 4]);
  });

  it("a topic publish with one full subscriber succeeds; that device gets receipt rejected/queue_full", async () => {
    const w = await World.create({ options: { maxQueue: 2 } });
    const a = w.addDevice("a", ["news"]);
    const b = w.addDevice("b", ["news"]);
    await publishTo(w, "a", "a1");
    await publishTo(w, "a", "a2");
    const r = await w.publish({ target: { topic: "news" }, payload: enc("n1"), publisher: "test" });
    expect(r.recipients).toBe(1);
    expect(r.rejected).toEqual([{ device: "a", reason: "queue_full" }]);
    expect(receiptTrail(w, r.messageId, "a")).toEqual(["rejected/queue_full@0"]);
    expect(receiptTrail(w, r.messageId, "b")).toEqual(["queued@0"]);
    expect(await w.store.getMessage(r.messageId)).toBeDefined();
    await connected(w, a);
    await connected(w, b);
    await untilDelivered(w, a, 2);
    await untilDelivered(w, b, 1);
    await w.run(2000);
    expect(a.payloads()).toEqual(["a1", "a2"]);
    expect(b.payloads()).toEqual(["n1"]);
  });

  it("drop-oldest policy: the oldest unsent message is evicted (receipt expired/evicted), the newest delivered", async () => {
    const w = await World.create({ options: { maxQueue: 3, queueFullPolicy: "drop-oldest" } });
    const d = w.addDevice("dev");
    const ids: string[] = [];
    for (let i = 1; i <= 5; i++) ids.push((await publishTo(w, "dev", `m${i}`)).messageId);
    expect(w.engine.deviceStatus("dev").queueDepth).toBe(3);
    expect(receiptTrail(w, ids[0] as string)).toEqual(["queued@0", "expired/evicted@0"]);
    expect(receiptTrail(w, ids[1] as string)).toEqual(["queued@0", "expired/evicted@0"]);
    await connected(w, d);
    await untilDelivered(w, d, 3);
    await drained(w, "dev");
    expect(d.delivered.map((x) => [x.seq, x.payload])).toEqual([
      [1, "m3"],
      [2, "m4"],
      [3, "m5"],
    ]);
    expect(receiptTrail(w, ids[4] as string)).toEqual(["queued@0", "sent@3", "delivered@3"]);
  });

  it("drop-oldest policy never evicts a message in flight: with nothing unsent, the publish is refused", async () => {
    const w = await World.create({ options: { maxQueue: 2, queueFullPolicy: "drop-oldest" } });
    const d = w.addDevice("dev");
    await connected(w, d);
    d.dropIncoming = (f) => f.kind === "push";
    await publishTo(w, "dev", "m1");
    await publishTo(w, "dev", "m2");
    expect(w.engine.deviceStatus("dev")).toMatchObject({ queueDepth: 2, lastSeq: 2 });
    await expect(publishTo(w, "dev", "m3")).rejects.toMatchObject({ code: "queue_full" });
    d.dropIncoming = undefined;
    await untilDelivered(w, d, 2);
    expect(d.payloads()).toEqual(["m1", "m2"]);
  });

  for (const policy of ["reject", "drop-oldest"] as const) {
    it(`${policy} policy: a publish that replaces an unsent message by collapse key needs no room`, async () => {
      const w = await World.create({ options: { maxQueue: 2, queueFullPolicy: policy } });
      const d = w.addDevice("dev");
      const u1 = await publishTo(w, "dev", "u1");
      const k1 = await publishTo(w, "dev", "k1", { collapseKey: "temp" });
      const k2 = await publishTo(w, "dev", "k2", { collapseKey: "temp" });
      expect(receiptTrail(w, k1.messageId)).toEqual(["queued@0", "expired/collapsed@0"]);
      expect(receiptTrail(w, u1.messageId)).toEqual(["queued@0"]);
      expect(receiptTrail(w, k2.messageId)).toEqual(["queued@0"]);
      await connected(w, d);
      await untilDelivered(w, d, 2);
      await drained(w, "dev");
      expect(d.payloads()).toEqual(["u1", "k2"]);
    });
  }
});

describe("collapse keys", () => {
  it("while the device is offline only the last of the keyed messages is kept (receipts expired/collapsed)", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    const k1 = await publishTo(w, "dev", "k1", { collapseKey: "temp" });
    const u = await publishTo(w, "dev", "u");
    const k2 = await publishTo(w, "dev", "k2", { collapseKey: "temp" });
    const other = await publishTo(w, "dev", "o", { collapseKey: "other" });
    const k3 = await publishTo(w, "dev", "k3", { collapseKey: "temp" });
    expect(w.engine.deviceStatus("dev").queueDepth).toBe(3);
    expect(receiptTrail(w, k1.messageId)).toEqual(["queued@0", "expired/collapsed@0"]);
    expect(receiptTrail(w, k2.messageId)).toEqual(["queued@0", "expired/collapsed@0"]);
    const sent = captureServerSends(w);
    await connected(w, d);
    await untilDelivered(w, d, 3);
    await drained(w, "dev");
    expect(d.delivered.map((x) => [x.seq, x.payload])).toEqual([
      [1, "u"],
      [2, "o"],
      [3, "k3"],
    ]);
    expect(pushes(sent).find((c) => c.frame.push.seq === 3)?.frame.push.collapseKey).toBe("temp");
    for (const m of [u, other]) expect(receiptTrail(w, m.messageId).at(-1)).toMatch(/^delivered@/);
    expect(receiptTrail(w, k3.messageId)).toEqual(["queued@0", "sent@3", "delivered@3"]);
    // the collapsed ones are gone from the store's journal too
    expect((await w.store.loadDeliveryState()).deliveries).toEqual([]);
  });

  it("does not replace a message already sent", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    d.dropIncoming = (f) => f.kind === "push";
    const k1 = await publishTo(w, "dev", "k1", { collapseKey: "temp" });
    const k2 = await publishTo(w, "dev", "k2", { collapseKey: "temp" });
    expect(receiptTrail(w, k1.messageId)).toEqual(["queued@0", "sent@1"]);
    d.dropIncoming = undefined;
    await untilDelivered(w, d, 2);
    await drained(w, "dev");
    expect(d.payloads()).toEqual(["k1", "k2"]);
    expect(receiptTrail(w, k2.messageId)).toEqual(["queued@0", "sent@2", "delivered@2"]);
  });
});

describe("priority", () => {
  it("messages queued for an offline device go out highest priority first, with seqs 1, 2, 3", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await publishTo(w, "dev", "p1", { priority: 1 });
    await publishTo(w, "dev", "p9", { priority: 9 });
    await publishTo(w, "dev", "p5", { priority: 5 });
    const sent = captureServerSends(w);
    await connected(w, d);
    await untilDelivered(w, d, 3);
    expect(d.delivered.map((x) => [x.seq, x.payload])).toEqual([
      [1, "p9"],
      [2, "p5"],
      [3, "p1"],
    ]);
    expect(pushes(sent).map((c) => [c.frame.push.seq, c.frame.push.priority])).toEqual([
      [1, 9],
      [2, 5],
      [3, 1],
    ]);
  });

  it("is first in, first out within a priority", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    for (const [text, priority] of [
      ["a1", 1],
      ["b9", 9],
      ["c5", 5],
      ["d5", 5],
      ["e9", 9],
      ["f0", 0],
    ] as const) {
      await publishTo(w, "dev", text, { priority });
    }
    await connected(w, d);
    await untilDelivered(w, d, 6);
    expect(d.payloads()).toEqual(["b9", "e9", "c5", "d5", "a1", "f0"]);
    expect(d.delivered.map((x) => x.seq)).toEqual([1, 2, 3, 4, 5, 6]);
  });
});

describe("explicit message ids", () => {
  it("a second publish with an id already stored is refused and the engine keeps working", async () => {
    const w = await World.create();
    w.addDevice("dev");
    await w.publish({ target: { device: "dev" }, payload: new TextEncoder().encode("a"), publisher: "t", id: "fixed-1" });
    await expect(
      w.publish({ target: { device: "dev" }, payload: new TextEncoder().encode("b"), publisher: "t", id: "fixed-1" }),
    ).rejects.toMatchObject({
      code: "duplicate_message",
    });
    const r = await w.publish({ target: { device: "dev" }, payload: new TextEncoder().encode("c"), publisher: "t" });
    expect(w.engine.deviceStatus("dev").queueDepth).toBe(2);
    expect(r.recipients).toBe(1);
  });
});

describe("a big topic fan-out", () => {
  it("starts pushing to pumpPerTurn devices per engine turn, and reaches every subscriber once", async () => {
    const w = await World.create({ options: { pumpPerTurn: 5 } });
    const devices = Array.from({ length: 23 }, (_, i) => w.addDevice(`d${i}`, ["t"]));
    for (const d of devices) await connected(w, d);
    // pushes each turn started (a seq assigned), whenever its commit lets them leave
    const perFlush: number[] = [];
    const engine = w.engine;
    const flush = engine.flush.bind(engine);
    const started = (): number => devices.filter((d) => engine.deviceStatus(d.id).lastSeq >= 1).length;
    engine.flush = () => {
      const before = started();
      flush();
      perFlush.push(started() - before);
    };
    const r = await w.publish({ target: { topic: "t" }, payload: enc("all"), publisher: "test" });
    // started outside any flush: by the publish itself, in its turn
    const startedInPublishTurn = started() - perFlush.reduce((a, b) => a + b, 0);
    expect(r.recipients).toBe(23);
    for (const d of devices) await untilDelivered(w, d, 1);
    for (const d of devices) expect(d.payloads()).toEqual(["all"]);
    // the publish's own turn starts pumpPerTurn devices, each later flush pumpPerTurn more
    const busy = [startedInPublishTurn, ...perFlush].filter((n) => n > 0);
    expect(Math.max(...busy)).toBe(5);
    expect(busy.reduce((a, b) => a + b, 0)).toBe(23);
    expect(busy.slice(0, 5)).toEqual([5, 5, 5, 5, 3]);
    await w.run(10_000, () => devices.every((d) => w.engine.deviceStatus(d.id).ackedSeq === 1));
  });
});

describe("pushes in flight, all devices together (maxInflight)", () => {
  it("sends no more than maxInflight before acks come back, and reaches everyone once without retransmitting", async () => {
    const w = await World.create({ options: { maxInflight: 4, pumpPerTurn: 1000 } });
    const devices = Array.from({ length: 10 }, (_, i) => w.addDevice(`d${i}`, ["t"]));
    for (const d of devices) await connected(w, d);
    const sent = captureServerSends(w);
    const publishedAt = w.clock.now();
    const r = await w.publish({ target: { topic: "t" }, payload: enc("all"), publisher: "test" });
    expect(r.recipients).toBe(10);
    // before any ack can be back (5 ms each way), only maxInflight pushes left
    expect(pushes(sent).filter((c) => c.at === publishedAt)).toHaveLength(4);
    for (const d of devices) await untilDelivered(w, d, 1);
    for (const d of devices) expect(d.payloads()).toEqual(["all"]);
    // each push once: a held-back push is not a lost one
    expect(pushes(sent)).toHaveLength(10);
    await w.run(10_000, () => devices.every((d) => w.engine.deviceStatus(d.id).ackedSeq === 1));
  });

  it("a busy device takes its turn behind the devices waiting for room", async () => {
    const w = await World.create({ options: { maxInflight: 2, pumpPerTurn: 1000 } });
    const busy = w.addDevice("busy");
    const others = Array.from({ length: 4 }, (_, i) => w.addDevice(`o${i}`, ["t"]));
    await connected(w, busy);
    for (const d of others) await connected(w, d);
    const sent = captureServerSends(w);
    for (let i = 0; i < 20; i++) void publishTo(w, "busy", `m${i}`);
    await w.publish({ target: { topic: "t" }, payload: enc("all"), publisher: "test" });
    for (const d of others) await untilDelivered(w, d, 1);
    await untilDelivered(w, busy, 20);
    const order = pushes(sent).map((c) => c.order);
    const lastBusy = Math.max(...pushes(sent, "busy").map((c) => c.order));
    for (const d of others) expect(Math.max(...pushes(sent, d.id).map((c) => c.order))).toBeLessThan(lastBusy);
    expect(order).toHaveLength(24);
  });

  it("a device that goes offline gives its room back", async () => {
    const w = await World.create({ options: { maxInflight: 1, pumpPerTurn: 1000 } });
    const mute = w.addDevice("mute", ["t"]);
    const other = w.addDevice("other", ["t"]);
    await connected(w, mute);
    await connected(w, other);
    const sent = captureServerSends(w);
    mute.dropIncoming = (frame) => frame.kind === "push"; // it never sees (so never acks) the push
    await w.publish({ target: { topic: "t" }, payload: enc("x"), publisher: "test" });
    mute.disconnect();
    await untilDelivered(w, other, 1);
    expect(other.payloads()).toEqual(["x"]);
    expect(pushes(sent, "other")).toHaveLength(1);
  });
});
