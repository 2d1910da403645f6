import { describe, expect, it } from "vitest";
import { answered, connected, enc, publishTo, receiptTrail, untilDelivered } from "./helpers.ts";
import { World, type NetworkConditions, type SimDevice } from "./world.ts";

const LOSSY: NetworkConditions = { loss: 0.2, duplicate: 0.1, reorder: 0.2, latency: [2, 30] };

/** Every device got exactly its expected payloads, in order, with seqs 1..n. */
function expectExactlyOnce(devices: readonly SimDevice[], expected: Map<string, string[]>): void {
  for (const d of devices) {
    expect(d.payloads(), `device ${d.id}`).toEqual(expected.get(d.id));
    expect(
      d.delivered.map((x) => x.seq),
      `device ${d.id} seqs`,
    ).toEqual(d.delivered.map((_, i) => i + 1));
  }
}

/** Publishes a stream of 60 messages (direct and topic) to devices, calling `between(i)` after each. */
async function stream(w: World, devices: readonly SimDevice[], between: (i: number) => void): Promise<Map<string, string[]>> {
  const expected = new Map<string, string[]>(devices.map((d) => [d.id, []]));
  for (let i = 1; i <= 60; i++) {
    if (i % 5 === 0) {
      await w.publish({ target: { topic: "news" }, payload: enc(`t${i}`), publisher: "test" });
      for (const d of devices) expected.get(d.id)?.push(`t${i}`);
    } else {
      const d = devices[i % devices.length] as SimDevice;
      await publishTo(w, d.id, `d${i}`);
      expected.get(d.id)?.push(`d${i}`);
    }
    between(i);
    await w.run(40);
  }
  return expected;
}

async function finish(w: World, devices: readonly SimDevice[], expected: Map<string, string[]>): Promise<void> {
  await w.run(1_200_000, () => devices.every((d) => d.delivered.length >= (expected.get(d.id)?.length ?? 0)));
  await w.run(600_000, () => devices.every((d) => w.engine.deviceStatus(d.id).queueDepth === 0));
  expectExactlyOnce(devices, expected);
  for (const d of devices) {
    expect(w.engine.deviceStatus(d.id)).toMatchObject({ queueDepth: 0, lastSeq: expected.get(d.id)?.length, ackedSeq: expected.get(d.id)?.length });
  }
}

describe("daemon restarts (kill -9: the unflushed batch is lost)", () => {
  for (const seed of [1, 2, 3]) {
    it(`in the middle of a lossy stream, four times: every message exactly once, in order (seed ${seed})`, async () => {
      const w = await World.create({ net: LOSSY, seed });
      const devices = ["a", "b", "c"].map((id) => w.addDevice(id, ["news"]));
      for (const d of devices) await connected(w, d);
      let restarts = 0;
      const expected = await stream(w, devices, (i) => {
        // a few ms into the next turn, while datagrams are on their way
        if (i % 15 === 7) {
          w.after(3 + (i % 4), () => {
            restarts++;
            void w.restartEngine();
          });
        }
      });
      expect(restarts).toBe(4);
      await finish(w, devices, expected);
      // one "delivered" receipt per message and device, whatever was lost with the batches
      const delivered = w.receipts.filter((r) => r.state === "delivered").map((r) => `${r.device}:${r.seq}`);
      expect(new Set(delivered).size).toBe(delivered.length);
    });
  }

  it("right after an ack reached it, before the commit: the device gets nothing twice", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    let armed = true;
    w.onServerReceive = (_link, r) => {
      // the first Ack (of m1) is processed, then the daemon dies in the same turn
      if (armed && r[0] === 0x22) {
        armed = false;
        w.after(0, () => void w.restartEngine()); // the world's loop awaits the restart
      }
    };
    const m1 = await publishTo(w, "dev", "m1");
    await w.run(100);
    expect(armed).toBe(false);
    // the batch with the ack was lost: the restarted daemon still has m1 in flight
    expect(w.engine.deviceStatus("dev")).toMatchObject({ online: false, queueDepth: 1, lastSeq: 1, ackedSeq: 0 });
    expect(receiptTrail(w, m1.messageId)).toEqual(["queued@0", "sent@1"]);
    await publishTo(w, "dev", "m2");
    // the device finds out by silence and resumes
    await untilDelivered(w, d, 2);
    await w.run(10_000, () => w.engine.deviceStatus("dev").queueDepth === 0);
    expect(d.stales).toBe(1);
    // the Hello's received_seq told the restarted daemon that m1 had arrived
    expect(d.welcomes.at(-1)).toMatchObject({ resumed: true, ackedSeq: 1 });
    expect(d.payloads()).toEqual(["m1", "m2"]);
    expect(receiptTrail(w, m1.messageId)).toEqual(["queued@0", "sent@1", "delivered@1"]);
    expect(w.engine.deviceStatus("dev")).toMatchObject({ queueDepth: 0, lastSeq: 2, ackedSeq: 2 });
  });

  it("keeps counters, queues and subscriptions", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    d.autoReconnect = false;
    await connected(w, d);
    const session = d.session;
    if (session === undefined) throw new Error("no session");
    expect(await answered(w, session.subscribe(["own/topic"], true, w.clock.now()))).toEqual(["own/topic"]);
    await publishTo(w, "dev", "m1");
    await untilDelivered(w, d, 1);
    await w.run(1000);
    d.disconnect();
    await publishTo(w, "dev", "m2");
    await w.publish({ target: { topic: "own/topic" }, payload: enc("m3"), publisher: "test" });
    const before = w.engine.deviceStatus("dev");
    expect(before).toMatchObject({ lastSeq: 1, ackedSeq: 1, queueDepth: 2 });
    await w.restartEngine();
    expect(w.engine.deviceStatus("dev")).toMatchObject({ lastSeq: 1, ackedSeq: 1, queueDepth: 2 });
    expect(w.engine.subscribersOf("own/topic")).toEqual(["dev"]);
    await connected(w, d);
    expect(d.welcomes.at(-1)).toMatchObject({ resumed: true, topics: ["own/topic"], ackedSeq: 1 });
    await untilDelivered(w, d, 3);
    expect(d.payloads()).toEqual(["m1", "m2", "m3"]);
    expect(d.delivered.map((x) => x.seq)).toEqual([1, 2, 3]);
  });
});

describe("device crashes (only hwm and token survive)", () => {
  for (const seed of [1, 2]) {
    it(`in the middle of a lossy stream, with daemon restarts too: never delivered twice to the app (seed ${seed})`, async () => {
      const w = await World.create({ net: LOSSY, seed });
      const devices = ["a", "b"].map((id) => w.addDevice(id, ["news"]));
      for (const d of devices) await connected(w, d);
      let crashes = 0;
      const expected = await stream(w, devices, (i) => {
        const d = devices[i % 2] as SimDevice;
        if (i % 6 === 3) {
          w.after(1 + (i % 5), () => {
            crashes++;
            d.crash();
            w.after(200, () => d.connect());
          });
        }
        if (i % 20 === 11) w.after(7, () => void w.restartEngine()); // the world's loop awaits the restart
      });
      expect(crashes).toBe(10);
      await finish(w, devices, expected);
    });
  }
});
