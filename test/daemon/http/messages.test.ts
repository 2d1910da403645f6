import { describe, expect, it } from "vitest";
import { expectError, harnessPerTest, KEY, waitFor } from "./harness.ts";

const harness = harnessPerTest();

describe("publishing over HTTP", () => {
  it("POST /v1/devices/{id}/messages answers 202 once stored and the device receives it", async () => {
    const h = await harness();
    await h.server.registry.add({ id: "sensor-1", psk: { identity: "sensor-1", key: KEY } });
    const d = await h.device("sensor-1", KEY);
    const res = await h.call("POST", "/v1/devices/sensor-1/messages", {
      token: h.publisher,
      body: { payload: "hello device", contentType: "text/plain", priority: 7, ttlSeconds: 60, id: "m-1" },
    });
    expect(res.status).toBe(202);
    const body = (await res.json()) as { id: string; createdAt: string; expiresAt: string; recipients: number; rejected: unknown[] };
    expect(body.id).toBe("m-1");
    expect(body.recipients).toBe(1);
    expect(body.rejected).toEqual([]);
    expect(Date.parse(body.expiresAt) - Date.parse(body.createdAt)).toBe(60_000);
    // durable before the answer
    expect((await h.store.getMessage("m-1"))?.publisher).toBe("backend");
    await waitFor(() => d.received.length === 1, 10_000, "the push");
    const m = d.received[0];
    expect(m?.text()).toBe("hello device");
    expect(m?.id).toBe("m-1");
    expect(m?.contentType).toBe("text/plain");
    expect(m?.priority).toBe(7);
    expect(m?.publisher).toBe("backend");
  });

  it("POST /v1/topics/{topic}/messages reaches assigned devices; binary payloads go as base64", async () => {
    const h = await harness();
    await h.server.registry.add({ id: "a", psk: { identity: "a", key: KEY }, topics: ["room/1"] });
    await h.server.registry.add({ id: "b", psk: { identity: "b", key: KEY }, topics: ["room/1"] });
    await h.server.registry.add({ id: "c", psk: { identity: "c", key: KEY }, topics: ["room/2"] });
    const a = await h.device("a", KEY);
    const b = await h.device("b", KEY);
    const c = await h.device("c", KEY);
    const bytes = new Uint8Array([0, 1, 2, 250, 255]);
    const res = await h.call("POST", "/v1/topics/room%2F1/messages", {
      token: h.publisher,
      body: { payloadBase64: Buffer.from(bytes).toString("base64") },
    });
    expect(res.status).toBe(202);
    expect(((await res.json()) as { recipients: number }).recipients).toBe(2);
    await waitFor(() => a.received.length === 1 && b.received.length === 1, 10_000, "both pushes");
    expect([...(a.received[0]?.payload ?? [])]).toEqual([...bytes]);
    expect(a.received[0]?.topic).toBe("room/1");
    expect(c.received).toHaveLength(0);
  });

  it("GET /v1/messages/{id} shows the message and its receipts after delivery", async () => {
    const h = await harness();
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    const d = await h.device("d1", KEY);
    const res = await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: { payload: "x", collapseKey: "k" } });
    const { id } = (await res.json()) as { id: string };
    await waitFor(() => d.received.length === 1);
    await waitFor(() => h.server.engine.deviceStatus("d1").queueDepth === 0, 10_000, "the ack");
    const st = await h.call("GET", `/v1/messages/${id}`, { token: h.publisher });
    expect(st.status).toBe(200);
    const body = (await st.json()) as Record<string, unknown> & {
      receipts: { eventId: number; device: string; state: string; seq: number | null; reason: string | null; at: string }[];
    };
    expect(body).toMatchObject({ id, target: { device: "d1" }, priority: 5, collapseKey: "k", contentType: null, publisher: "backend" });
    expect(body).not.toHaveProperty("payload");
    expect(body.receipts.map((r) => r.state)).toEqual(["queued", "sent", "delivered"]);
    expect(body.receipts.map((r) => r.seq)).toEqual([null, 1, 1]);
    expect(body.receipts.every((r) => r.device === "d1" && r.reason === null && !Number.isNaN(Date.parse(r.at)))).toBe(true);
    const ids = body.receipts.map((r) => r.eventId);
    expect([...ids].sort((x, y) => x - y)).toEqual(ids);

    await expectError(await h.call("GET", "/v1/messages/nope", { token: h.publisher }), 404, "message_unknown");
  });

  it("maps engine refusals: device_unknown 404, device_revoked 409, duplicate_message 409, payload_too_large 413, queue_full 429", async () => {
    const h = await harness({ delivery: { maxQueue: 1, maxPayload: 16 } });
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    await h.server.registry.add({ id: "gone", psk: { identity: "gone", key: KEY } });
    await h.server.registry.revoke("gone");
    const post = (device: string, body: unknown): Promise<Response> => h.call("POST", `/v1/devices/${device}/messages`, { token: h.publisher, body });
    await expectError(await post("ghost", { payload: "x" }), 404, "device_unknown");
    await expectError(await post("gone", { payload: "x" }), 409, "device_revoked");
    await expectError(await post("d1", { payload: "x".repeat(17) }), 413, "payload_too_large");
    expect((await post("d1", { payload: "first", id: "dup" })).status).toBe(202);
    await expectError(await post("d1", { payload: "again", id: "dup" }), 409, "duplicate_message");
    await expectError(await post("d1", { payload: "second" }), 429, "queue_full");
    // a topic publish is accepted and lists the full queue as rejected
    await h.server.registry.update("d1", { topics: ["t"] });
    const res = await h.call("POST", "/v1/topics/t/messages", { token: h.publisher, body: { payload: "y" } });
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({ recipients: 0, rejected: [{ device: "d1", reason: "queue_full" }] });
  });

  it("refuses bad requests with 400 bad_request naming the field", async () => {
    const h = await harness({ delivery: { maxTtlSeconds: 3600, defaultTtlSeconds: 600 } });
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    const post = (body: unknown, path = "/v1/devices/d1/messages"): Promise<Response> => h.call("POST", path, { token: h.publisher, body });
    expect((await expectError(await post({}), 400, "bad_request")).error.message).toMatch(/payload/);
    expect((await expectError(await post({ payload: "a", payloadBase64: "YQ==" }), 400, "bad_request")).error.message).toMatch(/exactly one/);
    expect((await expectError(await post({ payload: "a", priority: 10 }), 400, "bad_request")).error.message).toMatch(/^body\.priority /);
    expect((await expectError(await post({ payload: "a", priority: "5" }), 400, "bad_request")).error.message).toMatch(
      /^body\.priority must be integer/,
    );
    expect((await expectError(await post({ payload: 5 }), 400, "bad_request")).error.message).toMatch(/^body\.payload /);
    expect((await expectError(await post({ payload: "a", extra: 1 }), 400, "bad_request")).error.message).toBe("body.extra is not a known field.");
    expect((await expectError(await post({ payloadBase64: "not base64!" }), 400, "bad_request")).error.message).toMatch(/^body\.payloadBase64 /);
    expect((await expectError(await post({ payload: "a", ttlSeconds: 7200 }), 400, "bad_request")).error.message).toMatch(/ttlSeconds/);
    await expectError(await post("{not json"), 400, "bad_request");
    await expectError(await post({ payload: "a" }, "/v1/topics/bad%20topic/messages"), 400, "bad_request");
    await expectError(await post({ payload: "a" }, "/v1/topics/a%2F%2Fb/messages"), 400, "bad_topic");
    await expectError(
      await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: "payload", headers: { "content-type": "text/plain" } }),
      415,
      "unsupported_media_type",
    );
  });

  it("refuses a body over the limit with 413 body_too_large", async () => {
    const h = await harness({ limits: { bodyLimitBytes: 200 } });
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    const small = await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: { payload: "ok" } });
    expect(small.status).toBe(202);
    const big = await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: { payload: "x".repeat(300) } });
    const body = await expectError(big, 413, "body_too_large");
    expect(body.error.message).toMatch(/200 bytes/);
  });

  it("answers 404 not_found for an unknown route", async () => {
    const h = await harness();
    await expectError(await h.call("GET", "/v2/nothing", { token: h.publisher }), 404, "not_found");
    await expectError(await h.call("POST", "/v1/messages/x"), 404, "not_found");
  });
});
