/**
 * The cluster side of the Redis store (src/store/cluster-types.ts on
 * src/store/redis-store.ts): several store instances on one real
 * redis-server and one key prefix, as several nodes are. Holds and epochs,
 * the "taken" event, fenced commits of a stale holder, the routing of the
 * events (own channel vs every node, never the sender), resync after the
 * event connection is killed, liveness of a killed instance, and prefixes
 * keeping deployments apart.
 *
 * "Nothing arrived" is never waited for with a sleep: Redis delivers the
 * messages of one subscriber connection in the order it ran the PUBLISHes, so
 * a barrier event sent afterwards (a registry change) proves that everything
 * published before it has arrived.
 */
import { spawn } from "node:child_process";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import type { ClusterEvent, ClusterStore } from "../../src/store/cluster-types.ts";
import type { Store } from "../../src/store/index.ts";
import { openRedisStore } from "../../src/store/redis-store.ts";
import { describeRedis, redisMissing, RedisServer } from "../support/redis-server.ts";
import { until } from "../support/until.ts";
import { delivery, message, receipt } from "./contract.ts";

type Node = Store & ClusterStore;

let redis: RedisServer | undefined;
let n = 0;
const server = (): RedisServer => redis as RedisServer;
const opened: Node[] = [];

beforeAll(async () => {
  if (redisMissing === undefined) redis = await RedisServer.start();
}, 15_000);
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close();
});
afterAll(async () => {
  await redis?.stop();
});

/** `count` instances on one fresh prefix, each with the events it heard. */
async function cluster(count: number, prefix = `c${++n}:`): Promise<{ nodes: Node[]; heard: ClusterEvent[][]; prefix: string }> {
  const nodes: Node[] = [];
  const heard: ClusterEvent[][] = [];
  for (let i = 0; i < count; i++) {
    const s = await openRedisStore({ url: server().url, keyPrefix: prefix });
    opened.push(s);
    const events: ClusterEvent[] = [];
    s.onClusterEvent((e) => events.push(e));
    nodes.push(s);
    heard.push(events);
  }
  return { nodes, heard, prefix };
}

let barriers = 0;
/** Sends a registry event from `from` and waits until every log in `to` has it: everything published before has arrived. */
async function barrier(from: Store, to: ClusterEvent[][]): Promise<string> {
  const id = `barrier-${++barriers}`;
  await from.putDevice({ id, psk: { identity: `psk-${id}`, key: new Uint8Array([1]) }, revoked: false, topics: [], createdAt: 1, updatedAt: 1 });
  await until(() => to.every((log) => log.some((e) => e.kind === "registry" && e.device === id)), `the barrier ${id}`);
  return id;
}

/** The events of a log other than barriers. */
const news = (log: readonly ClusterEvent[]): ClusterEvent[] => log.filter((e) => !(e.kind === "registry" && e.device.startsWith("barrier-")));

describeRedis("redis cluster store: holds", () => {
  it("claims give increasing epochs and read the stored queue; a release only undoes its own hold", async () => {
    const { nodes } = await cluster(2);
    const [a, b] = nodes as [Node, Node];
    expect(a.instance).not.toBe(b.instance);
    await a.commit({
      messages: [message("m-1"), message("m-2")],
      deliveries: [delivery("dev", "m-1", 1, { seq: 4 }), delivery("dev", "m-2", 2), delivery("other", "m-2", 3)],
      counters: [{ device: "dev", lastSeq: 4, ackedSeq: 3 }],
    });
    const h1 = await a.claimDevice("dev");
    expect(h1).toMatchObject({ device: "dev", epoch: 1, previous: "", counters: { device: "dev", lastSeq: 4, ackedSeq: 3 } });
    expect(h1.deliveries).toEqual([delivery("dev", "m-1", 1, { seq: 4 }), delivery("dev", "m-2", 2)]);
    expect(h1.messages.map((m) => m.id)).toEqual(["m-1", "m-2"]);
    expect(h1.messages[0]?.payload).toEqual(message("m-1").payload);
    expect(await b.readQueue("dev")).toEqual({ deliveries: h1.deliveries, messages: h1.messages });
    expect(await a.holders(["dev", "other", "nobody"])).toEqual(new Map([["dev", a.instance], ["other", ""], ["nobody", ""]]));

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
    expect(await a.queueDepths(["dev", "other", "never-stored"])).toEqual(new Map([["dev", 2], ["other", 1], ["never-stored", 0]]));
  });

  it("tells the previous holder, and only it, that its device was taken", async () => {
    const { nodes, heard } = await cluster(3);
    const [a, b, c] = nodes as [Node, Node, Node];
    await a.claimDevice("dev");
    await a.claimDevice("dev"); // a claim by the holder itself tells nobody
    await b.claimDevice("dev");
    await until(() => heard[0]?.some((e) => e.kind === "taken") === true, "taken at a");
    await barrier(c, [heard[0] as ClusterEvent[], heard[1] as ClusterEvent[]]);
    await barrier(a, [heard[2] as ClusterEvent[]]);
    expect(news(heard[0] as ClusterEvent[])).toEqual([{ kind: "taken", device: "dev", epoch: 2 }]);
    expect(news(heard[1] as ClusterEvent[])).toEqual([]);
    expect(news(heard[2] as ClusterEvent[])).toEqual([]);
  });
});

describeRedis("redis cluster store: fenced commits", () => {
  it("skips a stale holder's writes of its lost device and applies the rest of its batch", async () => {
    const { nodes } = await cluster(2);
    const [a, b] = nodes as [Node, Node];
    await a.commit({
      messages: [message("m-1"), message("m-2")],
      deliveries: [delivery("dev", "m-1", 1), delivery("dev", "m-2", 2)],
    });
    const old = await a.claimDevice("dev");
    const now = await b.claimDevice("dev");
    // b, the holder, sends m-1 as seq 1
    await b.commit({ fence: [{ device: "dev", epoch: now.epoch }], deliveries: [delivery("dev", "m-1", 1, { seq: 1 })], counters: [{ device: "dev", lastSeq: 1, ackedSeq: 0 }] });
    // a, which lost the device, still thinks it sent m-1 and m-2, got acks, and also inserts a publish for another device
    const receipts = await a.commit({
      fence: [{ device: "dev", epoch: old.epoch }],
      messages: [message("m-3")],
      deliveries: [
        delivery("dev", "m-2", 2, { seq: 7 }),
        delivery("dev", "m-1", 1), // a seq-0 rewrite must not undo b's seq
        delivery("dev", "m-3", 3), // a new insert anyone may make
        delivery("other", "m-3", 4),
        delivery("dev", "ghost", 5, { seq: 8 }), // skipped, so its missing message fails nothing
      ],
      removeDeliveries: [{ device: "dev", messageId: "m-2" }],
      counters: [{ device: "dev", lastSeq: 7, ackedSeq: 7 }, { device: "other", lastSeq: 0, ackedSeq: 0 }],
      receipts: [receipt("m-3", "dev"), receipt("m-3", "other")],
    });
    expect(receipts).toHaveLength(2);
    const state = await b.loadDeliveryState();
    expect(state.counters).toEqual([{ device: "dev", lastSeq: 1, ackedSeq: 0 }, { device: "other", lastSeq: 0, ackedSeq: 0 }]);
    expect(state.deliveries).toEqual([
      delivery("dev", "m-1", 1, { seq: 1 }),
      delivery("dev", "m-2", 2),
      delivery("dev", "m-3", 3),
      delivery("other", "m-3", 4),
    ]);
    expect((await b.receiptsForMessage("m-3")).map((r) => r.device)).toEqual(["dev", "other"]);
    // the holder's own fenced writes apply; a later commit of a (its fence intact) too
    await b.commit({ fence: [{ device: "dev", epoch: now.epoch }], removeDeliveries: [{ device: "dev", messageId: "m-1" }], counters: [{ device: "dev", lastSeq: 1, ackedSeq: 1 }] });
    await a.commit({ messages: [message("m-4")], deliveries: [delivery("other", "m-4", 6)] });
    expect(await b.queueDepths(["dev", "other"])).toEqual(new Map([["dev", 2], ["other", 2]]));
    expect((await a.loadDeliveryState()).counters[0]).toEqual({ device: "dev", lastSeq: 1, ackedSeq: 1 });
    // a batch without a fence is applied whole, as on a single node
    await a.commit({ counters: [{ device: "dev", lastSeq: 9, ackedSeq: 9 }] });
    expect((await a.loadDeliveryState()).counters[0]).toEqual({ device: "dev", lastSeq: 9, ackedSeq: 9 });
  });

  it("fences a released device too: a release is not a licence to write", async () => {
    const { nodes } = await cluster(1);
    const [a] = nodes as [Node];
    const h = await a.claimDevice("dev");
    await a.releaseDevice("dev", h.epoch);
    await a.commit({ fence: [{ device: "dev", epoch: h.epoch }], counters: [{ device: "dev", lastSeq: 3, ackedSeq: 0 }] });
    expect((await a.loadDeliveryState()).counters).toEqual([]);
  });
});

describeRedis("redis cluster store: events", () => {
  it("tells the holder, and only it, of deliveries queued for its devices: one event per holder per commit", async () => {
    const { nodes, heard } = await cluster(3);
    const [a, b, c] = nodes as [Node, Node, Node];
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
    await barrier(a, [heard[1] as ClusterEvent[], heard[2] as ClusterEvent[]]);
    await barrier(b, [heard[0] as ClusterEvent[]]);
    const [na, nb, nc] = heard.map(news) as [ClusterEvent[], ClusterEvent[], ClusterEvent[]];
    expect(nb.filter((e) => e.kind === "queued")).toEqual([{ kind: "queued", devices: ["d1", "d2"] }]);
    expect(nc.filter((e) => e.kind === "queued")).toEqual([{ kind: "queued", devices: ["d3"] }]);
    expect(na.filter((e) => e.kind === "queued")).toEqual([]);
  });

  it("tells every other node, never the sender, of subscriptions, receipts and registry changes", async () => {
    const { nodes, heard } = await cluster(3);
    const [a, b] = nodes as [Node, Node];
    const [first] = await a.commit({
      messages: [message("m-1")],
      deliveries: [delivery("d1", "m-1", 1)],
      subscribe: [{ device: "d1", topic: "news" }, { device: "d2", topic: "news" }],
      unsubscribe: [{ device: "d3", topic: "old" }],
      receipts: [receipt("m-1", ""), receipt("m-1", "d1")],
    });
    await a.commit({ unsubscribe: [{ device: "d2", topic: "news" }] });
    await a.deleteDevice("d9");
    await barrier(b, [heard[0] as ClusterEvent[]]);
    const last = await barrier(a, [heard[1] as ClusterEvent[], heard[2] as ClusterEvent[]]);
    const expected: ClusterEvent[] = [
      { kind: "subscriptions", changes: [{ device: "d1", topic: "news", subscribed: true }, { device: "d2", topic: "news", subscribed: true }, { device: "d3", topic: "old", subscribed: false }] },
      { kind: "receipts", lastId: (first?.id ?? 0) + 1 },
      { kind: "subscriptions", changes: [{ device: "d2", topic: "news", subscribed: false }] },
      { kind: "registry", device: "d9" },
    ];
    expect(news(heard[1] as ClusterEvent[])).toEqual(expected);
    expect(news(heard[2] as ClusterEvent[])).toEqual(expected);
    // the sender heard only b's barrier
    expect(heard[0]).toHaveLength(1);
    expect(heard[0]?.[0]).toMatchObject({ kind: "registry" });
    expect(heard[1]?.at(-1)).toEqual({ kind: "registry", device: last });
    expect(await b.loadSubscriptions()).toEqual([{ device: "d1", topic: "news" }]);
  });

  it("a throwing listener fails neither the other listeners nor the store", async () => {
    const { nodes, heard } = await cluster(2);
    const [a, b] = nodes as [Node, Node];
    b.onClusterEvent(() => {
      throw new Error("listener bug");
    });
    const later: ClusterEvent[] = [];
    const off = b.onClusterEvent((e) => later.push(e));
    await barrier(a, [heard[1] as ClusterEvent[], later]);
    off();
    await barrier(a, [heard[1] as ClusterEvent[]]);
    expect(later).toHaveLength(1);
    expect((await b.claimDevice("dev")).epoch).toBe(1);
  });

  it("says resync when its event connection was lost and is back, and hears events again", async () => {
    const { nodes, heard, prefix } = await cluster(2);
    const [a, b] = nodes as [Node, Node];
    const c = await server().client();
    try {
      const list = await c.sendCommand<string>(["CLIENT", "LIST", "TYPE", "pubsub"]);
      const line = list.split("\n").find((l) => l.includes(` name=dtlspush-events-${prefix}${b.instance} `));
      const id = /\bid=(\d+)/.exec(line ?? "")?.[1];
      expect(id, list).toBeDefined();
      expect(await c.sendCommand(["CLIENT", "KILL", "ID", id as string])).toBe(1);
    } finally {
      await c.close();
    }
    await until(() => heard[1]?.some((e) => e.kind === "resync") === true, "resync at b");
    expect(heard[0]?.some((e) => e.kind === "resync")).toBe(false);
    await barrier(a, [heard[1] as ClusterEvent[]]);
    await a.claimDevice("dev");
    await b.claimDevice("dev");
    await until(() => heard[0]?.some((e) => e.kind === "taken") === true, "taken at a");
  });
});

describeRedis("redis cluster store: liveness and prefixes", () => {
  it("reports no holder for the devices of an instance that stopped refreshing (killed), and one for a live one", async () => {
    const prefix = `c${++n}:`;
    const { nodes } = await cluster(1, prefix);
    const [a] = nodes as [Node];
    const script = `
      const { openRedisStore } = await import(${JSON.stringify(new URL("../../src/store/redis-store.ts", import.meta.url).href)});
      const s = await openRedisStore({ url: ${JSON.stringify(server().url)}, keyPrefix: ${JSON.stringify(prefix)}, livenessMs: 300 });
      await s.claimDevice("held-by-child");
      process.stdout.write(s.instance + "\\n");`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      let out = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
      await until(() => out.endsWith("\n"), "the child's claim", 10_000);
      await a.claimDevice("held-by-a");
      // alive: refreshed every 100 ms, so still there after its first expiry
      await new Promise((r) => setTimeout(r, 400));
      expect(await a.holders(["held-by-child", "held-by-a"])).toEqual(new Map([["held-by-child", out.trim()], ["held-by-a", a.instance]]));
      child.kill("SIGKILL");
      let holders = new Map<string, string>();
      const deadline = Date.now() + 3_000;
      while (holders.get("held-by-child") !== "" && Date.now() < deadline) {
        holders = await a.holders(["held-by-child", "held-by-a"]);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(holders).toEqual(new Map([["held-by-child", ""], ["held-by-a", a.instance]]));
    } finally {
      child.kill("SIGKILL");
    }
    // an orderly close ends the liveness at once
    await a.close();
    opened.splice(0);
    const b = (await cluster(1, prefix)).nodes[0] as Node;
    expect((await b.holders(["held-by-a"])).get("held-by-a")).toBe("");
  });

  it("keeps deployments on different prefixes apart: holds, epochs and events", async () => {
    const x = await cluster(2, "px:");
    const y = await cluster(2, "py:");
    const [x1, x2] = x.nodes as [Node, Node];
    const [y1, y2] = y.nodes as [Node, Node];
    await x1.claimDevice("dev");
    expect((await y1.claimDevice("dev")).epoch).toBe(1);
    expect((await y2.holders(["dev"])).get("dev")).toBe(y1.instance);
    await x2.claimDevice("dev");
    await x1.commit({ subscribe: [{ device: "dev", topic: "t" }] });
    await until(() => x.heard[0]?.some((e) => e.kind === "taken") === true, "taken in x");
    await barrier(x1, [x.heard[1] as ClusterEvent[]]);
    await barrier(y1, [y.heard[1] as ClusterEvent[]]);
    await barrier(y2, [y.heard[0] as ClusterEvent[]]);
    expect(news(y.heard[0] as ClusterEvent[])).toEqual([]);
    expect(news(y.heard[1] as ClusterEvent[])).toEqual([]);
    expect(news(x.heard[1] as ClusterEvent[])).toEqual([{ kind: "subscriptions", changes: [{ device: "dev", topic: "t", subscribed: true }] }]);
  });
});

describeRedis("redis cluster store: commands, round trips and bytes of a push across nodes", () => {
  it("a push published on one node to a device held by another, and a fan-out to 20 devices held by another (figures in docs/store.md)", async () => {
    const { nodes, heard } = await cluster(2);
    const [a, b] = nodes as [Node, Node];
    const c = await server().client();
    const stats = async (): Promise<{ calls: number; reads: number; bytesIn: number; bytesOut: number; infoBytes: number }> => {
      const info = await c.info("all");
      const num = (re: RegExp): number => Number(re.exec(info)?.[1] ?? 0);
      return {
        calls: num(/cmdstat_evalsha:calls=(\d+)/),
        reads: num(/total_reads_processed:(\d+)/),
        bytesIn: num(/total_net_input_bytes:(\d+)/),
        bytesOut: num(/total_net_output_bytes:(\d+)/),
        // the reply to this INFO is counted in the next INFO's bytes out
        infoBytes: Buffer.byteLength(info) + 16,
      };
    };
    const measure = async (fn: () => Promise<void>, per: number): Promise<{ calls: number; reads: number; text: string }> => {
      const s0 = await stats();
      await fn();
      const s1 = await stats();
      const calls = (s1.calls - s0.calls) / per;
      const reads = (s1.reads - s0.reads - 1) / per;
      return { calls, reads, text: `${calls.toFixed(2)} scripts, ${reads.toFixed(2)} server reads, ${((s1.bytesIn - s0.bytesIn) / per).toFixed(0)} bytes in, ${((s1.bytesOut - s0.bytesOut - s0.infoBytes) / per).toFixed(0)} bytes out` };
    };
    const queuedAt = async (devices: readonly string[]): Promise<void> => {
      await until(() => devices.every((d) => heard[1]?.some((e) => e.kind === "queued" && e.devices.includes(d)) === true), "queued at b");
      (heard[1] as ClusterEvent[]).length = 0;
    };
    const pushBody = (id: string, i: number): { messages: ReturnType<typeof message>[] } => ({ messages: [message(id, { topic: "", device: "dev", payload: new Uint8Array(100).fill(i) })] });

    const held = await b.claimDevice("dev");
    const fence = [{ device: "dev", epoch: held.epoch }];
    const PUSHES = 10;
    // A publishes; B, told, reads the queue, sends (seq i) and takes the ack: the engine's commits of each step
    const unicast = await measure(async () => {
      for (let i = 1; i <= PUSHES; i++) {
        const id = `u-${i}`;
        await a.commit({ ...pushBody(id, i), deliveries: [delivery("dev", id, i)], receipts: [receipt(id, "dev", { topic: "" })] });
        await queuedAt(["dev"]);
        expect((await b.readQueue("dev")).deliveries.map((d) => d.messageId)).toEqual([id]);
        await b.commit({ fence, deliveries: [delivery("dev", id, i, { seq: i })], counters: [{ device: "dev", lastSeq: i, ackedSeq: i - 1 }], receipts: [receipt(id, "dev", { state: "sent", seq: i, topic: "" })] });
        await b.commit({ fence, removeDeliveries: [{ device: "dev", messageId: id }], counters: [{ device: "dev", lastSeq: i, ackedSeq: i }], receipts: [receipt(id, "dev", { state: "delivered", seq: i, topic: "" })] });
      }
    }, PUSHES);

    const N = 20;
    const devices = Array.from({ length: N }, (_, i) => `fan-${i}`);
    const epochs = new Map<string, number>();
    for (const d of devices) epochs.set(d, (await b.claimDevice(d)).epoch);
    const fanFence = devices.map((d) => ({ device: d, epoch: epochs.get(d) as number }));
    const ROUNDS = 3;
    const fanout = await measure(async () => {
      for (let r = 1; r <= ROUNDS; r++) {
        const id = `t-${r}`;
        await a.commit({ messages: [message(id, { topic: "news", payload: new Uint8Array(100).fill(r) })], deliveries: devices.map((d) => delivery(d, id, 100 + r)), receipts: devices.map((d) => receipt(id, d)) });
        await queuedAt(devices);
        await Promise.all(devices.map((d) => b.readQueue(d)));
        await b.commit({ fence: fanFence, deliveries: devices.map((d) => delivery(d, id, 100 + r, { seq: r })), counters: devices.map((d) => ({ device: d, lastSeq: r, ackedSeq: r - 1 })), receipts: devices.map((d) => receipt(id, d, { state: "sent", seq: r })) });
        await b.commit({ fence: fanFence, removeDeliveries: devices.map((d) => ({ device: d, messageId: id })), counters: devices.map((d) => ({ device: d, lastSeq: r, ackedSeq: r })), receipts: devices.map((d) => receipt(id, d, { state: "delivered", seq: r })) });
      }
    }, ROUNDS * N);
    await c.close();
    console.log(`redis cluster store per cross-node unicast push (publish on A, held by B, 100-byte payload): ${unicast.text}`);
    console.log(`redis cluster store per cross-node fan-out recipient (${N} devices held by B): ${fanout.text}`);
    // publish, read, send, ack: four scripts; a fan-out shares all but the read of each queue
    expect(unicast.calls).toBe(4);
    expect(fanout.calls).toBeLessThanOrEqual(1.2);
  });
});
