import { describe, expect, it } from "vitest";
import { DeviceReceiver } from "../../src/messaging/device-receiver.ts";
import type { Push } from "../../src/wire/index.ts";

function push(seq: number, extra: Partial<Push> = {}): Push {
  return {
    seq,
    messageId: `m${seq}`,
    topic: "",
    device: "dev",
    payload: new TextEncoder().encode(`p${seq}`),
    contentType: "",
    createdAt: 1,
    expiresAt: 2,
    priority: 5,
    collapseKey: "",
    publisher: "test",
    signature: "sig",
    expired: false,
    ...extra,
  };
}

/** accept + settle ok */
function give(r: DeviceReceiver, seq: number, ok = true): void {
  expect(r.accept(push(seq))).toBe("new");
  expect(r.pending(seq)).toBe(true);
  r.settle(seq, ok);
  expect(r.pending(seq)).toBe(false);
}

/** Takes every ready push, processing each at once; returns their seqs. */
function drain(r: DeviceReceiver): number[] {
  const out: number[] = [];
  for (let p = r.next(); p !== undefined; p = r.next()) {
    out.push(p.seq);
    r.processed(p.seq);
  }
  return out;
}

describe("DeviceReceiver", () => {
  it("hands pushes over in seq order, one at a time, and advances hwm when processed", () => {
    const r = new DeviceReceiver(0);
    give(r, 1);
    give(r, 2);
    const first = r.next();
    expect(first?.seq).toBe(1);
    expect(first?.messageId).toBe("m1");
    // the application still has 1: nothing else yet, hwm not moved
    expect(r.next()).toBeUndefined();
    expect(r.hwm).toBe(0);
    expect(r.ack().cumulative).toBe(0);
    r.processed(1);
    expect(r.hwm).toBe(1);
    expect(r.next()?.seq).toBe(2);
    r.processed(2);
    expect(r.hwm).toBe(2);
    expect(r.heldCount).toBe(0);
    expect(r.ack()).toEqual({ cumulative: 2, ranges: [], rejected: [] });
  });

  it("ignores processed() for a seq it did not hand over", () => {
    const r = new DeviceReceiver(0);
    give(r, 1);
    give(r, 2);
    expect(r.next()?.seq).toBe(1);
    r.processed(2);
    expect(r.hwm).toBe(0);
    r.processed(1);
    expect(r.hwm).toBe(1);
  });

  it("holds pushes above a gap, acks them as ranges, and releases them when the gap fills", () => {
    const r = new DeviceReceiver(0);
    give(r, 3);
    give(r, 2);
    give(r, 5);
    give(r, 7);
    give(r, 8);
    expect(r.next()).toBeUndefined();
    expect(r.ack()).toEqual({
      cumulative: 0,
      ranges: [
        { first: 2, last: 3 },
        { first: 5, last: 5 },
        { first: 7, last: 8 },
      ],
      rejected: [],
    });
    give(r, 1);
    expect(drain(r)).toEqual([1, 2, 3]);
    expect(r.ack()).toEqual({
      cumulative: 3,
      ranges: [
        { first: 5, last: 5 },
        { first: 7, last: 8 },
      ],
      rejected: [],
    });
    give(r, 4);
    give(r, 6);
    expect(drain(r)).toEqual([4, 5, 6, 7, 8]);
    expect(r.hwm).toBe(8);
  });

  it("recognises duplicates: at or below hwm, and already held", () => {
    const r = new DeviceReceiver(10);
    expect(r.accept(push(10))).toBe("duplicate");
    expect(r.accept(push(3))).toBe("duplicate");
    expect(r.accept(push(12))).toBe("new");
    expect(r.accept(push(12))).toBe("duplicate");
    expect(r.heldCount).toBe(1);
    r.settle(12, true);
    give(r, 11);
    expect(drain(r)).toEqual([11, 12]);
    expect(r.accept(push(11))).toBe("duplicate");
    expect(r.accept(push(12))).toBe("duplicate");
  });

  it("waits for the verification of the head even when later pushes are verified", () => {
    const r = new DeviceReceiver(0);
    expect(r.accept(push(1))).toBe("new");
    give(r, 2);
    expect(r.next()).toBeUndefined();
    // held seqs are acked as ranges while being verified (it stops retransmission)
    expect(r.ack()).toEqual({ cumulative: 0, ranges: [{ first: 1, last: 2 }], rejected: [] });
    r.settle(1, true);
    expect(drain(r)).toEqual([1, 2]);
  });

  it("skips a refused push, counts it as processed, and lists it in acks", () => {
    const r = new DeviceReceiver(0);
    give(r, 1, false);
    give(r, 2);
    expect(r.next()?.seq).toBe(2);
    expect(r.hwm).toBe(1);
    r.processed(2);
    expect(r.ack()).toEqual({ cumulative: 2, ranges: [], rejected: [1] });
    // a later settle cannot change the outcome of a settled push
    give(r, 3, false);
    r.settle(3, true);
    expect(r.next()).toBeUndefined();
    expect(r.hwm).toBe(3);
    expect(r.ack().rejected).toEqual([1, 3]);
  });

  it("repeats the latest 64 refusals in acks", () => {
    const r = new DeviceReceiver(0);
    for (let s = 1; s <= 70; s++) give(r, s, false);
    expect(r.next()).toBeUndefined();
    expect(r.hwm).toBe(70);
    const rejected = r.ack().rejected;
    expect(rejected).toHaveLength(64);
    expect(rejected[0]).toBe(7);
    expect(rejected[63]).toBe(70);
  });

  it("passes over a tombstone without handing it on or verifying it", () => {
    const r = new DeviceReceiver(0);
    expect(r.accept(push(1, { expired: true, payload: new Uint8Array(0) }))).toBe("new");
    expect(r.pending(1)).toBe(false);
    give(r, 2);
    expect(drain(r)).toEqual([2]);
    expect(r.hwm).toBe(2);
    expect(r.ack()).toEqual({ cumulative: 2, ranges: [], rejected: [] });
  });

  it("settle of a seq it does not hold does nothing", () => {
    const r = new DeviceReceiver(5);
    r.settle(6, true);
    expect(r.next()).toBeUndefined();
    expect(r.hwm).toBe(5);
  });

  it("serverAcked moves hwm up to the server's view and drops what it covers", () => {
    const r = new DeviceReceiver(2);
    give(r, 4);
    give(r, 5);
    give(r, 7);
    expect(r.serverAcked(1)).toBe(false);
    expect(r.serverAcked(2)).toBe(false);
    expect(r.serverAcked(5)).toBe(true);
    expect(r.hwm).toBe(5);
    expect(r.heldCount).toBe(1);
    expect(r.accept(push(4))).toBe("duplicate");
    give(r, 6);
    expect(drain(r)).toEqual([6, 7]);
  });

  it("serverAcked past the push with the application forgets it", () => {
    const r = new DeviceReceiver(0);
    give(r, 1);
    give(r, 2);
    expect(r.next()?.seq).toBe(1);
    expect(r.serverAcked(1)).toBe(true);
    // the one with the application is no longer current: the next is handed over
    expect(r.next()?.seq).toBe(2);
    r.processed(1);
    expect(r.hwm).toBe(1);
    r.processed(2);
    expect(r.hwm).toBe(2);
  });

  it("refuses to hold more than maxHeld pushes far ahead, but always takes the ones it needs", () => {
    const r = new DeviceReceiver(0, { maxHeld: 2 });
    expect(r.accept(push(3))).toBe("new");
    expect(r.accept(push(4))).toBe("new");
    expect(r.accept(push(5))).toBe("overflow");
    expect(r.heldCount).toBe(2);
    // not acked: the server sends it again
    expect(r.ack().ranges).toEqual([{ first: 3, last: 4 }]);
    expect(r.accept(push(1))).toBe("new");
    expect(r.accept(push(2))).toBe("new");
    r.settle(1, true);
    r.settle(2, true);
    r.settle(3, true);
    r.settle(4, true);
    expect(drain(r)).toEqual([1, 2, 3, 4]);
    expect(r.accept(push(5))).toBe("new");
  });

  it("contiguous: false while a seq is missing below a held one, true again once it arrives or hwm passes it", () => {
    const r = new DeviceReceiver(0);
    const p = (seq: number) => ({ ...push(seq), expired: true });
    expect(r.contiguous).toBe(true);
    expect(r.accept(p(1))).toBe("new");
    expect(r.contiguous).toBe(true);
    expect(r.accept(p(3))).toBe("new");
    expect(r.contiguous).toBe(false);
    expect(r.accept(p(2))).toBe("new");
    expect(r.contiguous).toBe(true);
    expect(r.next()).toBeUndefined(); // tombstones: consumed on the way
    expect(r.hwm).toBe(3);
    expect(r.accept(p(5))).toBe("new");
    expect(r.contiguous).toBe(false);
    r.serverAcked(5);
    expect(r.contiguous).toBe(true);
    r.reset(0);
    expect(r.contiguous).toBe(true);
  });
});
