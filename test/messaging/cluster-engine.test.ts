/**
 * The delivery engine in cluster mode: engines ("nodes") on one shared
 * memory store (memory-cluster.ts), devices on the simulated network of
 * world.ts. Holds, routing of publishes to the holder, moves between nodes
 * with loss, fencing of a node that lost a device, limits and expiry applied
 * at claim. The scenarios of cluster-scenarios.ts run here on the memory
 * cluster (and in cluster-redis.test.ts on Redis).
 */
import { describe, expect, it } from "vitest";
import { MessagingError } from "../../src/messaging/errors.ts";
import { NO_OBSERVER, type DeliveryObserver } from "../../src/messaging/observer.ts";
import { clusterOf } from "../../src/store/index.ts";
import { ErrorCode } from "../../src/wire/index.ts";
import { captureServerSends, enc, pushes, receiptTrail, untilDelivered } from "./helpers.ts";
import { deviceOn, describeClusterScenarios, direct } from "./cluster-scenarios.ts";
import { World, type ClusterNode, type SimDevice } from "./world.ts";

describeClusterScenarios("memory cluster", (nodes, o) => World.create({ ...o, nodes }));

async function welcomed(w: World, d: SimDevice, n = 1): Promise<void> {
  await w.run(60_000, () => d.welcomes.length >= n);
  expect(d.welcomes.length).toBeGreaterThanOrEqual(n);
}

/** A world of two nodes whose node 1 answers claims only when the test says (the claim itself takes effect at once). */
async function slowClaims(observer?: DeliveryObserver): Promise<{ w: World; answer(): void }> {
  let release: (() => void) | undefined;
  const w = await World.create({
    nodes: 2,
    ...(observer === undefined ? {} : { observer }),
    wrapNodeStore: (_i, store) => ({
      ...store,
      claimDevice: (device: string) => {
        const answer = store.claimDevice(device);
        return new Promise<void>((r) => (release = r)).then(() => answer);
      },
    }),
  });
  return {
    w,
    answer: () => {
      expect(release).toBeDefined();
      release?.();
    },
  };
}

describe("delivery engine on a shared store (cluster mode)", () => {
  it("a publish on node A to a device held by node B is delivered once, by B", async () => {
    const w = await World.create({ nodes: 3 });
    const d = w.addDevice("d1");
    d.connect({ node: 1 });
    await welcomed(w, d);
    expect(w.engineAt(1).heldDevices()).toEqual(["d1"]);
    expect(w.engineAt(0).heldDevices()).toEqual([]);
    const r = await w.publish(direct("d1", "hello from A"), 0);
    expect(r.recipients).toBe(1);
    await untilDelivered(w, d, 1, 10_000);
    await w.run(5_000);
    expect(d.payloads()).toEqual(["hello from A"]);
    expect(d.delivered[0]?.seq).toBe(1);
    // A never loaded the device's queue; B delivered and acked it (nothing stored any more)
    expect(w.engineAt(0).heldDevices()).toEqual([]);
    expect(receiptTrail(w, r.messageId)).toEqual(["queued@0", "sent@1", "delivered@1"]);
    expect(w.cluster?.data.loadDeliveryState().deliveries).toEqual([]);
  });

  it("after missed events (resync) a node drops the devices another node took, reads the queues of the others and its subscriptions again", async () => {
    const w = await World.create({ nodes: 2 });
    const sent = captureServerSends(w);
    const d = await deviceOn(w, "d1", 0);
    const stay = await deviceOn(w, "d2", 0);
    const s = await deviceOn(w, "s", 1);
    const a = clusterOf(w.store)?.instance ?? "";
    // node A's event connection is down: it hears neither the claim, nor the publish, nor the subscription
    w.cluster?.loseEvents(a, true);
    const onA = d.link?.peer;
    d.link = undefined;
    d.connect({ node: 1 });
    await welcomed(w, d, 2);
    void s.session?.subscribe(["news"], true, w.clock.now());
    await w.publish(direct("d2", "missed"), 1);
    await w.run(2_000);
    expect(stay.delivered).toEqual([]);
    expect(w.engineAt(0).heldDevices()).toEqual(["d1", "d2"]);
    expect(w.engineAt(0).subscribersOf("news")).toEqual([]);
    w.cluster?.loseEvents(a, false);
    w.cluster?.resync();
    await untilDelivered(w, stay, 1, 10_000);
    expect(stay.payloads()).toEqual(["missed"]);
    expect(w.engineAt(0).heldDevices()).toEqual(["d2"]);
    expect(w.engineAt(0).subscribersOf("news")).toEqual(["s"]);
    const byes = sent.filter((c) => c.peer === onA && c.frame.kind === "bye");
    expect(byes.map((c) => (c.frame.kind === "bye" ? c.frame.bye.reason?.code : undefined))).toEqual([ErrorCode.SESSION_REPLACED]);
  });

  it("a direct publish to a full offline queue is refused queue_full on every node", async () => {
    const w = await World.create({ nodes: 3, options: { maxQueue: 3 } });
    const d = w.addDevice("d1");
    d.connect({ node: 1 });
    await welcomed(w, d);
    d.disconnect(); // B releases the device after its commit: held by nobody
    await w.run(1_000);
    expect((await clusterOf(w.store)?.holders(["d1"]))?.get("d1")).toBe("");
    for (let i = 0; i < 3; i++) {
      // 1 ms apart: FIFO across nodes follows the clock (order numbers are ms * 1000 and up)
      w.clock.set(w.clock.now() + 1);
      await w.publish(direct("d1", `q${i}`), i);
    }
    for (const node of [0, 1, 2]) {
      await expect(w.publish(direct("d1", "one too many"), node)).rejects.toMatchObject({ code: "queue_full" });
    }
    expect(w.cluster?.data.loadDeliveryState().deliveries.length).toBe(3);
    d.connect({ node: 2 });
    await untilDelivered(w, d, 3, 10_000);
    expect(d.payloads()).toEqual(["q0", "q1", "q2"]);
  });

  it("expiry, collapse keys and the cap are applied at the claim of a queue nobody held", async () => {
    const w = await World.create({ nodes: 2, options: { maxQueue: 3 } });
    const d = w.addDevice("d1", ["t"]);
    await w.run(100);
    // 1 ms apart: the nodes' order numbers follow the clock
    const at = async (node: number, req: Parameters<World["publish"]>[0]) => {
      w.clock.set(w.clock.now() + 1);
      return w.publish(req, node);
    };
    const topic = (text: string) => ({ target: { topic: "t" }, payload: enc(text), publisher: "test" });
    const short = await at(0, direct("d1", "short", { ttlSeconds: 10 }));
    const old = await at(1, direct("d1", "old", { collapseKey: "k" }));
    await at(0, direct("d1", "new", { collapseKey: "k" }));
    // a topic fan-out is not checked against the stored depth: the claim applies the cap
    const t1 = await at(1, topic("t1"));
    await at(0, topic("t2"));
    const t3 = await at(1, topic("t3"));
    expect(w.cluster?.data.loadDeliveryState().deliveries.length).toBe(6);
    w.clock.set(w.clock.now() + 20_000);
    d.connect({ node: 1 });
    await untilDelivered(w, d, 3, 10_000);
    await w.run(5_000);
    expect(d.payloads()).toEqual(["new", "t1", "t2"]);
    expect(receiptTrail(w, short.messageId)).toEqual(["queued@0", "expired/ttl@0"]);
    expect(receiptTrail(w, old.messageId)).toEqual(["queued@0", "expired/collapsed@0"]);
    expect(receiptTrail(w, t1.messageId)).toEqual(["queued@0", "sent@2", "delivered@2"]);
    expect(receiptTrail(w, t3.messageId)).toEqual(["queued@0", "rejected/queue_full@0"]);
    expect(w.cluster?.data.loadDeliveryState().deliveries).toEqual([]);
  });

  it("a registry change on one node reaches the engine holding the device on another (revocation ends its session)", async () => {
    const w = await World.create({ nodes: 2 });
    // the device is added through node 0's registry: node 1 learns it from the event "registry"
    const d = await deviceOn(w, "d1", 1);
    await w.registry.revoke("d1");
    await w.run(2_000);
    expect(d.byes.map((b) => b?.code)).toEqual([ErrorCode.DEVICE_REVOKED]);
    expect(w.nodes[1]?.registry.get("d1")?.revoked).toBe(true);
    await expect(w.publish(direct("d1", "x"), 1)).rejects.toMatchObject({ code: "device_revoked" });
  });

  it("a device that leaves one node and says Hello to another at once continues there (the release and the claim are ordered)", async () => {
    const w = await World.create({ nodes: 3 });
    const d = await deviceOn(w, "d1", 1);
    await w.publish(direct("d1", "one"), 0);
    await untilDelivered(w, d, 1, 10_000);
    // closed on B and opened on C in the same turn: B releases after its commit, C claims
    d.connect({ node: 2 });
    await welcomed(w, d, 2);
    await w.publish(direct("d1", "two"), 1);
    await untilDelivered(w, d, 2, 10_000);
    await w.run(2_000);
    expect(d.delivered.map((x) => [x.seq, x.payload])).toEqual([
      [1, "one"],
      [2, "two"],
    ]);
    expect(w.engineAt(1).heldDevices()).toEqual([]);
    expect(w.engineAt(2).heldDevices()).toEqual(["d1"]);
    expect(w.cluster?.holdOf("d1")?.instance).toBe(clusterOf(w.nodes[2]?.store as object)?.instance);
    // and back to B at once
    d.connect({ node: 1 });
    await welcomed(w, d, 3);
    await w.publish(direct("d1", "three"), 2);
    await untilDelivered(w, d, 3, 10_000);
    expect(d.delivered.at(-1)).toMatchObject({ seq: 3, payload: "three" });
    expect(w.engineAt(2).heldDevices()).toEqual([]);
  });

  it("a publish on the node whose claim of the device is in progress reaches the device (the claim read the queue before it)", async () => {
    const { w, answer } = await slowClaims();
    const d = w.addDevice("d1");
    await w.run(100);
    (w.nodes[1] as ClusterNode).frozen = true;
    d.connect({ node: 1 });
    await w.run(50);
    expect(w.cluster?.holdOf("d1")?.instance).toBe(clusterOf(w.nodes[1]?.store as object)?.instance);
    const r = await w.publish(direct("d1", "during the claim"), 1);
    expect(r.recipients).toBe(1);
    (w.nodes[1] as ClusterNode).frozen = false;
    answer();
    await untilDelivered(w, d, 1, 10_000);
    expect(d.payloads()).toEqual(["during the claim"]);
  });

  it("a Hello answered while the claim was in progress sends each queued push once (no second copy when the claim binds the session)", async () => {
    const samples: number[] = [];
    const { w, answer } = await slowClaims({ ...NO_OBSERVER, rttSample: (ms) => samples.push(ms) });
    const d = w.addDevice("d1");
    await w.run(100);
    // stored while nobody holds the device: the claim loads them
    for (const text of ["one", "two", "three"]) await w.publish(direct("d1", text), 0);
    const sent = captureServerSends(w);
    (w.nodes[1] as ClusterNode).frozen = true;
    d.connect({ node: 1 });
    await w.run(50);
    (w.nodes[1] as ClusterNode).frozen = false;
    answer();
    await untilDelivered(w, d, 3, 10_000);
    await w.run(5_000);
    expect(d.payloads()).toEqual(["one", "two", "three"]);
    // sent once each on a lossless network: the second bind (the claim's) re-sent nothing the Hello's had sent
    expect(pushes(sent, "d1").map((c) => c.frame.push.seq)).toEqual([1, 2, 3]);
    // and acked first transmissions are round-trip samples (Karn): the RTO learns the path
    expect(samples.length).toBeGreaterThan(0);
  });

  it("a claim whose session ended before its answer is given up again", async () => {
    const { w, answer } = await slowClaims();
    const d = w.addDevice("d1");
    d.autoReconnect = false;
    await w.run(100);
    (w.nodes[1] as ClusterNode).frozen = true;
    d.connect({ node: 1 });
    await w.run(50);
    d.disconnect();
    (w.nodes[1] as ClusterNode).frozen = false;
    answer();
    await w.run(1_000);
    expect(w.engineAt(1).heldDevices()).toEqual([]);
    expect(w.cluster?.holdOf("d1")).toBeUndefined();
  });

  it("is a MessagingError for an unknown device on any node", async () => {
    const w = await World.create({ nodes: 2 });
    await expect(w.publish(direct("nobody", "x"), 1)).rejects.toBeInstanceOf(MessagingError);
  });
});
