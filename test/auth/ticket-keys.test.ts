/** TicketKeyRing: keys stored before they are used, rotated, retired, merged with what another process stored. */
import { describe, expect, it } from "vitest";
import { TICKET_KEYS_SETTING, TicketKeyRing } from "../../src/auth/ticket-keys.ts";
import { AuthError } from "../../src/auth/errors.ts";
import { connect, listen, type DtlsConnection } from "../../src/dtls/index.ts";
import { MapStorage } from "./map-storage.ts";

const H = 3_600_000;
const T0 = 1_800_000_000_000;

function storedNames(storage: MapStorage): string[] {
  const text = storage.map.get(TICKET_KEYS_SETTING);
  if (text === undefined) return [];
  return (JSON.parse(text) as { keys: { name: string }[] }).keys.map((k) => k.name);
}

const b64 = (b: Uint8Array): string => Buffer.from(b).toString("base64url");

describe("TicketKeyRing", () => {
  it("stores the current key and the next one before either seals a ticket", async () => {
    const storage = new MapStorage();
    const ring = await TicketKeyRing.open(storage, { rotationMs: 24 * H, ticketLifetimeMs: 24 * H, wallClock: () => T0 });
    const current = ring.current(T0);
    expect(current).toBeDefined();
    expect(current?.name.length).toBe(16);
    expect(current?.secret.length).toBe(32);
    expect(current?.retiresAt).toBe((current?.notAfter ?? 0) + 24 * H);
    const next = ring.current(T0 + 24 * H);
    expect(next).toBeDefined();
    expect(b64(next?.name ?? new Uint8Array())).not.toBe(b64(current?.name ?? new Uint8Array()));
    // every key the ring can hand out is in the store already
    expect(storedNames(storage).sort()).toEqual(
      ring
        .keys()
        .map((k) => b64(k.name))
        .sort(),
    );
  });

  it("opens the tickets of the keys a previous process stored (a restart)", async () => {
    const storage = new MapStorage();
    const first = await TicketKeyRing.open(storage, { rotationMs: H, ticketLifetimeMs: H, wallClock: () => T0 });
    const sealing = first.current(T0 + 10);
    const again = await TicketKeyRing.open(storage, { rotationMs: H, ticketLifetimeMs: H, wallClock: () => T0 + 1000 });
    expect(again.byName(sealing?.name ?? new Uint8Array(), T0 + 1000)?.secret).toEqual(sealing?.secret);
    expect(again.current(T0 + 1000)?.name).toEqual(sealing?.name);
  });

  it("refuses a key once it retired, and maintain deletes it from the store", async () => {
    const storage = new MapStorage();
    let now = T0;
    const ring = await TicketKeyRing.open(storage, { rotationMs: H, ticketLifetimeMs: 2 * H, wallClock: () => now });
    const old = ring.current(now);
    if (old === undefined) throw new Error("no key");
    expect(ring.byName(old.name, old.retiresAt - 1)).toBe(old);
    expect(ring.byName(old.name, old.retiresAt)).toBeUndefined();
    // a quarter period at a time, as the daemon's timer runs it
    while (now < old.retiresAt) {
      now += ring.maintenanceIntervalMs;
      await ring.maintain();
      expect(ring.current(now), `at +${now - T0} ms`).toBeDefined();
    }
    expect(storedNames(storage)).not.toContain(b64(old.name));
    expect(ring.keys().some((k) => b64(k.name) === b64(old.name))).toBe(false);
    expect(b64(ring.current(now)?.name ?? new Uint8Array())).not.toBe(b64(old.name));
  });

  it("holds a new key only once the store has it", async () => {
    const storage = new MapStorage();
    let now = T0;
    const ring = await TicketKeyRing.open(storage, { rotationMs: H, ticketLifetimeMs: H, wallClock: () => now });
    const before = ring.keys();
    storage.putSetting = () => Promise.reject(new Error("disk full"));
    now += H;
    await expect(ring.maintain()).rejects.toThrow("disk full");
    expect(ring.keys()).toBe(before);
    // the key sealing now is one that was stored
    expect(before).toContain(ring.current(now));
  });

  it("merges the keys another process stored and keeps its own", async () => {
    const storage = new MapStorage();
    const a = await TicketKeyRing.open(storage, { rotationMs: H, ticketLifetimeMs: H, wallClock: () => T0 });
    const aKeys = storedNames(storage);
    storage.map.delete(TICKET_KEYS_SETTING); // another node raced and wrote its own set
    const b = await TicketKeyRing.open(storage, { rotationMs: H, ticketLifetimeMs: H, wallClock: () => T0 });
    const r = await a.maintain(T0 + 1);
    expect(r.merged).toBe(b.keys().length);
    for (const n of [...aKeys, ...b.keys().map((k) => b64(k.name))]) expect(storedNames(storage)).toContain(n);
    // both now pick the same sealing key once b has re-read too
    await b.maintain(T0 + 2);
    expect(b64(a.current(T0 + 3)?.name ?? new Uint8Array())).toBe(b64(b.current(T0 + 3)?.name ?? new Uint8Array()));
  });

  it("refuses stored keys it cannot read back, overwriting nothing", async () => {
    const storage = new MapStorage();
    storage.map.set(
      TICKET_KEYS_SETTING,
      JSON.stringify({ version: 1, keys: [{ name: "AAAA", secret: "BBBB", notBefore: 1, notAfter: 2, retiresAt: 3 }] }),
    );
    const e = await TicketKeyRing.open(storage, { rotationMs: H, ticketLifetimeMs: H }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AuthError);
    expect((e as AuthError).code).toBe("key_ring_invalid");
    expect(storage.map.get(TICKET_KEYS_SETTING)).toContain("AAAA");
  });
});

describe("TicketKeyRing as a real DTLS server's ticket keys", () => {
  const PSK = new Uint8Array(16).fill(7);

  it("a ticket sealed with a key that retired is refused: a full handshake instead, which works", async () => {
    let now = T0;
    const storage = new MapStorage();
    const ring = await TicketKeyRing.open(storage, { rotationMs: H, ticketLifetimeMs: H, wallClock: () => now });
    // the engine would accept the ticket for 10 h: only the key's retirement can refuse it
    const server = await listen({
      host: "127.0.0.1",
      port: 0,
      psk: { lookup: (id) => (id === "dev" ? PSK : undefined) },
      // no session-ID cache: only the ticket can resume
      resumption: { ticketKeys: ring, ticketLifetimeMs: 10 * H, maxSessionAgeMs: 10 * H, sessionCacheSize: 0, wallClock: () => now },
    });
    server.on("session", (c: DtlsConnection) => c.on("error", () => undefined));
    const port = server.address().port;
    const open = async (session?: Uint8Array): Promise<DtlsConnection> => {
      const c = await connect({ host: "127.0.0.1", port, psk: { identity: "dev", key: PSK }, ...(session === undefined ? {} : { session }) });
      c.on("error", () => undefined);
      return c;
    };
    try {
      const full = await open();
      const session = full.session;
      full.close();
      expect(session).toBeDefined();
      const sealedWith = ring.current(now);
      if (sealedWith === undefined || session === undefined) throw new Error("no key or no session");

      now += 30 * 60_000; // the key still opens its tickets
      const resumed = await open(session);
      expect(resumed.info.resumed).toBe(true);
      resumed.close();

      while (now < sealedWith.retiresAt) {
        now += ring.maintenanceIntervalMs;
        await ring.maintain();
      }
      expect(ring.byName(sealedWith.name, now)).toBeUndefined();
      const refused = await open(session);
      expect(refused.info.resumed).toBe(false);
      expect(refused.info.identity).toBe("dev");
      refused.close();
    } finally {
      await server.close();
    }
  });
});
