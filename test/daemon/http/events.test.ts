import { connect as netConnect } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import type { Receipt } from "../../../src/store/types.ts";
import { KEY, openEvents, receipts, startHarness, waitFor, type Harness, type SseReader } from "./harness.ts";

const harnesses: Harness[] = [];
const readers: SseReader[] = [];
afterEach(async () => {
  for (const r of readers.splice(0)) r.close();
  for (const h of harnesses.splice(0)) await h.close();
});
async function harness(o: Parameters<typeof startHarness>[0] = {}): Promise<Harness> {
  const h = await startHarness(o);
  harnesses.push(h);
  return h;
}
async function events(h: Harness, o: { query?: string; lastEventId?: string; token?: string } = {}): Promise<SseReader> {
  const r = await openEvents(h.base, o.token ?? h.publisher, o);
  readers.push(r);
  return r;
}
async function publish(h: Harness, target: string, payload: string): Promise<string> {
  const res = await h.call("POST", `/v1/${target}/messages`, { token: h.publisher, body: { payload } });
  expect(res.status).toBe(202);
  return ((await res.json()) as { id: string }).id;
}
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describe("GET /v1/events", () => {
  it("streams live receipts; a reconnect with Last-Event-ID gets exactly the missed ones in order, then live, no duplicates", async () => {
    const h = await harness();
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    const dev = await h.device("d1", KEY);

    const first = await events(h);
    expect(first.status).toBe(200);
    expect(first.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const m1 = await publish(h, "devices/d1", "one");
    // queued, sent, delivered
    await first.waitFor(3, "receipt");
    const seen = receipts(first.events);
    expect(seen.map((r) => [r.messageId, r.state])).toEqual([
      [m1, "queued"],
      [m1, "sent"],
      [m1, "delivered"],
    ]);
    expect(first.events.map((e) => Number(e.id))).toEqual(seen.map((r) => r.eventId));
    const lastId = first.events.at(-1)?.id as string;
    first.close();
    await first.ended;

    // missed while disconnected
    const missed = [await publish(h, "devices/d1", "two"), await publish(h, "devices/d1", "three")];
    await waitFor(() => dev.received.length === 3, 10_000, "the pushes");
    await waitFor(() => h.server.engine.deviceStatus("d1").queueDepth === 0, 10_000, "the acks");
    const stored = await h.store.receiptsAfter(Number(lastId), 1000);
    expect(stored.length).toBe(6);

    const resumed = await events(h, { lastEventId: lastId });
    await resumed.waitFor(6, "receipt");
    const live = await publish(h, "devices/d1", "four");
    await resumed.waitFor(9, "receipt");
    await new Promise((r) => setTimeout(r, 100));
    const got = receipts(resumed.events);
    expect(got.slice(0, 6).map((r) => r.eventId)).toEqual(stored.map((r) => r.id));
    expect(new Set(got.slice(0, 6).map((r) => r.messageId))).toEqual(new Set(missed));
    expect(got.slice(6).map((r) => [r.messageId, r.state])).toEqual([
      [live, "queued"],
      [live, "sent"],
      [live, "delivered"],
    ]);
    expect(got).toHaveLength(9);
    const ids = got.map((r) => r.eventId);
    expect(ids.every((id, i) => i === 0 || id > (ids[i - 1] as number))).toBe(true);
    expect(ids[0]).toBeGreaterThan(Number(lastId));
    expect(got[0]).toMatchObject({ device: "d1", topic: null, seq: null, state: "queued" });
  });

  it("replays a backlog longer than one page (?lastEventId=0) while live receipts arrive: no gap, no duplicate", async () => {
    const h = await harness({ delivery: { maxQueue: 10_000 } });
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    const n = 1200;
    const extra = 200;
    for (let i = 0; i < n; i++) await h.server.publish({ target: { device: "d1" }, payload: enc(`m${i}`), publisher: "t" });
    // publishes racing the replay
    const racing = (async () => {
      for (let i = 0; i < extra; i++) {
        await h.server.publish({ target: { device: "d1" }, payload: enc(`live${i}`), publisher: "t", id: `live-${i}` });
        await new Promise((res) => setImmediate(res));
      }
    })();
    const r = await events(h, { query: "lastEventId=0" });
    await racing;
    await r.waitFor(n + extra, "receipt");
    await new Promise((res) => setTimeout(res, 100));
    const got = receipts(r.events);
    expect(got.map((x) => x.eventId)).toEqual((await h.store.receiptsAfter(0, 10_000)).map((x) => x.id));
    expect(got.at(-1)?.messageId).toBe(`live-${extra - 1}`);
  });

  it("filters by device, topic and message (repeatable or comma-separated); presence follows the device filter", async () => {
    const h = await harness();
    await h.server.registry.add({ id: "a", psk: { identity: "a", key: KEY }, topics: ["t"] });
    await h.server.registry.add({ id: "b", psk: { identity: "b", key: KEY } });
    await h.server.registry.add({ id: "c", psk: { identity: "c", key: KEY } });
    const byDevice = await events(h, { query: "device=a" });
    const byTwo = await events(h, { query: "device=a&device=b" });
    const byComma = await events(h, { query: "device=a,c" });
    const byTopic = await events(h, { query: "topic=t" });
    const all = await events(h);

    const toA = await publish(h, "devices/a", "1");
    const toB = await publish(h, "devices/b", "2");
    const toT = await publish(h, "topics/t", "3");
    const toC = await publish(h, "devices/c", "4");
    const byMessage = await events(h, { query: `message=${toA},${toT}&lastEventId=0` });
    await all.waitFor(4, "receipt");
    await byMessage.waitFor(2, "receipt");
    const ids = (r: SseReader): string[] => receipts(r.events).map((x) => x.messageId);
    await byDevice.waitFor(2, "receipt");
    await byComma.waitFor(3, "receipt");
    await byTopic.waitFor(1, "receipt");
    await byTwo.waitFor(3, "receipt");
    expect(ids(byDevice)).toEqual([toA, toT]);
    expect(ids(byTwo)).toEqual([toA, toB, toT]);
    expect(ids(byComma)).toEqual([toA, toT, toC]);
    expect(ids(byTopic)).toEqual([toT]);
    expect(receipts(byTopic.events)[0]?.topic).toBe("t");
    expect(ids(byMessage)).toEqual([toA, toT]);

    // presence: a connects
    const da = await h.device("a", KEY);
    await all.waitFor(1, "presence");
    await byDevice.waitFor(1, "presence");
    const p = JSON.parse(byDevice.events.find((e) => e.event === "presence")?.data ?? "{}") as { device: string; online: boolean; at: string };
    expect(p).toMatchObject({ device: "a", online: true });
    expect(Number.isNaN(Date.parse(p.at))).toBe(false);
    expect(byDevice.events.find((e) => e.event === "presence")?.id).toBeUndefined();
    await da.client.close();
    await byDevice.waitFor(2, "presence");
    expect(JSON.parse(byDevice.events.filter((e) => e.event === "presence")[1]?.data ?? "{}")).toMatchObject({ device: "a", online: false });
    await new Promise((r) => setTimeout(r, 100));
    expect(byTopic.events.filter((e) => e.event === "presence")).toHaveLength(0);
    expect(byMessage.events.filter((e) => e.event === "presence")).toHaveLength(0);
  });

  it("refuses a bad Last-Event-ID, an unknown parameter and a missing token", async () => {
    const h = await harness();
    const bad = await h.call("GET", "/v1/events", { token: h.publisher, headers: { "last-event-id": "abc" } });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/last-event-id/);
    const unknown = await h.call("GET", "/v1/events?color=red", { token: h.publisher });
    expect(unknown.status).toBe(400);
    expect((await h.call("GET", "/v1/events")).status).toBe(401);
  });

  it("draining ends open streams and refuses new ones", async () => {
    const h = await harness();
    const r = await events(h);
    expect(r.status).toBe(200);
    h.api.draining();
    await r.ended;
    expect(r.isEnded()).toBe(true);
    const refused = await h.call("GET", "/v1/events", { token: h.publisher });
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("shutting_down");
  });

  it("close() ends the streams", async () => {
    const h = await harness();
    const r = await events(h);
    await h.api.close();
    await r.ended;
    expect(r.isEnded()).toBe(true);
  });

  it("disconnects a client that does not read (over about 1 MiB unsent)", async () => {
    const h = await harness();
    const port = Number(new URL(h.base).port);
    const sock = netConnect({ host: "127.0.0.1", port });
    await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
    sock.write(`GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${h.publisher}\r\n\r\n`);
    let head = "";
    await new Promise<void>((resolve) => {
      const onData = (d: Buffer): void => {
        head += d.toString("latin1");
        if (head.includes("connected")) {
          sock.off("data", onData);
          resolve();
        }
      };
      sock.on("data", onData);
    });
    sock.pause();
    let closed = false;
    sock.on("close", () => {
      closed = true;
    });
    sock.on("error", () => undefined);
    // big receipts, straight from the engine's event: far more than the socket buffers hold
    const reason = "r".repeat(64 * 1024);
    let emitted = 0;
    for (let i = 1; i <= 800 && !closed; i++) {
      const r: Receipt = { id: i, messageId: `m${i}`, device: "d", state: "queued", at: Date.now(), reason, seq: 0, topic: "" };
      h.server.engine.emit("receipt", r);
      emitted += reason.length;
      if (i % 20 === 0) await new Promise((res) => setImmediate(res));
    }
    let read = 0;
    sock.on("data", (d: Buffer) => {
      read += d.length;
    });
    sock.resume();
    await waitFor(() => closed, 10_000, "the server to drop the slow client");
    expect(read).toBeLessThan(emitted);
  });
});
