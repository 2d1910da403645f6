/**
 * The push server's ticket keys: kept in its store, rotated from its timer;
 * a rotation the store refuses is counted (and retried), the next one stores
 * the keys that were missing.
 */
import { afterEach, describe, expect, it } from "vitest";
import { TICKET_KEYS_SETTING } from "../../src/auth/index.ts";
import { createMetrics } from "../../src/daemon/metrics.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { openMemoryStore } from "../../src/store/index.ts";

const servers: PushServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("the push server's ticket keys", () => {
  it("are in the store at start; a rotation the store refuses is counted, the next one stores the new keys", { timeout: 10_000 }, async () => {
    let now = 1_800_000_000_000;
    const store = openMemoryStore();
    const server = await startPushServer({
      store,
      // a 2 s rotation: the server's timer runs every second
      dtls: { host: "127.0.0.1", port: 0, resumption: { ticketLifetimeMs: 2000, ticketKeyRotationMs: 2000, wallClock: () => now } },
    });
    servers.push(server);
    const metrics = createMetrics();
    metrics.attach(server);
    expect(server.ticketKeys?.current(now)).toBeDefined();

    const putSetting = store.putSetting.bind(store);
    store.putSetting = () => Promise.reject(new Error("disk full"));
    now += 60_000; // every key retired: the next run must store new ones
    await until(() => server.ticketKeyStats.failures >= 1, 3000, "a failed rotation");
    expect(await metrics.text()).toMatch(/^dtlspush_dtls_ticket_key_rotation_failures_total [1-9]/m);
    expect(server.ticketKeys?.current(now)).toBeUndefined(); // nothing seals with a key the store does not have

    store.putSetting = putSetting;
    await until(() => server.ticketKeyStats.added >= 2, 3000, "the keys stored by the next rotation");
    const current = server.ticketKeys?.current(now);
    expect(current).toBeDefined();
    expect(await storedNow()).toContain(Buffer.from(current?.name ?? new Uint8Array()).toString("base64url"));
    expect(server.ticketKeyStats.retired).toBeGreaterThanOrEqual(2);

    async function storedNow(): Promise<string[]> {
      const text = await store.getSetting(TICKET_KEYS_SETTING);
      return text === undefined ? [] : (JSON.parse(text) as { keys: { name: string }[] }).keys.map((k) => k.name);
    }
  });

  it("are none with resumption off", async () => {
    const store = openMemoryStore();
    const server = await startPushServer({ store, dtls: { host: "127.0.0.1", port: 0, resumption: { enabled: false } } });
    servers.push(server);
    expect(server.ticketKeys).toBeUndefined();
    expect(await store.getSetting(TICKET_KEYS_SETTING)).toBeUndefined();
  });
});
