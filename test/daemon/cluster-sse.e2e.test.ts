/**
 * The receipt stream (GET /v1/events) on a cluster of two `dtlspush serve`
 * nodes on one real redis-server: a live stream on A carries the receipts
 * committed by B too; dropped after some receipts and resumed on B with
 * Last-Event-ID while publishes keep coming on both nodes, the two streams
 * together are exactly the stored receipts: no gap, no duplicate, in id
 * order (compared with a full replay from id 0 on a third node).
 */
import { afterEach, expect, it } from "vitest";
import { describeRedis } from "../support/redis-server.ts";
import { addDevice, at, cleanUpCluster, device, events, publish, startCluster, until, type Node, type SseReceipt } from "./cluster-nodes.ts";

afterEach(cleanUpCluster);

const ROUNDS = 30;
const SWITCH_AFTER = 12;

describeRedis("three nodes on one Redis: receipt streams", () => {
  it("a stream on A sees B's receipts; resumed on B with Last-Event-ID: no gap, no duplicate", { timeout: 50_000 }, async () => {
    const c = await startCluster(3);
    const [A, B, C] = c.nodes as [Node, Node, Node];
    await addDevice(c, "da");
    await addDevice(c, "db");
    await addDevice(c, "off");
    const da = await device("da", [at(A)]);
    const db = await device("db", [at(B)]);

    const first = events(c, A);
    await first.connected;
    const ids: string[] = [];
    let resumed: ReturnType<typeof events> | undefined;
    let lastOnA = 0;
    for (let i = 0; i < ROUNDS; i++) {
      // publishes on both nodes, to devices held by either and to one held by nobody
      ids.push(await publish(c, A, "db", `a${i}`));
      ids.push(await publish(c, B, "da", `b${i}`));
      ids.push(await publish(c, i % 2 === 0 ? A : B, "off", `o${i}`));
      if (i === SWITCH_AFTER) {
        // some receipts read on A, among them receipts B committed
        await until(
          () => first.receipts.length >= 20,
          10_000,
          () => `20 receipts on A (${first.receipts.length})`,
        );
        first.close();
        lastOnA = (first.receipts.at(-1) as SseReceipt).id;
        resumed = events(c, B, lastOnA);
        await resumed.connected;
      }
    }
    await until(
      () => da.got.length >= ROUNDS && db.got.length >= ROUNDS,
      15_000,
      () => `deliveries (${da.got.length}, ${db.got.length})`,
    );
    const onA = first.receipts.filter((r) => r.id <= lastOnA);
    const second = resumed as ReturnType<typeof events>;

    // the store's own account, replayed from the start on C; then the streams must have carried exactly it
    const all = events(c, C, 0);
    // every message has queued; the online ones also sent and delivered: 3 + 3 + 1 per round
    const expected = ROUNDS * 7;
    await until(
      () => all.receipts.length >= expected,
      15_000,
      () => `${expected} receipts replayed on C (${all.receipts.length})`,
    );
    await until(
      () => second.receipts.at(-1)?.id === all.receipts.at(-1)?.id,
      10_000,
      () => "the resumed stream caught up",
    );
    expect(all.receipts).toHaveLength(expected);
    expect(new Set(all.receipts.map((r) => r.messageId))).toEqual(new Set(ids));

    const streamed = [...onA, ...second.receipts].map((r) => r.id);
    const stored = all.receipts.map((r) => r.id).filter((id) => id >= (onA[0]?.id ?? 0));
    expect(streamed).toEqual(stored);
    // the live stream on A began before the first publish: it has every receipt from the first one on
    expect(onA[0]?.id).toBe(all.receipts[0]?.id);
    // A's stream carried receipts committed by B (B's device db's sent/delivered)
    expect(onA.some((r) => r.device === "db" && r.state === "delivered")).toBe(true);
    // the resumed stream carried receipts committed by A
    expect(second.receipts.some((r) => r.device === "da" && r.state === "delivered")).toBe(true);
  });
});
