/**
 * ReceiptFeed (cluster mode of the receipt streams) on a store whose
 * receipts other "nodes" commit: the newest id found at start by search,
 * every receipt after it handed on once and in id order whatever the
 * signals (own commits, events, duplicates, stale ones), nothing read while
 * no stream wants receipts, a failed read retried from the same position.
 */
import { describe, expect, it } from "vitest";
import type { ClusterEvent } from "../../../src/store/cluster-types.ts";
import type { Receipt } from "../../../src/store/types.ts";
import { lastReceiptId, ReceiptFeed } from "../../../src/daemon/http/receipt-feed.ts";

class Receipts {
  rows: Receipt[] = [];
  reads = 0;
  failNext = false;
  private next = 1;

  /** one commit of `n` receipts (ids from one counter, as INCRBY in the commit script gives them) */
  commit(n: number): number {
    for (let i = 0; i < n; i++) {
      const id = this.next++;
      this.rows.push({ id, messageId: `m${id}`, device: "d", topic: "", state: "queued", at: id, reason: "", seq: 0 });
    }
    return this.next - 1;
  }

  async receiptsAfter(afterId: number, limit: number): Promise<Receipt[]> {
    this.reads++;
    await Promise.resolve();
    if (this.failNext) {
      this.failNext = false;
      throw new Error("redis went away");
    }
    return this.rows.filter((r) => r.id > afterId).slice(0, limit);
  }
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

function feedOn(store: Receipts, o: { wanted?: () => boolean; retryMs?: number } = {}) {
  const got: number[] = [];
  let listener: (e: ClusterEvent) => void = () => undefined;
  const feed = new ReceiptFeed({
    store,
    onClusterEvent: (l) => {
      listener = l;
      return () => (listener = () => undefined);
    },
    deliver: (r) => got.push(r.id),
    wanted: o.wanted ?? (() => true),
    pageSize: 4,
    retryMs: o.retryMs ?? 10,
  });
  return { feed, got, event: (e: ClusterEvent) => listener(e) };
}

describe("lastReceiptId", () => {
  it("finds the largest stored id with receiptsAfter alone, including after a prune of the oldest", async () => {
    for (const n of [0, 1, 2, 3, 7, 64, 65, 1000, 4097]) {
      const s = new Receipts();
      s.commit(n);
      expect(await lastReceiptId(s), `n=${n}`).toBe(n);
      s.rows = s.rows.slice(Math.floor(n / 2)); // prune keeps the newest
      expect(await lastReceiptId(s), `n=${n} pruned`).toBe(n);
      expect(s.reads).toBeLessThan(4 * Math.log2(n + 2) + 8);
    }
  });
});

describe("ReceiptFeed", () => {
  it("starts after the newest stored receipt and hands on every later one once, in id order", async () => {
    const s = new Receipts();
    s.commit(10);
    const { feed, got, event } = feedOn(s);
    await feed.start();
    expect(feed.position).toBe(10);
    // another node's commit (told by event), this node's own (told twice), one told late, one never told
    const b = s.commit(3);
    event({ kind: "receipts", lastId: b });
    const a = s.commit(5);
    feed.signal(a);
    feed.signal(a);
    s.commit(2); // its event is lost
    const c = s.commit(1);
    event({ kind: "receipts", lastId: c });
    event({ kind: "receipts", lastId: b }); // late: nothing new
    await settle();
    expect(got).toEqual(Array.from({ length: c - 10 }, (_, i) => 11 + i));
    expect(feed.position).toBe(c);
  });

  it("reads nothing while no stream wants receipts, and then starts from the newest it was told of", async () => {
    const s = new Receipts();
    let wanted = false;
    const { feed, got } = feedOn(s, { wanted: () => wanted });
    await feed.start();
    const readsAtStart = s.reads;
    feed.signal(s.commit(50));
    await settle();
    expect(s.reads).toBe(readsAtStart);
    expect(feed.position).toBe(50);
    wanted = true;
    feed.signal(s.commit(2));
    await settle();
    expect(got).toEqual([51, 52]);
  });

  it("a lost event is made up by poll or resync; a failed read is retried from the same position", async () => {
    const s = new Receipts();
    const { feed, got, event } = feedOn(s);
    await feed.start();
    s.commit(3); // never told
    feed.poll();
    await settle();
    expect(got).toEqual([1, 2, 3]);
    s.commit(2);
    event({ kind: "resync" });
    await settle();
    expect(got).toEqual([1, 2, 3, 4, 5]);
    s.failNext = true;
    feed.signal(s.commit(1));
    await settle();
    expect(got).toEqual([1, 2, 3, 4, 5]);
    expect(feed.failures).toBe(1);
    await new Promise((r) => setTimeout(r, 30));
    await settle();
    expect(got).toEqual([1, 2, 3, 4, 5, 6]);
    feed.close();
    feed.signal(s.commit(1));
    await settle();
    expect(got).toHaveLength(6);
  });
});
