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
