/**
 * Cluster scenarios run on every shared store (cluster-engine.test.ts on the
 * memory cluster, cluster-redis.test.ts on Redis): three engines ("nodes"),
 * devices on the simulated network of world.ts. A shared store may tell its
 * events over real sockets (Redis) while the world's clock is simulated, so
 * where a node must hear another's event the scenarios let real time pass
 * between simulated steps (`both`, bounded), never a sleep as an assertion.
 */
import { describe, expect, it } from "vitest";
import { NO_OBSERVER, type HoldEvent } from "../../src/messaging/observer.ts";
import type { ClusterStore, Store, WriteBatch } from "../../src/store/index.ts";
import { ErrorCode } from "../../src/wire/index.ts";
import { captureServerSends, enc } from "./helpers.ts";
import type { ClusterNode, SimDevice, World, WorldOptions } from "./world.ts";

/** Opens a world of `nodes` engines on one new shared store. */
export type OpenClusterWorld = (nodes: number, o: Omit<WorldOptions, "nodes" | "sharedStores">) => Promise<World>;

/** Runs the world (simulated time) and lets real time pass in between (events on their way) until `cond`, within 10 s of real time. */
export async function both(w: World, cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  for (;;) {
    await w.run(500, cond);
    if (cond()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const direct = (device: string, text: string, extra: object = {}) => ({ target: { device }, payload: enc(text), publisher: "test", ...extra });

/** A registered device (no automatic reconnection: the test moves it) with a Welcome from `node`. */
export async function deviceOn(w: World, id: string, node: number, topics: string[] = []): Promise<SimDevice> {
  const d = w.addDevice(id, topics);
  d.autoReconnect = false;
  // the node's registry hears of the device from node 0's (event "registry")
  await both(w, () => (w.nodes[node] as ClusterNode).registry.get(id) !== undefined, `${id} in node ${node}'s registry`);
  d.connect({ node });
  await both(w, () => d.welcomes.length >= 1, `the Welcome of ${id}`);
  return d;
}

/** A node store whose commits can be held back (they reach the shared store when `open` is called). */
export function gated(base: Store & ClusterStore): { store: Store & ClusterStore; close(): void; open(): void; readonly waiting: number } {
  let closed = false;
  let waiting: (() => void)[] = [];
  const commit = (batch: WriteBatch) => (closed ? new Promise<void>((r) => waiting.push(r)).then(() => base.commit(batch)) : base.commit(batch));
  // every other member is the store's own (bound: a class instance keeps its state)
  const store = new Proxy(base, {
    get: (target, key) => {
      if (key === "commit") return commit;
      const v: unknown = Reflect.get(target, key, target);
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return {
    store,
    close: () => {
      closed = true;
    },
    open: () => {
      closed = false;
      const run = waiting;
      waiting = [];
      for (const r of run) r();
    },
    get waiting() {
      return waiting.length;
    },
  };
}

export function describeClusterScenarios(name: string, open: OpenClusterWorld): void {
  describe(`cluster scenarios: ${name}`, () => {
    it("a topic publish reaches subscribers on every node once, and an offline one at its Hello on any node", async () => {
      const w = await open(3, {});
      const online = [await deviceOn(w, "a", 0, ["news"]), await deviceOn(w, "b", 1, ["news"]), await deviceOn(w, "c", 2, ["news"])];
      const offline = w.addDevice("e", ["news"]);
      offline.autoReconnect = false;
      // one device subscribes itself on node 2: the other nodes learn it (event "subscriptions")
      const self = await deviceOn(w, "s", 2);
      void self.session?.subscribe(["news"], true, w.clock.now());
      await both(w, () => [0, 1].every((i) => w.engineAt(i).subscribersOf("news").includes("s")), "the subscription on every node");
      expect(w.engineAt(0).subscribersOf("news")).toEqual(["a", "b", "c", "e", "s"]);
      const r = await w.publish({ target: { topic: "news" }, payload: enc("n1"), publisher: "test" }, 1);
      expect(r.recipients).toBe(5);
      await both(w, () => [...online, self].every((d) => d.delivered.length >= 1), "delivery to the online subscribers");
      await w.run(5_000);
      for (const d of [...online, self]) expect(d.payloads()).toEqual(["n1"]);
      expect(offline.delivered).toEqual([]);
      offline.connect({ node: 2 });
      await both(w, () => offline.delivered.length >= 1, "delivery to the late subscriber");
      await both(w, () => offline.hwm >= 1 && w.engineAt(2).deviceStatus("e").ackedSeq >= 1, "the late subscriber's ack");
      await w.run(5_000);
      expect(offline.payloads()).toEqual(["n1"]);
      expect((await w.store.loadDeliveryState()).deliveries).toEqual([]);
    });

    it("a device moving from B to C mid-stream over a lossy path gets everything once, in order; B's late commits are fenced", async () => {
      const holds: HoldEvent[] = [];
      let gate: ReturnType<typeof gated> | undefined;
      const w = await open(3, {
        seed: 7,
        net: { loss: 0.3, duplicate: 0.05, reorder: 0.1, latency: [5, 40] },
        observer: { ...NO_OBSERVER, holdEvent: (e) => holds.push(e) },
        wrapNodeStore: (i, store) => {
          if (i !== 1) return store;
          gate = gated(store);
          return gate.store;
        },
      });
      const d = await deviceOn(w, "d1", 1);
      const total = 30;
      for (let i = 0; i < total; i++) w.after(i * 40, () => void w.engineAt(0).publish(direct("d1", `m${i}`)));
      await both(w, () => d.delivered.length >= 6, "the first pushes");
      // B's commits stop reaching the store: what it does from now on is late
      gate?.close();
      (w.nodes[1] as ClusterNode).frozen = true;
      await w.run(400);
      // (B hears of node 0's publishes, and signs, in real time)
      await both(w, () => (gate?.waiting ?? 0) > 0, "a commit of B held back");
      // the device's path to B dies silently; it says Hello to C, which claims it
      const onB = d.link;
      if (onB !== undefined) onB.closed = true;
      d.link = undefined;
      d.connect({ node: 2 });
      await both(w, () => d.delivered.length >= total, "every message");
      await both(w, () => w.engineAt(1).heldDevices().length === 0, "B dropping the device");
      await w.run(5_000);
      expect(w.engineAt(2).heldDevices()).toEqual(["d1"]);
      expect(holds).toContain("taken");
      // B's late batches reach the store now: nothing of them may change C's device
      (w.nodes[1] as ClusterNode).frozen = false;
      gate?.open();
      await w.run(1_000);
      await both(w, () => w.engineAt(2).deviceStatus("d1").ackedSeq === d.hwm && gate?.waiting === 0, "C's acks");
      expect(d.payloads()).toEqual(Array.from({ length: total }, (_, i) => `m${i}`));
      const seqs = d.delivered.map((x) => x.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      expect(new Set(seqs).size).toBe(total);
      const status = w.engineAt(2).deviceStatus("d1");
      const stored = await w.store.loadDeliveryState();
      expect(stored.counters.find((c) => c.device === "d1")).toEqual({ device: "d1", lastSeq: status.lastSeq, ackedSeq: status.ackedSeq });
      expect(stored.deliveries.filter((x) => x.device === "d1")).toEqual([]);
      // and C goes on delivering after B's late commits
      await w.publish(direct("d1", "after"), 1);
      await both(w, () => d.delivered.length >= total + 1, "the message after");
      expect(d.payloads().at(-1)).toBe("after");
      expect(d.delivered.at(-1)?.seq).toBe(status.lastSeq + 1);
    });

    it("a push sent by a node in the turn it lost the device is fenced there and delivered by the new holder (a new message of a stale batch is kept unsent)", async () => {
      const holds: HoldEvent[] = [];
      let gate: ReturnType<typeof gated> | undefined;
      const w = await open(3, {
        observer: { ...NO_OBSERVER, holdEvent: (e) => holds.push(e) },
        wrapNodeStore: (i, store) => (i === 1 ? (gate = gated(store)).store : store),
      });
      const sent = captureServerSends(w);
      const d = await deviceOn(w, "d1", 1);
      const onB = d.link?.peer;
      // B queues and sends a push whose commit is held back: the push waits for it
      gate?.close();
      (w.nodes[1] as ClusterNode).frozen = true;
      void w.engineAt(1).publish(direct("d1", "late"));
      await w.run(100);
      await both(w, () => (gate?.waiting ?? 0) > 0, "B's commit held back");
      expect(gate?.waiting).toBe(1);
      // the device leaves its session on B without a word (B still holds it) and says Hello to C
      d.link = undefined;
      d.connect({ node: 2 });
      await both(w, () => d.welcomes.length >= 2, "the Welcome from C");
      await both(w, () => w.engineAt(1).heldDevices().length === 0, "B dropping the device");
      expect(holds.filter((e) => e === "taken")).toHaveLength(1);
      // B's commit completes (fenced): its push is not sent on the old session, only the Bye
      (w.nodes[1] as ClusterNode).frozen = false;
      gate?.open();
      // C delivers the message (its delivery was queued, unsent, whoever held the device)
      await both(w, () => d.delivered.length >= 1, "the late message through C");
      await w.run(2_000);
      const toB = sent.filter((c) => c.peer === onB && c.at > 0 && c.frame.kind !== "welcome");
      expect(toB.map((c) => (c.frame.kind === "bye" ? `bye:${c.frame.bye.reason?.code}` : c.frame.kind))).toEqual([
        `bye:${ErrorCode.SESSION_REPLACED}`,
      ]);
      expect(d.payloads()).toEqual(["late"]);
      expect(d.delivered[0]?.seq).toBe(1);
    });
  });
}
