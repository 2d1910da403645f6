/**
 * The SyncStore contract, run against every implementation (memory-store.test.ts,
 * sqlite-store.test.ts): the same calls must give the same results and errors.
 */
import { afterEach, describe, expect, it } from "vitest";
import { StoreError } from "../../src/store/index.ts";
import type { DeliveryRecord, DeviceRecord, MessageRecord, ReceiptInput, SyncStore as Store, WriteBatch } from "../../src/store/index.ts";

export interface StoreFactory {
  /** A new, empty store. */
  open(): Store;
}

export function device(id: string, extra: Partial<DeviceRecord> = {}): DeviceRecord {
  return { id, revoked: false, topics: [], createdAt: 1_700_000_000_000, updatedAt: 1_700_000_000_000, ...extra };
}

export function message(id: string, extra: Partial<MessageRecord> = {}): MessageRecord {
  return {
    id,
    topic: "alerts",
    device: "",
    payload: new Uint8Array([0, 1, 2, 254, 255]),
    contentType: "application/octet-stream",
    createdAt: 1_700_000_000_000,
    expiresAt: 1_700_000_060_000,
    priority: 5,
    collapseKey: "",
    publisher: "backend",
    signature: "eyJhbGciOiJFZERTQSJ9..c2ln",
    ...extra,
  };
}

export function delivery(device: string, messageId: string, order: number, extra: Partial<DeliveryRecord> = {}): DeliveryRecord {
  return { device, messageId, order, seq: 0, tombstone: false, ...extra };
}

export function receipt(messageId: string, device: string, extra: Partial<ReceiptInput> = {}): ReceiptInput {
  return { messageId, device, state: "queued", at: 1_700_000_000_000, reason: "", seq: 0, topic: "alerts", ...extra };
}

function storeError(fn: () => unknown): StoreError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(StoreError);
    return e as StoreError;
  }
  throw new Error("expected a StoreError, nothing was thrown");
}

export function describeStoreContract(name: string, factory: StoreFactory): void {
  describe(`Store contract: ${name}`, () => {
    const opened: Store[] = [];
    const open = (): Store => {
      const s = factory.open();
      opened.push(s);
      return s;
    };
    afterEach(() => {
      for (const s of opened.splice(0)) s.close();
    });

    describe("device registry", () => {
      it("puts and gets a device with a PSK, a certificate identity and topics", () => {
        const s = open();
        const key = new Uint8Array([0, 1, 2, 3, 250, 255]);
        const d = device("dev-1", {
          psk: { identity: "psk-1", key },
          certIdentity: "CN=dev-1",
          topics: ["a", "b"],
          revoked: true,
          updatedAt: 1_700_000_000_123,
        });
        s.putDevice(d);
        const got = s.getDevice("dev-1");
        expect(got).toEqual(d);
        expect(got?.psk?.key).toBeInstanceOf(Uint8Array);
        expect([...(got?.psk?.key ?? [])]).toEqual([0, 1, 2, 3, 250, 255]);
        expect(s.getDevice("nope")).toBeUndefined();
      });

      it("omits psk and certIdentity when the device has none", () => {
        const s = open();
        s.putDevice(device("only-cert", { certIdentity: "fp:ab" }));
        s.putDevice(device("only-psk", { psk: { identity: "id", key: new Uint8Array([9]) } }));
        expect(s.getDevice("only-cert")).not.toHaveProperty("psk");
        expect(s.getDevice("only-psk")).not.toHaveProperty("certIdentity");
        expect(s.getDevice("only-cert")?.certIdentity).toBe("fp:ab");
      });

      it("finds devices by PSK identity and by certificate identity, following updates", () => {
        const s = open();
        s.putDevice(device("dev-1", { psk: { identity: "psk-1", key: new Uint8Array([1]) }, certIdentity: "cert-1" }));
        s.putDevice(device("dev-2", { psk: { identity: "psk-2", key: new Uint8Array([2]) } }));
        expect(s.findDeviceByPskIdentity("psk-1")?.id).toBe("dev-1");
        expect(s.findDeviceByPskIdentity("psk-2")?.id).toBe("dev-2");
        expect(s.findDeviceByCertIdentity("cert-1")?.id).toBe("dev-1");
        expect(s.findDeviceByCertIdentity("psk-1")).toBeUndefined();
        expect(s.findDeviceByPskIdentity("cert-1")).toBeUndefined();

        // replace: new identities; the old ones no longer find it
        s.putDevice(device("dev-1", { psk: { identity: "psk-1b", key: new Uint8Array([3]) } }));
        expect(s.findDeviceByPskIdentity("psk-1")).toBeUndefined();
        expect(s.findDeviceByCertIdentity("cert-1")).toBeUndefined();
        expect(s.findDeviceByPskIdentity("psk-1b")?.psk?.key).toEqual(new Uint8Array([3]));
        expect(s.listDevices().map((d) => d.id)).toEqual(["dev-1", "dev-2"]);
      });

      it("lists devices ordered by id in code-point order", () => {
        const s = open();
        // UTF-16 order would put the emoji (a surrogate pair, 0xD83D...) before U+FFFD; code-point order puts it after.
        const ids = ["b", "\u{1F600}", "a", "\uFFFD", "B", "a1"];
        for (const id of ids) s.putDevice(device(id));
        expect(s.listDevices().map((d) => d.id)).toEqual(["B", "a", "a1", "b", "\uFFFD", "\u{1F600}"]);
      });

      it("refuses a PSK or certificate identity used by another device, naming both", () => {
        const s = open();
        s.putDevice(device("dev-1", { psk: { identity: "shared", key: new Uint8Array([1]) }, certIdentity: "cert-1" }));
        const e1 = storeError(() => s.putDevice(device("dev-2", { psk: { identity: "shared", key: new Uint8Array([2]) } })));
        expect(e1.code).toBe("identity_in_use");
        expect(e1.message).toContain("dev-1");
        expect(e1.message).toContain("dev-2");
        expect(e1.message).toContain("shared");
        const e2 = storeError(() => s.putDevice(device("dev-2", { certIdentity: "cert-1" })));
        expect(e2.code).toBe("identity_in_use");
        expect(e2.message).toContain("dev-1");
        expect(e2.message).toContain("dev-2");
        expect(s.getDevice("dev-2")).toBeUndefined();
        // the owner may put itself again with the same identities
        s.putDevice(device("dev-1", { psk: { identity: "shared", key: new Uint8Array([7]) }, certIdentity: "cert-1", revoked: true }));
        expect(s.getDevice("dev-1")?.revoked).toBe(true);
        expect(s.findDeviceByPskIdentity("shared")?.psk?.key).toEqual(new Uint8Array([7]));
      });

      it("refuses malformed devices with invalid_record", () => {
        const s = open();
        expect(storeError(() => s.putDevice(device("")))).toMatchObject({ code: "invalid_record" });
        expect(storeError(() => s.putDevice(device("d", { createdAt: Number.NaN })))).toMatchObject({ code: "invalid_record" });
        expect(storeError(() => s.putDevice(device("d", { psk: { identity: "x", key: new Uint8Array(0) } })))).toMatchObject({
          code: "invalid_record",
        });
        expect(s.listDevices()).toEqual([]);
      });

      it("deletes a device with its deliveries and subscriptions but keeps counters and receipts", () => {
        const s = open();
        s.putDevice(device("dev-1", { psk: { identity: "psk-1", key: new Uint8Array([1]) } }));
        s.putDevice(device("dev-2"));
        s.commit({
          messages: [message("m1")],
          deliveries: [delivery("dev-1", "m1", 1, { seq: 4 }), delivery("dev-2", "m1", 2)],
          counters: [{ device: "dev-1", lastSeq: 4, ackedSeq: 3 }],
          subscribe: [
            { device: "dev-1", topic: "t" },
            { device: "dev-2", topic: "t" },
          ],
          receipts: [receipt("m1", "dev-1")],
        });
        expect(s.deleteDevice("dev-1")).toBe(true);
        expect(s.deleteDevice("dev-1")).toBe(false);
        expect(s.getDevice("dev-1")).toBeUndefined();
        expect(s.findDeviceByPskIdentity("psk-1")).toBeUndefined();
        const state = s.loadDeliveryState();
        expect(state.deliveries).toEqual([delivery("dev-2", "m1", 2)]);
        expect(state.subscriptions).toEqual([{ device: "dev-2", topic: "t" }]);
        expect(state.counters).toEqual([{ device: "dev-1", lastSeq: 4, ackedSeq: 3 }]);
        expect(s.receiptsForMessage("m1")).toHaveLength(1);
        // its PSK identity is free again
        s.putDevice(device("dev-3", { psk: { identity: "psk-1", key: new Uint8Array([3]) } }));
        expect(s.findDeviceByPskIdentity("psk-1")?.id).toBe("dev-3");
      });
      it("deleting a device keeps the highest seq its deliveries hold as its lastSeq (seqs are counted at ack, not at send)", () => {
        const s = open();
        s.putDevice(device("dev-1"));
        s.putDevice(device("dev-2"));
        s.putDevice(device("dev-3"));
        s.commit({
          messages: [message("m1"), message("m2"), message("m3")],
          deliveries: [
            delivery("dev-1", "m1", 1, { seq: 9 }),
            delivery("dev-1", "m2", 2, { seq: 8, tombstone: true }),
            delivery("dev-1", "m3", 3),
            delivery("dev-2", "m1", 4, { seq: 2 }),
            delivery("dev-3", "m1", 5),
          ],
          counters: [
            { device: "dev-1", lastSeq: 7, ackedSeq: 6 },
            { device: "dev-2", lastSeq: 5, ackedSeq: 5 },
          ],
        });
        for (const id of ["dev-1", "dev-2", "dev-3"]) expect(s.deleteDevice(id)).toBe(true);
        const state = s.loadDeliveryState();
        expect(state.deliveries).toEqual([]);
        expect(state.counters).toEqual([
          { device: "dev-1", lastSeq: 9, ackedSeq: 6 },
          { device: "dev-2", lastSeq: 5, ackedSeq: 5 },
        ]);
      });
    });

    describe("delivery journal", () => {
      it("round-trips a commit with every field through loadDeliveryState", () => {
        const s = open();
        const payload = new Uint8Array(256).map((_, i) => i);
        const m1 = message("m1", { payload, priority: 9, collapseKey: "ck", topic: "", device: "dev-a", expiresAt: 1_800_000_000_000 });
        const m2 = message("m2", { payload: new Uint8Array(0), contentType: "text/plain" });
        const unreferenced = message("m3");
        const receipts = s.commit({
          messages: [m1, m2, unreferenced],
          deliveries: [delivery("dev-a", "m1", 10, { seq: 3, tombstone: true }), delivery("dev-b", "m2", 11)],
          counters: [{ device: "dev-a", lastSeq: 3, ackedSeq: 2 }],
          subscribe: [{ device: "dev-b", topic: "alerts" }],
          receipts: [receipt("m1", "dev-a", { state: "sent", seq: 3, reason: "why", topic: "" })],
        });
        expect(receipts).toHaveLength(1);
        const state = s.loadDeliveryState();
        expect(state.messages).toEqual([m1, m2]);
        expect([...(state.messages[0]?.payload ?? [])]).toEqual([...payload]);
        expect(state.messages[1]?.payload).toEqual(new Uint8Array(0));
        expect(state.deliveries).toEqual([delivery("dev-a", "m1", 10, { seq: 3, tombstone: true }), delivery("dev-b", "m2", 11)]);
        expect(state.counters).toEqual([{ device: "dev-a", lastSeq: 3, ackedSeq: 2 }]);
        expect(state.subscriptions).toEqual([{ device: "dev-b", topic: "alerts" }]);
        expect(s.getMessage("m3")).toEqual(unreferenced);
        expect(s.getMessage("m1")).toEqual(m1);
        expect(s.getMessage("nope")).toBeUndefined();
      });

      it("orders deliveries by device, then enqueue order", () => {
        const s = open();
        s.commit({
          messages: [message("m1"), message("m2"), message("m3")],
          deliveries: [
            delivery("dev-b", "m1", 5),
            delivery("dev-a", "m2", 9),
            delivery("dev-b", "m3", 2),
            delivery("dev-a", "m1", 1),
            delivery("dev-b", "m2", 7),
          ],
        });
        expect(s.loadDeliveryState().deliveries.map((d) => `${d.device}:${d.order}`)).toEqual([
          "dev-a:1",
          "dev-a:9",
          "dev-b:2",
          "dev-b:5",
          "dev-b:7",
        ]);
      });

      it("replaces a delivery by (device, messageId) when its seq is assigned, and removes it", () => {
        const s = open();
        s.commit({ messages: [message("m1")], deliveries: [delivery("dev", "m1", 1)] });
        s.commit({ deliveries: [delivery("dev", "m1", 1, { seq: 7 })], counters: [{ device: "dev", lastSeq: 7, ackedSeq: 0 }] });
        expect(s.loadDeliveryState().deliveries).toEqual([delivery("dev", "m1", 1, { seq: 7 })]);
        s.commit({ deliveries: [delivery("dev", "m1", 1, { seq: 7, tombstone: true })] });
        expect(s.loadDeliveryState().deliveries).toEqual([delivery("dev", "m1", 1, { seq: 7, tombstone: true })]);
        s.commit({
          removeDeliveries: [
            { device: "dev", messageId: "m1" },
            { device: "dev", messageId: "absent" },
            { device: "other", messageId: "m1" },
          ],
          counters: [{ device: "dev", lastSeq: 7, ackedSeq: 7 }],
        });
        const state = s.loadDeliveryState();
        expect(state.deliveries).toEqual([]);
        expect(state.messages).toEqual([]);
        expect(state.counters).toEqual([{ device: "dev", lastSeq: 7, ackedSeq: 7 }]);
        expect(s.getMessage("m1")?.id).toBe("m1");
      });

      it("applies the fields of a batch in order: a delivery added and removed in one batch is gone", () => {
        const s = open();
        s.commit({
          messages: [message("m1")],
          deliveries: [delivery("dev", "m1", 1)],
          removeDeliveries: [{ device: "dev", messageId: "m1" }],
          subscribe: [{ device: "dev", topic: "t" }],
          unsubscribe: [{ device: "dev", topic: "t" }],
        });
        const state = s.loadDeliveryState();
        expect(state.deliveries).toEqual([]);
        expect(state.subscriptions).toEqual([]);
      });

      it("upserts counters", () => {
        const s = open();
        s.commit({
          counters: [
            { device: "a", lastSeq: 1, ackedSeq: 0 },
            { device: "b", lastSeq: 5, ackedSeq: 5 },
          ],
        });
        s.commit({ counters: [{ device: "a", lastSeq: 2, ackedSeq: 1 }] });
        expect(s.loadDeliveryState().counters).toEqual([
          { device: "a", lastSeq: 2, ackedSeq: 1 },
          { device: "b", lastSeq: 5, ackedSeq: 5 },
        ]);
      });

      it("adds and removes subscriptions idempotently", () => {
        const s = open();
        s.commit({
          subscribe: [
            { device: "d1", topic: "x" },
            { device: "d1", topic: "x" },
            { device: "d1", topic: "a" },
          ],
        });
        s.commit({
          subscribe: [
            { device: "d1", topic: "x" },
            { device: "d0", topic: "x" },
          ],
        });
        expect(s.loadDeliveryState().subscriptions).toEqual([
          { device: "d0", topic: "x" },
          { device: "d1", topic: "a" },
          { device: "d1", topic: "x" },
        ]);
        s.commit({
          unsubscribe: [
            { device: "d1", topic: "x" },
            { device: "d1", topic: "x" },
            { device: "nobody", topic: "x" },
          ],
        });
        expect(s.loadDeliveryState().subscriptions).toEqual([
          { device: "d0", topic: "x" },
          { device: "d1", topic: "a" },
        ]);
      });

      it("gives receipts strictly increasing ids in input order, and pages them", () => {
        const s = open();
        const first = s.commit({
          messages: [message("m1")],
          receipts: [receipt("m1", ""), receipt("m1", "d1", { state: "queued" }), receipt("m2", "d2", { state: "rejected", reason: "queue_full" })],
        });
        expect(first.map((r) => [r.messageId, r.device, r.state])).toEqual([
          ["m1", "", "queued"],
          ["m1", "d1", "queued"],
          ["m2", "d2", "rejected"],
        ]);
        expect(first[2]).toEqual({ ...receipt("m2", "d2", { state: "rejected", reason: "queue_full" }), id: first[2]?.id });
        const second = s.commit({
          receipts: [receipt("m1", "d1", { state: "sent", seq: 1 }), receipt("m1", "d1", { state: "delivered", seq: 1, at: 1_700_000_000_500 })],
        });
        const ids = [...first, ...second].map((r) => r.id);
        for (let i = 1; i < ids.length; i++) expect(ids[i]).toBeGreaterThan(ids[i - 1] as number);
        expect(s.commit({})).toEqual([]);

        expect(s.receiptsForMessage("m1").map((r) => r.state)).toEqual(["queued", "queued", "sent", "delivered"]);
        expect(s.receiptsForMessage("m1")[3]).toEqual(second[1]);
        expect(s.receiptsForMessage("none")).toEqual([]);

        const all = [...first, ...second];
        expect(s.receiptsAfter(0, 100)).toEqual(all);
        const page1 = s.receiptsAfter(0, 2);
        expect(page1).toEqual(all.slice(0, 2));
        const page2 = s.receiptsAfter(page1[1]?.id as number, 2);
        expect(page2).toEqual(all.slice(2, 4));
        const page3 = s.receiptsAfter(page2[1]?.id as number, 2);
        expect(page3).toEqual(all.slice(4));
        expect(s.receiptsAfter(page3[0]?.id as number, 2)).toEqual([]);
        expect(s.receiptsAfter(0, 0)).toEqual([]);
        expect(s.receiptsAfter(0, Number.POSITIVE_INFINITY)).toEqual(all);
        expect(s.receiptsAfter(page1[0]?.id as number, 1.9)).toEqual(all.slice(1, 2));
      });

      it("pages a topic fan-out's receipts one by one, from any id, whatever rows hold them", () => {
        const s = open();
        const devices = Array.from({ length: 1_203 }, (_, i) => `d${String(i).padStart(4, "0")}`);
        s.commit({ messages: [message("t1"), message("t2")] });
        const queued = s.commit({
          receipts: [
            receipt("t1", ""),
            ...devices.map((d) => receipt("t1", d)),
            receipt("t2", "d0001"),
            ...devices.slice(0, 3).map((d, i) => receipt("t1", d, { state: "sent", seq: i + 1 })),
            ...devices.slice(3, 5).map((d, i) => receipt("t1", d, { state: "sent", seq: i + 1, at: 1_700_000_000_001 })),
          ],
        });
        const sent = s.commit({ receipts: devices.map((d, i) => receipt("t1", d, { state: "delivered", seq: i + 1 })) });
        const all = [...queued, ...sent];
        expect(all.map((r) => r.device).slice(0, 3)).toEqual(["", "d0000", "d0001"]);
        expect(all[1 + devices.length]).toEqual({ ...receipt("t2", "d0001"), id: all[1 + devices.length]?.id });
        expect(all[devices.length + 4]).toEqual({ ...receipt("t1", "d0002", { state: "sent", seq: 3 }), id: all[devices.length + 4]?.id });
        for (let i = 1; i < all.length; i++) expect(all[i]?.id).toBe((all[i - 1]?.id as number) + 1);
        expect(s.receiptsAfter(0, 10_000)).toEqual(all);
        expect(s.receiptsForMessage("t1")).toEqual(all.filter((r) => r.messageId === "t1"));
        expect(s.receiptsForMessage("t2")).toEqual([all[1 + devices.length]]);
        // pages of 7 from the start, and pages starting inside and at the edges of a run of one message
        const paged: typeof all = [];
        let after = 0;
        for (let pages = 0; pages <= Math.ceil(all.length / 7); pages++) {
          const page = s.receiptsAfter(after, 7);
          expect(page.length).toBeLessThanOrEqual(7);
          if (page.length === 0) break;
          paged.push(...page);
          after = page.at(-1)?.id as number;
        }
        expect(paged).toEqual(all);
        for (const k of [1, 2, 499, 500, 501, 1_000, 1_203, 1_204, 1_205, 1_209, 2_000, all.length - 1]) {
          expect(s.receiptsAfter(all[k - 1]?.id as number, 3)).toEqual(all.slice(k, k + 3));
        }
        expect(s.receiptsAfter(all.at(-1)?.id as number, 3)).toEqual([]);
        expect(s.prune(1_700_000_000_001)).toBe(0);
        expect(s.receiptsAfter(0, 10)).toEqual(all.slice(devices.length + 5, devices.length + 7));
      });

      it("applies nothing of a batch with an already stored message id", () => {
        const s = open();
        const before = s.commit({ messages: [message("m1")], receipts: [receipt("m1", "")] });
        const e = storeError(() =>
          s.commit({
            messages: [message("m2"), message("m1")],
            deliveries: [delivery("dev", "m2", 1)],
            counters: [{ device: "dev", lastSeq: 1, ackedSeq: 0 }],
            subscribe: [{ device: "dev", topic: "t" }],
            receipts: [receipt("m2", "dev")],
          }),
        );
        expect(e.code).toBe("duplicate_message");
        expect(e.message).toContain("m1");
        expect(s.getMessage("m2")).toBeUndefined();
        expect(s.loadDeliveryState()).toEqual({ counters: [], deliveries: [], messages: [], subscriptions: [] });
        expect(s.receiptsForMessage("m2")).toEqual([]);
        expect(s.receiptsAfter(0, 10)).toEqual(before);
        // no receipt id was used up by the refused batch
        const next = s.commit({ receipts: [receipt("m1", "x")] });
        expect(next[0]?.id).toBe((before[0]?.id as number) + 1);
      });

      it("applies a batch of hundreds of rows of each kind in order, with receipt ids as stored", () => {
        const s = open();
        const n = 250;
        const devs = Array.from({ length: n }, (_, i) => `dev-${String(i).padStart(3, "0")}`);
        const first = s.commit({
          messages: [message("m1"), message("m2")],
          // each device gets m1 twice in one batch (queued, then given its seq): the later row wins
          deliveries: [
            ...devs.map((d, i) => delivery(d, "m1", i + 1)),
            ...devs.map((d, i) => delivery(d, "m1", i + 1, { seq: 7 })),
            ...devs.map((d, i) => delivery(d, "m2", n + i + 1)),
          ],
          counters: devs.map((d, i) => ({ device: d, lastSeq: i, ackedSeq: 0 })),
          receipts: devs.map((d, i) => receipt("m1", d, { seq: i })),
        });
        expect(first.map((r) => r.device)).toEqual(devs);
        expect(s.receiptsAfter(0, 1_000)).toEqual(first);
        const second = s.commit({
          removeDeliveries: [...devs.map((d) => ({ device: d, messageId: "m1" })), { device: "absent", messageId: "m1" }],
          counters: devs.map((d, i) => ({ device: d, lastSeq: i + 1, ackedSeq: i + 1 })),
          receipts: devs.map((d, i) => receipt("m1", d, { state: "delivered", seq: i })),
        });
        expect(second.map((r) => r.id)).toEqual(first.map((r) => r.id + n));
        expect(s.receiptsAfter(0, 1_000)).toEqual([...first, ...second]);
        const state = s.loadDeliveryState();
        expect(state.deliveries).toEqual(devs.map((d, i) => delivery(d, "m2", n + i + 1)));
        expect(state.counters).toEqual(devs.map((d, i) => ({ device: d, lastSeq: i + 1, ackedSeq: i + 1 })));
      });

      it("names the delivery whose message is not stored, deep in a large batch", () => {
        const s = open();
        const deliveries = Array.from({ length: 230 }, (_, i) => delivery(`dev-${i}`, "m1", i + 1));
        deliveries.splice(170, 0, delivery("dev-x", "ghost-170", 999));
        const e = storeError(() => s.commit({ messages: [message("m1")], deliveries }));
        expect(e.code).toBe("commit_failed");
        expect(e.message).toContain("ghost-170");
        expect(s.loadDeliveryState().deliveries).toEqual([]);
      });

      it("refuses a message id repeated inside one batch", () => {
        const s = open();
        const e = storeError(() => s.commit({ messages: [message("m1"), message("m1")], receipts: [receipt("m1", "")] }));
        expect(e.code).toBe("duplicate_message");
        expect(s.getMessage("m1")).toBeUndefined();
        expect(s.receiptsAfter(0, 10)).toEqual([]);
      });

      it("refuses a delivery of a message that is not stored, applying nothing", () => {
        const s = open();
        const e = storeError(() => s.commit({ messages: [message("m1")], deliveries: [delivery("dev", "m1", 1), delivery("dev", "ghost", 2)] }));
        expect(e.code).toBe("commit_failed");
        expect(e.message).toContain("ghost");
        expect(s.getMessage("m1")).toBeUndefined();
        expect(s.loadDeliveryState().deliveries).toEqual([]);
      });

      it("refuses malformed records with commit_failed, applying nothing", () => {
        const s = open();
        const bad: WriteBatch[] = [
          { messages: [message("m1")], deliveries: [delivery("dev", "m1", 1, { seq: Number.NaN })] },
          { messages: [message("m1")], deliveries: [delivery("dev", "m1", 1.5)] },
          { messages: [message("m1", { expiresAt: 2 ** 60 })] },
          { messages: [message("m1", { payload: "text" as unknown as Uint8Array })] },
          { messages: [message("m1")], receipts: [receipt("m1", "d", { state: "lost" as "sent" })] },
          { messages: [message("m1")], counters: [{ device: "", lastSeq: 0, ackedSeq: 0 }] },
          { messages: [message("m1")], subscribe: [{ device: "d", topic: "" }] },
        ];
        for (const batch of bad) {
          expect(storeError(() => s.commit(batch)).code).toBe("commit_failed");
          expect(s.getMessage("m1")).toBeUndefined();
        }
        expect(s.receiptsAfter(0, 10)).toEqual([]);
      });

      it("prunes expired unreferenced messages and old receipts", () => {
        const s = open();
        const r = s.commit({
          messages: [
            message("old-free", { expiresAt: 100 }),
            message("old-queued", { expiresAt: 100 }),
            message("new-free", { expiresAt: 1_000 }),
            message("edge", { expiresAt: 500 }),
          ],
          deliveries: [delivery("dev", "old-queued", 1)],
          receipts: [receipt("old-free", "", { at: 50 }), receipt("new-free", "", { at: 499 }), receipt("edge", "", { at: 500 })],
        });
        expect(s.prune(500)).toBe(1);
        expect(s.getMessage("old-free")).toBeUndefined();
        expect(s.getMessage("old-queued")?.id).toBe("old-queued");
        expect(s.getMessage("new-free")?.id).toBe("new-free");
        expect(s.getMessage("edge")?.id).toBe("edge");
        expect(s.receiptsAfter(0, 10)).toEqual([r[2]]);
        expect(s.receiptsForMessage("old-free")).toEqual([]);
        expect(s.receiptsForMessage("edge")).toEqual([r[2]]);
        expect(s.prune(500)).toBe(0);

        // once its delivery is gone the queued message can be pruned too
        s.commit({ removeDeliveries: [{ device: "dev", messageId: "old-queued" }] });
        expect(s.prune(2_000)).toBe(3);
        expect(s.receiptsAfter(0, 10)).toEqual([]);
        // receipt ids never repeat, even with every receipt pruned
        const after = s.commit({ receipts: [receipt("x", "")] });
        expect(after[0]?.id).toBeGreaterThan(r[2]?.id as number);
      });

      it("keeps the receipts of a pruned message its own when a later message is stored", () => {
        const s = open();
        const [kept] = s.commit({ messages: [message("a", { expiresAt: 100 })], receipts: [receipt("a", "dev", { at: 1_000 })] });
        expect(s.prune(500)).toBe(1);
        const [next] = s.commit({ messages: [message("b", { expiresAt: 100 })], receipts: [receipt("b", "dev", { at: 1_000 })] });
        expect(s.receiptsForMessage("a")).toEqual([kept]);
        expect(s.receiptsForMessage("b")).toEqual([next]);
        // and a receipt written before its message is stored
        const [early] = s.commit({ receipts: [receipt("c", "dev")] });
        const [late] = s.commit({ messages: [message("c")], receipts: [receipt("c", "dev", { state: "sent", seq: 1 })] });
        expect(s.receiptsForMessage("c")).toEqual([early, late]);
        expect(s.prune(2_000)).toBe(1);
        expect(s.receiptsForMessage("b")).toEqual([]);
        expect(s.receiptsForMessage("c")).toEqual([early, late]);
      });

      it("stores settings", () => {
        const s = open();
        expect(s.getSetting("signing-key")).toBeUndefined();
        s.putSetting("signing-key", '{"kty":"OKP"}');
        s.putSetting("other", "");
        s.putSetting("signing-key", "v2");
        expect(s.getSetting("signing-key")).toBe("v2");
        expect(s.getSetting("other")).toBe("");
        expect(storeError(() => s.putSetting("", "x")).code).toBe("invalid_record");
      });

      it("returns copies and keeps copies: mutating records or bytes changes nothing stored", () => {
        const s = open();
        const key = new Uint8Array([1, 2, 3]);
        const topics = ["t1"];
        s.putDevice(device("dev", { psk: { identity: "p", key }, topics }));
        key[0] = 99;
        topics.push("t2");
        const payload = new Uint8Array([5, 6, 7]);
        s.commit({ messages: [message("m1", { payload })], deliveries: [delivery("dev", "m1", 1)] });
        payload[0] = 99;

        const d = s.getDevice("dev") as DeviceRecord;
        (d.psk?.key as Uint8Array)[1] = 99;
        (d.topics as string[]).push("t3");
        (d as { revoked: boolean }).revoked = true;
        const listed = s.listDevices()[0] as DeviceRecord;
        (listed.topics as string[]).length = 0;
        const m = s.getMessage("m1") as MessageRecord;
        m.payload[1] = 99;
        const state = s.loadDeliveryState();
        (state.messages[0] as MessageRecord).payload[2] = 99;
        (state.deliveries[0] as { seq: number }).seq = 42;
        const r = s.commit({ receipts: [receipt("m1", "dev")] });
        (r[0] as { state: string }).state = "delivered";

        expect(s.getDevice("dev")).toEqual(device("dev", { psk: { identity: "p", key: new Uint8Array([1, 2, 3]) }, topics: ["t1"] }));
        expect(s.findDeviceByPskIdentity("p")?.psk?.key).toEqual(new Uint8Array([1, 2, 3]));
        expect(s.getMessage("m1")?.payload).toEqual(new Uint8Array([5, 6, 7]));
        expect(s.loadDeliveryState().messages[0]?.payload).toEqual(new Uint8Array([5, 6, 7]));
        expect(s.loadDeliveryState().deliveries[0]?.seq).toBe(0);
        expect(s.receiptsForMessage("m1")[0]?.state).toBe("queued");
      });

      it("copies bytes given as a view into a larger buffer", () => {
        const s = open();
        const backing = Buffer.from([10, 11, 12, 13, 14, 15]);
        s.commit({ messages: [message("m1", { payload: backing.subarray(2, 4) })] });
        expect(s.getMessage("m1")?.payload).toEqual(new Uint8Array([12, 13]));
      });

      it("refuses every call after close with store_closed", () => {
        const s = open();
        s.close();
        s.close();
        expect(storeError(() => s.getDevice("x")).code).toBe("store_closed");
        expect(storeError(() => s.commit({})).code).toBe("store_closed");
        expect(storeError(() => s.putSetting("k", "v")).code).toBe("store_closed");
        expect(storeError(() => s.loadDeliveryState()).code).toBe("store_closed");
      });
    });
  });
}
