import { beforeEach, describe, expect, it } from "vitest";
import { DeviceRegistry, type DeviceInput } from "../../src/auth/device-registry.ts";
import { AuthError } from "../../src/auth/errors.ts";
import { openMemoryStore } from "../../src/store/index.ts";
import type { DeviceRecord, Store } from "../../src/store/types.ts";
import { ManualClock } from "../../src/util/clock.ts";

/** The device and settings parts of the Store, in memory; the journal parts are not used by the registry. */
function fakeStore(): Store {
  const devices = new Map<string, DeviceRecord>();
  const settings = new Map<string, string>();
  const unused = (): never => {
    throw new Error("not used by the registry");
  };
  const done = <T>(value: T): Promise<T> => Promise.resolve(value);
  return {
    kind: "fake",
    putDevice: (d) => done(void devices.set(d.id, d)),
    getDevice: (id) => done(devices.get(id)),
    findDeviceByPskIdentity: (identity) => done([...devices.values()].find((d) => d.psk?.identity === identity)),
    findDeviceByCertIdentity: (identity) => done([...devices.values()].find((d) => d.certIdentity === identity)),
    listDevices: () => done([...devices.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))),
    deleteDevice: (id) => done(devices.delete(id)),
    commit: unused,
    loadDeliveryState: unused,
    getMessage: unused,
    existingMessageIds: unused,
    receiptsForMessage: unused,
    receiptsAfter: unused,
    prune: unused,
    getSetting: (key) => done(settings.get(key)),
    putSetting: (key, value) => done(void settings.set(key, value)),
    close: () => done(undefined),
  };
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(AuthError);
    return (e as AuthError).code;
  }
  return undefined;
}

const KEY = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);

const STORES: [string, () => Store][] = [
  ["an in-test fake store", fakeStore],
  ["the memory store", openMemoryStore],
];

describe.each(STORES)("with %s", (_name, makeStore) => {
  let clock: ManualClock;
  let registry: DeviceRegistry;
  let events: [string, DeviceRecord | undefined][];

  beforeEach(async () => {
    const store = makeStore();
    clock = new ManualClock(1_700_000_000_000);
    registry = await DeviceRegistry.open(store, clock);
    events = [];
    registry.onChange((id, record) => events.push([id, record]));
  });

  describe("DeviceRegistry.add", () => {
    it("stores a PSK device with its times and tells listeners", async () => {
      const record = await registry.add({ id: "sensor-1", psk: { identity: "sensor-1", key: KEY }, topics: ["site/1", "alerts", "site/1"] });
      expect(record).toEqual({
        id: "sensor-1",
        psk: { identity: "sensor-1", key: KEY },
        certIdentity: undefined,
        revoked: false,
        topics: ["site/1", "alerts"],
        createdAt: 1_700_000_000_000,
        updatedAt: 1_700_000_000_000,
      });
      expect(registry.get("sensor-1")).toEqual(record);
      expect(events).toEqual([["sensor-1", record]]);
    });

    it("copies the key it is given", async () => {
      const key = new Uint8Array(KEY);
      await registry.add({ id: "d", psk: { identity: "d", key } });
      key.fill(0);
      expect(registry.pskKey("d")).toEqual(KEY);
    });

    it("stores certificate devices and devices with both credentials", async () => {
      expect((await registry.add({ id: "cam", certIdentity: "cam.example" })).certIdentity).toBe("cam.example");
      const both = await registry.add({ id: "gw", psk: { identity: "gw-psk", key: KEY }, certIdentity: "gw.example" });
      expect(both.psk?.identity).toBe("gw-psk");
      expect(registry.list().map((d) => d.id)).toEqual(["cam", "gw"]);
    });

    it("device_exists when the id is taken", async () => {
      await registry.add({ id: "d", certIdentity: "d" });
      expect(await codeOf(registry.add({ id: "d", certIdentity: "other" }))).toBe("device_exists");
      expect(events).toHaveLength(1);
    });

    it("bad_device for bad ids, missing credentials, bad PSKs and identities another device has", async () => {
      await registry.add({ id: "taken", psk: { identity: "shared", key: KEY }, certIdentity: "shared-cert" });
      const cases: [DeviceInput, RegExp][] = [
        [{ id: "bad id", certIdentity: "x" }, /Device id "bad id"/],
        [{ id: "d" }, /needs a PSK or a certificate identity/],
        [{ id: "d", topics: ["a"] }, /needs a PSK or a certificate identity/],
        [{ id: "d", psk: { identity: "d", key: new Uint8Array(0) } }, /0 bytes \(1\.\.64 allowed\)/],
        [{ id: "d", psk: { identity: "d", key: new Uint8Array(65) } }, /65 bytes \(1\.\.64 allowed\)/],
        [{ id: "d", psk: { identity: "", key: KEY } }, /0 bytes of UTF-8/],
        [{ id: "d", psk: { identity: "x".repeat(129), key: KEY } }, /129 bytes of UTF-8/],
        [{ id: "d", psk: { identity: "€".repeat(43), key: KEY } }, /129 bytes of UTF-8/], // 43 characters, 3 bytes each
        [{ id: "d", psk: { identity: "d", key: "secret" as unknown as Uint8Array } }, /must be bytes/],
        [{ id: "d", certIdentity: "" }, /certificate identity/],
        [{ id: "d", psk: { identity: "shared", key: KEY } }, /already used by device taken/],
        [{ id: "d", certIdentity: "shared-cert" }, /already used by device taken/],
      ];
      for (const [input, message] of cases) {
        expect(await codeOf(registry.add(input)), JSON.stringify(input)).toBe("bad_device");
        await expect(registry.add(input)).rejects.toThrow(message);
      }
      // the limits themselves are fine
      await registry.add({ id: "max", psk: { identity: "€".repeat(42) + "xx", key: new Uint8Array(64) } });
      await registry.add({ id: "min", psk: { identity: "m", key: new Uint8Array(1) } });
      expect(registry.list()).toHaveLength(3);
    });

    it("bad_topic for bad topics", async () => {
      expect(await codeOf(registry.add({ id: "d", certIdentity: "c", topics: ["ok", "a//b"] }))).toBe("bad_topic");
      expect(registry.get("d")).toBeUndefined();
    });
  });

  describe("DeviceRegistry.reload", () => {
    it("tells listeners what another registry over the same store (another process) added, changed and removed", async () => {
      const store = makeStore();
      const daemon = await DeviceRegistry.open(store, clock);
      const seen: [string, boolean | undefined][] = [];
      daemon.onChange((id, r) => seen.push([id, r?.revoked]));
      const cli = await DeviceRegistry.open(store, clock);
      await cli.add({ id: "kept", psk: { identity: "kept", key: KEY } });
      await cli.add({ id: "gone", psk: { identity: "gone", key: KEY } });
      expect(await daemon.reload()).toEqual({ changed: ["gone", "kept"], removed: [] });
      expect(await daemon.reload()).toEqual({ changed: [], removed: [] });
      clock.advance(10);
      await cli.revoke("kept");
      await cli.remove("gone");
      await cli.add({ id: "new", certIdentity: "CN=new" });
      seen.length = 0;
      expect(await daemon.reload()).toEqual({ changed: ["kept", "new"], removed: ["gone"] });
      expect(seen).toEqual([
        ["kept", true],
        ["new", false],
        ["gone", undefined],
      ]);
      // its own changes are known already
      await daemon.update("new", { topics: ["t"] });
      expect(await daemon.reload()).toEqual({ changed: [], removed: [] });
    });
  });

  describe("DeviceRegistry changes", () => {
    beforeEach(async () => {
      await registry.add({ id: "d", psk: { identity: "d-psk", key: KEY }, certIdentity: "d-cert", topics: ["t"] });
      events.length = 0;
      clock.advance(1000);
    });

    it("update changes only what it is given and stamps updatedAt", async () => {
      const r = await registry.update("d", { topics: ["u", "v"] });
      expect(r).toMatchObject({
        psk: { identity: "d-psk" },
        certIdentity: "d-cert",
        topics: ["u", "v"],
        createdAt: 1_700_000_000_000,
        updatedAt: 1_700_000_001_000,
      });
      expect(events).toEqual([["d", r]]);
      const newKey = new Uint8Array(32).fill(7);
      expect((await registry.update("d", { psk: { identity: "d-psk2", key: newKey } })).psk).toEqual({ identity: "d-psk2", key: newKey });
      expect(registry.pskKey("d-psk")).toBeUndefined();
      expect(registry.pskKey("d-psk2")).toEqual(newKey);
    });

    it("update keeps what is absent or undefined; upsert drops a credential", async () => {
      const r = await registry.update("d", { psk: undefined, certIdentity: undefined, topics: undefined, revoked: undefined });
      expect(r).toMatchObject({ psk: { identity: "d-psk", key: KEY }, certIdentity: "d-cert", topics: ["t"], revoked: false });
      expect((await registry.update("d", { topics: [] })).topics).toEqual([]);
      const dropped = await registry.upsert({ id: "d", certIdentity: "d-cert" });
      expect(dropped.psk).toBeUndefined();
      expect(registry.pskKey("d-psk")).toBeUndefined();
      expect(await codeOf(registry.upsert({ id: "d" }))).toBe("bad_device");
      expect(registry.get("d")?.certIdentity).toBe("d-cert");
      expect(await codeOf(registry.update("d", { topics: ["bad topic"] }))).toBe("bad_topic");
    });

    it("update can revoke and re-enable; device_unknown for unknown ids", async () => {
      expect((await registry.update("d", { revoked: true })).revoked).toBe(true);
      expect(registry.pskKey("d-psk")).toBeUndefined();
      expect((await registry.update("d", { revoked: false })).revoked).toBe(false);
      expect(registry.pskKey("d-psk")).toEqual(KEY);
      expect(await codeOf(registry.update("nobody", { topics: [] }))).toBe("device_unknown");
    });

    it("upsert replaces credentials and topics, keeping createdAt and the revoked flag", async () => {
      await registry.revoke("d");
      const r = await registry.upsert({ id: "d", certIdentity: "new-cert" });
      expect(r).toMatchObject({
        id: "d",
        certIdentity: "new-cert",
        revoked: true,
        topics: [],
        createdAt: 1_700_000_000_000,
        updatedAt: 1_700_000_001_000,
      });
      expect(r.psk).toBeUndefined();
      const added = await registry.upsert({ id: "e", psk: { identity: "e", key: KEY } });
      expect(added).toMatchObject({ id: "e", revoked: false, createdAt: 1_700_000_001_000 });
      expect(events.map(([id, rec]) => [id, rec?.revoked])).toEqual([
        ["d", true],
        ["d", true],
        ["e", false],
      ]);
    });

    it("revoke: pskKey, authorizeCertificate and deviceForSession refuse the device; revoking again changes nothing", async () => {
      expect(registry.pskKey("d-psk")).toEqual(KEY);
      expect(registry.authorizeCertificate("d-cert")).toBeUndefined();
      expect(registry.deviceForSession("d-psk", false)?.id).toBe("d");
      expect(registry.deviceForSession("d-cert", true)?.id).toBe("d");

      const r = await registry.revoke("d");
      expect(r.revoked).toBe(true);
      expect(registry.pskKey("d-psk")).toBeUndefined();
      expect(registry.authorizeCertificate("d-cert")).toEqual({ code: "certificate_revoked", message: "Device d is revoked." });
      expect(registry.deviceForSession("d-psk", false)).toBeUndefined();
      expect(registry.deviceForSession("d-cert", true)).toBeUndefined();

      clock.advance(5);
      expect(await registry.revoke("d")).toEqual(r);
      expect(events).toEqual([["d", r]]);
      expect(await codeOf(registry.revoke("nobody"))).toBe("device_unknown");
    });

    it("remove deletes and tells listeners; false for unknown ids", async () => {
      expect(await registry.remove("d")).toBe(true);
      expect(registry.get("d")).toBeUndefined();
      expect(await registry.remove("d")).toBe(false);
      expect(events).toEqual([["d", undefined]]);
    });
  });

  describe("DTLS hooks", () => {
    it("pskKey: undefined for unknown identities, a copy for known ones", async () => {
      await registry.add({ id: "d", psk: { identity: "d-psk", key: KEY } });
      expect(registry.pskKey("nobody")).toBeUndefined();
      const key = registry.pskKey("d-psk")!;
      key.fill(0);
      expect(registry.pskKey("d-psk")).toEqual(KEY);
    });

    it("authorizeCertificate refuses unknown identities with access_denied", async () => {
      const refusal = registry.authorizeCertificate("stranger");
      expect(refusal?.code).toBe("access_denied");
      expect(refusal?.message).toContain('"stranger"');
    });

    it("deviceForSession looks the identity up by how the session was authenticated", async () => {
      await registry.add({ id: "a", psk: { identity: "same", key: KEY } });
      await registry.add({ id: "b", certIdentity: "same" });
      expect(registry.deviceForSession("same", false)?.id).toBe("a");
      expect(registry.deviceForSession("same", true)?.id).toBe("b");
      expect(registry.deviceForSession("other", true)).toBeUndefined();
    });

    it("sessionIdentity prefixes the way of authentication", async () => {
      expect(DeviceRegistry.sessionIdentity("dev", true)).toBe("cert:dev");
      expect(DeviceRegistry.sessionIdentity("dev", false)).toBe("psk:dev");
    });
  });

  describe("onChange", () => {
    it("unsubscribes, and a throwing listener neither stops the others nor undoes the change", async () => {
      const seen: string[] = [];
      const off = registry.onChange((id) => seen.push(`second:${id}`));
      registry.onChange(() => {
        throw new Error("listener failed");
      });
      registry.onChange((id) => seen.push(`fourth:${id}`));
      await expect(registry.add({ id: "x", certIdentity: "x" })).rejects.toThrow("listener failed");
      expect(registry.get("x")).toBeDefined();
      expect(seen).toEqual(["second:x", "fourth:x"]);
      expect(events.map(([id]) => id)).toEqual(["x"]);
      off();
      await expect(registry.remove("x")).rejects.toThrow("listener failed");
      expect(seen).toEqual(["second:x", "fourth:x", "fourth:x"]);
    });
  });
});

describe("DeviceRegistry over an asynchronous store", () => {
  /** the memory store, with every call counted and putDevice/deleteDevice able to fail or wait */
  interface Controlled {
    store: Store;
    calls: string[];
    fail: Error | undefined;
    /** putDevice and deleteDevice wait for it */
    hold: Promise<void> | undefined;
    /** listDevices answers only when it resolves, with what was stored when it was called */
    holdList: Promise<void> | undefined;
  }
  function controlled(): Controlled {
    const inner = openMemoryStore();
    const c: Controlled = { store: inner, calls: [], fail: undefined, hold: undefined, holdList: undefined };
    let chain: Promise<unknown> = Promise.resolve();
    c.store = new Proxy(inner, {
      get(target, prop) {
        const value = Reflect.get(target, prop) as unknown;
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          c.calls.push(String(prop));
          // one call after the other, answered in call order (as the Store contract says)
          const run = chain.then(async () => {
            if (prop === "putDevice" || prop === "deleteDevice") {
              if (c.hold !== undefined) await c.hold;
              if (c.fail !== undefined) throw c.fail;
            }
            const result = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
            if (prop === "listDevices" && c.holdList !== undefined) await c.holdList;
            return result;
          });
          chain = run.catch(() => undefined);
          return run;
        };
      },
    });
    return c;
  }

  it("answers the DTLS hooks and lookups from memory: no store call after open", async () => {
    const c = controlled();
    const registry = await DeviceRegistry.open(c.store, new ManualClock(1));
    await registry.add({ id: "d", psk: { identity: "d-psk", key: KEY }, certIdentity: "d-cert" });
    c.calls.length = 0;
    expect(registry.pskKey("d-psk")).toEqual(KEY);
    expect(registry.authorizeCertificate("d-cert")).toBeUndefined();
    expect(registry.deviceForSession("d-psk", false)?.id).toBe("d");
    expect(registry.get("d")?.id).toBe("d");
    expect(registry.list().map((d) => d.id)).toEqual(["d"]);
    expect(c.calls).toEqual([]);
  });

  it("applies a change at once and resolves when it is durable; a change the store refuses is taken back", async () => {
    const c = controlled();
    const registry = await DeviceRegistry.open(c.store, new ManualClock(1));
    const events: [string, boolean | undefined][] = [];
    registry.onChange((id, r) => events.push([id, r?.revoked]));
    let open!: () => void;
    c.hold = new Promise<void>((r) => (open = r));
    let done = false;
    const adding = registry.add({ id: "d", psk: { identity: "d-psk", key: KEY } }).then(() => (done = true));
    // visible (and refused as a duplicate) before it is durable
    expect(registry.pskKey("d-psk")).toEqual(KEY);
    expect(await codeOf(registry.add({ id: "d", certIdentity: "other" }))).toBe("device_exists");
    expect(done).toBe(false);
    open();
    await adding;
    expect((await c.store.getDevice("d"))?.id).toBe("d");

    c.hold = undefined;
    c.fail = new Error("disk full");
    await expect(registry.revoke("d")).rejects.toThrow("disk full");
    expect(registry.get("d")?.revoked).toBe(false);
    expect(registry.pskKey("d-psk")).toEqual(KEY);
    await expect(registry.remove("d")).rejects.toThrow("disk full");
    expect(registry.get("d")).toBeDefined();
    // the listeners heard each change, then the record restored
    expect(events).toEqual([
      ["d", false],
      ["d", true],
      ["d", false],
      ["d", undefined],
      ["d", false],
    ]);
  });

  it("reload leaves alone a device changed while the store was listing (its own write is the newer)", async () => {
    const c = controlled();
    const registry = await DeviceRegistry.open(c.store, new ManualClock(1));
    await registry.add({ id: "kept", certIdentity: "kept" });
    let open!: () => void;
    c.holdList = new Promise<void>((r) => (open = r));
    // the listing is called first (it will not show what follows), then a device is added and one revoked
    const reloading = registry.reload();
    const adding = registry.add({ id: "mine", certIdentity: "mine" });
    const revoking = registry.revoke("kept");
    open();
    expect(await reloading).toEqual({ changed: [], removed: [] });
    await Promise.all([adding, revoking]);
    expect(registry.get("mine")).toBeDefined();
    expect(registry.get("kept")?.revoked).toBe(true);
    expect(await registry.reload()).toEqual({ changed: [], removed: [] });
  });
});
