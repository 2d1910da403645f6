/**
 * A real redis-server for one test file (started before its tests when
 * redis-server is installed, stopped after them) and Redis store instances on
 * it, as the nodes of one deployment: each call gets a fresh key prefix, and
 * every instance opened is closed after its test.
 */
import { afterAll, afterEach, beforeAll } from "vitest";
import type { ClusterStore } from "../../src/store/cluster-types.ts";
import type { Store } from "../../src/store/index.ts";
import { openRedisStore } from "../../src/store/redis-store.ts";
import { redisMissing, RedisServer } from "./redis-server.ts";

export type RedisNode = Store & ClusterStore;

export interface RedisNodes {
  /** the server (only inside a test of a `describeRedis` block) */
  server(): RedisServer;
  /** a prefix no other call of this file used */
  freshPrefix(): string;
  /** `count` store instances on one prefix (default a fresh one), closed after the test */
  nodes(count: number, prefix?: string): Promise<RedisNode[]>;
}

/** Registers the file's hooks; call at the top level of a test file. */
export function useRedisNodes(tag: string): RedisNodes {
  let redis: RedisServer | undefined;
  let prefixes = 0;
  const opened: RedisNode[] = [];
  beforeAll(async () => {
    if (redisMissing === undefined) redis = await RedisServer.start();
  }, 15_000);
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close();
  });
  afterAll(async () => {
    await redis?.stop();
  });
  const server = (): RedisServer => {
    if (redis === undefined) throw new Error("no redis-server: use describeRedis");
    return redis;
  };
  const freshPrefix = (): string => `${tag}${++prefixes}:`;
  return {
    server,
    freshPrefix,
    nodes: async (count, prefix = freshPrefix()) => {
      const nodes: RedisNode[] = [];
      for (let i = 0; i < count; i++) {
        const s = await openRedisStore({ url: server().url, keyPrefix: prefix });
        opened.push(s);
        nodes.push(s);
      }
      return nodes;
    },
  };
}
