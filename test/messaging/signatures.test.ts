import { describe, expect, it } from "vitest";
import { KeyRing, signContent } from "../../src/auth/index.ts";
import { openMemoryStore } from "../../src/store/index.ts";
import type { Push } from "../../src/wire/index.ts";
import { captureServerReceives, connected, enc, publishTo, receiptTrail, untilDelivered } from "./helpers.ts";
import { T0, World } from "./world.ts";

const b64url = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString("base64url");

interface Case {
  readonly name: string;
  /**
   * Prepares the attacker: a rewrite of every push on its way to the device
   * (it changes only seq 2, the second of the messages m1, m2, m3 published
   * right after, at the current time).
   */
  readonly attacker: (w: World) => Promise<(p: Push) => Push>;
}

const onSeq2 =
  (change: (p: Push) => Push) =>
  (p: Push): Push =>
    p.seq === 2 ? change(p) : p;

/** Seq 2 (message "m2", published now) carries a signature over its very content by `other`'s key. */
async function signedByUnknownKey(w: World, other: KeyRing): Promise<(p: Push) => Push> {
  const now = w.clock.now();
  const forged = await signContent(other, {
    messageId: "m2",
    topic: "",
    device: "dev",
    contentType: "",
    publisher: "test",
    collapseKey: "",
    payload: enc("m2"),
    createdAt: now,
    expiresAt: now + 86_400_000,
    priority: 5,
  });
  return onSeq2((p) => ({ ...p, signature: forged }));
}

const cases: Case[] = [
  { name: "payload changed", attacker: async () => onSeq2((p) => ({ ...p, payload: enc("evil") })) },
  { name: "topic changed", attacker: async () => onSeq2((p) => ({ ...p, topic: "other" })) },
  { name: "expiry extended", attacker: async () => onSeq2((p) => ({ ...p, expiresAt: p.expiresAt + 86_400_000 })) },
  { name: "priority changed", attacker: async () => onSeq2((p) => ({ ...p, priority: 9 })) },
  {
    name: "the signature of another message",
    attacker: async () => {
      let first = "";
      return (p) => {
        if (p.seq === 1) first = p.signature;
        return p.seq === 2 ? { ...p, signature: first } : p;
      };
    },
  },
  {
    name: "signed over the very same content by a key the device does not know (unknown kid)",
    attacker: async (w) => {
      const other = await KeyRing.open(openMemoryStore(), "content", { now: T0 });
      expect(other.currentKid).not.toBe(w.contentKeys.currentKid);
      return signedByUnknownKey(w, other);
    },
  },
  {
    name: "alg none",
    attacker: async (w) => onSeq2((p) => ({ ...p, signature: `${b64url({ alg: "none", kid: w.contentKeys.currentKid })}..` })),
  },
  { name: "garbage", attacker: async () => onSeq2((p) => ({ ...p, signature: "not-a-jws" })) },
];

describe("content signatures checked by the device", () => {
  for (const c of cases) {
    it(`${c.name}: never handed on, acked as rejected, receipt rejected/device_refused`, async () => {
      const w = await World.create();
      const d = w.addDevice("dev");
      await connected(w, d);
      const received = captureServerReceives(w);
      d.tamper = await c.attacker(w);
      const m1 = await publishTo(w, "dev", "m1", { id: "m1" });
      const m2 = await publishTo(w, "dev", "m2", { id: "m2" });
      const m3 = await publishTo(w, "dev", "m3", { id: "m3" });
      await untilDelivered(w, d, 2);
      await w.run(10_000, () => w.engine.deviceStatus("dev").queueDepth === 0);
      expect(d.payloads()).toEqual(["m1", "m3"]);
      expect(d.delivered.map((x) => x.seq)).toEqual([1, 3]);
      expect(d.rejected.map((r) => r.seq)).toEqual([2]);
      expect(d.hwm).toBe(3);
      const acks = received.flatMap((r) => (r.frame.kind === "ack" ? [r.frame.ack] : []));
      expect(acks.some((a) => a.cumulative >= 2 && a.rejected.includes(2))).toBe(true);
      expect(acks.every((a) => a.rejected.every((s) => s === 2))).toBe(true);
      expect(receiptTrail(w, m2.messageId)).toEqual(["queued@0", "sent@2", "rejected/device_refused@2"]);
      expect(receiptTrail(w, m1.messageId)).toEqual(["queued@0", "sent@1", "delivered@1"]);
      expect(receiptTrail(w, m3.messageId)).toEqual(["queued@0", "sent@3", "delivered@3"]);
      expect(w.engine.deviceStatus("dev")).toMatchObject({ queueDepth: 0, ackedSeq: 3 });
    });
  }
});

describe("content key rotation", () => {
  it("a device whose session began before a rotation learns the new key by a refresh and accepts its pushes", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    const oldKid = w.contentKeys.currentKid;
    const welcomes = d.welcomes.length;
    const m1 = await publishTo(w, "dev", "before", { id: "m1" });
    await untilDelivered(w, d, 1);
    const newKid = await w.contentKeys.rotate(w.clock.now());
    w.engine.keysChanged();
    expect(newKid).not.toBe(oldKid);
    const m2 = await publishTo(w, "dev", "after", { id: "m2" });
    const m3 = await publishTo(w, "dev", "after-2", { id: "m3" });
    await untilDelivered(w, d, 3);
    await w.run(10_000, () => w.engine.deviceStatus("dev").queueDepth === 0);
    expect(d.payloads()).toEqual(["before", "after", "after-2"]);
    expect(d.rejected).toEqual([]);
    // one refresh (a second Welcome on the same session) brought the new JWKS
    expect(d.welcomes.length).toBe(welcomes + 1);
    expect(d.welcomes.at(-1)?.jwks).toContain(newKid);
    expect(receiptTrail(w, m1.messageId)).toEqual(["queued@0", "sent@1", "delivered@1"]);
    expect(receiptTrail(w, m2.messageId)).toEqual(["queued@0", "sent@2", "delivered@2"]);
    expect(receiptTrail(w, m3.messageId)).toEqual(["queued@0", "sent@3", "delivered@3"]);
  });

  it("a key the refreshed JWKS does not hold either is refused after one refresh", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    const welcomes = d.welcomes.length;
    d.tamper = await signedByUnknownKey(w, await KeyRing.open(openMemoryStore(), "content", { now: T0 }));
    await publishTo(w, "dev", "m1", { id: "m1" });
    await publishTo(w, "dev", "m2", { id: "m2" });
    await publishTo(w, "dev", "m3", { id: "m3" });
    await untilDelivered(w, d, 2);
    expect(d.payloads()).toEqual(["m1", "m3"]);
    expect(d.rejected.map((r) => r.seq)).toEqual([2]);
    expect(d.welcomes.length).toBe(welcomes + 1);
  });
});
