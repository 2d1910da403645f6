/**
 * The cluster side of the Redis store (src/store/cluster-types.ts on
 * src/store/redis-store.ts): several store instances on one real
 * redis-server and one key prefix, as several nodes are. The cluster store
 * contract (cluster-contract.ts, also run on the memory cluster), then what
 * is Redis's own: resync after the event connection is killed, liveness of a
 * killed instance, and prefixes keeping deployments apart.
 *
 * "Nothing arrived" is never waited for with a sleep: Redis delivers the
 * messages of one subscriber connection in the order it ran the PUBLISHes, so
 * a barrier event sent afterwards (a registry change) proves that everything
 * published before it has arrived.
 */
import { spawn } from "node:child_process";
import { expect, it } from "vitest";
import type { ClusterEvent } from "../../src/store/cluster-types.ts";
import { describeRedis } from "../support/redis-server.ts";
import { useRedisNodes, type RedisNode as Node } from "../support/redis-nodes.ts";
import { until } from "../support/until.ts";
import { barrier, describeClusterContract, news } from "./cluster-contract.ts";
import { delivery, message, receipt } from "./contract.ts";

const redis = useRedisNodes("c");
const server = redis.server;

/** `count` instances on one prefix (default a fresh one), each with the events it heard. */
async function cluster(count: number, prefix = redis.freshPrefix()): Promise<{ nodes: Node[]; heard: ClusterEvent[][]; prefix: string }> {
  const nodes = await redis.nodes(count, prefix);
  const heard = nodes.map((s) => {
    const events: ClusterEvent[] = [];
    s.onClusterEvent((e) => events.push(e));
    return events;
  });
  return { nodes, heard, prefix };
}

describeRedis("redis cluster store", () => {
  describeClusterContract("redis", { nodes: (count) => redis.nodes(count) });
});

describeRedis("redis cluster store: events", () => {
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
    const prefix = redis.freshPrefix();
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
      expect(await a.holders(["held-by-child", "held-by-a"])).toEqual(
        new Map([
          ["held-by-child", out.trim()],
          ["held-by-a", a.instance],
        ]),
      );
      child.kill("SIGKILL");
      let holders = new Map<string, string>();
      const deadline = Date.now() + 3_000;
      while (holders.get("held-by-child") !== "" && Date.now() < deadline) {
        holders = await a.holders(["held-by-child", "held-by-a"]);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(holders).toEqual(
        new Map([
          ["held-by-child", ""],
          ["held-by-a", a.instance],
        ]),
      );
    } finally {
      child.kill("SIGKILL");
    }
    // an orderly close ends the liveness at once
    await a.close();
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
      return {
        calls,
        reads,
        text: `${calls.toFixed(2)} scripts, ${reads.toFixed(2)} server reads, ${((s1.bytesIn - s0.bytesIn) / per).toFixed(0)} bytes in, ${((s1.bytesOut - s0.bytesOut - s0.infoBytes) / per).toFixed(0)} bytes out`,
      };
    };
    const queuedAt = async (devices: readonly string[]): Promise<void> => {
      await until(() => devices.every((d) => heard[1]?.some((e) => e.kind === "queued" && e.devices.includes(d)) === true), "queued at b");
      (heard[1] as ClusterEvent[]).length = 0;
    };
    const pushBody = (id: string, i: number): { messages: ReturnType<typeof message>[] } => ({
      messages: [message(id, { topic: "", device: "dev", payload: new Uint8Array(100).fill(i) })],
    });

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
        await b.commit({
          fence,
          deliveries: [delivery("dev", id, i, { seq: i })],
          counters: [{ device: "dev", lastSeq: i, ackedSeq: i - 1 }],
          receipts: [receipt(id, "dev", { state: "sent", seq: i, topic: "" })],
        });
        await b.commit({
          fence,
          removeDeliveries: [{ device: "dev", messageId: id }],
          counters: [{ device: "dev", lastSeq: i, ackedSeq: i }],
          receipts: [receipt(id, "dev", { state: "delivered", seq: i, topic: "" })],
        });
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
        await a.commit({
          messages: [message(id, { topic: "news", payload: new Uint8Array(100).fill(r) })],
          deliveries: devices.map((d) => delivery(d, id, 100 + r)),
          receipts: devices.map((d) => receipt(id, d)),
        });
        await queuedAt(devices);
        await Promise.all(devices.map((d) => b.readQueue(d)));
        await b.commit({
          fence: fanFence,
          deliveries: devices.map((d) => delivery(d, id, 100 + r, { seq: r })),
          counters: devices.map((d) => ({ device: d, lastSeq: r, ackedSeq: r - 1 })),
          receipts: devices.map((d) => receipt(id, d, { state: "sent", seq: r })),
        });
        await b.commit({
          fence: fanFence,
          removeDeliveries: devices.map((d) => ({ device: d, messageId: id })),
          counters: devices.map((d) => ({ device: d, lastSeq: r, ackedSeq: r })),
          receipts: devices.map((d) => receipt(id, d, { state: "delivered", seq: r })),
        });
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
