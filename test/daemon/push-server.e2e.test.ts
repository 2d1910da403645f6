import { afterEach, describe, expect, it } from "vitest";
import { openMemoryStore } from "../../src/store/index.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { connect, memoryStateStore, type DtlspushClient, type ReceivedMessage, type TransportName } from "../../src/client/index.ts";
import type { DtlsConnection } from "../../src/dtls/index.ts";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const servers: PushServer[] = [];
const clients: DtlspushClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const s of servers.splice(0)) await s.close();
});

async function server(): Promise<PushServer> {
  const s = await startPushServer({ store: openMemoryStore(), dtls: { host: "127.0.0.1", port: 0 } });
  servers.push(s);
  return s;
}

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("push server and device SDK over loopback UDP", () => {
  const transports: TransportName[] = ["dtlspush", "node-dtls-client", "nodertc"];
  for (const transport of transports) {
    it(`a signed push reaches a device over the ${transport} transport`, async () => {
      const s = await server();
      const key = enc("0123456789abcdef");
      await s.registry.add({ id: "sensor-1", psk: { identity: "sensor-1", key } });
      const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "sensor-1", key }, transport });
      clients.push(c);
      expect(c.deviceId).toBe("sensor-1");
      const got: ReceivedMessage[] = [];
      c.on("message", (m) => got.push(m));
      const r = await s.publish({ target: { device: "sensor-1" }, payload: enc("hello device"), publisher: "test", contentType: "text/plain" });
      await waitFor(() => got.length === 1);
      expect(got[0]?.text()).toBe("hello device");
      expect(got[0]?.id).toBe(r.messageId);
      expect(got[0]?.seq).toBe(1);
      await waitFor(() => s.engine.deviceStatus("sensor-1").ackedSeq === 1);
    });
  }

  it("a device offline gets its queue when it comes back, and resumes by token", async () => {
    const s = await server();
    const key = enc("0123456789abcdef");
    await s.registry.add({ id: "d1", psk: { identity: "d1", key } });
    const state = memoryStateStore();
    const opts = { host: "127.0.0.1", port: s.address().port, psk: { identity: "d1", key }, stateStore: state };
    const c1 = await connect(opts);
    const first: string[] = [];
    c1.on("message", (m) => first.push(m.text()));
    await s.publish({ target: { device: "d1" }, payload: enc("one"), publisher: "t" });
    await waitFor(() => first.length === 1 && state.state?.hwm === 1);
    await c1.close();
    await waitFor(() => !s.engine.deviceStatus("d1").online);
    for (const p of ["two", "three", "four"]) await s.publish({ target: { device: "d1" }, payload: enc(p), publisher: "t" });
    expect(s.engine.deviceStatus("d1").queueDepth).toBe(3);
    const second: string[] = [];
    const c2 = await connect(opts);
    clients.push(c2);
    c2.on("message", (m) => second.push(m.text()));
    await waitFor(() => second.length === 3);
    expect(second).toEqual(["two", "three", "four"]);
    expect(first).toEqual(["one"]);
    await waitFor(() => s.engine.deviceStatus("d1").queueDepth === 0);
  });

  it("uplink publish and subscribe between two devices", async () => {
    const s = await server();
    const key = enc("0123456789abcdef");
    await s.registry.add({ id: "a", psk: { identity: "a", key } });
    await s.registry.add({ id: "b", psk: { identity: "b", key } });
    const port = s.address().port;
    const a = await connect({ host: "127.0.0.1", port, psk: { identity: "a", key } });
    const b = await connect({ host: "127.0.0.1", port, psk: { identity: "b", key } });
    clients.push(a, b);
    expect(await b.subscribe(["room/1"])).toEqual(["room/1"]);
    const got: ReceivedMessage[] = [];
    b.on("message", (m) => got.push(m));
    const id = await a.publish("room/1", "hi from a");
    await waitFor(() => got.length === 1);
    expect(got[0]?.text()).toBe("hi from a");
    expect(got[0]?.id).toBe(id);
    expect(got[0]?.publisher).toBe("device:a");
    expect(got[0]?.topic).toBe("room/1");
  });

  it("wires a session to the engine without listeners on its connection: records, presence and the end still arrive", async () => {
    const s = await server();
    const key = enc("0123456789abcdef");
    await s.registry.add({ id: "quiet-1", psk: { identity: "quiet-1", key } });
    const conns: DtlsConnection[] = [];
    s.dtls.on("session", (conn) => conns.push(conn)); // after the push server's own handler
    const presence: { online: boolean; peer: string }[] = [];
    s.engine.on("presence", (e) => presence.push({ online: e.online, peer: e.peer }));
    const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "quiet-1", key }, reconnect: false });
    // an idle session costs no per-session closures: the push server listens to nothing on the connection
    expect(conns).toHaveLength(1);
    expect(conns[0]?.eventNames()).toEqual([]);
    const got: string[] = [];
    c.on("message", (m) => got.push(m.text()));
    await s.publish({ target: { device: "quiet-1" }, payload: enc("still delivered"), publisher: "t" });
    await waitFor(() => got.length === 1 && s.engine.deviceStatus("quiet-1").ackedSeq === 1);
    const local = conns[0]?.info.peer;
    expect(presence[0]).toEqual({ online: true, peer: `${local?.address}:${local?.port}` });
    await c.close();
    await waitFor(() => s.engine.onlineCount() === 0);
    expect(presence.map((p) => p.online)).toEqual([true, false]);
  });
});
