import { describe, expect, it } from "vitest";
import { World, PERFECT, type NetworkConditions } from "./world.ts";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

async function publishDirect(w: World, device: string, n: number, prefix = "m"): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 1; i <= n; i++) {
    const r = await w.publish({ target: { device }, payload: enc(`${prefix}${i}`), publisher: "test" });
    ids.push(r.messageId);
  }
  return ids;
}

describe("delivery engine over a perfect network", () => {
  it("delivers direct pushes once, in order, verified, and writes receipts", async () => {
    const w = await World.create();
    const d = w.addDevice("dev-1");
    d.connect();
    await w.run(100, () => d.welcomes.length > 0);
    expect(d.welcomes[0]?.deviceId).toBe("dev-1");
    const publishing = publishDirect(w, "dev-1", 5);
    await w.run(100);
    const ids = await publishing;
    await w.run(2000, () => d.delivered.length === 5);
    expect(d.payloads()).toEqual(["m1", "m2", "m3", "m4", "m5"]);
    expect(d.delivered.map((x) => x.seq)).toEqual([1, 2, 3, 4, 5]);
    await w.run(200);
    for (const id of ids) expect(w.receiptsOf(id).map((r) => r.state)).toEqual(["queued", "sent", "delivered"]);
    expect(w.engine.deviceStatus("dev-1")).toMatchObject({ online: true, queueDepth: 0, lastSeq: 5, ackedSeq: 5 });
  });
});

const conditions: [string, NetworkConditions][] = [
  ["10% loss", { loss: 0.1, duplicate: 0.05, reorder: 0.1, latency: [2, 30] }],
  ["30% loss", { loss: 0.3, duplicate: 0.1, reorder: 0.2, latency: [2, 30] }],
  ["50% loss", { loss: 0.5, duplicate: 0.1, reorder: 0.3, latency: [2, 30] }],
];

describe("delivery engine over a lossy network", () => {
  for (const [name, net] of conditions) {
    for (const seed of [1, 2, 3]) {
      it(`${name}, seed ${seed}: every message exactly once, in order`, async () => {
        const w = await World.create({ net, seed });
        const devices = ["a", "b", "c"].map((id) => w.addDevice(id, ["news"]));
        for (const d of devices) d.connect();
        const expected = new Map<string, string[]>(devices.map((d) => [d.id, []]));
        for (let i = 1; i <= 40; i++) {
          if (i % 5 === 0) {
            await w.publish({ target: { topic: "news" }, payload: enc(`t${i}`), publisher: "test" });
            for (const d of devices) expected.get(d.id)?.push(`t${i}`);
          } else {
            const d = devices[i % 3];
            if (d === undefined) throw new Error("no device");
            await w.publish({ target: { device: d.id }, payload: enc(`d${i}`), publisher: "test" });
            expected.get(d.id)?.push(`d${i}`);
          }
          await w.run(20);
        }
        // simulated time is free: at 50 % loss each way, retransmissions backed off to 60 s need up to
        // ~17 min to deliver and ~6 min more for the last acks (100-seed sweep); these budgets leave room
        await w.run(1_800_000, () => devices.every((d) => d.delivered.length === expected.get(d.id)?.length));
        for (const d of devices) {
          expect(d.payloads()).toEqual(expected.get(d.id));
          expect(d.delivered.map((x) => x.seq)).toEqual(d.delivered.map((_, i) => i + 1));
        }
        await w.run(900_000, () => devices.every((d) => w.engine.deviceStatus(d.id).queueDepth === 0));
        for (const d of devices) expect(w.engine.deviceStatus(d.id).queueDepth).toBe(0);
      });
    }
  }
});

export { PERFECT };
