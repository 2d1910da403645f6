/**
 * Publisher-chosen message ids on a shared store (cluster-types.ts, "Message
 * ids"): the same id published on two nodes at once is refused on one of them
 * with duplicate_message, stored once, and stops neither engine; a refused
 * publish does not keep its id from a retry on another node. On the memory
 * cluster and on a real redis-server.
 */
import { describe, expect, it } from "vitest";
import { MessagingError } from "../../src/messaging/errors.ts";
import type { PublishResult } from "../../src/messaging/delivery-types.ts";
import type { DeliveryOptions } from "../../src/messaging/options.ts";
import { describeRedis } from "../support/redis-server.ts";
import { useRedisNodes } from "../support/redis-nodes.ts";
import { enc, untilDelivered } from "./helpers.ts";
import { World } from "./world.ts";

const topic = (text: string, id?: string) => ({
  target: { topic: "nobody-listens" },
  payload: enc(text),
  publisher: "test",
  ...(id === undefined ? {} : { id }),
});
const direct = (device: string, text: string, id?: string) => ({ ...topic(text, id), target: { device } });

/** Runs both publishes at once (neither is awaited before the other is made) until both are answered. */
async function race(
  w: World,
  a: { req: Parameters<World["publish"]>[0]; node: number },
  b: { req: Parameters<World["publish"]>[0]; node: number },
): Promise<PromiseSettledResult<PublishResult>[]> {
  let done = 0;
  const all = [a, b].map(({ req, node }) =>
    w
      .engineAt(node)
      .publish(req)
      .finally(() => done++),
  );
  for (const p of all) p.catch(() => undefined);
  for (let i = 0; i < 200 && done < 2; i++) await w.settle();
  return Promise.allSettled(all);
}

/** One publish of the race was refused as a duplicate, the other accepted: the index of the accepted one. */
function oneWinner(outcomes: PromiseSettledResult<PublishResult>[]): number {
  const won = outcomes.flatMap((o, i) => (o.status === "fulfilled" ? [i] : []));
  expect(won).toHaveLength(1);
  const lost = outcomes[1 - (won[0] as number)] as PromiseRejectedResult;
  expect(lost.status).toBe("rejected");
  expect(lost.reason).toBeInstanceOf(MessagingError);
  expect((lost.reason as MessagingError).code).toBe("duplicate_message");
  return won[0] as number;
}

/** Both engines still publish (a stopped engine refuses with "internal"). */
async function bothWork(w: World, tag: string): Promise<void> {
  for (const node of [0, 1]) {
    const r = await w.publish(topic(`after ${tag} on ${node}`), node);
    expect(r.messageId).toBeTruthy();
    expect(await w.nodes[node]?.store.getMessage(r.messageId)).toBeDefined();
  }
}

describe("publisher-chosen ids on a shared store (memory cluster)", () => {
  it("the same id published on two nodes at once: one duplicate_message, the message stored and delivered once, both engines go on", async () => {
    const w = await World.create({ nodes: 2 });
    const d = w.addDevice("d1");
    d.autoReconnect = false;
    d.connect({ node: 0 });
    await w.run(60_000, () => d.welcomes.length >= 1);
    for (let round = 0; round < 3; round++) {
      const id = `same-${round}`;
      // node 0 holds the device, node 1 writes the delivery for it: either may win
      const outcomes = await race(
        w,
        { req: direct("d1", `from 0 #${round}`, id), node: round % 2 },
        { req: direct("d1", `from 1 #${round}`, id), node: 1 - (round % 2) },
      );
      const won = oneWinner(outcomes);
      const stored = await w.store.getMessage(id);
      expect(new TextDecoder().decode(stored?.payload)).toBe(won === 0 ? `from 0 #${round}` : `from 1 #${round}`);
      await bothWork(w, id);
      await untilDelivered(w, d, round + 1, 10_000);
    }
    await w.run(5_000);
    expect(d.payloads()).toHaveLength(3);
    expect(new Set(d.delivered.map((p) => p.messageId))).toEqual(new Set(["same-0", "same-1", "same-2"]));
  });

  it("a publish refused after its id was reserved leaves the id free for a retry on another node", async () => {
    const w = await World.create({ nodes: 2, options: { maxQueue: 1 } });
    w.addDevice("full");
    w.addDevice("room");
    await w.run(1_000);
    await w.publish(direct("full", "fills it"), 0);
    await expect(w.publish(direct("full", "refused", "retry-me"), 0)).rejects.toMatchObject({ code: "queue_full" });
    // the retry goes elsewhere: not a duplicate
    const r = await w.publish(direct("room", "retried", "retry-me"), 1);
    expect(r.messageId).toBe("retry-me");
    // and a stored id stays refused on every node
    await expect(w.publish(direct("room", "again", "retry-me"), 0)).rejects.toMatchObject({ code: "duplicate_message" });
    await expect(w.publish(direct("room", "again", "retry-me"), 1)).rejects.toMatchObject({ code: "duplicate_message" });
  });
});

const redis = useRedisNodes("ids");

/** Two nodes (engines) on one fresh prefix of the Redis server. */
async function redisWorld(options: Partial<DeliveryOptions> = {}): Promise<World> {
  return World.create({ nodes: 2, sharedStores: await redis.nodes(2), options });
}

describeRedis("publisher-chosen ids on a shared store (Redis)", () => {
  it("the same id published on two nodes at once: one duplicate_message, the message stored once, both engines go on", async () => {
    const w = await redisWorld();
    for (let round = 0; round < 5; round++) {
      const id = `same-${round}`;
      const outcomes = await race(
        w,
        { req: topic(`from 0 #${round}`, id), node: round % 2 },
        { req: topic(`from 1 #${round}`, id), node: 1 - (round % 2) },
      );
      const won = oneWinner(outcomes);
      for (const node of [0, 1]) {
        const stored = await w.nodes[node]?.store.getMessage(id);
        expect(new TextDecoder().decode(stored?.payload)).toBe(won === 0 ? `from 0 #${round}` : `from 1 #${round}`);
      }
      await bothWork(w, id);
    }
  });

  it("a publish refused after its id was reserved leaves the id free for a retry on another node", async () => {
    const w = await redisWorld({ maxQueue: 1 });
    w.addDevice("full");
    await w.run(1_000);
    await w.publish(direct("full", "fills it"), 0);
    // refused after its id was reserved (the stored depth is read with the reservation)
    await expect(w.publish(direct("full", "refused", "retry-me"), 0)).rejects.toMatchObject({ code: "queue_full" });
    const r = await w.publish(topic("retried", "retry-me"), 1);
    expect(r.messageId).toBe("retry-me");
    await expect(w.publish(topic("again", "retry-me"), 0)).rejects.toMatchObject({ code: "duplicate_message" });
  });
});
