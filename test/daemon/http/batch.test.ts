/**
 * POST /v1/messages (batch publish) against a real push server and HTTP API
 * on 127.0.0.1: entries answered one by one, limits, auth, idempotent retries,
 * one store commit per batch, a store failure failing exactly its batch.
 */
import { describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { API_AUDIENCE } from "../../../src/auth/index.ts";
import { signToken } from "../../../src/auth/tokens.ts";
import { createMetrics } from "../../../src/daemon/metrics.ts";
import { openMemoryStore } from "../../../src/store/index.ts";
import type { Store } from "../../../src/store/types.ts";
import { expectError, harnessPerTest, KEY, waitFor, type ErrorJson, type Harness } from "./harness.ts";

const harness = harnessPerTest();

interface Result {
  id?: string;
  createdAt?: string;
  expiresAt?: string;
  recipients?: number;
  rejected?: unknown[];
  error?: { code: string; message: string };
}

async function batch(h: Harness, messages: unknown, token: string | undefined = h.publisher): Promise<Result[]> {
  const res = await h.call("POST", "/v1/messages", { token, body: { messages } });
  const body = (await res.json()) as { results: Result[] } & ErrorJson;
  expect(res.status, JSON.stringify(body)).toBe(202);
  return body.results;
}

/** A memory store whose commits are counted and can be made to fail. */
function countingStore(): { store: Store; commits: () => number; failCommits: (on: boolean) => void } {
  const inner = openMemoryStore();
  let commits = 0;
  let failing = false;
  const store = new Proxy(inner, {
    get(target, key) {
      if (key === "commit") {
        return (batch: Parameters<Store["commit"]>[0]) => {
          commits++;
          if (failing) return Promise.reject(new Error("disk I/O error (injected)"));
          return target.commit(batch);
        };
      }
      const v = Reflect.get(target, key) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { store, commits: () => commits, failCommits: (on) => void (failing = on) };
}

describe("POST /v1/messages (batch publish)", () => {
  it("publishes every good entry and answers each bad one with the error a single publish gets", async () => {
    const h = await harness();
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    await h.server.registry.add({ id: "d2", psk: { identity: "d2", key: KEY }, topics: ["room/1"] });
    await h.server.registry.add({ id: "gone", psk: { identity: "gone", key: KEY } });
    await h.server.registry.revoke("gone");
    const d1 = await h.device("d1", KEY);
    const good = [
      { device: "d1", payload: "one", id: "b-1", ttlSeconds: 60, priority: 7, contentType: "text/plain" },
      { topic: "room/1", payloadBase64: Buffer.from([0, 1, 255]).toString("base64"), id: "b-2" },
      { device: "d1", payload: "two" },
    ];
    // each bad entry, and the single publish (path, body) that is refused in the same way
    const bad: { entry: Record<string, unknown>; path: string; status: number; code: string }[] = [
      { entry: { device: "nobody", payload: "x" }, path: "/v1/devices/nobody/messages", status: 404, code: "device_unknown" },
      { entry: { device: "gone", payload: "x" }, path: "/v1/devices/gone/messages", status: 409, code: "device_revoked" },
      { entry: { device: "d1", payload: "x".repeat(5000) }, path: "/v1/devices/d1/messages", status: 413, code: "payload_too_large" },
      { entry: { topic: "a//b", payload: "x" }, path: "/v1/topics/a%2F%2Fb/messages", status: 400, code: "bad_topic" },
      { entry: { topic: "bad topic", payload: "x" }, path: "/v1/topics/bad%20topic/messages", status: 400, code: "bad_request" },
      { entry: { device: "d1", payload: "x", priority: 12 }, path: "/v1/devices/d1/messages", status: 400, code: "bad_request" },
      { entry: { device: "d1", payload: "x", payloadBase64: "eA==" }, path: "/v1/devices/d1/messages", status: 400, code: "bad_request" },
      { entry: { device: "d1", payload: "\ud800" }, path: "/v1/devices/d1/messages", status: 400, code: "bad_request" },
      { entry: { device: "d1", payload: "x", extra: 1 }, path: "/v1/devices/d1/messages", status: 400, code: "bad_request" },
    ];
    for (const b of bad) {
      const { device: _d, topic: _t, ...single } = b.entry;
      await expectError(await h.call("POST", b.path, { token: h.publisher, body: single }), b.status, b.code);
    }
    // bad entries among good ones, and ones without a target or with two, or not objects at all
    const entries: unknown[] = [
      good[0],
      ...bad.map((b) => b.entry),
      good[1],
      { payload: "x" },
      { device: "d1", topic: "room/1", payload: "x" },
      "text",
      good[2],
    ];
    const results = await batch(h, entries);
    expect(results).toHaveLength(entries.length);
    expect(results.map((r) => r.error?.code ?? "published")).toEqual([
      "published",
      ...bad.map((b) => b.code),
      "published",
      "bad_request",
      "bad_request",
      "bad_request",
      "published",
    ]);
    expect(results[1 + bad.length + 1]?.error?.message).toBe("Give exactly one of body.messages.11.device and body.messages.11.topic.");
    expect(results[6]?.error?.message).toMatch(/^body\.messages\.6\.priority /);
    const [r0, rTopic, rLast] = [results[0], results[1 + bad.length], results.at(-1)];
    expect(r0).toMatchObject({ id: "b-1", recipients: 1, rejected: [] });
    expect(Date.parse(r0?.expiresAt ?? "") - Date.parse(r0?.createdAt ?? "")).toBe(60_000);
    expect(rTopic).toMatchObject({ id: "b-2", recipients: 1 });
    expect(rLast?.id).toMatch(/^[0-9a-f-]{36}$/);
    // durable when answered; the publisher is the token's subject
    expect((await h.store.getMessage("b-1"))?.publisher).toBe("backend");
    expect((await h.store.getMessage("b-2"))?.topic).toBe("room/1");
    expect(await h.store.getMessage(rLast?.id ?? "")).toBeDefined();
    await waitFor(() => d1.received.length === 2, 10_000, "the two pushes to d1");
    expect(d1.received.map((m) => m.text()).sort()).toEqual(["one", "two"]);
  });

  it("takes 1000 entries, refuses 1001 and bodies that are not a batch", async () => {
    const h = await harness();
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    const entry = (i: number): object => ({ device: "d1", payload: `m${i}`, id: `n-${i}` });
    const full = await batch(
      h,
      Array.from({ length: 1000 }, (_, i) => entry(i)),
    );
    expect(full.filter((r) => r.id !== undefined)).toHaveLength(1000);
    expect(full[999]?.id).toBe("n-999");
    const tooMany = await h.call("POST", "/v1/messages", {
      token: h.publisher,
      body: { messages: Array.from({ length: 1001 }, (_, i) => entry(2000 + i)) },
    });
    expect((await expectError(tooMany, 400, "bad_request")).error.message).toBe("body.messages must NOT have more than 1000 items.");
    expect(await h.store.getMessage("n-2000")).toBeUndefined();
    for (const body of [[], {}, { messages: [] }, { messages: {} }, { messages: [entry(1)], more: 1 }, "[1]", "null"]) {
      await expectError(
        await h.call("POST", "/v1/messages", { token: h.publisher, body: typeof body === "string" ? body : body }),
        400,
        "bad_request",
      );
    }
  });

  it("has a body limit of its own: above the API's, below it a 413", async () => {
    const h = await harness({ limits: { bodyLimitBytes: 2048, batchBodyLimitBytes: 20_000 } });
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    // 10 KB: over the other routes' limit, within the batch limit
    const ok = await batch(
      h,
      Array.from({ length: 20 }, (_, i) => ({ device: "d1", payload: "x".repeat(500), id: `ok-${i}` })),
    );
    expect(ok.every((r) => r.id !== undefined)).toBe(true);
    const single = await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: { payload: "x".repeat(3000) } });
    expect((await expectError(single, 413, "body_too_large")).error.message).toMatch(/2048 bytes/);
    const big = await h.call("POST", "/v1/messages", {
      token: h.publisher,
      body: { messages: Array.from({ length: 50 }, (_, i) => ({ device: "d1", payload: "x".repeat(500), id: `big-${i}` })) },
    });
    expect((await expectError(big, 413, "body_too_large")).error.message).toMatch(/20000 bytes/);
    expect(await h.store.getMessage("big-0")).toBeUndefined();
  });

  it("needs a token with the publish scope and counts as one request against the rate limit", async () => {
    const h = await harness({ limits: { rateLimitPerMinute: 3 } });
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    const messages = [{ device: "d1", payload: "x", id: "auth-1" }];
    await expectError(await h.call("POST", "/v1/messages", { body: { messages } }), 401, "token_missing");
    await expectError(await h.call("POST", "/v1/messages", { token: `${h.publisher}x`, body: { messages } }), 401, "token_invalid");
    // a validly signed API token without a scope this daemon knows
    const { token } = await signToken(
      h.server.publisherKeys,
      { sub: "x", scope: "metrics", jti: randomBytes(8).toString("hex") },
      API_AUDIENCE,
      Date.now(),
      60,
    );
    await expectError(await h.call("POST", "/v1/messages", { token, body: { messages } }), 403, "insufficient_scope");
    expect(await h.store.getMessage("auth-1")).toBeUndefined();
    // 3 requests a minute: three batches of 5 pass (15 messages), the fourth request is refused
    for (let r = 0; r < 3; r++) {
      const results = await batch(
        h,
        Array.from({ length: 5 }, (_, i) => ({ device: "d1", payload: "x", id: `rl-${r}-${i}` })),
      );
      expect(results.every((x) => x.id !== undefined)).toBe(true);
    }
    await expectError(await h.call("POST", "/v1/messages", { token: h.publisher, body: { messages } }), 429, "rate_limited");
  });

  it("a batch retried whole publishes no entry with an id twice; an id repeated in a batch is a duplicate", async () => {
    const h = await harness();
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    const messages = [
      { device: "d1", payload: "a", id: "r-1" },
      { device: "nobody", payload: "b", id: "r-2" },
      { device: "d1", payload: "c", id: "r-3" },
    ];
    const first = await batch(h, messages);
    expect(first.map((r) => r.id ?? r.error?.code)).toEqual(["r-1", "device_unknown", "r-3"]);
    await h.server.registry.add({ id: "nobody", psk: { identity: "nobody", key: KEY } });
    // the retry: what was stored is a duplicate, what was not is published now
    const retry = await batch(h, messages);
    expect(retry.map((r) => r.id ?? r.error?.code)).toEqual(["duplicate_message", "r-2", "duplicate_message"]);
    expect(h.server.engine.deviceStatus("d1").queueDepth).toBe(2);
    // within one batch the first entry with an id wins, even if it fails; later ones are duplicates
    const repeated = await batch(h, [
      { device: "ghost", payload: "1", id: "s-1" },
      { device: "d1", payload: "2", id: "s-1" },
      { device: "d1", payload: "3", id: "s-2" },
      { device: "d1", payload: "4", id: "s-2" },
    ]);
    expect(repeated.map((r) => r.id ?? r.error?.code)).toEqual(["device_unknown", "duplicate_message", "s-2", "duplicate_message"]);
    expect(repeated[3]?.error?.message).toMatch(/earlier entry of this batch/);
    expect(await h.store.getMessage("s-1")).toBeUndefined();
    expect((await h.store.getMessage("s-2"))?.payload).toEqual(new TextEncoder().encode("3"));
    expect(h.server.engine.deviceStatus("d1").queueDepth).toBe(3);
  });

  it.each([
    ["on the main thread", 0],
    ["by two worker threads (signatures come back in any order)", 2],
  ])("stores a batch with one commit, signed %s, and a failing commit fails exactly that batch", async (_how, signingWorkers) => {
    const s = countingStore();
    const counted = new Map<string, number>();
    const h = await harness({
      store: s.store,
      signingWorkers,
      observer: { httpError: () => undefined, batchEntries: (result, n) => void counted.set(result, (counted.get(result) ?? 0) + n) },
    });
    for (let i = 0; i < 20; i++) await h.server.registry.add({ id: `d${i}`, psk: { identity: `d${i}`, key: KEY }, topics: ["all"] });
    const entries = (tag: string): object[] => [
      ...Array.from({ length: 200 }, (_, i) => ({ device: `d${i % 20}`, payload: `${tag}${i}`, id: `${tag}-${i}` })),
      { topic: "all", payload: "to all", id: `${tag}-topic` },
      { device: "nobody", payload: "x" },
    ];
    const before = s.commits();
    const ok = await batch(h, entries("a"));
    expect(s.commits() - before).toBe(1);
    expect(ok.filter((r) => r.id !== undefined)).toHaveLength(201);
    expect(ok.at(-2)).toMatchObject({ id: "a-topic", recipients: 20 });
    expect(counted).toEqual(
      new Map([
        ["published", 201],
        ["device_unknown", 1],
      ]),
    );

    s.failCommits(true);
    const failed = await h.call("POST", "/v1/messages", { token: h.publisher, body: { messages: entries("b") } });
    await expectError(failed, 500, "internal");
    // nothing of the failed batch is stored; the earlier batch is
    s.failCommits(false);
    for (const id of ["b-0", "b-199", "b-topic"]) expect(await h.store.getMessage(id)).toBeUndefined();
    for (const id of ["a-0", "a-199", "a-topic"]) expect(await h.store.getMessage(id)).toBeDefined();
    expect(counted.get("internal")).toBe(201);
  });

  it("the daemon's metrics count the entries by result", async () => {
    const m = createMetrics();
    const h = await harness({ observer: m.http });
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    await batch(h, [{ device: "d1", payload: "a" }, { device: "nobody", payload: "b" }, { device: "d1", payload: "c" }, { device: "d1" }]);
    const text = await m.text();
    expect(text).toMatch(/^dtlspush_http_batch_entries_total\{result="published"\} 2$/m);
    expect(text).toMatch(/^dtlspush_http_batch_entries_total\{result="device_unknown"\} 1$/m);
    expect(text).toMatch(/^dtlspush_http_batch_entries_total\{result="bad_request"\} 1$/m);
  });
});
