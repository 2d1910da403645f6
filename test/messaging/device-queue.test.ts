import { describe, expect, it } from "vitest";
import { assignSeq, DeviceQueue, loadSent, pendingEntry, receiptSeq, toTombstone } from "../../src/messaging/device-queue.ts";
import { bindLink, isOpen, moveLink, newLink } from "../../src/messaging/link-state.ts";
import { DEFAULT_RTT_OPTIONS } from "../../src/messaging/rtt-estimator.ts";
import type { SessionLink } from "../../src/messaging/delivery-engine.ts";
import type { MessageRecord } from "../../src/store/types.ts";

function message(id: string, priority = 5): MessageRecord {
  return {
    id,
    topic: "",
    device: "dev",
    payload: new Uint8Array([1]),
    contentType: "",
    createdAt: 1,
    expiresAt: 1000,
    priority,
    collapseKey: "",
    publisher: "svc",
    signature: "sig",
  };
}

describe("queue entries: pending, in flight, tombstone", () => {
  it("an entry moves forward on the same object, known to its queue throughout", () => {
    const q = new DeviceQueue("dev", DEFAULT_RTT_OPTIONS);
    const p = pendingEntry(message("m1"), q, 1);
    q.addPending(p);
    expect(p.state).toBe("pending");
    expect(receiptSeq(p)).toBe(0);
    // @ts-expect-error a pending entry has no seq: the compiler refuses to read one
    void p.seq;

    const taken = q.shiftPending();
    expect(taken).toBe(p);
    const frame = new Uint8Array([9]);
    const e = assignSeq(p, 1, frame);
    q.addInflight(e);
    expect(e).toBe(p); // no object per transition
    expect(e).toMatchObject({ state: "inflight", seq: 1, frame, transmissions: 0, dueAt: Infinity, firstSentAt: undefined });
    expect(q.byMessage.get("m1")).toBe(e);
    expect(q.inflight.get(1)).toBe(e);
    expect(receiptSeq(e)).toBe(1);

    const t = toTombstone(e);
    expect(t).toBe(e);
    expect(t).toMatchObject({ state: "tombstone", seq: 1, frame: undefined });
    q.removeInflight(t);
    expect(q.depth).toBe(0);
  });

  it("entries loaded with a seq count as sent once, at an unknown time, and are never due until sent again", () => {
    const q = new DeviceQueue("dev", DEFAULT_RTT_OPTIONS);
    const e = loadSent(message("m1"), q, 1, 7, false);
    const t = loadSent(message("m2"), q, 2, 8, true);
    q.addInflight(e);
    q.addInflight(t);
    expect(e).toMatchObject({ state: "inflight", seq: 7, transmissions: 1, firstSentAt: undefined });
    expect(t).toMatchObject({ state: "tombstone", seq: 8, transmissions: 1 });
    expect(q.nextDue()).toBeUndefined();
    t.dueAt = 500;
    e.dueAt = 700;
    expect(q.nextDue()).toBe(500);
  });
});

describe("session states", () => {
  const link: SessionLink = { identity: "i", viaCertificate: false, peer: "p", send: () => undefined, close: () => undefined };

  it("only a bound session has a device; the same object moves through hello, bound, closing, closed", () => {
    const q = new DeviceQueue<ReturnType<typeof bindLink>>("dev", DEFAULT_RTT_OPTIONS);
    const ls = newLink(link, "s1", 0);
    expect(ls.phase).toBe("hello");
    // @ts-expect-error a session awaiting Hello has no device: the compiler refuses to read one
    void (() => ls.device.id);
    const bound = bindLink(ls, q);
    expect(bound).toBe(ls);
    expect(bound.device.id).toBe("dev");
    expect(isOpen(bound)).toBe(true);
    const closing = moveLink(bound, "closing");
    expect(closing).toMatchObject({ phase: "closing", device: undefined });
    expect(isOpen(closing)).toBe(false);
    expect(moveLink(closing, "closed").phase).toBe("closed");
  });
});
