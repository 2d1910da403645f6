/**
 * The SDK's saved DTLS session against a real push server on 127.0.0.1: a
 * session the server cannot use (garbage, another server's, resumption off)
 * costs a full handshake and is replaced (or dropped), never a failed connect.
 */
import { afterEach, describe, expect, it } from "vitest";
import { connect, memoryStateStore, type DtlspushClient } from "../../src/client/index.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { openMemoryStore } from "../../src/store/index.ts";

const KEY = new Uint8Array(16).fill(3);
const clients: DtlspushClient[] = [];
const servers: PushServer[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const s of servers.splice(0)) await s.close();
});

async function server(resumption = true): Promise<PushServer> {
  const s = await startPushServer({ store: openMemoryStore(), dtls: { host: "127.0.0.1", port: 0, resumption: { enabled: resumption } } });
  servers.push(s);
  await s.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
  return s;
}

async function device(s: PushServer, state: ReturnType<typeof memoryStateStore>): Promise<DtlspushClient> {
  const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "d1", key: KEY }, stateStore: state, reconnect: false });
  clients.push(c);
  return c;
}

const savedSession = (state: ReturnType<typeof memoryStateStore>): string | undefined => state.state?.dtlsSession;

describe("a saved DTLS session the server cannot use", () => {
  it("garbage: a full handshake, and the new session replaces it", async () => {
    const s = await server();
    const garbage = Buffer.from("not a saved session at all").toString("base64");
    const state = memoryStateStore({ hwm: 0, sessionToken: "", nextRequestId: 1, dtlsSession: garbage });
    const c = await device(s, state);
    expect(c.resumed).toBe(false);
    expect(savedSession(state)).toBeDefined();
    expect(savedSession(state)).not.toBe(garbage);
    await c.close();
    expect((await device(s, state)).resumed).toBe(true);
  });

  it("another server's: a full handshake with this one, whose session replaces it", async () => {
    const a = await server();
    const b = await server();
    const state = memoryStateStore();
    await (await device(a, state)).close();
    const fromA = savedSession(state);
    const c = await device(b, state);
    expect(c.resumed).toBe(false);
    expect(savedSession(state)).not.toBe(fromA);
    expect(b.dtls.stats.handshakesResumed).toBe(0);
  });

  it("a server with resumption off: a full handshake, and nothing is kept", async () => {
    const on = await server();
    const off = await server(false);
    const state = memoryStateStore();
    await (await device(on, state)).close();
    expect(savedSession(state)).toBeDefined();
    const c = await device(off, state);
    expect(c.resumed).toBe(false);
    expect(savedSession(state)).toBeUndefined();
  });
});
