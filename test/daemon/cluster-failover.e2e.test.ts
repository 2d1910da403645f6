/**
 * `kill -9` of the node holding a device in the middle of a stream of pushes,
 * three `dtlspush serve` nodes on one real redis-server: the device (the SDK
 * given [B, A], each through a path losing 30% of the datagrams both ways)
 * fails over to A and receives every message answered 202, once, in order;
 * a device held by C sees nothing of it (no reconnect, nothing twice). The
 * failover time (the kill -> the first push received again) is printed.
 */
import { afterEach, expect, it } from "vitest";
import { describeRedis } from "../support/redis-server.ts";
import { startLossyProxy, type LossyProxy } from "../support/lossy-udp-proxy.ts";
import { addDevice, at, call, cleanUpCluster, device, publish, startCluster, until, type Node } from "./cluster-nodes.ts";

const proxies: LossyProxy[] = [];
afterEach(async () => {
  await cleanUpCluster();
  for (const p of proxies.splice(0)) await p.close();
});

const MESSAGES = 40;
const KILL_AFTER = 20;
/**
 * probes while idle; patient enough that 30% loss alone does not look like a dead node: a probe and
 * its answer both pass with p = 0.49, so (probes + 1) lost in a row, p = 0.51^11 = 0.06% per idle
 * second (with 6 probes it was 0.9%, and a device that thinks A dead tries the dead B for a whole
 * handshake timeout). The RTO also times the reconnect's handshake flights (the SDK's learned RTO).
 */
const LIVENESS = { idleMs: 1000, probes: 10, minRtoMs: 200, maxRtoMs: 400 };
const RECONNECT = { initialDelayMs: 100, maxDelayMs: 500 };
/**
 * Noticing the dead node takes ~3 s; the rest is the DTLS handshake with A through 30% loss, whose
 * flights wait for the handshake's doubling retransmission timer from the learned RTO: ~6 s in all.
 * An attempt at A that outlasts the SDK's 10 s timeoutMs is made once more at A (A answered), not at
 * the dead B: two of them in a row (p < 1%) still fit.
 */
const FAILOVER_BOUND_MS = 30_000;

/** A path to `n` that drops nothing until `lossy()` (the first connect is to B: `connect` tries each server once). */
async function pathTo(n: Node, seed: number): Promise<{ host: string; port: number }> {
  const p = await startLossyProxy({ target: at(n), drop: 0, seed });
  proxies.push(p);
  return { host: "127.0.0.1", port: p.port };
}

const lossy = (): void => {
  for (const p of proxies) p.setDrop(0.3);
};

describeRedis("three nodes on one Redis: failover", () => {
  it(
    "B killed mid-stream: its device continues on A with everything 202'd, once, in order (30% loss); C's device sees nothing",
    { timeout: 120_000 },
    async () => {
      const c = await startCluster(3);
      const [A, B, C] = c.nodes as [Node, Node, Node];
      await addDevice(c, "mover");
      await addDevice(c, "stay");
      const mover = await device("mover", [await pathTo(B, 7), await pathTo(A, 11)], { liveness: LIVENESS, reconnect: RECONNECT, retryMs: 300 });
      lossy();
      const stay = await device("stay", [at(C)]);
      expect((await call(c, A, "GET", "/v1/devices/mover")).json).toMatchObject({ online: true, node: B.instance });
      await publish(c, A, "stay", "stay-1");

      const sent: string[] = [];
      const receivedAt: number[] = [];
      mover.client.on("message", () => receivedAt.push(performance.now()));
      const survivors = [A, C];
      const push = async (i: number): Promise<void> => {
        const text = `m${String(i).padStart(2, "0")}`;
        await publish(c, survivors[i % 2] as Node, "mover", text);
        sent.push(text);
        // a stream over time, not one burst: FIFO across nodes holds to the millisecond of the
        // publishing nodes' clocks (delivery.md section 18), so two nodes' publishes are a few ms apart
        await new Promise((r) => setTimeout(r, 10));
      };
      for (let i = 0; i < KILL_AFTER; i++) await push(i);
      await until(
        () => mover.got.length >= KILL_AFTER / 2,
        15_000,
        () => `mover got ${mover.got.length} before the kill`,
      );

      const killedAt = performance.now();
      B.child.kill("SIGKILL");
      await B.exited;
      const before = receivedAt.length;
      for (let i = KILL_AFTER; i < MESSAGES; i++) await push(i);
      await until(
        () => mover.got.length >= MESSAGES,
        FAILOVER_BOUND_MS + 5000,
        () => `mover got ${mover.got.length}/${MESSAGES} (sessions ${mover.ups}; ${mover.trace()}): ${JSON.stringify(mover.texts())}`,
      );
      const failoverMs = (receivedAt[before] ?? Number.NaN) - killedAt;
      console.log(
        `failover: kill -9 of the holding node -> first push received again on the next node: ${failoverMs.toFixed(0)} ms (liveness ${JSON.stringify(LIVENESS)}, 30% loss)`,
      );

      expect(mover.texts()).toEqual(sent); // every 202, once, in publish order
      expect(mover.downs).toBeGreaterThanOrEqual(1);
      expect((await call(c, C, "GET", "/v1/devices/mover")).json).toMatchObject({ online: true, node: A.instance });
      // the last acks reach A through the lossy path: then nothing is left queued for it, as any node sees.
      // A lost last ack waits for A's retransmission, each one a 49% chance through 30% loss both ways, at
      // RTO x 2^n up to 10 s: 60 s gives at least 7 (1 s RTO), and all of them fail with p < 1%
      await until(
        async () => (await call(c, C, "GET", "/v1/devices/mover")).json.queueDepth === 0,
        60_000,
        () => `mover's queue acked (${mover.trace()})`,
      );

      // C's device: nothing happened to it; one more message shows nothing arrives twice
      await publish(c, A, "stay", "stay-2");
      await until(
        () => stay.got.length >= 2,
        10_000,
        () => `stay got ${JSON.stringify(stay.texts())}`,
      );
      expect(stay.texts()).toEqual(["stay-1", "stay-2"]);
      expect(stay.downs).toBe(0);
      expect(stay.ups).toBe(1);
      expect(failoverMs).toBeLessThan(FAILOVER_BOUND_MS);
    },
  );
});
