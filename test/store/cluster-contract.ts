/**
 * The contract of a shared store's cluster side (src/store/cluster-types.ts),
 * run against every implementation: the memory cluster (memory-cluster.test.ts)
 * and Redis on a real redis-server (redis-cluster.test.ts). Holds and epochs,
 * the "taken" event, fenced commits of a node that lost a device, the routing
 * of events (the holder's own vs every node, never the sender), and message id
 * reservations.
 *
 * "Nothing arrived" is never waited for with a sleep: both implementations
 * deliver one node's events in the order the store sent them, so a barrier
 * event sent afterwards (a registry change) proves that everything sent
 * before it has arrived.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { ClusterEvent, ClusterStore } from "../../src/store/cluster-types.ts";
import type { DeliveryRecord, Store } from "../../src/store/index.ts";
import { until } from "../support/until.ts";
import { delivery, message, receipt } from "./contract.ts";

export type ClusterNodeStore = Store & ClusterStore;

export interface ClusterFactory {
  /** `count` nodes on one new, empty shared store (closed by the suite) */
  nodes(count: number): Promise<ClusterNodeStore[]>;
}

/** A queue's rows in one order (the contract gives none). */
export const rows = (ds: readonly DeliveryRecord[]): DeliveryRecord[] =>
  [...ds].sort((a, b) => (a.device < b.device ? -1 : a.device > b.device ? 1 : a.messageId < b.messageId ? -1 : a.messageId > b.messageId ? 1 : 0));

let barriers = 0;
/** Sends a registry event from `from` and waits until every log in `to` has it: everything sent before has arrived. */
export async function barrier(from: Store, to: readonly ClusterEvent[][]): Promise<string> {
  const id = `barrier-${++barriers}`;
  await from.putDevice({ id, psk: { identity: `psk-${id}`, key: new Uint8Array([1]) }, revoked: false, topics: [], createdAt: 1, updatedAt: 1 });
  await until(() => to.every((log) => log.some((e) => e.kind === "registry" && e.device === id)), `the barrier ${id}`);
  return id;
}

/** The events of a log other than barriers. */
export const news = (log: readonly ClusterEvent[]): ClusterEvent[] => log.filter((e) => !(e.kind === "registry" && e.device.startsWith("barrier-")));

export function describeClusterContract(name: string, factory: ClusterFactory): void {
  describe(`cluster store contract: ${name}`, () => {
    const opened: ClusterNodeStore[] = [];
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close();
    });
    /** `count` nodes on one shared store, each with the events it heard. */
    const cluster = async (count: number): Promise<{ nodes: ClusterNodeStore[]; heard: ClusterEvent[][] }> => {
      const nodes = await factory.nodes(count);
      opened.push(...nodes);
      const heard = nodes.map((s) => {
        const log: ClusterEvent[] = [];
        s.onClusterEvent((e) => log.push(e));
        return log;
      });
      return { nodes, heard };
    };
    const two = async (): Promise<[ClusterNodeStore, ClusterNodeStore]> => (await cluster(2)).nodes as [ClusterNodeStore, ClusterNodeStore];

    describe("holds", () => {
      it("claims give increasing epochs and read the stored queue; a release only undoes its own hold", async () => {
        const [a, b] = await two();
        expect(a.instance).not.toBe(b.instance);
        await a.commit({
          messages: [message("m-1"), message("m-2")],
          deliveries: [delivery("dev", "m-1", 1, { seq: 4 }), delivery("dev", "m-2", 2), delivery("other", "m-2", 3)],
          counters: [{ device: "dev", lastSeq: 4, ackedSeq: 3 }],
        });
        const h1 = await a.claimDevice("dev");
        expect(h1).toMatchObject({ device: "dev", epoch: 1, previous: "", counters: { device: "dev", lastSeq: 4, ackedSeq: 3 } });
        expect(rows(h1.deliveries)).toEqual([delivery("dev", "m-1", 1, { seq: 4 }), delivery("dev", "m-2", 2)]);
        expect(h1.messages.map((m) => m.id).sort()).toEqual(["m-1", "m-2"]);
        expect(h1.messages.find((m) => m.id === "m-1")).toEqual(message("m-1"));
        const q = await b.readQueue("dev");
        expect(rows(q.deliveries)).toEqual(rows(h1.deliveries));
        expect(q.messages.map((m) => m.id).sort()).toEqual(["m-1", "m-2"]);
        expect(await a.holders(["dev", "other", "nobody"])).toEqual(
          new Map([
            ["dev", a.instance],
            ["other", ""],
            ["nobody", ""],
          ]),
        );

        const h2 = await b.claimDevice("dev");
        expect(h2).toMatchObject({ epoch: 2, previous: a.instance });
        // a's late release of epoch 1 does not undo b's hold
        await a.releaseDevice("dev", 1);
        expect((await a.holders(["dev"])).get("dev")).toBe(b.instance);
        await b.releaseDevice("dev", 2);
        expect((await a.holders(["dev"])).get("dev")).toBe("");
        // the epoch never goes back, whoever claims
        expect((await a.claimDevice("dev")).epoch).toBe(3);
        const fresh = await b.claimDevice("never-stored");
        expect(fresh).toEqual({ device: "never-stored", epoch: 1, counters: undefined, deliveries: [], messages: [], previous: "" });
        expect(await a.queueDepths(["dev", "other", "never-stored"])).toEqual(
          new Map([
            ["dev", 2],
            ["other", 1],
            ["never-stored", 0],
          ]),
        );
      });

      it("a closed node holds nothing", async () => {
        const [a, b] = await two();
        await a.claimDevice("dev");
        await b.claimDevice("other");
        await a.close();
        expect(await b.holders(["dev", "other"])).toEqual(
          new Map([
            ["dev", ""],
            ["other", b.instance],
          ]),
        );
      });

      it("tells the previous holder, and only it, that its device was taken, with the new claim's epoch", async () => {
        const { nodes, heard } = await cluster(3);
        const [a, b, c] = nodes as [ClusterNodeStore, ClusterNodeStore, ClusterNodeStore];
        const [ha, hb, hc] = heard as [ClusterEvent[], ClusterEvent[], ClusterEvent[]];
        await a.claimDevice("dev");
        await a.claimDevice("dev"); // a claim by the holder itself tells nobody
        const taken = b.claimDevice("dev");
        // never inside the caller's stack
        expect(news(ha)).toEqual([]);
        expect((await taken).epoch).toBe(3);
        await until(() => ha.some((e) => e.kind === "taken"), "taken at a");
        await barrier(c, [ha, hb]);
        await barrier(a, [hc]);
        expect(news(ha)).toEqual([{ kind: "taken", device: "dev", epoch: 3 }]);
        expect(news(hb)).toEqual([]);
        expect(news(hc)).toEqual([]);
      });
    });

    describe("fenced commits", () => {
      it("skips a stale holder's writes of its lost device, keeps its new publishes as unsent, applies the rest of its batch", async () => {
        const [a, b] = await two();
        await a.commit({
          messages: [message("m-1"), message("m-2"), message("m-5")],
          deliveries: [delivery("dev", "m-1", 1), delivery("dev", "m-2", 2)],
        });
        const old = await a.claimDevice("dev");
        const now = await b.claimDevice("dev");
        // b, the holder, sends m-1 as seq 1
        await b.commit({
          fence: [{ device: "dev", epoch: now.epoch }],
          deliveries: [delivery("dev", "m-1", 1, { seq: 1 })],
          counters: [{ device: "dev", lastSeq: 1, ackedSeq: 0 }],
        });
        // a, which lost the device, still thinks it sent m-1 and m-2, got acks, published m-3 and m-4 and sent m-4 at once
        const receipts = await a.commit({
          fence: [{ device: "dev", epoch: old.epoch }],
          messages: [message("m-3"), message("m-4")],
          deliveries: [
            delivery("dev", "m-2", 2, { seq: 7 }),
            delivery("dev", "m-1", 1), // a seq-0 rewrite must not undo b's seq
            delivery("dev", "m-5", 9), // a row of a stored message is the holder's: not inserted by a stale node
            delivery("dev", "m-3", 3), // a new publish: queued for the device wherever it is
            delivery("dev", "m-4", 4, { seq: 8 }), // a new publish a stale node sent: queued, unsent
            delivery("other", "m-3", 5),
            delivery("dev", "ghost", 6, { seq: 9 }), // skipped, so its missing message fails nothing
          ],
          removeDeliveries: [{ device: "dev", messageId: "m-2" }],
          counters: [
            { device: "dev", lastSeq: 8, ackedSeq: 7 },
            { device: "other", lastSeq: 0, ackedSeq: 0 },
          ],
          receipts: [receipt("m-3", "dev"), receipt("m-3", "other")],
        });
        expect(receipts).toHaveLength(2);
        const state = await b.loadDeliveryState();
        expect(state.counters).toEqual([
          { device: "dev", lastSeq: 1, ackedSeq: 0 },
          { device: "other", lastSeq: 0, ackedSeq: 0 },
        ]);
        expect(rows(state.deliveries)).toEqual([
          delivery("dev", "m-1", 1, { seq: 1 }),
          delivery("dev", "m-2", 2),
          delivery("dev", "m-3", 3),
          delivery("dev", "m-4", 4),
          delivery("other", "m-3", 5),
        ]);
        expect((await b.receiptsForMessage("m-3")).map((r) => r.device)).toEqual(["dev", "other"]);
        // the holder's own fenced writes apply; a later commit of a (its fence intact) too
        await b.commit({
          fence: [{ device: "dev", epoch: now.epoch }],
          removeDeliveries: [{ device: "dev", messageId: "m-1" }],
          counters: [{ device: "dev", lastSeq: 1, ackedSeq: 1 }],
        });
        await a.commit({ messages: [message("m-6")], deliveries: [delivery("other", "m-6", 7)] });
        expect(await b.queueDepths(["dev", "other"])).toEqual(
          new Map([
            ["dev", 3],
            ["other", 2],
          ]),
        );
        expect((await a.loadDeliveryState()).counters[0]).toEqual({ device: "dev", lastSeq: 1, ackedSeq: 1 });
        // a batch without a fence is applied whole, as on a single node
        await a.commit({ counters: [{ device: "dev", lastSeq: 9, ackedSeq: 9 }] });
        expect((await a.loadDeliveryState()).counters[0]).toEqual({ device: "dev", lastSeq: 9, ackedSeq: 9 });
      });

      it("fences a released device too: a release is not a licence to write", async () => {
        const [a] = await two();
        const h = await a.claimDevice("dev");
        await a.releaseDevice("dev", h.epoch);
        await a.commit({ fence: [{ device: "dev", epoch: h.epoch }], counters: [{ device: "dev", lastSeq: 3, ackedSeq: 0 }] });
        expect((await a.loadDeliveryState()).counters).toEqual([]);
      });
    });

    describe("events", () => {
      it("tells the holder, and only it, of deliveries queued for its devices: one event per holder per commit", async () => {
        const { nodes, heard } = await cluster(3);
        const [a, b, c] = nodes as [ClusterNodeStore, ClusterNodeStore, ClusterNodeStore];
        const [ha, hb, hc] = heard as [ClusterEvent[], ClusterEvent[], ClusterEvent[]];
        await b.claimDevice("d1");
        await b.claimDevice("d2");
        await c.claimDevice("d3");
        await a.claimDevice("d4");
        await a.commit({
          messages: [message("m-1")],
          deliveries: ["d1", "d2", "d3", "d4", "nobody"].map((d, i) => delivery(d, "m-1", i + 1)),
          receipts: [receipt("m-1", "")],
        });
        // a fenced write of the holder itself with a seq is not news to anyone
        await b.commit({ fence: [{ device: "d1", epoch: 1 }], deliveries: [delivery("d1", "m-1", 1, { seq: 1 })] });
        // nor is a row with a seq or a tombstone written by another (an unfenced batch: an offline command)
        await a.commit({ deliveries: [delivery("d2", "m-1", 2, { seq: 5 }), delivery("d3", "m-1", 3, { tombstone: true, seq: 4 })] });
        // a new publish of a node that lost its device is news to the new holder
        await c.claimDevice("d4");
        await a.commit({ fence: [{ device: "d4", epoch: 1 }], messages: [message("m-2")], deliveries: [delivery("d4", "m-2", 9, { seq: 1 })] });
        await barrier(a, [hb, hc]);
        await barrier(b, [ha]);
        expect(news(hb).filter((e) => e.kind === "queued")).toEqual([{ kind: "queued", devices: ["d1", "d2"] }]);
        expect(news(hc).filter((e) => e.kind === "queued")).toEqual([
          { kind: "queued", devices: ["d3"] },
          { kind: "queued", devices: ["d4"] },
        ]);
        expect(news(ha).filter((e) => e.kind === "queued")).toEqual([]);
      });

      it("tells every other node, never the sender, of subscriptions, receipts and registry changes", async () => {
        const { nodes, heard } = await cluster(3);
        const [a, b] = nodes as [ClusterNodeStore, ClusterNodeStore];
        const [ha, hb, hc] = heard as [ClusterEvent[], ClusterEvent[], ClusterEvent[]];
        const [first] = await a.commit({
          messages: [message("m-1")],
          deliveries: [delivery("d1", "m-1", 1)],
          subscribe: [
            { device: "d1", topic: "news" },
            { device: "d2", topic: "news" },
          ],
          unsubscribe: [{ device: "d3", topic: "old" }],
          receipts: [receipt("m-1", ""), receipt("m-1", "d1")],
        });
        await a.commit({ unsubscribe: [{ device: "d2", topic: "news" }] });
        await a.deleteDevice("d9");
        await barrier(b, [ha]);
        const last = await barrier(a, [hb, hc]);
        const expected: ClusterEvent[] = [
          {
            kind: "subscriptions",
            changes: [
              { device: "d1", topic: "news", subscribed: true },
              { device: "d2", topic: "news", subscribed: true },
              { device: "d3", topic: "old", subscribed: false },
            ],
          },
          { kind: "receipts", lastId: (first?.id ?? 0) + 1 },
          { kind: "subscriptions", changes: [{ device: "d2", topic: "news", subscribed: false }] },
          { kind: "registry", device: "d9" },
        ];
        expect(news(hb)).toEqual(expected);
        expect(news(hc)).toEqual(expected);
        // the sender heard only b's barrier
        expect(ha).toHaveLength(1);
        expect(ha[0]).toMatchObject({ kind: "registry" });
        expect(hb.at(-1)).toEqual({ kind: "registry", device: last });
        expect(await b.loadSubscriptions()).toEqual([{ device: "d1", topic: "news" }]);
      });

      it("a throwing listener fails neither the other listeners nor the store", async () => {
        const { nodes, heard } = await cluster(2);
        const [a, b] = nodes as [ClusterNodeStore, ClusterNodeStore];
        const hb = heard[1] as ClusterEvent[];
        b.onClusterEvent(() => {
          throw new Error("listener bug");
        });
        const later: ClusterEvent[] = [];
        const off = b.onClusterEvent((e) => later.push(e));
        await barrier(a, [hb, later]);
        off();
        await barrier(a, [hb]);
        expect(later).toHaveLength(1);
        expect((await b.claimDevice("dev")).epoch).toBe(1);
      });
    });

    describe("message id reservations", () => {
      it("an id stored or reserved by another node is taken; an own reservation is not", async () => {
        const [a, b] = await two();
        await a.commit({ messages: [message("stored")] });
        expect(await a.reserveMessageIds(["stored", "x", "y"], 60_000)).toEqual(new Set(["stored"]));
        expect(await b.reserveMessageIds(["x", "z", "stored"], 60_000)).toEqual(new Set(["x", "stored"]));
        // renewing its own reservation is not a conflict; the other node's stays taken for it
        expect(await a.reserveMessageIds(["x", "y", "z"], 60_000)).toEqual(new Set(["z"]));
        // the store itself is not changed by a reservation
        expect(await a.existingMessageIds(["x", "y", "z"])).toEqual(new Set());
      });

      it("the commit storing a message ends its reservation; a release ends only the node's own", async () => {
        const [a, b] = await two();
        expect(await a.reserveMessageIds(["m-1", "m-2", "m-3"], 60_000)).toEqual(new Set());
        await a.commit({ messages: [message("m-1")], deliveries: [delivery("dev", "m-1", 1)] });
        // stored now: still taken for b, by the store
        expect(await b.reserveMessageIds(["m-1"], 60_000)).toEqual(new Set(["m-1"]));
        // b's release of a's reservation changes nothing; a's own ends it
        await b.releaseMessageIds(["m-2", "m-3"]);
        expect(await b.reserveMessageIds(["m-2"], 60_000)).toEqual(new Set(["m-2"]));
        await a.releaseMessageIds(["m-2", "m-3"]);
        expect(await b.reserveMessageIds(["m-2", "m-3"], 60_000)).toEqual(new Set());
        expect(await a.reserveMessageIds(["m-2", "m-3"], 60_000)).toEqual(new Set(["m-2", "m-3"]));
        // the message stored: a later prune of it frees the id again
        await a.commit({ removeDeliveries: [{ device: "dev", messageId: "m-1" }] });
        await a.prune(Number.MAX_SAFE_INTEGER);
        expect(await b.reserveMessageIds(["m-1"], 60_000)).toEqual(new Set());
      });

      it("a reservation ends on its own after its ttl", async () => {
        const [a, b] = await two();
        expect(await a.reserveMessageIds(["short"], 50)).toEqual(new Set());
        expect(await b.reserveMessageIds(["short"], 60_000)).toEqual(new Set(["short"]));
        let free = false;
        const deadline = Date.now() + 3_000;
        while (!free && Date.now() < deadline) {
          free = (await b.reserveMessageIds(["short"], 60_000)).size === 0;
          if (!free) await new Promise((r) => setTimeout(r, 10));
        }
        expect(free).toBe(true);
        expect(await a.reserveMessageIds(["short"], 60_000)).toEqual(new Set(["short"]));
      });

      it("two nodes reserving the same ids at once: each id goes to exactly one", async () => {
        const { nodes } = await cluster(3);
        const ids = Array.from({ length: 50 }, (_, i) => `race-${i}`);
        const answers = await Promise.all(nodes.map((s, k) => s.reserveMessageIds(k === 1 ? [...ids].reverse() : ids, 60_000)));
        for (const id of ids) expect(answers.filter((taken) => !taken.has(id))).toHaveLength(1);
      });
    });
  });
}
