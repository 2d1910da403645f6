/**
 * The contract of the asynchronous `Store` (src/store/types.ts), run against
 * every implementation (worker-store.test.ts): order, atomicity, the prefix
 * rule after a failed commit, receipt ids, errors with their codes, close.
 */
import { afterEach, describe, expect, it } from "vitest";
import { StoreError } from "../../src/store/index.ts";
import type { Store, WriteBatch } from "../../src/store/index.ts";
import { delivery, device, message, receipt } from "./contract.ts";

export interface AsyncStoreFactory {
  /** A new, empty store. */
  open(): Promise<Store>;
}

/** The StoreError `p` rejects with. */
export async function rejection(p: Promise<unknown>): Promise<StoreError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(StoreError);
    return e as StoreError;
  }
  throw new Error("expected a StoreError, the promise resolved");
}

/** Batch n of a stream: message m-n to two devices, a counter, two receipts. */
export function pushBatch(n: number, extra: Partial<WriteBatch> = {}): WriteBatch {
  const id = `m-${n}`;
  return {
    messages: [message(id, { payload: new Uint8Array(16).fill(n & 0xff) })],
    deliveries: [delivery("dev-a", id, n), delivery("dev-b", id, n)],
    counters: [{ device: "dev-a", lastSeq: n, ackedSeq: 0 }],
    receipts: [receipt(id, "dev-a"), receipt(id, "dev-b")],
    ...extra,
  };
}

export function describeAsyncStoreContract(name: string, factory: AsyncStoreFactory): void {
  describe(`async Store contract: ${name}`, () => {
    const opened: Store[] = [];
    const open = async (): Promise<Store> => {
      const s = await factory.open();
      opened.push(s);
      return s;
    };
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close();
    });

    it("runs calls in the order made: a read called right after a commit sees it, without awaiting the commit", async () => {
      const s = await open();
      const committed = s.commit(pushBatch(1));
      const read = s.getMessage("m-1");
      const state = s.loadDeliveryState();
      const ids = s.existingMessageIds(["m-1", "m-2"]);
      const put = s.putDevice(device("dev-a", { psk: { identity: "psk-a", key: new Uint8Array([0, 255]) } }));
      const found = s.findDeviceByPskIdentity("psk-a");
      expect((await committed).map((r) => r.device)).toEqual(["dev-a", "dev-b"]);
      expect(await read).toEqual(message("m-1", { payload: new Uint8Array(16).fill(1) }));
      expect((await state).deliveries).toEqual([delivery("dev-a", "m-1", 1), delivery("dev-b", "m-1", 1)]);
      expect(await ids).toEqual(new Set(["m-1"]));
      await put;
      expect((await found)?.psk?.key).toEqual(new Uint8Array([0, 255]));
    });

    it("settles promises in call order", async () => {
      const s = await open();
      const order: string[] = [];
      const calls = [
        s.commit(pushBatch(1)).then(() => order.push("commit 1")),
        s.getSetting("k").then(() => order.push("get")),
        s.commit(pushBatch(2)).then(() => order.push("commit 2")),
        s.putSetting("k", "v").then(() => order.push("put")),
        s.commit(pushBatch(3)).then(() => order.push("commit 3")),
        s.listDevices().then(() => order.push("list")),
      ];
      await Promise.all(calls);
      expect(order).toEqual(["commit 1", "get", "commit 2", "put", "commit 3", "list"]);
    });

    it("gives each commit its receipts with the stored ids, increasing across commits called together", async () => {
      const s = await open();
      const batches = [1, 2, 3, 4, 5].map((n) => pushBatch(n, n === 3 ? { receipts: [] } : {}));
      const results = await Promise.all(batches.map((b) => s.commit(b)));
      expect(results.map((r) => r.length)).toEqual([2, 2, 0, 2, 2]);
      const all = results.flat();
      for (let i = 1; i < all.length; i++) expect(all[i]?.id).toBeGreaterThan(all[i - 1]?.id as number);
      // exactly what is stored, field for field
      expect(await s.receiptsAfter(0, 100)).toEqual(all);
      expect(all[0]).toEqual({ ...receipt("m-1", "dev-a"), id: all[0]?.id });
      expect(await s.receiptsForMessage("m-4")).toEqual(results[3]);
    });

    it("applies nothing of a failed batch, names the duplicate, and refuses every later commit (prefix rule)", async () => {
      const s = await open();
      await s.commit(pushBatch(1));
      const failing = s.commit({
        messages: [message("m-2"), message("m-1")],
        deliveries: [delivery("dev-c", "m-2", 2)],
        counters: [{ device: "dev-c", lastSeq: 1, ackedSeq: 0 }],
        subscribe: [{ device: "dev-c", topic: "t" }],
        receipts: [receipt("m-2", "dev-c")],
      });
      const later = s.commit(pushBatch(3));
      const e = await rejection(failing);
      expect(e.code).toBe("duplicate_message");
      expect(e.message).toBe('Message id "m-1" is already stored; nothing of the batch was applied.');
      const refused = await rejection(later);
      expect(refused.code).toBe("store_failed");
      expect(refused.message).toContain("m-1");
      expect((await rejection(s.commit({}))).code).toBe("store_failed");
      // reads go on, and show the prefix: batch 1 only
      expect(await s.existingMessageIds(["m-1", "m-2", "m-3"])).toEqual(new Set(["m-1"]));
      const state = await s.loadDeliveryState();
      expect(state.deliveries.map((d) => d.messageId)).toEqual(["m-1", "m-1"]);
      expect(state.subscriptions).toEqual([]);
      expect(state.counters).toEqual([{ device: "dev-a", lastSeq: 1, ackedSeq: 0 }]);
      expect((await s.receiptsAfter(0, 100)).map((r) => r.messageId)).toEqual(["m-1", "m-1"]);
    });

    it("refuses a delivery of a message that is not stored with commit_failed naming it", async () => {
      const s = await open();
      const e = await rejection(s.commit({ messages: [message("m1")], deliveries: [delivery("dev", "m1", 1), delivery("dev", "ghost", 2)] }));
      expect(e.code).toBe("commit_failed");
      expect(e.message).toContain("ghost");
      expect(await s.getMessage("m1")).toBeUndefined();
    });

    it("stores the bytes of a payload given as a view into a larger buffer, and keeps its own copy", async () => {
      const s = await open();
      const backing = Buffer.from([10, 11, 12, 13, 14, 15]);
      const committed = s.commit({ messages: [message("m1", { payload: backing.subarray(2, 4) })] });
      backing[2] = 99;
      await committed;
      expect(await s.getMessage("m1")).toEqual(message("m1", { payload: new Uint8Array([12, 13]) }));
    });

    it("refuses a malformed batch with commit_failed", async () => {
      const s = await open();
      const e = await rejection(s.commit({ messages: [message("m1")], deliveries: [delivery("dev", "m1", 1, { seq: Number.NaN })] }));
      expect(e.code).toBe("commit_failed");
      expect(await s.getMessage("m1")).toBeUndefined();
    });

    it("keeps the device registry, refusing an identity in use with identity_in_use naming both devices", async () => {
      const s = await open();
      await s.putDevice(device("dev-1", { psk: { identity: "shared", key: new Uint8Array([1]) }, certIdentity: "cert-1", topics: ["a"] }));
      const e = await rejection(s.putDevice(device("dev-2", { psk: { identity: "shared", key: new Uint8Array([2]) } })));
      expect(e.code).toBe("identity_in_use");
      expect(e.message).toContain("dev-1");
      expect(e.message).toContain("dev-2");
      expect((await rejection(s.putDevice(device("")))).code).toBe("invalid_record");
      expect(await s.getDevice("dev-2")).toBeUndefined();
      expect((await s.findDeviceByCertIdentity("cert-1"))?.topics).toEqual(["a"]);
      await s.putDevice(device("dev-0"));
      expect((await s.listDevices()).map((d) => d.id)).toEqual(["dev-0", "dev-1"]);
      // a registry error is not a commit failure: commits go on
      await s.commit(pushBatch(1));
      expect(await s.deleteDevice("dev-1")).toBe(true);
      expect(await s.deleteDevice("dev-1")).toBe(false);
      expect(await s.findDeviceByPskIdentity("shared")).toBeUndefined();
    });

    it("prunes expired unreferenced messages and old receipts; stores settings", async () => {
      const s = await open();
      await s.commit({
        messages: [message("old", { expiresAt: 100 }), message("kept", { expiresAt: 100 })],
        deliveries: [delivery("dev", "kept", 1)],
        receipts: [receipt("old", "", { at: 50 }), receipt("kept", "", { at: 700 })],
      });
      expect(await s.prune(500)).toBe(1);
      expect(await s.getMessage("old")).toBeUndefined();
      expect((await s.getMessage("kept"))?.id).toBe("kept");
      expect((await s.receiptsAfter(0, 10)).map((r) => r.messageId)).toEqual(["kept"]);
      expect(await s.getSetting("k")).toBeUndefined();
      await s.putSetting("k", "v1");
      await s.putSetting("k", "v2");
      expect(await s.getSetting("k")).toBe("v2");
      expect((await rejection(s.putSetting("", "x"))).code).toBe("invalid_record");
    });

    it("close waits for what was called before it; later calls fail with store_closed", async () => {
      const s = await factory.open();
      const commits = [1, 2, 3].map((n) => s.commit(pushBatch(n)));
      const read = s.existingMessageIds(["m-1", "m-2", "m-3"]);
      const closed = s.close();
      const again = s.close();
      expect((await Promise.all(commits)).flat()).toHaveLength(6);
      expect(await read).toEqual(new Set(["m-1", "m-2", "m-3"]));
      await closed;
      await again;
      for (const call of [() => s.commit({}), () => s.getDevice("x"), () => s.putSetting("k", "v"), () => s.loadDeliveryState()]) {
        expect((await rejection(call())).code).toBe("store_closed");
      }
      await s.close();
    });
  });
}
