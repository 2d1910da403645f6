import { describe, expect, it } from "vitest";
import { MessagingError } from "../../src/messaging/errors.ts";
import { ErrorCode } from "../../src/wire/index.ts";
import { answered, captureServerReceives, captureServerSends, connected, enc, pushes, untilDelivered } from "./helpers.ts";
import { World, type SimDevice } from "./world.ts";

function sessionOf(d: SimDevice): NonNullable<SimDevice["session"]> {
  if (d.session === undefined) throw new Error(`device ${d.id} has no session`);
  return d.session;
}

describe("uplink Publish", () => {
  it("Welcome announces a payload size that is sure to fit one record (below maxPayload); it gets through, maxPayload itself does not", async () => {
    // a maxPayload above what fits (the default, 768, fits the default MTU)
    const w = await World.create({ options: { maxPayload: 1024 } });
    const pub = w.addDevice("pub");
    const sub = w.addDevice("sub", ["t"]);
    for (const d of [pub, sub]) await connected(w, d);
    const limit = pub.welcomes[0]?.limits?.maxPayload ?? 0;
    // below the 1024 maxPayload: the Push (ids, publisher, signature) must also fit 1163 bytes
    expect(limit).toBeGreaterThan(800);
    expect(limit).toBeLessThan(1024);
    const id = await answered(w, sessionOf(pub).publish("t", new Uint8Array(limit).fill(65), {}, w.clock.now()));
    expect(id).toBe("up:pub:1");
    await untilDelivered(w, sub, 1);
    const refused = await answered(
      w,
      sessionOf(pub)
        .publish("t", new Uint8Array(1024).fill(65), {}, w.clock.now())
        .catch((e: unknown) => e),
    );
    expect(refused).toBeInstanceOf(MessagingError);
    expect((refused as MessagingError).code).toBe("payload_too_large");
  });

  it("reaches the other subscribers once even when PublishAcks are lost (same message id, published once)", async () => {
    const w = await World.create();
    const pub = w.addDevice("pub");
    const b = w.addDevice("b", ["chat"]);
    const c = w.addDevice("c", ["chat"]);
    for (const d of [pub, b, c]) await connected(w, d);
    let publishAcks = 0;
    pub.dropIncoming = (f) => f.kind === "publishAck" && ++publishAcks <= 3;
    const received = captureServerReceives(w);
    const sent = captureServerSends(w);
    const id = await answered(w, sessionOf(pub).publish("chat", enc("hello"), { contentType: "text/plain" }, w.clock.now()));
    expect(id).toBe("up:pub:1");
    expect(publishAcks).toBe(4);
    const publishes = received.filter((r) => r.frame.kind === "publish");
    expect(publishes).toHaveLength(4);
    for (const p of publishes) expect(p.bytes).toEqual(publishes[0]?.bytes);
    const acks = sent.flatMap((s) => (s.frame.kind === "publishAck" ? [s.frame.publishAck] : []));
    expect(acks).toHaveLength(4);
    for (const a of acks) expect(a).toMatchObject({ requestId: 1, messageId: id });

    await untilDelivered(w, b, 1);
    await untilDelivered(w, c, 1);
    await w.run(20_000);
    for (const d of [b, c]) {
      expect(d.delivered).toEqual([{ seq: 1, messageId: id, payload: "hello", topic: "chat" }]);
      const copies = pushes(sent, d.id);
      expect(copies.length).toBeGreaterThan(0);
      expect(copies.every((p) => p.frame.push.seq === 1 && p.frame.push.messageId === id)).toBe(true);
      expect(copies[0]?.frame.push).toMatchObject({ publisher: "device:pub", topic: "chat", device: "", contentType: "text/plain" });
    }
    expect(pub.delivered).toEqual([]);
    // one message, one queued receipt per subscriber
    expect(await w.store.getMessage(id)).toMatchObject({ id, topic: "chat", publisher: "device:pub" });
    expect(
      w
        .receiptsOf(id)
        .filter((r) => r.state === "queued")
        .map((r) => r.device),
    ).toEqual(["b", "c"]);
  });

  for (const seed of [1, 2]) {
    it(`over a lossy network each of several publishes reaches the subscriber exactly once, in order (seed ${seed})`, async () => {
      const w = await World.create({ net: { loss: 0.3, duplicate: 0.2, reorder: 0.2, latency: [2, 30] }, seed });
      const pub = w.addDevice("pub");
      const sub = w.addDevice("sub", ["chat"]);
      await connected(w, pub);
      await connected(w, sub);
      const ids: string[] = [];
      for (let i = 1; i <= 10; i++) {
        ids.push(await answered(w, sessionOf(pub).publish("chat", enc(`u${i}`), {}, w.clock.now()), 600_000));
      }
      expect(new Set(ids).size).toBe(10);
      await untilDelivered(w, sub, 10);
      await w.run(60_000);
      expect(sub.payloads()).toEqual(Array.from({ length: 10 }, (_, i) => `u${i + 1}`));
      expect(sub.delivered.map((x) => x.messageId)).toEqual(ids);
    });
  }

  it("a publish to a bad topic is refused with BAD_TOPIC", async () => {
    const w = await World.create();
    const pub = w.addDevice("pub");
    await connected(w, pub);
    const sent = captureServerSends(w);
    const outcome = await answered(
      w,
      sessionOf(pub)
        .publish("bad topic", enc("x"), {}, w.clock.now())
        .catch((e: unknown) => e),
    );
    expect(outcome).toBeInstanceOf(MessagingError);
    expect(outcome).toMatchObject({ code: "bad_topic" });
    const ack = sent.find((s) => s.frame.kind === "publishAck");
    expect(ack?.frame.kind === "publishAck" && ack.frame.publishAck).toMatchObject({
      requestId: 1,
      messageId: "",
      error: { code: ErrorCode.BAD_TOPIC },
    });
  });
});

describe("Subscribe and Unsubscribe", () => {
  it("change what a device receives from a topic, and survive a reconnect", async () => {
    const w = await World.create();
    const d = w.addDevice("dev", ["fleet"]);
    await connected(w, d);
    expect(d.welcomes[0]?.topics).toEqual(["fleet"]);
    expect(await answered(w, sessionOf(d).subscribe(["chat", "alerts/fire"], true, w.clock.now()))).toEqual(["alerts/fire", "chat", "fleet"]);
    const t1 = await w.publish({ target: { topic: "chat" }, payload: enc("c1"), publisher: "test" });
    expect(t1.recipients).toBe(1);
    await untilDelivered(w, d, 1);
    expect(await answered(w, sessionOf(d).subscribe(["chat"], false, w.clock.now()))).toEqual(["alerts/fire", "fleet"]);
    const t2 = await w.publish({ target: { topic: "chat" }, payload: enc("c2"), publisher: "test" });
    expect(t2.recipients).toBe(0);
    await w.publish({ target: { topic: "alerts/fire" }, payload: enc("a1"), publisher: "test" });
    await w.publish({ target: { topic: "fleet" }, payload: enc("f1"), publisher: "test" });
    await untilDelivered(w, d, 3);
    await w.run(5000);
    expect(d.payloads()).toEqual(["c1", "a1", "f1"]);
    d.disconnect();
    await connected(w, d);
    expect(d.welcomes.at(-1)?.topics).toEqual(["alerts/fire", "fleet"]);
  });

  it("are idempotent: a repeated Subscribe changes nothing more", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    let dropped = 0;
    d.dropIncoming = (f) => f.kind === "subscribed" && ++dropped <= 2;
    const received = captureServerReceives(w);
    expect(await answered(w, sessionOf(d).subscribe(["chat"], true, w.clock.now()))).toEqual(["chat"]);
    expect(received.filter((r) => r.frame.kind === "subscribe")).toHaveLength(3);
    expect(w.engine.subscribersOf("chat")).toEqual(["dev"]);
  });

  it("a bad topic is refused with BAD_TOPIC in Subscribed, and nothing changes", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    await answered(w, sessionOf(d).subscribe(["chat"], true, w.clock.now()));
    const sent = captureServerSends(w);
    for (const bad of ["", "a//b", "trailing/", "/lead", "sp ace", "x".repeat(129)]) {
      const outcome = await answered(
        w,
        sessionOf(d)
          .subscribe(["fine", bad], true, w.clock.now())
          .catch((e: unknown) => e),
      );
      expect(outcome, JSON.stringify(bad)).toMatchObject({ name: "MessagingError", code: "bad_topic" });
    }
    const answers = sent.flatMap((s) => (s.frame.kind === "subscribed" ? [s.frame.subscribed] : []));
    expect(answers).toHaveLength(6);
    for (const a of answers) {
      expect(a.error?.code).toBe(ErrorCode.BAD_TOPIC);
      expect(a.topics).toEqual(["chat"]);
    }
    expect(w.engine.subscribersOf("fine")).toEqual([]);
    const unsub = await answered(
      w,
      sessionOf(d)
        .subscribe(["chat", "bad topic"], false, w.clock.now())
        .catch((e: unknown) => e),
    );
    expect(unsub).toMatchObject({ code: "bad_topic" });
    expect(w.engine.subscribersOf("chat")).toEqual(["dev"]);
  });

  it("more than maxTopics is refused with TOO_MANY_TOPICS", async () => {
    const w = await World.create({ options: { maxTopics: 2 } });
    const d = w.addDevice("dev");
    await connected(w, d);
    expect(d.welcomes[0]?.limits?.maxTopics).toBe(2);
    await answered(w, sessionOf(d).subscribe(["a", "b"], true, w.clock.now()));
    const sent = captureServerSends(w);
    const outcome = await answered(
      w,
      sessionOf(d)
        .subscribe(["c"], true, w.clock.now())
        .catch((e: unknown) => e),
    );
    expect(outcome).toMatchObject({ code: "too_many_topics" });
    const answer = sent.find((s) => s.frame.kind === "subscribed");
    expect(answer?.frame.kind === "subscribed" && answer.frame.subscribed).toMatchObject({
      topics: ["a", "b"],
      error: { code: ErrorCode.TOO_MANY_TOPICS },
    });
    // already subscribed ones do not count twice
    expect(await answered(w, sessionOf(d).subscribe(["a", "b"], true, w.clock.now()))).toEqual(["a", "b"]);
  });
});
