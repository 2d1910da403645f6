import { describe, expect, it } from "vitest";
import { clusterOf, createMemoryCluster, type ClusterEvent } from "../../src/store/index.ts";
import { delivery, device, message } from "./contract.ts";

/** Collects a node's events. */
function events(node: { onClusterEvent(l: (e: ClusterEvent) => void): () => void }): ClusterEvent[] {
  const out: ClusterEvent[] = [];
  node.onClusterEvent((e) => out.push(e));
  return out;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe("memory cluster", () => {
  it("gives nodes one shared store with the cluster contract", async () => {
    const c = createMemoryCluster();
    const a = c.node("a");
    const b = c.node("b");
    expect(clusterOf(a)).toBe(a);
    expect(a.instance).not.toBe(b.instance);
    await a.putDevice(device("d1"));
    expect((await b.getDevice("d1"))?.id).toBe("d1");
  });

  it("claims with increasing epochs, tells the previous holder, and releases only at the holder's epoch", async () => {
    const c = createMemoryCluster();
    const a = c.node("a");
    const b = c.node("b");
    const seenA = events(a);
    const seenB = events(b);
    const h1 = await a.claimDevice("d1");
    expect(h1).toMatchObject({ device: "d1", epoch: 1, previous: "", counters: undefined, deliveries: [] });
    const claim = b.claimDevice("d1");
    // asynchronous: nothing inside the caller's stack
    expect(seenA).toEqual([]);
    const h2 = await claim;
    expect(h2).toMatchObject({ epoch: 2, previous: a.instance });
    await tick();
    expect(seenA).toEqual([{ kind: "taken", device: "d1", epoch: 2 }]);
    expect(seenB).toEqual([]);
    await a.releaseDevice("d1", 1); // stale: b keeps it
    expect((await a.holders(["d1", "d2"])).get("d1")).toBe(b.instance);
    expect((await a.holders(["d2"])).get("d2")).toBe("");
    await b.releaseDevice("d1", 2);
    expect((await a.holders(["d1"])).get("d1")).toBe("");
    expect((await a.claimDevice("d1")).epoch).toBe(3);
  });

  it("fences holder-only writes of a device held elsewhere and applies the rest of the batch", async () => {
    const c = createMemoryCluster();
    const a = c.node("a");
    const b = c.node("b");
    await a.commit({ messages: [message("m1"), message("m2")], deliveries: [delivery("d1", "m1", 1), delivery("d2", "m2", 2)] });
    const ha = await a.claimDevice("d1");
    const hd2 = await a.claimDevice("d2");
    await b.claimDevice("d1"); // d1 moves to b
    await a.commit({
      messages: [message("m3")],
      deliveries: [
        delivery("d1", "m1", 1, { seq: 1 }),
        delivery("d1", "m3", 3, { seq: 2 }),
        delivery("d2", "m2", 2, { seq: 1 }),
      ],
      counters: [
        { device: "d1", lastSeq: 2, ackedSeq: 2 },
        { device: "d2", lastSeq: 1, ackedSeq: 0 },
      ],
      removeDeliveries: [{ device: "d1", messageId: "m1" }],
      fence: [
        { device: "d1", epoch: ha.epoch },
        { device: "d2", epoch: hd2.epoch },
      ],
    });
    const q1 = await a.readQueue("d1");
    // d1: nothing of a's holder writes; the new message m3 is still queued for it, unsent
    expect(q1.deliveries.map((d) => [d.messageId, d.seq]).sort()).toEqual([
      ["m1", 0],
      ["m3", 0],
    ]);
    expect(c.data.loadDeliveryState().counters.map((k) => k.device)).toEqual(["d2"]);
    // d2 is still a's: applied
    expect((await a.readQueue("d2")).deliveries).toMatchObject([{ messageId: "m2", seq: 1 }]);
    expect((await a.queueDepths(["d1", "d2", "d3"])).get("d1")).toBe(2);
  });

  it("tells the holder of another node's inserts, every other node of subscriptions, receipts and registry changes", async () => {
    const c = createMemoryCluster();
    const a = c.node("a");
    const b = c.node("b");
    const x = c.node("x");
    const seenA = events(a);
    const seenB = events(b);
    const seenX = events(x);
    await b.claimDevice("d1");
    await a.commit({
      messages: [message("m1")],
      deliveries: [delivery("d1", "m1", 1), delivery("d2", "m1", 1)],
      subscribe: [{ device: "d3", topic: "t" }],
      receipts: [{ messageId: "m1", device: "d1", state: "queued", at: 1, reason: "", seq: 0, topic: "alerts" }],
    });
    await a.putDevice(device("d9"));
    await tick();
    expect(seenA).toEqual([]);
    expect(seenB).toContainEqual({ kind: "queued", devices: ["d1"] });
    expect(seenX.some((e) => e.kind === "queued")).toBe(false);
    for (const seen of [seenB, seenX]) {
      expect(seen).toContainEqual({ kind: "subscriptions", changes: [{ device: "d3", topic: "t", subscribed: true }] });
      expect(seen).toContainEqual({ kind: "receipts", lastId: 1 });
      expect(seen).toContainEqual({ kind: "registry", device: "d9" });
    }
    // the holder's own inserts are not told back to it
    seenB.length = 0;
    await b.commit({ messages: [message("m2")], deliveries: [delivery("d1", "m2", 2)] });
    await tick();
    expect(seenB).toEqual([]);
    expect(await x.loadSubscriptions()).toEqual([{ device: "d3", topic: "t" }]);
  });

  it("a closed node refuses calls; the others go on", async () => {
    const c = createMemoryCluster();
    const a = c.node("a");
    const b = c.node("b");
    await a.close();
    await expect(a.getDevice("x")).rejects.toMatchObject({ code: "store_closed" });
    await expect(a.claimDevice("x")).rejects.toMatchObject({ code: "store_closed" });
    await expect(b.putDevice(device("x"))).resolves.toBeUndefined();
  });
});
