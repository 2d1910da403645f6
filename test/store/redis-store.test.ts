/**
 * The Redis store (src/store/redis-store.ts) on a real redis-server: the async
 * Store contract, key prefix isolation, pipelined commits and the prefix rule
 * across a pipeline, durability after SIGKILL with appendfsync always, Redis
 * stopped while committing, opening an unreachable URL, and a password never
 * shown in an error.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { createServer, type Server, type Socket } from "node:net";
import { StoreError } from "../../src/store/index.ts";
import type { Store } from "../../src/store/index.ts";
import { openRedisStore, readRedisPersistence } from "../../src/store/redis-store.ts";
import { World } from "../messaging/world.ts";
import { connected, enc, publishTo, untilDelivered } from "../messaging/helpers.ts";
import { message } from "./contract.ts";
import { describeAsyncStoreContract, pushBatch, rejection } from "./store-contract.ts";
import { describeRedis, freePort, redisMissing, RedisServer } from "../support/redis-server.ts";

let redis: RedisServer | undefined;
let n = 0;
const freshPrefix = (): string => `t${++n}:`;
const server = (): RedisServer => redis as RedisServer;

beforeAll(async () => {
  if (redisMissing === undefined) redis = await RedisServer.start();
}, 15_000);
afterAll(async () => {
  await redis?.stop();
});

if (redisMissing === undefined) {
  describeAsyncStoreContract("redis", { open: () => openRedisStore({ url: server().url, keyPrefix: freshPrefix() }) });
}

/** Batches 1..k of pushBatch are stored complete, nothing of k+1..; returns k. */
async function storedPrefix(s: Store, upTo: number): Promise<number> {
  const ids = Array.from({ length: upTo }, (_, i) => `m-${i + 1}`);
  const found = await s.existingMessageIds(ids);
  const k = found.size;
  expect(found).toEqual(new Set(ids.slice(0, k)));
  const state = await s.loadDeliveryState();
  expect(state.deliveries).toHaveLength(2 * k);
  expect(state.counters).toEqual(k === 0 ? [] : [{ device: "dev-a", lastSeq: k, ackedSeq: 0 }]);
  const receipts = await s.receiptsAfter(0, 10 * upTo + 10);
  expect(receipts.map((r) => r.messageId)).toEqual(ids.slice(0, k).flatMap((id) => [id, id]));
  return k;
}

describeRedis("redis store: keys", () => {
  it("keeps two deployments with different prefixes on one Redis apart, and writes no key outside its prefix", async () => {
    const a = await openRedisStore({ url: server().url, keyPrefix: "iso-a:" });
    const b = await openRedisStore({ url: server().url, keyPrefix: "iso-b:" });
    await a.commit(pushBatch(1, { subscribe: [{ device: "dev-a", topic: "t" }] }));
    await a.putSetting("k", "a");
    await a.putDevice({ id: "d1", psk: { identity: "p1", key: new Uint8Array([1]) }, revoked: false, topics: [], createdAt: 1, updatedAt: 1 });
    // b may register the same identity: a's registry is not b's
    await b.putDevice({ id: "d2", psk: { identity: "p1", key: new Uint8Array([2]) }, revoked: false, topics: [], createdAt: 1, updatedAt: 1 });
    expect(await b.existingMessageIds(["m-1"])).toEqual(new Set());
    expect(await b.getSetting("k")).toBeUndefined();
    expect(await b.receiptsAfter(0, 10)).toEqual([]);
    expect(await b.loadDeliveryState()).toEqual({ counters: [], deliveries: [], messages: [], subscriptions: [] });
    expect((await b.findDeviceByPskIdentity("p1"))?.id).toBe("d2");
    expect((await a.findDeviceByPskIdentity("p1"))?.id).toBe("d1");
    // b's commits have their own receipt ids and fence
    expect((await b.commit(pushBatch(1)))[0]?.id).toBe(1);
    await a.close();
    await b.close();
    const probe = await openRedisStore({ url: server().url, keyPrefix: "probe:" });
    const c = await server().client();
    const keys = await c.keys("*");
    await c.close();
    await probe.close();
    expect(keys.filter((k) => !/^(iso-a:|iso-b:|probe:|t\d+:)/.test(k))).toEqual([]);
  });
});

describeRedis("redis store: nothing left behind", () => {
  it("leaves only its counters once deliveries are removed, messages and receipts pruned and devices deleted", async () => {
    const prefix = freshPrefix();
    const s = await openRedisStore({ url: server().url, keyPrefix: prefix });
    await s.putDevice({
      id: "dev-a",
      psk: { identity: "p", key: new Uint8Array([1]) },
      certIdentity: "c",
      revoked: false,
      topics: [],
      createdAt: 1,
      updatedAt: 1,
    });
    await s.commit(pushBatch(1, { subscribe: [{ device: "dev-b", topic: "t" }] }));
    await s.commit(pushBatch(2));
    await s.commit({
      removeDeliveries: [
        { device: "dev-a", messageId: "m-1" },
        { device: "dev-b", messageId: "m-1" },
        { device: "dev-a", messageId: "m-2" },
      ],
    });
    expect(await s.receiptsForMessage("m-1")).toHaveLength(2);
    // m-2 is still queued for dev-b: kept; m-1 is not referenced: pruned with every receipt
    expect(await s.prune(Number.MAX_SAFE_INTEGER)).toBe(1);
    expect(await s.receiptsForMessage("m-1")).toEqual([]);
    expect(await s.receiptsAfter(0, 10)).toEqual([]);
    expect((await s.getMessage("m-2"))?.id).toBe("m-2");
    expect(await s.deleteDevice("dev-a")).toBe(true);
    expect(await s.deleteDevice("dev-b")).toBe(false);
    expect(await s.prune(Number.MAX_SAFE_INTEGER)).toBe(1);
    const c = await server().client();
    const keys = (await c.keys(`${prefix}*`)).map((k) => k.slice(prefix.length)).sort();
    await s.close();
    const afterClose = (await c.keys(`${prefix}*`)).map((k) => k.slice(prefix.length)).sort();
    await c.close();
    expect(keys).toEqual(["alive:1", "ctr", "fence:1", "fres:1", "instances", "rseq"]);
    expect(afterClose).toEqual(["ctr", "instances", "rseq"]);
  });
});

describeRedis("redis store: pipelining", () => {
  it("commits 200 batches called back to back in a handful of server reads, each with its receipts", async () => {
    const s = await openRedisStore({ url: server().url, keyPrefix: freshPrefix() });
    const c = await server().client();
    const stats = async (): Promise<Map<string, number>> =>
      new Map(
        (await c.info("stats"))
          .split("\r\n")
          .map((l) => l.split(":"))
          .filter((kv) => kv.length === 2)
          .map(([k, v]) => [k as string, Number(v)]),
      );
    await s.getSetting("warm");
    const before = await stats();
    const N = 200;
    const results = await Promise.all(Array.from({ length: N }, (_, i) => s.commit(pushBatch(i + 1))));
    const after = await stats();
    await c.close();
    const reads = (after.get("total_reads_processed") ?? 0) - (before.get("total_reads_processed") ?? 0) - 1; // less the INFO
    const bytesIn = (after.get("total_net_input_bytes") ?? 0) - (before.get("total_net_input_bytes") ?? 0);
    const bytesOut = (after.get("total_net_output_bytes") ?? 0) - (before.get("total_net_output_bytes") ?? 0);
    // the figures docs/store.md quotes
    console.log(
      `redis store: ${N} commits back to back: ${reads} server reads, ${(bytesIn / N).toFixed(0)} bytes in and ${(bytesOut / N).toFixed(0)} bytes out per commit`,
    );
    expect(reads).toBeLessThan(N / 10);
    expect(results.flat().map((r) => r.id)).toEqual(Array.from({ length: 2 * N }, (_, i) => i + 1));
    expect(await storedPrefix(s, N + 1)).toBe(N);
    await s.close();
  });

  it("a batch failing in the middle of a pipeline: the ones before stored, it and all after refused and absent", async () => {
    const s = await openRedisStore({ url: server().url, keyPrefix: freshPrefix() });
    // all sent in one write; batch 5 repeats m-2 after adding m-5: refused by the server, half way through the pipeline
    const commits = Array.from({ length: 10 }, (_, i) =>
      s.commit(i + 1 === 5 ? pushBatch(5, { messages: [message("m-5"), message("m-2")] }) : pushBatch(i + 1)),
    );
    const outcomes = await Promise.allSettled(commits);
    expect(outcomes.slice(0, 4).map((o) => o.status)).toEqual(["fulfilled", "fulfilled", "fulfilled", "fulfilled"]);
    expect((outcomes[4] as PromiseRejectedResult).reason).toMatchObject({ code: "duplicate_message" });
    for (const o of outcomes.slice(5)) {
      expect((o as PromiseRejectedResult).reason).toMatchObject({ code: "store_failed" });
      expect(((o as PromiseRejectedResult).reason as StoreError).message).toContain("m-2");
    }
    expect(await storedPrefix(s, 10)).toBe(4);
    expect(await s.getMessage("m-5")).toBeUndefined();
    expect(await s.receiptsForMessage("m-6")).toEqual([]);
    await s.close();
  });
});

describeRedis("redis store: persistence", () => {
  it("keeps every commit that resolved when redis-server is SIGKILLed right after (appendfsync always; not back within the outage bound)", async () => {
    const own = await RedisServer.start({ appendfsync: "always" });
    try {
      const s = await openRedisStore({ url: own.url, keyPrefix: "p:", outageMaxMs: 200 });
      expect((await readRedisPersistence(s)).level).toBe("durable");
      const N = 300;
      const resolved: number[] = [];
      const commits = Array.from({ length: N }, (_, i) => s.commit(pushBatch(i + 1)).then(() => resolved.push(i + 1)));
      const settled = Promise.allSettled(commits);
      // kill as soon as some have resolved, while the rest are in flight
      await commits[40];
      await own.kill9();
      const outcomes = await settled;
      const k = resolved.length;
      expect(k).toBeGreaterThanOrEqual(41);
      expect(resolved).toEqual(Array.from({ length: k }, (_, i) => i + 1));
      for (const o of outcomes.slice(k)) expect((o as PromiseRejectedResult).reason).toMatchObject({ code: "store_failed" });
      expect((await rejection(s.getSetting("x"))).code).toBe("store_failed");
      await s.close();
      await own.restart();
      const again = await openRedisStore({ url: own.url, keyPrefix: "p:" });
      const stored = await storedPrefix(again, N);
      // every resolved commit is there; those in flight are all there or not at all
      expect(stored).toBeGreaterThanOrEqual(k);
      await again.close();
    } finally {
      await own.stop();
    }
  }, 20_000);

  it("Redis stopped while committing and not back within the outage bound: pending commits fail with store_failed, a restart reads back a whole prefix", async () => {
    const own = await RedisServer.start({ appendfsync: "everysec" });
    try {
      const s = await openRedisStore({ url: own.url, keyPrefix: "p:", outageMaxMs: 200 });
      expect((await readRedisPersistence(s)).level).toBe("second");
      // a commit every turn of the event loop until one fails (bounded), Redis shut down meanwhile
      const N = 20_000;
      const commits: Promise<unknown>[] = [];
      let failed = false;
      const producing = (async () => {
        for (let i = 1; i <= N && !failed; i++) {
          const p = s.commit(pushBatch(i));
          p.catch(() => (failed = true));
          commits.push(p);
          await new Promise((r) => setImmediate(r));
        }
      })();
      while (commits.length < 50) await new Promise((r) => setImmediate(r));
      await commits[20];
      await own.shutdown();
      await producing;
      const outcomes = await Promise.allSettled(commits);
      const ok = outcomes.findIndex((o) => o.status === "rejected");
      expect(ok).toBeGreaterThan(20);
      expect(ok).toBeLessThan(N);
      for (const o of outcomes.slice(ok)) expect((o as PromiseRejectedResult).reason).toMatchObject({ code: "store_failed" });
      expect((await rejection(s.commit(pushBatch(N + 1)))).code).toBe("store_failed");
      await s.close();
      await own.restart();
      const again = await openRedisStore({ url: own.url, keyPrefix: "p:" });
      expect(await storedPrefix(again, N)).toBeGreaterThanOrEqual(ok);
      await again.close();
    } finally {
      await own.stop();
    }
  }, 20_000);

  it("describes each persistence setting (appendonly no, no snapshots: none)", async () => {
    const own = await RedisServer.start({ appendonly: false });
    try {
      const s = await openRedisStore({ url: own.url });
      const p = await readRedisPersistence(s);
      expect(p).toMatchObject({ appendonly: false, save: "", level: "none" });
      expect(p.summary).toContain("NONE");
      await s.close();
    } finally {
      await own.stop();
    }
  });
});

describeRedis("redis store: opening", () => {
  let silent: Server;
  const held: Socket[] = [];
  let silentPort = 0;
  beforeAll(async () => {
    // accepts connections and never answers
    silent = createServer((socket) => held.push(socket));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    silentPort = (silent.address() as { port: number }).port;
  });
  afterAll(async () => {
    for (const socket of held) socket.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  });

  it("fails with store_open_failed, naming the URL without its password, within connectTimeoutMs", async () => {
    const closedPort = await freePort();
    for (const port of [closedPort, silentPort]) {
      const started = Date.now();
      const e = await rejection(openRedisStore({ url: `redis://admin:s3cret-pw@127.0.0.1:${port}`, connectTimeoutMs: 500 }));
      const took = Date.now() - started;
      expect(e.code).toBe("store_open_failed");
      expect(e.message).toContain(`127.0.0.1:${port}`);
      expect(e.message).not.toContain("s3cret-pw");
      expect(e.message.split("\n")).toHaveLength(1);
      expect(took).toBeLessThan(1_500);
    }
  });

  it("never shows the password of a wrong URL or a refused login", async () => {
    const own = await RedisServer.start({ password: "right-pw" });
    try {
      const e = await rejection(openRedisStore({ url: `redis://default:wrong-pw@127.0.0.1:${own.port}`, connectTimeoutMs: 2_000 }));
      expect(e.code).toBe("store_open_failed");
      expect(e.message).not.toContain("wrong-pw");
      expect(JSON.stringify(e.cause ?? "")).not.toContain("wrong-pw");
      const s = await openRedisStore({ url: own.url, connectTimeoutMs: 2_000 });
      await s.commit(pushBatch(1));
      await s.close();
    } finally {
      await own.stop();
    }
  });
});

describeRedis("redis store: memory in Redis", () => {
  it("costs under 2 KB per queued message and 1 KB per registered device (figures in docs/store.md)", async () => {
    const own = await RedisServer.start();
    try {
      const s = await openRedisStore({ url: own.url, keyPrefix: "dtlspush:" });
      const c = await own.client();
      const used = async (): Promise<number> => Number(/used_memory:(\d+)/.exec(await c.info("memory"))?.[1]);
      const N = 2_000;
      const signature = `eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0..${"A".repeat(86)}`;
      // N direct messages of 100 bytes, each queued for its own device, with its "queued" receipt
      const before = await used();
      const commits: Promise<unknown>[] = [];
      for (let i = 0; i < N; i++) {
        const id = `01J${String(i).padStart(23, "0")}`;
        const dev = `device-${String(i).padStart(6, "0")}`;
        commits.push(
          s.commit({
            messages: [message(id, { topic: "", device: dev, payload: new Uint8Array(100).fill(7), signature })],
            deliveries: [{ device: dev, messageId: id, order: i + 1, seq: 0, tombstone: false }],
            receipts: [{ messageId: id, device: dev, state: "queued", at: 1_700_000_000_000 + i, reason: "", seq: 0, topic: "" }],
          }),
        );
      }
      await Promise.all(commits);
      const perMessage = ((await used()) - before) / N;
      // N devices with a PSK, their counters and one subscription each
      const mid = await used();
      const registry: Promise<unknown>[] = [];
      for (let i = 0; i < N; i++) {
        const id = `sensor-${String(i).padStart(6, "0")}`;
        registry.push(
          s.putDevice({
            id,
            psk: { identity: `psk-${id}`, key: new Uint8Array(32).fill(1) },
            revoked: false,
            topics: ["fleet"],
            createdAt: 1_700_000_000_000,
            updatedAt: 1_700_000_000_000,
          }),
        );
        registry.push(s.commit({ counters: [{ device: id, lastSeq: 12, ackedSeq: 12 }], subscribe: [{ device: id, topic: "alerts" }] }));
      }
      await Promise.all(registry);
      const perDevice = ((await used()) - mid) / N;
      console.log(
        `redis store memory: ${perMessage.toFixed(0)} bytes per queued message (100-byte payload, one delivery, one receipt), ${perDevice.toFixed(0)} bytes per device (PSK, counters, one subscription)`,
      );
      expect(perMessage).toBeLessThan(2_000);
      expect(perDevice).toBeLessThan(1_000);
      await c.close();
      await s.close();
    } finally {
      await own.stop();
    }
  }, 20_000);
});

describeRedis("redis store: round trips per push through the delivery engine", () => {
  it("a unicast push and a fan-out recipient, publish to ack: commands, server reads and bytes (figures in docs/store.md)", async () => {
    const c = await server().client();
    const stats = async (): Promise<{ calls: number; reads: number; bytesIn: number; bytesOut: number; infoBytes: number }> => {
      const info = await c.info("all");
      const num = (re: RegExp): number => Number(re.exec(info)?.[1] ?? 0);
      return {
        calls:
          num(/cmdstat_evalsha:calls=(\d+)/) + num(/cmdstat_hget:calls=(\d+)/) + num(/cmdstat_zrange:calls=(\d+)/) + num(/cmdstat_hset:calls=(\d+)/),
        reads: num(/total_reads_processed:(\d+)/),
        bytesIn: num(/total_net_input_bytes:(\d+)/),
        bytesOut: num(/total_net_output_bytes:(\d+)/),
        // the reply to this INFO is counted in the next INFO's bytes out
        infoBytes: Buffer.byteLength(info) + 16,
      };
    };
    const measure = async (fn: () => Promise<void>, per: number): Promise<{ reads: number; text: string }> => {
      const a = await stats();
      await fn();
      const b = await stats();
      // less the INFO itself (one read, one command not counted above)
      const reads = (b.reads - a.reads - 1) / per;
      return {
        reads,
        text: `${((b.calls - a.calls) / per).toFixed(2)} commands, ${reads.toFixed(2)} server reads, ${((b.bytesIn - a.bytesIn) / per).toFixed(0)} bytes in, ${((b.bytesOut - a.bytesOut - a.infoBytes) / per).toFixed(0)} bytes out`,
      };
    };

    const prefix = freshPrefix();
    const store = await openRedisStore({ url: server().url, keyPrefix: prefix });
    // a second node on the prefix: it receives the shared events of every commit (bytes out)
    const other = await openRedisStore({ url: server().url, keyPrefix: prefix });
    const w = await World.create({ store });
    const N = 20;
    const ds = Array.from({ length: N }, (_, i) => w.addDevice(`dev-${i}`, ["news"]));
    for (const d of ds) await connected(w, d);
    await w.run(1_000);
    const d0 = ds[0] as (typeof ds)[number];
    const PUSHES = 10;
    const unicast = await measure(async () => {
      for (let i = 1; i <= PUSHES; i++) {
        await publishTo(w, d0.id, `m${i}`);
        await untilDelivered(w, d0, i);
        await w.run(200, () => w.engine.deviceStatus(d0.id).queueDepth === 0);
        expect(w.engine.deviceStatus(d0.id).queueDepth).toBe(0);
      }
    }, PUSHES);
    const fanout = await measure(async () => {
      for (let i = 1; i <= 3; i++) {
        await w.publish({ target: { topic: "news" }, payload: enc(`t${i}`), publisher: "test" });
        for (const d of ds) await untilDelivered(w, d, d === d0 ? PUSHES + i : i);
        await w.run(200, () => ds.every((d) => w.engine.deviceStatus(d.id).queueDepth === 0));
        for (const d of ds) expect(w.engine.deviceStatus(d.id).queueDepth).toBe(0);
      }
    }, 3 * N);
    console.log(`redis store per unicast push (two nodes subscribed): ${unicast.text}`);
    console.log(`redis store per fan-out recipient (${N} devices, two nodes subscribed): ${fanout.text}`);
    // a push alone in its turns: the publish (its id check and commit) and the ack's commit; a fan-out shares them
    expect(unicast.reads).toBeLessThanOrEqual(3);
    expect(fanout.reads).toBeLessThanOrEqual(0.5);
    await other.close();
    await store.close();
    await c.close();
  }, 20_000);
});

describeRedis("redis store: error replies", () => {
  it("a commit Redis refuses (out of memory) fails with store_failed and so does every later one; reads go on", async () => {
    const own = await RedisServer.start();
    const c = await own.client();
    try {
      const s = await openRedisStore({ url: own.url, keyPrefix: "e:" });
      await s.commit(pushBatch(1));
      await c.configSet("maxmemory", "1");
      const refused = await Promise.allSettled([2, 3, 4].map((k) => s.commit(pushBatch(k))));
      await c.configSet("maxmemory", "0");
      for (const o of refused) {
        expect((o as PromiseRejectedResult).reason).toMatchObject({ code: "store_failed" });
        expect(((o as PromiseRejectedResult).reason as StoreError).message).toContain("OOM");
      }
      expect((await rejection(s.commit(pushBatch(5)))).code).toBe("store_failed");
      expect(await storedPrefix(s, 5)).toBe(1);
      // a read Redis answers with an error rejects that read only
      await c.set("e:set", "not a hash");
      expect((await rejection(s.getSetting("k"))).code).toBe("read_failed");
      expect((await rejection(s.putSetting("k", "v"))).code).toBe("write_failed");
      expect((await s.getMessage("m-1"))?.id).toBe("m-1");
      await s.close();
    } finally {
      await c.close();
      await own.stop();
    }
  });
});
