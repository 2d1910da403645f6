import { describe, expect, it } from "vitest";
import { captureServerReceives, captureServerSends, connected, enc, publishTo, pushes, receiptTrail, untilDelivered } from "./helpers.ts";
import { World, type NetworkConditions } from "./world.ts";

/** a long heartbeat, so that a silent device stays online for these tests */
const QUIET = { heartbeatIntervalMs: 3_600_000 };
const fixed = (oneWay: number): NetworkConditions => ({ loss: 0, duplicate: 0, reorder: 0, latency: [oneWay, oneWay] });

function gaps(times: readonly number[]): number[] {
  return times.slice(1).map((t, i) => t - (times[i] as number));
}

/** Asserts that `gap` is `base` spread by +-20 % jitter (1 ms rounding). */
function expectJittered(gap: number, base: number): void {
  expect(gap).toBeGreaterThanOrEqual(Math.floor(base * 0.8) - 1);
  expect(gap).toBeLessThanOrEqual(Math.ceil(base * 1.2) + 1);
}

/** SRTT + 4*RTTVAR after n equal samples r (RFC 6298), floored at 200 ms. */
function rtoAfter(n: number, r: number): number {
  const rttvar = (r / 2) * 0.75 ** (n - 1);
  return Math.max(200, r + 4 * rttvar);
}

/** Times at which the server sent seq `seq` to `device`. */
function sendTimes(sent: Parameters<typeof pushes>[0], device: string, seq: number): number[] {
  return pushes(sent, device)
    .filter((c) => c.frame.push.seq === seq)
    .map((c) => c.at);
}

describe("retransmission timing", () => {
  it("backs off from scratch once the device makes progress: a push whose copies were lost does not wait out its backoff", async () => {
    const w = await World.create({ options: QUIET });
    const d = w.addDevice("dev");
    await connected(w, d);
    const seen = new Map<number, number>();
    // the first 4 copies of seq 1 and the first 5 of seq 2 are lost: their timeouts grow 1, 2, 4, 8 s (+-20 %)
    d.dropIncoming = (f) => {
      if (f.kind !== "push") return false;
      const n = (seen.get(f.push.seq) ?? 0) + 1;
      seen.set(f.push.seq, n);
      return n <= (f.push.seq === 1 ? 4 : 5);
    };
    const t0 = w.clock.now();
    await publishTo(w, "dev", "m1");
    await publishTo(w, "dev", "m2");
    await untilDelivered(w, d, 1);
    const firstAt = w.clock.now() - t0;
    expect(firstAt).toBeGreaterThan(11_000); // 5th copy: 1 + 2 + 4 + 8 s, jittered
    await untilDelivered(w, d, 2);
    // seq 1's ack restarted seq 2's backoff at the initial RTO (1 s), instead of its 10 s step
    expect(w.clock.now() - t0 - firstAt).toBeLessThan(4_000);
    expect(d.payloads()).toEqual(["m1", "m2"]);
  });

  it("to a device that never acks: initial RTO 1 s, doubling, capped at 60 s, byte-identical", async () => {
    const w = await World.create({ options: QUIET });
    const d = w.addDevice("dev");
    await connected(w, d);
    d.mute = true;
    const sent = captureServerSends(w);
    await publishTo(w, "dev", "m1");
    await w.run(400_000);
    const copies = pushes(sent, "dev").filter((c) => c.frame.push.seq === 1);
    // 1+2+4+8+16+32 s, then every 60 s: 11 or 12 transmissions in 400 s
    expect(copies.length).toBeGreaterThanOrEqual(10);
    const g = gaps(copies.map((c) => c.at));
    g.forEach((gap, i) => expectJittered(gap, Math.min(10_000, 1000 * 2 ** i)));
    // the jitter is really random: not every gap sits at its base
    expect(new Set(g.slice(6)).size).toBeGreaterThan(1);
    const first = copies[0]?.bytes;
    for (const c of copies) expect(c.bytes).toEqual(first);
    expect(copies[0]?.frame.push.payload).toEqual(enc("m1"));
    // nothing else was pushed meanwhile, and the message was never given up
    expect(pushes(sent, "dev").every((c) => c.frame.push.seq === 1 && !c.frame.push.expired)).toBe(true);
    expect(w.engine.deviceStatus("dev")).toMatchObject({ online: true, queueDepth: 1, lastSeq: 1, ackedSeq: 0 });
  });

  for (const rtt of [50, 300]) {
    it(`after RTT samples of ${rtt} ms the first retransmission waits max(200 ms, SRTT + 4*RTTVAR), then doubles`, async () => {
      const w = await World.create({ net: fixed(rtt / 2), options: QUIET });
      const d = w.addDevice("dev");
      await connected(w, d);
      const samples = 3;
      for (let i = 1; i <= samples; i++) {
        await publishTo(w, "dev", `warm${i}`);
        await w.run(10_000, () => w.engine.deviceStatus("dev").ackedSeq === i);
        expect(w.engine.deviceStatus("dev").ackedSeq).toBe(i);
      }
      d.mute = true;
      const sent = captureServerSends(w);
      await publishTo(w, "dev", "probe");
      await w.run(20_000);
      const times = sendTimes(sent, "dev", samples + 1);
      expect(times.length).toBeGreaterThanOrEqual(4);
      const rto = rtoAfter(samples, rtt);
      const g = gaps(times);
      expectJittered(g[0] as number, rto);
      expectJittered(g[1] as number, 2 * rto);
      expectJittered(g[2] as number, 4 * rto);
    });
  }

  it("Karn: an ack of a retransmitted push gives no RTT sample", async () => {
    const w = await World.create({ net: fixed(25), options: QUIET });
    const d = w.addDevice("dev");
    await connected(w, d);
    // the first transmission of seq 1 is lost; the retransmission (after ~1 s) is acked 50 ms later
    let dropped = 0;
    d.tamper = (p) => (p.seq === 1 && dropped++ === 0 ? undefined : p);
    const sent = captureServerSends(w);
    await publishTo(w, "dev", "m1");
    await untilDelivered(w, d, 1);
    await w.run(1000, () => w.engine.deviceStatus("dev").ackedSeq === 1);
    expect(w.engine.deviceStatus("dev").ackedSeq).toBe(1);
    expect(sendTimes(sent, "dev", 1)).toHaveLength(2);
    // had that ack counted as a 50 ms sample, the RTO would be 200 ms; it is still the initial 1 s
    d.mute = true;
    await publishTo(w, "dev", "m2");
    await w.run(5000);
    const g = gaps(sendTimes(sent, "dev", 2));
    expectJittered(g[0] as number, 1000);
  });
});

describe("expiry of a push in flight", () => {
  it("is retransmitted until it expires, then becomes a tombstone the device passes over", async () => {
    const w = await World.create({ options: QUIET });
    const d = w.addDevice("dev");
    await connected(w, d);
    // a partition: no push reaches the device and nothing comes back
    d.mute = true;
    d.dropIncoming = (f) => f.kind === "push";
    const sent = captureServerSends(w);
    const m1 = await publishTo(w, "dev", "m1", { ttlSeconds: 600 });
    await w.run(m1.expiresAt - w.clock.now() - 1);
    const times = sendTimes(sent, "dev", 1);
    // 1+2+4+8+16+32 s, then every 60 s (+-20 %) until the expiry
    expect(times.length).toBeGreaterThanOrEqual(13);
    for (const gap of gaps(times)) expect(gap).toBeLessThanOrEqual(72_001);
    expect(times[times.length - 1]).toBeGreaterThanOrEqual(m1.expiresAt - 72_001);
    expect(receiptTrail(w, m1.messageId)).toEqual(["queued@0", "sent@1"]);

    await w.run(10_000);
    expect(receiptTrail(w, m1.messageId)).toEqual(["queued@0", "sent@1", "expired/ttl@1"]);
    expect(w.receiptsOf(m1.messageId)[2]?.at).toBe(m1.expiresAt);
    const tombstones = pushes(sent, "dev").filter((c) => c.frame.push.expired);
    // sent at the expiry, and again until acked (1 s, 2 s, 4 s ...)
    expect(tombstones[0]?.at).toBe(m1.expiresAt);
    expect(tombstones.length).toBeGreaterThanOrEqual(3);
    for (const t of tombstones) {
      expect(t.frame.push).toMatchObject({ seq: 1, messageId: m1.messageId, expired: true, topic: "", signature: "" });
      expect(t.frame.push.payload).toHaveLength(0);
      expect(t.bytes).toEqual(tombstones[0]?.bytes);
    }
    // the message itself is never sent after its expiry
    const realCopies = pushes(sent, "dev").filter((c) => c.frame.push.seq === 1 && !c.frame.push.expired);
    expect(Math.max(...realCopies.map((c) => c.at))).toBeLessThan(m1.expiresAt);

    // the partition heals
    d.mute = false;
    d.dropIncoming = undefined;
    await w.run(60_000, () => w.engine.deviceStatus("dev").queueDepth === 0);
    expect(w.engine.deviceStatus("dev")).toMatchObject({ queueDepth: 0, lastSeq: 1, ackedSeq: 1 });
    expect(d.hwm).toBe(1);
    expect(d.delivered).toEqual([]);
    expect(d.rejected).toEqual([]);
    // no "delivered" for an expired message
    expect(receiptTrail(w, m1.messageId)).toEqual(["queued@0", "sent@1", "expired/ttl@1"]);

    const m2 = await publishTo(w, "dev", "m2");
    await untilDelivered(w, d, 1);
    expect(d.delivered.map((x) => [x.seq, x.payload])).toEqual([[2, "m2"]]);
    await w.run(5000, () => w.engine.deviceStatus("dev").queueDepth === 0);
    expect(receiptTrail(w, m2.messageId)).toEqual(["queued@0", "sent@2", "delivered@2"]);
  });
});

describe("the in-flight window", () => {
  for (const seed of [1, 2]) {
    it(`never has more than window pushes unacknowledged (lossy network, seed ${seed})`, async () => {
      const window = 4;
      const w = await World.create({
        net: { loss: 0.2, duplicate: 0.1, reorder: 0.2, latency: [2, 40] },
        seed,
        options: { window },
      });
      const d = w.addDevice("dev");
      await connected(w, d);
      const sent = captureServerSends(w);
      const received = captureServerReceives(w);
      const n = 30;
      for (let i = 1; i <= n; i++) await publishTo(w, "dev", `m${i}`);
      await untilDelivered(w, d, n);
      expect(d.payloads()).toEqual(Array.from({ length: n }, (_, i) => `m${i + 1}`));
      // replay both directions in the order they happened
      const events = [...sent, ...received].sort((a, b) => a.order - b.order);
      let acked = 0;
      let highest = 0;
      let fullest = 0;
      for (const e of events) {
        if (e.frame.kind === "ack") acked = Math.max(acked, e.frame.ack.cumulative);
        else if (e.frame.kind === "hello") acked = Math.max(acked, e.frame.hello.receivedSeq);
        else if (e.frame.kind === "push") {
          const seq = e.frame.push.seq;
          expect(seq, `seq ${seq} sent while the server knew acks up to ${acked}`).toBeLessThanOrEqual(acked + window);
          highest = Math.max(highest, seq);
          fullest = Math.max(fullest, highest - acked);
        }
      }
      // the window was used to the full
      expect(fullest).toBe(window);
      expect(highest).toBe(n);
    });
  }
});
