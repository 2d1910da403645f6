import { afterEach, describe, expect, it } from "vitest";
import { KEY, KEY_HEX, startHarness, waitFor, type Harness } from "./harness.ts";

const harnesses: Harness[] = [];
afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.close();
});
async function harness(): Promise<Harness> {
  const h = await startHarness();
  harnesses.push(h);
  return h;
}

interface DeviceJson {
  id: string;
  revoked: boolean;
  psk: { identity: string } | null;
  certificate: { identity: string } | null;
  topics: string[];
  online: boolean;
  lastSeen: string | null;
  queueDepth: number;
}

async function json<T>(res: Response, status: number): Promise<T> {
  const text = await res.text();
  expect({ status: res.status, text }).toMatchObject({ status });
  return JSON.parse(text) as T;
}

describe("device registry over HTTP", () => {
  it("PUT creates (201) and updates (200); GET lists and shows; no key material in any answer", async () => {
    const h = await harness();
    const put = (id: string, body: unknown): Promise<Response> => h.call("PUT", `/v1/devices/${id}`, { token: h.admin, body });

    const created = await json<DeviceJson>(await put("d1", { psk: { keyHex: KEY_HEX }, topics: ["room/1"] }), 201);
    expect(created).toEqual({
      id: "d1",
      revoked: false,
      psk: { identity: "d1" },
      certificate: null,
      topics: ["room/1"],
      online: false,
      lastSeen: null,
      queueDepth: 0,
      node: null,
    });
    expect([...(h.server.registry.get("d1")?.psk?.key ?? [])]).toEqual([...KEY]);

    const cert = await json<DeviceJson>(await put("cam-7", { certificate: { identity: "CN=cam-7" } }), 201);
    expect(cert).toMatchObject({ psk: null, certificate: { identity: "CN=cam-7" }, topics: [] });

    // update: topics replaced, credentials kept when omitted; a new key keeps the PSK identity
    const other = "00112233445566778899aabbccddeeff";
    await put("d2", { psk: { identity: "custom-identity", keyHex: other } });
    const updated = await json<DeviceJson>(await put("d2", { psk: { keyHex: KEY_HEX }, topics: ["a", "b"] }), 200);
    expect(updated).toMatchObject({ psk: { identity: "custom-identity" }, topics: ["a", "b"] });
    expect([...(h.server.registry.get("d2")?.psk?.key ?? [])]).toEqual([...KEY]);
    const kept = await json<DeviceJson>(await put("d2", { revoked: true }), 200);
    expect(kept).toMatchObject({ revoked: true, psk: { identity: "custom-identity" }, topics: ["a", "b"] });
    expect(await json<DeviceJson>(await put("d2", { revoked: false, topics: [] }), 200)).toMatchObject({ revoked: false, topics: [] });

    const list = await json<{ devices: DeviceJson[] }>(await h.call("GET", "/v1/devices", { token: h.admin }), 200);
    expect(list.devices.map((d) => d.id)).toEqual(["cam-7", "d1", "d2"]);
    const one = await json<DeviceJson>(await h.call("GET", "/v1/devices/d1", { token: h.admin }), 200);
    expect(one).toEqual(created);

    const everything = JSON.stringify(list) + JSON.stringify(one) + JSON.stringify(updated);
    expect(everything).not.toContain(KEY_HEX);
    expect(everything).not.toContain(other);
    expect(everything).not.toMatch(/keyHex|"key"/);
  });

  it("refuses bad devices: bad id, no credentials, odd or long hex keys, taken identities, bad topics", async () => {
    const h = await harness();
    const put = async (id: string, body: unknown): Promise<{ status: number; code: string; message: string }> => {
      const res = await h.call("PUT", `/v1/devices/${id}`, { token: h.admin, body });
      const b = (await res.json()) as { error: { code: string; message: string } };
      return { status: res.status, code: b.error.code, message: b.error.message };
    };
    expect(await put("d1", {})).toMatchObject({ status: 400, code: "bad_device" });
    expect(await put("-bad", { psk: { keyHex: KEY_HEX } })).toMatchObject({
      status: 400,
      code: "bad_request",
      message: expect.stringMatching(/^params\.id /),
    });
    expect(await put("d1", { psk: { keyHex: "abc" } })).toMatchObject({
      status: 400,
      code: "bad_request",
      message: expect.stringMatching(/^body\.psk\.keyHex /),
    });
    expect(await put("d1", { psk: { keyHex: "" } })).toMatchObject({ status: 400, code: "bad_request" });
    expect(await put("d1", { psk: { keyHex: "ab".repeat(65) } })).toMatchObject({ status: 400, code: "bad_request" });
    expect(await put("d1", { psk: { keyHex: "zz" } })).toMatchObject({ status: 400, code: "bad_request" });
    expect(await put("d1", { psk: { identity: "x", key: KEY_HEX } })).toMatchObject({ status: 400, message: "body.psk.keyHex is required." });
    expect(await put("d1", { psk: { keyHex: KEY_HEX, key: KEY_HEX } })).toMatchObject({ status: 400, message: "body.psk.key is not a known field." });
    expect(await put("d1", { psk: { keyHex: KEY_HEX }, topics: ["a//b"] })).toMatchObject({ status: 400, code: "bad_topic" });
    expect((await h.call("PUT", "/v1/devices/d1", { token: h.admin, body: { psk: { keyHex: "ab".repeat(64) } } })).status).toBe(201);
    expect(await put("d2", { psk: { identity: "d1", keyHex: KEY_HEX } })).toMatchObject({
      status: 400,
      code: "bad_device",
      message: expect.stringMatching(/already used/),
    });
    expect(h.server.registry.get("d2")).toBeUndefined();
  });

  it("shows presence and queue depth, and DELETE revokes, removes and closes the live session", async () => {
    const h = await harness();
    expect((await h.call("PUT", "/v1/devices/d1", { token: h.admin, body: { psk: { keyHex: KEY_HEX } } })).status).toBe(201);
    const d = await h.device("d1", KEY);
    let disconnected = false;
    d.client.on("disconnected", () => {
      disconnected = true;
    });
    await waitFor(() => h.server.engine.deviceStatus("d1").online, 10_000, "the session");
    const online = await json<DeviceJson>(await h.call("GET", "/v1/devices/d1", { token: h.admin }), 200);
    expect(online.online).toBe(true);
    expect(online.lastSeen).not.toBeNull();

    expect((await h.call("DELETE", "/v1/devices/d1", { token: h.admin })).status).toBe(204);
    await waitFor(() => disconnected, 10_000, "the device to be disconnected");
    expect(h.server.engine.deviceStatus("d1").online).toBe(false);
    expect(h.server.registry.get("d1")).toBeUndefined();
    expect((await h.call("GET", "/v1/devices/d1", { token: h.admin })).status).toBe(404);
    const again = await h.call("DELETE", "/v1/devices/d1", { token: h.admin });
    expect(again.status).toBe(404);
    expect(((await again.json()) as { error: { code: string } }).error.code).toBe("device_unknown");
    // a publish to it is now refused
    expect((await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: { payload: "x" } })).status).toBe(404);
  });

  it("queue depth counts messages waiting for an offline device; DELETE drops them with rejected receipts", async () => {
    const h = await harness();
    await h.call("PUT", "/v1/devices/d1", { token: h.admin, body: { psk: { keyHex: KEY_HEX } } });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: { payload: `m${i}` } });
      ids.push(((await r.json()) as { id: string }).id);
    }
    const dev = await json<DeviceJson>(await h.call("GET", "/v1/devices/d1", { token: h.admin }), 200);
    expect(dev).toMatchObject({ online: false, queueDepth: 3 });
    expect((await h.call("DELETE", "/v1/devices/d1", { token: h.admin })).status).toBe(204);
    await waitFor(
      async () => (await h.store.receiptsForMessage(ids[0] as string)).some((r) => r.state === "rejected"),
      5_000,
      "the rejected receipt",
    );
    const st = await json<{ receipts: { state: string; reason: string | null }[] }>(
      await h.call("GET", `/v1/messages/${ids[0]}`, { token: h.publisher }),
      200,
    );
    expect(st.receipts.at(-1)).toMatchObject({ state: "rejected", reason: "device_removed" });
  });
});
