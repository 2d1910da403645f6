import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { EventHub, filterSet, matchesPresence, matchesReceipt, type EventFilter } from "../../../src/daemon/http/events-sse.ts";
import type { Receipt } from "../../../src/store/types.ts";
import { openEvents, receipts, waitFor, type SseReader } from "./harness.ts";

const receipt = (id: number, o: Partial<Receipt> = {}): Receipt => ({
  id,
  messageId: `m${id}`,
  device: "d",
  state: "queued",
  at: 1_700_000_000_000 + id,
  reason: "",
  seq: 0,
  topic: "",
  ...o,
});

/** A store of receipts whose reads can run code (what commits in between looks like to the replay). */
class FakeStore {
  readonly rows: Receipt[] = [];
  reads = 0;
  onRead: ((n: number) => void) | undefined;
  receiptsAfter(after: number, limit: number): Promise<Receipt[]> {
    const page = this.rows.filter((r) => r.id > after).slice(0, limit);
    this.reads++;
    this.onRead?.(this.reads);
    return Promise.resolve(page);
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function serve(hub: EventHub, filter: EventFilter = {}): Promise<string> {
  const server: Server = createServer((req, res) => {
    const h = req.headers["last-event-id"];
    hub.open(res, filter, typeof h === "string" ? Number(h) : undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        hub.close();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function reader(base: string, lastEventId?: string): Promise<SseReader> {
  const r = await openEvents(base, "unused", lastEventId === undefined ? {} : { lastEventId });
  cleanups.push(() => r.close());
  return r;
}

describe("EventHub", () => {
  it("merges replay pages with receipts committed meanwhile: every id once, in order", async () => {
    const store = new FakeStore();
    for (let i = 1; i <= 10; i++) store.rows.push(receipt(i));
    const hub = new EventHub({ store, replayPageSize: 3 });
    const commit = (r: Receipt): void => {
      store.rows.push(r);
      hub.receipt(r);
    };
    store.onRead = (n) => {
      // between pages: two commits the later pages will also read
      if (n === 2) {
        commit(receipt(11));
        commit(receipt(12));
      }
    };
    const base = await serve(hub);
    const r = await reader(base, "2");
    await waitFor(() => store.reads >= 4 && hub.size === 1, 5_000, "the replay");
    // after the replay: live
    commit(receipt(13));
    await r.waitFor(11, "receipt");
    await new Promise((res) => setTimeout(res, 50));
    expect(receipts(r.events).map((x) => x.eventId)).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    expect(r.events.map((e) => e.id)).toEqual(["3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13"]);
  });

  it("sends receipts held during the replay that are past its last page, and presence in arrival order", async () => {
    const store = new FakeStore();
    for (let i = 1; i <= 4; i++) store.rows.push(receipt(i));
    const hub = new EventHub({ store, replayPageSize: 2 });
    const originalRead = store.receiptsAfter.bind(store);
    store.receiptsAfter = (after, limit) => {
      const page = originalRead(after, limit);
      if (store.reads === 3) {
        // committed after the final page was read: only the held live events carry these
        const r5 = receipt(5);
        store.rows.push(r5);
        hub.receipt(r5);
        hub.presence({ device: "d", online: true, at: 1_700_000_000_100, peer: "x" });
      }
      return page;
    };
    const base = await serve(hub);
    const r = await reader(base, "0");
    await r.waitFor(6);
    expect(r.events.map((e) => e.event)).toEqual(["receipt", "receipt", "receipt", "receipt", "receipt", "presence"]);
    expect(receipts(r.events).map((x) => x.eventId)).toEqual([1, 2, 3, 4, 5]);
    expect(JSON.parse(r.events[5]?.data ?? "")).toEqual({ device: "d", online: true, at: new Date(1_700_000_000_100).toISOString() });
  });

  it("a live-only stream skips nothing after it opened and carries message, topic and receipt fields", async () => {
    const hub = new EventHub({ store: new FakeStore() });
    const base = await serve(hub);
    const r = await reader(base);
    await waitFor(() => hub.size === 1);
    hub.receipt(receipt(7, { topic: "room/1", state: "delivered", seq: 3, reason: "" }));
    hub.receipt(receipt(8, { state: "expired", reason: "ttl" }));
    await r.waitFor(2, "receipt");
    expect(receipts(r.events)).toEqual([
      {
        eventId: 7,
        messageId: "m7",
        device: "d",
        topic: "room/1",
        state: "delivered",
        at: new Date(1_700_000_000_007).toISOString(),
        reason: null,
        seq: 3,
      },
      {
        eventId: 8,
        messageId: "m8",
        device: "d",
        topic: null,
        state: "expired",
        at: new Date(1_700_000_000_008).toISOString(),
        reason: "ttl",
        seq: null,
      },
    ]);
  });

  it("sends a heartbeat comment to every stream on one timer", async () => {
    const hub = new EventHub({ store: new FakeStore(), heartbeatMs: 30 });
    const base = await serve(hub);
    const a = await reader(base);
    const b = await reader(base);
    await waitFor(
      () => a.comments.filter((c) => c === "heartbeat").length >= 2 && b.comments.filter((c) => c === "heartbeat").length >= 2,
      5_000,
      "heartbeats",
    );
  });

  it("disconnects a stream whose held events overflow during a slow replay", async () => {
    const store = new FakeStore();
    for (let i = 1; i <= 4; i++) store.rows.push(receipt(i));
    const hub = new EventHub({ store, replayPageSize: 2, maxPendingEvents: 3 });
    store.onRead = (n) => {
      if (n === 1) for (let i = 100; i < 110; i++) hub.receipt(receipt(i));
    };
    const base = await serve(hub);
    // dropped at once: before or after the client saw the headers
    const r = await reader(base, "0").catch(() => undefined);
    await r?.ended;
    await waitFor(() => hub.size === 0 && store.reads >= 1, 5_000, "the stream to be dropped");
    expect(r === undefined || receipts(r.events).length < 4).toBe(true);
  });

  it("drain() ends the streams", async () => {
    const hub = new EventHub({ store: new FakeStore() });
    const base = await serve(hub);
    const r = await reader(base);
    await waitFor(() => hub.size === 1);
    hub.drain();
    await r.ended;
    expect(hub.draining).toBe(true);
  });
});

describe("event filters", () => {
  it("parses repeatable and comma-separated values", () => {
    expect(filterSet(undefined, "device")).toBeUndefined();
    expect(filterSet(["a,b", " c ", "a"], "device")).toEqual(new Set(["a", "b", "c"]));
    expect(filterSet([","], "device")).toBeUndefined();
    expect(() => filterSet([Array.from({ length: 101 }, (_, i) => `d${i}`).join(",")], "device")).toThrow(/more than 100/);
  });

  it("matches receipts on every filter given; presence only without topic or message filters", () => {
    const r = receipt(1, { device: "a", topic: "t", messageId: "m" });
    expect(matchesReceipt({}, r)).toBe(true);
    expect(matchesReceipt({ devices: new Set(["a"]), topics: new Set(["t"]), messages: new Set(["m"]) }, r)).toBe(true);
    expect(matchesReceipt({ devices: new Set(["a"]), topics: new Set(["u"]) }, r)).toBe(false);
    expect(matchesReceipt({ messages: new Set(["n"]) }, r)).toBe(false);
    const p = { device: "a", online: true, at: 0, peer: "" };
    expect(matchesPresence({}, p)).toBe(true);
    expect(matchesPresence({ devices: new Set(["a"]) }, p)).toBe(true);
    expect(matchesPresence({ devices: new Set(["b"]) }, p)).toBe(false);
    expect(matchesPresence({ topics: new Set(["t"]) }, p)).toBe(false);
  });
});
