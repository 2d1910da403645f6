/**
 * Outage mode of the Redis store (src/store/redis-store.ts) on a real
 * redis-server: Redis SIGKILLed while commits are pipelined and restarted on
 * the same port (append-only file, appendfsync always); commits whose
 * answers were lost (applied) and commits never forwarded (not applied),
 * told apart by the fence through a TCP relay that swallows Redis's answers
 * and then cuts the connection; calls refused at once while Redis is away;
 * a Redis that comes back without acknowledged commits fails the store.
 */
import { createServer, Socket, type Server } from "node:net";
import { afterEach, expect, it } from "vitest";
import type { ClusterEvent } from "../../src/store/cluster-types.ts";
import type { Receipt, Store } from "../../src/store/index.ts";
import { openRedisStore, type RedisStore, type RedisStoreState } from "../../src/store/redis-store.ts";
import { describeRedis, RedisServer } from "../support/redis-server.ts";
import { until } from "../support/until.ts";
import { pushBatch, rejection } from "./store-contract.ts";

const servers: RedisServer[] = [];
const relays: Relay[] = [];
afterEach(async () => {
  for (const r of relays.splice(0)) await r.close();
  for (const s of servers.splice(0)) await s.stop();
});

async function redisServer(options: Parameters<typeof RedisServer.start>[0] = {}): Promise<RedisServer> {
  const s = await RedisServer.start(options);
  servers.push(s);
  return s;
}

/** A TCP relay to Redis on 127.0.0.1 that can swallow Redis's answers, hold the requests, and cut every connection. */
class Relay {
  /** answers of Redis are dropped (the commands are still run) */
  dropAnswers = false;
  /** requests are dropped, never forwarded */
  dropRequests = false;
  private readonly sockets = new Set<Socket>();
  private readonly server: Server;
  port = 0;

  private constructor(target: number) {
    this.server = createServer((down) => {
      const up = new Socket();
      this.sockets.add(down).add(up);
      const end = (): void => {
        down.destroy();
        up.destroy();
      };
      down.on("error", end).on("close", end);
      up.on("error", end).on("close", end);
      up.connect(target, "127.0.0.1");
      down.on("data", (d: Buffer) => {
        if (!this.dropRequests) up.write(d);
      });
      up.on("data", (d: Buffer) => {
        if (!this.dropAnswers) down.write(d);
      });
    });
  }

  static async start(target: number): Promise<Relay> {
    const relay = new Relay(target);
    relays.push(relay);
    await new Promise<void>((resolve) => relay.server.listen(0, "127.0.0.1", resolve));
    relay.port = (relay.server.address() as { port: number }).port;
    return relay;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Cuts every connection through the relay (clients reconnect through it). */
  cut(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}

/** Every stored receipt, and each commit's message ids stored exactly once with their two deliveries. */
async function checkExactlyOnce(s: Store, n: number): Promise<Receipt[]> {
  const ids = Array.from({ length: n }, (_, i) => `m-${i + 1}`);
  expect(await s.existingMessageIds(ids)).toEqual(new Set(ids));
  const state = await s.loadDeliveryState();
  expect(state.deliveries).toHaveLength(2 * n);
  expect(state.counters).toEqual([{ device: "dev-a", lastSeq: n, ackedSeq: 0 }]);
  const receipts = await s.receiptsAfter(0, 10 * n + 10);
  // two receipts per commit, in commit order: nothing applied twice, nothing half-written
  expect(receipts.map((r) => r.messageId)).toEqual(ids.flatMap((id) => [id, id]));
  return receipts;
}

/** What each commit resolved with must be what is stored under those ids. */
function expectReceiptIds(answers: readonly Receipt[][], stored: readonly Receipt[]): void {
  const byId = new Map(stored.map((r) => [r.id, r]));
  for (const [i, got] of answers.entries()) {
    expect(got).toHaveLength(2);
    for (const r of got) expect(byId.get(r.id), `commit ${i + 1}, receipt ${r.id}`).toEqual(r);
  }
}

describeRedis("redis store outage: Redis killed and restarted", () => {
  it("keeps the commits in flight, refuses other calls at once while Redis is away, and applies every commit exactly once when it is back", async () => {
    const own = await redisServer({ appendfsync: "always" });
    const s = (await openRedisStore({ url: own.url, keyPrefix: "o:", outageMaxMs: 30_000 })) as RedisStore;
    const states: RedisStoreState[] = [];
    s.onStateChange((st) => states.push(st));
    const events: ClusterEvent[] = [];
    s.onClusterEvent((e) => events.push(e));
    const N = 300;
    const commits = Array.from({ length: N }, (_, i) => s.commit(pushBatch(i + 1)));
    await commits[40];
    await own.kill9();
    await until(() => !s.available, "the store to notice the outage");
    expect(s.state).toBe("unavailable");
    // calls are refused at once, not after a timeout and not behind the commits it keeps
    for (const call of [() => s.getSetting("x"), () => s.existingMessageIds(["m-1"]), () => s.claimDevice("dev-a"), () => s.receiptsAfter(0, 10)]) {
      const t0 = performance.now();
      expect((await rejection(call())).code).toBe("store_unavailable");
      expect(performance.now() - t0).toBeLessThan(100);
    }
    // commits handed over during the outage are kept too, in order
    const during = Array.from({ length: 10 }, (_, i) => s.commit(pushBatch(N + i + 1)));
    await own.restart();
    const answers = await Promise.all([...commits, ...during]);
    expect(s.available).toBe(true);
    expect(states).toEqual(["unavailable", "available"]);
    expectReceiptIds(answers, await checkExactlyOnce(s, N + 10));
    // the store works again without a reopen, events included
    await s.commit(pushBatch(N + 11));
    expect((await s.getMessage(`m-${N + 11}`))?.id).toBe(`m-${N + 11}`);
    await until(() => events.some((e) => e.kind === "resync"), "resync after the event connection came back");
    expect(s.stats.outages).toBe(1);
    await s.close();
  }, 20_000);

  it("fails the store when Redis comes back without commits it had acknowledged (no persistence)", async () => {
    const own = await redisServer({ appendonly: false });
    const s = (await openRedisStore({ url: own.url, keyPrefix: "o:", outageMaxMs: 30_000 })) as RedisStore;
    await s.commit(pushBatch(1));
    await s.commit(pushBatch(2));
    await own.kill9();
    await until(() => !s.available, "the outage");
    const kept = s.commit(pushBatch(3));
    await own.restart();
    expect((await rejection(kept)).code).toBe("store_failed");
    expect((await rejection(kept)).message).toContain("without commits it had acknowledged");
    expect(s.state).toBe("failed");
    expect((await rejection(s.getSetting("x"))).code).toBe("store_failed");
    await s.close();
  }, 20_000);

  it("closes at once during an outage: the commits it kept reject with store_unavailable", async () => {
    const own = await redisServer();
    const s = (await openRedisStore({ url: own.url, keyPrefix: "o:", outageMaxMs: 30_000 })) as RedisStore;
    await s.commit(pushBatch(1));
    await own.kill9();
    await until(() => !s.available, "the outage");
    const kept = s.commit(pushBatch(2));
    const t0 = performance.now();
    await s.close();
    expect(performance.now() - t0).toBeLessThan(1_000);
    expect((await rejection(kept)).code).toBe("store_unavailable");
    expect((await rejection(s.getSetting("x"))).code).toBe("store_closed");
  }, 10_000);

  it("fails the store when Redis is not back within the outage bound", async () => {
    const own = await redisServer();
    const s = (await openRedisStore({ url: own.url, keyPrefix: "o:", outageMaxMs: 300 })) as RedisStore;
    const states: RedisStoreState[] = [];
    s.onStateChange((st) => states.push(st));
    await s.commit(pushBatch(1));
    await own.kill9();
    await until(() => !s.available, "the outage");
    const kept = s.commit(pushBatch(2));
    const e = await rejection(kept);
    expect(e.code).toBe("store_failed");
    expect(e.message).toContain("outage bound");
    expect(states).toEqual(["unavailable", "failed"]);
    // the bound's timer may fire a millisecond before the wall clock shows 300 ms gone
    expect(s.outageSeconds()).toBeGreaterThanOrEqual(0.29);
    await s.close();
  }, 10_000);
});

describeRedis("redis store outage: answers lost with the connection", () => {
  it("settles the commits the fence says were applied with their stored receipt ids, and sends the others again", async () => {
    const own = await redisServer();
    const relay = await Relay.start(own.port);
    const s = (await openRedisStore({ url: relay.url, keyPrefix: "o:", outageMaxMs: 30_000 })) as RedisStore;
    const c = await own.client();
    try {
      const first = await s.commit(pushBatch(1));
      // 2..11 run on Redis, their answers never arrive
      relay.dropAnswers = true;
      const applied = Array.from({ length: 10 }, (_, i) => s.commit(pushBatch(i + 2)));
      for (let i = 0; i < 500 && (await c.get(`o:fence:${s.instance}`)) !== "11"; i++) await new Promise((r) => setTimeout(r, 10));
      expect(await c.get(`o:fence:${s.instance}`)).toBe("11");
      // 12..21 never reach Redis
      relay.dropRequests = true;
      const lost = Array.from({ length: 10 }, (_, i) => s.commit(pushBatch(i + 12)));
      await new Promise((r) => setImmediate(r));
      relay.dropAnswers = false;
      relay.dropRequests = false;
      relay.cut();
      const answers = await Promise.all([...applied, ...lost]);
      expect(s.stats.replayed).toBe(10);
      expect(s.stats.commits).toBe(21);
      expectReceiptIds([first, ...answers], await checkExactlyOnce(s, 21));
    } finally {
      await c.close();
      await s.close();
    }
  }, 15_000);
});
