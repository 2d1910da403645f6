import { describe, expect, it } from "vitest";
import { issuePublisherToken, KeyRing } from "../../../src/auth/index.ts";
import { openMemoryStore } from "../../../src/store/index.ts";
import { harnessPerTest, KEY } from "./harness.ts";

const harness = harnessPerTest();

async function refusal(res: Response): Promise<{ status: number; code: string; wwwAuthenticate: string | null }> {
  const body = (await res.json()) as { error: { code: string } };
  return { status: res.status, code: body.error.code, wwwAuthenticate: res.headers.get("www-authenticate") };
}

describe("publisher tokens on the HTTP API", () => {
  it("refuses missing, malformed, foreign, expired and under-scoped tokens with exact codes", async () => {
    const h = await harness();
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    const publish = (headers: Record<string, string>): Promise<Response> =>
      h.call("POST", "/v1/devices/d1/messages", { body: { payload: "x" }, headers });

    expect(await refusal(await publish({}))).toEqual({ status: 401, code: "token_missing", wwwAuthenticate: 'Bearer realm="dtlspush"' });
    expect(await refusal(await publish({ authorization: "Basic dXNlcjpwYXNz" }))).toMatchObject({ status: 401, code: "token_missing" });
    expect(await refusal(await publish({ authorization: "Bearer not.a.jwt" }))).toEqual({
      status: 401,
      code: "token_invalid",
      wwwAuthenticate: 'Bearer realm="dtlspush", error="invalid_token"',
    });

    // signed by another ring (another daemon's keys)
    const other = await KeyRing.open(openMemoryStore(), "publisher", { now: Date.now() });
    const foreign = (await issuePublisherToken(other, { subject: "x", scopes: ["admin"], now: Date.now(), ttlSeconds: 60 })).token;
    expect(await refusal(await publish({ authorization: `Bearer ${foreign}` }))).toMatchObject({ status: 401, code: "token_invalid" });

    // a session-key or content-key signature is not a publisher token either
    const wrongRing = (await issuePublisherToken(h.server.sessionKeys, { subject: "x", scopes: ["admin"], now: Date.now(), ttlSeconds: 60 })).token;
    expect(await refusal(await publish({ authorization: `Bearer ${wrongRing}` }))).toMatchObject({ status: 401, code: "token_invalid" });

    // expired: one second of life, and the API's clock 10 s later (past the 5 s leeway)
    const short = await h.token(["publish"], { ttlSeconds: 1 });
    expect((await publish({ authorization: `Bearer ${short}` })).status).toBe(202);
    h.offset = 10_000;
    expect(await refusal(await publish({ authorization: `Bearer ${short}` }))).toEqual({
      status: 401,
      code: "token_expired",
      wwwAuthenticate: 'Bearer realm="dtlspush", error="invalid_token"',
    });
    h.offset = 0;

    // publish scope on an admin route
    expect(await refusal(await h.call("GET", "/v1/devices", { token: h.publisher }))).toEqual({
      status: 403,
      code: "insufficient_scope",
      wwwAuthenticate: 'Bearer realm="dtlspush", error="insufficient_scope", scope="admin"',
    });
    // admin implies publish
    expect((await h.call("POST", "/v1/devices/d1/messages", { token: h.admin, body: { payload: "x" } })).status).toBe(202);
    expect((await h.call("GET", "/v1/devices", { token: h.admin })).status).toBe(200);
  });

  it("remembers a verified token for at most a minute: a retired signing key stops its tokens within that time", async () => {
    const h = await harness();
    const token = await h.token(["admin"], { ttlSeconds: 3600 });
    expect((await h.call("GET", "/v1/devices", { token })).status).toBe(200);
    await h.server.publisherKeys.rotate(Date.now());
    await h.server.publisherKeys.retire(Date.now() + 1);
    expect((await h.call("GET", "/v1/devices", { token })).status).toBe(200); // remembered
    h.offset = 61_000;
    expect(await refusal(await h.call("GET", "/v1/devices", { token }))).toMatchObject({ status: 401, code: "token_invalid" });
  });

  it("checks the token before the body: an unauthenticated bad body is 401, not 400", async () => {
    const h = await harness();
    const res = await h.call("POST", "/v1/devices/d1/messages", { body: { nonsense: true } });
    expect(await refusal(res)).toMatchObject({ status: 401, code: "token_missing" });
  });

  it("public routes need no token", async () => {
    const h = await harness();
    for (const path of ["/healthz", "/.well-known/jwks.json", "/openapi.json"]) {
      expect((await h.call("GET", path)).status).toBe(200);
    }
  });
});

describe("rate limit", () => {
  it("counts per token, then per IP without a valid token, and answers 429 rate_limited with Retry-After", async () => {
    const h = await harness({ limits: { rateLimitPerMinute: 3 } });
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
    const a = await h.token(["publish"], { subject: "a" });
    const b = await h.token(["publish"], { subject: "b" });
    const status = async (token: string | undefined, path = "/v1/devices/d1/messages"): Promise<Response> =>
      path === "/healthz" ? h.call("GET", path, { token }) : h.call("POST", path, { token, body: { payload: "x" } });

    for (let i = 0; i < 3; i++) expect((await status(a)).status).toBe(202);
    const limited = await status(a);
    expect(limited.status).toBe(429);
    expect(((await limited.json()) as { error: { code: string } }).error.code).toBe("rate_limited");
    const retry = Number(limited.headers.get("retry-after"));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(limited.headers.get("x-ratelimit-limit")).toBe("3");
    // another token has its own budget
    expect((await status(b)).status).toBe(202);
    // unauthenticated requests share the IP's budget (and are refused for the token after that)
    expect((await status(undefined, "/healthz")).status).toBe(200);
    expect((await status(undefined)).status).toBe(401);
    expect((await status("garbage")).status).toBe(401);
    const ipLimited = await status(undefined, "/healthz");
    expect(ipLimited.status).toBe(429);
    expect(ipLimited.headers.get("retry-after")).not.toBeNull();
  });

  it("is off with rateLimitPerMinute 0", async () => {
    const h = await harness({ limits: { rateLimitPerMinute: 0 } });
    for (let i = 0; i < 20; i++) expect((await h.call("GET", "/healthz")).status).toBe(200);
  });
});
