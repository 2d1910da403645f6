/**
 * Valid names in paths, over real HTTP: device ids and topics up to 128
 * characters and message ids up to 200 (src/auth/names.ts) are served, also
 * percent-encoded; longer ones get the documented 400, never a 414 from the
 * router.
 */
import { afterEach, describe, expect, it } from "vitest";
import { KEY_HEX, startHarness, type Harness } from "./harness.ts";

const harnesses: Harness[] = [];
afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.close();
});

interface ErrorJson {
  error: { code: string; message: string };
}

async function expectError(res: Response, status: number, code: string): Promise<void> {
  const body = (await res.json()) as ErrorJson;
  expect({ status: res.status, code: body.error.code }).toEqual({ status, code });
  expect(body.error.message).toMatch(/\.$/);
}

/** `length` characters: a letter, then the allowed punctuation and letters in turn. */
function name(length: number, punctuation: string): string {
  const tail = Array.from({ length: length - 1 }, (_, i) => (i % 4 === 3 ? punctuation[i % punctuation.length] : "abcdefghij"[i % 10]));
  return `N${tail.join("")}`;
}

describe("long names in paths", () => {
  it("a message published with a 150- or 200-character id can be read back by that id (percent-encoded too)", async () => {
    const h = await startHarness();
    harnesses.push(h);
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: Buffer.from(KEY_HEX, "hex") } });
    for (const length of [150, 200]) {
      const id = name(length, "._:@~-");
      expect(id).toHaveLength(length);
      const res = await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: { payload: "x", id } });
      expect(res.status).toBe(202);
      expect(((await res.json()) as { id: string }).id).toBe(id);
      // ":" and "@" as sent, and every character that may be escaped escaped
      for (const path of [id, encodeURIComponent(id), [...id].map((c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`).join("")]) {
        const status = await h.call("GET", `/v1/messages/${path}`, { token: h.publisher });
        expect(status.status, `GET /v1/messages/ with ${path.length} characters`).toBe(200);
        expect(((await status.json()) as { id: string }).id).toBe(id);
      }
    }
  });

  it("a 201-character message id is the documented 400, in the body and in the path", async () => {
    const h = await startHarness();
    harnesses.push(h);
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: Buffer.from(KEY_HEX, "hex") } });
    const id = name(201, "._-");
    await expectError(await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: { payload: "x", id } }), 400, "bad_request");
    await expectError(await h.call("GET", `/v1/messages/${id}`, { token: h.publisher }), 400, "bad_request");
    await expectError(await h.call("GET", `/v1/messages/${encodeURIComponent(name(201, ":@"))}`, { token: h.publisher }), 400, "bad_request");
  });

  it("a 128-character device id is registered, read, published to and removed; 129 characters is 400", async () => {
    const h = await startHarness();
    harnesses.push(h);
    const id = name(128, ".:@_-");
    const path = `/v1/devices/${encodeURIComponent(id)}`;
    expect(path.length).toBeGreaterThan(128 + 12);
    expect((await h.call("PUT", path, { token: h.admin, body: { psk: { keyHex: KEY_HEX } } })).status).toBe(201);
    const got = await h.call("GET", path, { token: h.admin });
    expect(got.status).toBe(200);
    expect(((await got.json()) as { id: string }).id).toBe(id);
    expect((await h.call("GET", `/v1/devices/${id}`, { token: h.admin })).status).toBe(200);
    const pub = await h.call("POST", `${path}/messages`, { token: h.publisher, body: { payload: "x" } });
    expect(pub.status).toBe(202);
    expect(((await pub.json()) as { recipients: number }).recipients).toBe(1);
    expect((await h.call("DELETE", path, { token: h.admin })).status).toBe(204);
    await expectError(
      await h.call("PUT", `/v1/devices/${name(129, "._-")}`, { token: h.admin, body: { psk: { keyHex: KEY_HEX } } }),
      400,
      "bad_request",
    );
  });

  it("a 128-character topic, its slashes as %2F, reaches its device; 129 characters is 400", async () => {
    const h = await startHarness();
    harnesses.push(h);
    const topic = name(128, "/._-");
    expect(topic).toHaveLength(128);
    await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: Buffer.from(KEY_HEX, "hex") }, topics: [topic] });
    const res = await h.call("POST", `/v1/topics/${encodeURIComponent(topic)}/messages`, { token: h.publisher, body: { payload: "x" } });
    expect(res.status).toBe(202);
    expect(((await res.json()) as { recipients: number }).recipients).toBe(1);
    await expectError(
      await h.call("POST", `/v1/topics/${encodeURIComponent(name(129, "/._-"))}/messages`, { token: h.publisher, body: { payload: "x" } }),
      400,
      "bad_request",
    );
  });

  it("a path parameter beyond what any valid name can be, even percent-encoded, is 414 uri_too_long in the API's format", async () => {
    const h = await startHarness();
    harnesses.push(h);
    await expectError(await h.call("GET", `/v1/messages/${"a".repeat(601)}`, { token: h.publisher }), 414, "uri_too_long");
  });
});
