/**
 * The cluster scenarios (cluster-scenarios.ts) on Redis: three engines over
 * three Redis store instances on one real redis-server (one prefix).
 */
import { describeRedis } from "../support/redis-server.ts";
import { useRedisNodes } from "../support/redis-nodes.ts";
import { describeClusterScenarios } from "./cluster-scenarios.ts";
import { World } from "./world.ts";

const redis = useRedisNodes("eng");

describeRedis("delivery engine on Redis (cluster mode)", () => {
  describeClusterScenarios("redis", async (nodes, o) => World.create({ ...o, nodes, sharedStores: await redis.nodes(nodes) }));
});
