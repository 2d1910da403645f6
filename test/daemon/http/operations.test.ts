import { readFileSync, writeFileSync } from "node:fs";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { harnessPerTest, KEY, waitFor } from "./harness.ts";

const harness = harnessPerTest();

const OPENAPI_FILE = new URL("../../../docs/openapi.json", import.meta.url);

describe("operations endpoints", () => {
  it("GET /healthz reports sessions and online devices, and 503 draining once shutdown began", async () => {
    const h = await harness();
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    await h.device("d1", KEY);
    await waitFor(() => h.server.engine.onlineCount() === 1, 10_000, "the device");
    const ok = await h.call("GET", "/healthz");
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as { status: string; sessions: number; devicesOnline: number; uptimeSeconds: number };
    expect(body).toMatchObject({ status: "ok", sessions: 1, devicesOnline: 1 });
    expect(body.uptimeSeconds).toBeGreaterThanOrEqual(0);
    h.offset = 42_000;
    expect(((await (await h.call("GET", "/healthz")).json()) as { uptimeSeconds: number }).uptimeSeconds).toBeGreaterThanOrEqual(42);

    h.api.draining();
    const draining = await h.call("GET", "/healthz");
    expect(draining.status).toBe(503);
    expect(await draining.json()).toEqual({ status: "draining", error: { code: "shutting_down", message: expect.any(String) } });
    // publishing still works until the engine itself shuts down
    expect((await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: { payload: "x" } })).status).toBe(202);
  });

  it("GET /.well-known/jwks.json serves the content-signing keys (public members only)", async () => {
    const h = await harness();
    const res = await h.call("GET", "/.well-known/jwks.json");
    expect(res.status).toBe(200);
    const jwks = (await res.json()) as { keys: Record<string, unknown>[] };
    expect(jwks).toEqual(h.server.contentKeys.jwks());
    expect(jwks.keys[0]?.["kid"]).toBe(h.server.contentKeys.currentKid);
    expect(jwks.keys.every((k) => !("d" in k))).toBe(true);
  });

  it("GET /metrics needs an admin token unless public, and is 404 without a metrics source", async () => {
    const metrics = { contentType: "text/plain; version=0.0.4; charset=utf-8", text: async () => "dtlspush_up 1\n" };
    const h = await harness({ metrics });
    expect((await h.call("GET", "/metrics")).status).toBe(401);
    expect((await h.call("GET", "/metrics", { token: h.publisher })).status).toBe(403);
    const ok = await h.call("GET", "/metrics", { token: h.admin });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toBe(metrics.contentType);
    expect(await ok.text()).toBe("dtlspush_up 1\n");

    const pub = await harness({ metrics, limits: { publicMetrics: true } });
    expect(await (await pub.call("GET", "/metrics")).text()).toBe("dtlspush_up 1\n");

    const none = await harness();
    const missing = await none.call("GET", "/metrics", { token: none.admin });
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe("not_found");
  });
});

describe("logging", () => {
  it("logs requests and failures without tokens or payloads", async () => {
    const lines: string[] = [];
    const logger = pino({ level: "trace" }, { write: (s: string) => void lines.push(s) });
    const h = await harness({ logger });
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    const secret = "very-secret-payload-text";
    expect((await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: { payload: secret } })).status).toBe(202);
    expect(
      (await h.call("POST", "/v1/devices/ghost/messages", { token: h.publisher, body: { payloadBase64: Buffer.from(secret).toString("base64") } }))
        .status,
    ).toBe(404);
    expect((await h.call("GET", "/v1/devices", { token: "garbage-token-value" })).status).toBe(401);
    const log = lines.join("");
    expect(log).toContain("/v1/devices/d1/messages");
    expect(log).not.toContain(h.publisher);
    expect(log).not.toContain(h.publisher.split(".")[2]);
    expect(log).not.toContain("garbage-token-value");
    expect(log).not.toContain(secret);
    expect(log).not.toContain(Buffer.from(secret).toString("base64"));
  });
});

describe("OpenAPI document", () => {
  it("documents every route with its schemas and security", async () => {
    const h = await harness();
    const doc = (await (await h.call("GET", "/openapi.json")).json()) as {
      openapi: string;
      paths: Record<string, Record<string, { security?: unknown[]; requestBody?: unknown; responses: Record<string, unknown> }>>;
      components: { schemas: Record<string, unknown>; securitySchemes: Record<string, unknown> };
    };
    expect(doc.openapi).toBe("3.1.0");
    const ops = Object.entries(doc.paths).flatMap(([p, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${p}`));
    expect(ops.sort()).toEqual(
      [
        "GET /healthz",
        "GET /.well-known/jwks.json",
        "GET /openapi.json",
        "GET /metrics",
        "POST /v1/devices/{id}/messages",
        "POST /v1/topics/{topic}/messages",
        "POST /v1/messages",
        "GET /v1/messages/{id}",
        "GET /v1/events",
        "GET /v1/devices",
        "GET /v1/devices/{id}",
        "PUT /v1/devices/{id}",
        "DELETE /v1/devices/{id}",
      ].sort(),
    );
    expect(Object.keys(doc.components.schemas).sort()).toEqual(["BatchResult", "Device", "Error", "MessageStatus", "PublishResult", "Receipt"]);
    expect(doc.components.securitySchemes).toHaveProperty("bearerAuth");
    const publish = doc.paths["/v1/devices/{id}/messages"]?.["post"];
    expect(publish?.security).toEqual([{ bearerAuth: [] }]);
    expect(publish?.requestBody).toBeDefined();
    expect(Object.keys(publish?.responses ?? {})).toEqual(expect.arrayContaining(["202", "400", "401", "403", "404", "409", "413", "429", "503"]));
    const batch = doc.paths["/v1/messages"]?.["post"];
    expect(batch?.security).toEqual([{ bearerAuth: [] }]);
    expect(Object.keys(batch?.responses ?? {})).toEqual(expect.arrayContaining(["202", "400", "401", "403", "413", "429", "500"]));
    expect(doc.paths["/healthz"]?.["get"]?.security).toBeUndefined();
    expect(doc.paths["/v1/events"]?.["get"]?.responses["200"]).toMatchObject({ content: { "text/event-stream": {} } });
  });

  it("docs/openapi.json is what the app serves (UPDATE_OPENAPI=1 rewrites it)", async () => {
    const h = await harness();
    const served = `${JSON.stringify(await (await h.call("GET", "/openapi.json")).json(), null, 2)}\n`;
    if (process.env["UPDATE_OPENAPI"] === "1") writeFileSync(OPENAPI_FILE, served);
    let stored = "";
    try {
      stored = readFileSync(OPENAPI_FILE, "utf8");
    } catch {
      // missing: the comparison below fails with the whole document as the difference
    }
    expect(stored, "docs/openapi.json is stale: run the HTTP tests with UPDATE_OPENAPI=1").toBe(served);
  });
});
