/**
 * What a push costs Redis on a cluster, measured with real daemons: two
 * `dtlspush serve` nodes on one real redis-server, publishes on A to devices
 * whose sessions B holds, counted from Redis's own INFO (commandstats calls,
 * total_reads_processed = the requests Redis read, net input/output bytes),
 * with the nodes' idle background (reachability PINGs, liveness refresh)
 * measured over an idle window and subtracted. Then memory: used_memory over
 * N devices registered, and over N messages queued for offline devices.
 * Prints the figures (docs/cluster.md quotes them) and bounds them.
 *
 *   npm run build && npx vitest run test/daemon/cluster-cost.e2e.test.ts
 */
import { afterEach, expect, it } from "vitest";
import { describeRedis } from "../support/redis-server.ts";
import {
  addDevice,
  at,
  call,
  cleanUpCluster,
  device,
  publish,
  publishTopic,
  startCluster,
  until,
  type Cluster,
  type Device,
  type Node,
} from "./cluster-nodes.ts";

afterEach(cleanUpCluster);

interface Counts {
  /** every command Redis ran, those run by scripts included */
  readonly commands: number;
  /** scripts run (EVALSHA): the store's requests, besides a few plain reads */
  readonly scripts: number;
  readonly reads: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly at: number;
}

type RedisClient = Awaited<ReturnType<Cluster["redis"]["client"]>>;

function field(info: string, name: string): number {
  const m = new RegExp(`^${name}:(\\d+)`, "m").exec(info);
  return m === null ? 0 : Number(m[1]);
}

/** Redis's counters now (the INFO calls themselves are taken out of the commands). */
async function counts(r: RedisClient): Promise<Counts> {
  const stats = await r.info("stats");
  const commandstats = await r.info("commandstats");
  let commands = 0;
  let scripts = 0;
  for (const m of commandstats.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)) {
    if (m[1] !== "info") commands += Number(m[2]);
    if (m[1] === "evalsha" || m[1] === "eval") scripts += Number(m[2]);
  }
  return {
    commands,
    scripts,
    reads: field(stats, "total_reads_processed"),
    bytesIn: field(stats, "total_net_input_bytes"),
    bytesOut: field(stats, "total_net_output_bytes"),
    at: performance.now(),
  };
}

const delta = (a: Counts, b: Counts) => ({
  commands: b.commands - a.commands,
  scripts: b.scripts - a.scripts,
  reads: b.reads - a.reads,
  bytesIn: b.bytesIn - a.bytesIn,
  bytesOut: b.bytesOut - a.bytesOut,
  ms: b.at - a.at,
});
type Delta = ReturnType<typeof delta>;

/** `d` less the idle background for as long as `d` took; per `n`. */
function per(d: Delta, idle: Delta, n: number): { commands: number; scripts: number; reads: number; bytesIn: number; bytesOut: number } {
  const k = d.ms / idle.ms;
  // the INFO round trips of the measurement: 2 requests before, 2 after (their reads and input bytes)
  const infoReads = 2;
  const f = (x: number, y: number): number => Math.round(((x - k * y) / n) * 100) / 100;
  return {
    commands: f(d.commands, idle.commands),
    scripts: f(d.scripts, idle.scripts),
    reads: f(d.reads - infoReads, idle.reads - infoReads),
    bytesIn: f(d.bytesIn, idle.bytesIn),
    bytesOut: f(d.bytesOut, idle.bytesOut),
  };
}

const queueEmpty = async (c: Cluster, n: Node, id: string): Promise<boolean> => (await call(c, n, "GET", `/v1/devices/${id}`)).json.queueDepth === 0;

describeRedis("what a push costs Redis on a cluster (real daemons)", () => {
  it("round trips and bytes per push and per fan-out recipient; memory per device and per queued message", { timeout: 55_000 }, async () => {
    const c = await startCluster(2);
    const [A, B] = c.nodes as [Node, Node];
    const r = await c.redis.client();
    try {
      const FANOUT = 10;
      await addDevice(c, "d1");
      for (let i = 0; i < FANOUT; i++) await addDevice(c, `s${i}`, ["news"]);
      const d1 = await device("d1", [at(B)]);
      const subs: Device[] = [];
      for (let i = 0; i < FANOUT; i++) subs.push(await device(`s${i}`, [at(i % 2 === 0 ? A : B)]));

      // the idle background of two nodes (PINGs every second, liveness refresh) over 3 s
      const i0 = await counts(r);
      await new Promise((res) => setTimeout(res, 3000));
      const idle = delta(i0, await counts(r));

      // unicast: published on A, held by B, sent and acked; one at a time (each push alone in its turns)
      const PUSHES = 60;
      const payload = "x".repeat(100);
      const u0 = await counts(r);
      for (let i = 0; i < PUSHES; i++) {
        await publish(c, A, "d1", payload);
        await until(
          () => d1.got.length > i,
          5000,
          () => `push ${i}`,
        );
      }
      await until(
        () => queueEmpty(c, B, "d1"),
        5000,
        () => "the last ack",
      );
      const unicast = per(delta(u0, await counts(r)), idle, PUSHES);

      // fan-out: a topic with subscribers on both nodes, published on A
      const TOPIC_PUBS = 10;
      const f0 = await counts(r);
      for (let i = 0; i < TOPIC_PUBS; i++) {
        await publishTopic(c, A, "news", payload);
        await until(
          () => subs.every((s) => s.got.length > i),
          5000,
          () => `topic publish ${i}`,
        );
      }
      await until(
        async () => (await Promise.all(subs.map((_, i) => queueEmpty(c, i % 2 === 0 ? A : B, `s${i}`)))).every(Boolean),
        5000,
        () => "the last acks",
      );
      const fanout = per(delta(f0, await counts(r)), idle, TOPIC_PUBS * FANOUT);

      // memory: N devices registered (PSK, no topics), then one 100-byte message queued for each (offline)
      const N = 300;
      const m0 = field(await r.info("memory"), "used_memory");
      for (let i = 0; i < N; i++) await addDevice(c, `mem${i}`);
      const m1 = field(await r.info("memory"), "used_memory");
      const entries = Array.from({ length: N }, (_, i) => ({ device: `mem${i}`, payload }));
      const batch = await call(c, A, "POST", "/v1/messages", { messages: entries });
      expect(batch.status).toBe(202);
      const m2 = field(await r.info("memory"), "used_memory");
      const perDevice = Math.round((m1 - m0) / N);
      const perMessage = Math.round((m2 - m1) / N);

      console.log(
        [
          "Redis cost on a cluster of 2 daemons (publish on A, device held by B; idle background subtracted):",
          `  unicast push (publish -> delivered -> acked), per push: ${unicast.scripts} scripts, ${unicast.commands} commands run (scripts' own included), ${unicast.reads} round trips (requests read by Redis), ${unicast.bytesIn} bytes to Redis, ${unicast.bytesOut} bytes from Redis`,
          `  topic fan-out (${FANOUT} subscribers over both nodes), per recipient: ${fanout.scripts} scripts, ${fanout.commands} commands run, ${fanout.reads} round trips, ${fanout.bytesIn} bytes to Redis, ${fanout.bytesOut} bytes from Redis`,
          `  memory: ${perDevice} bytes per device (PSK, no topic), ${perMessage} bytes per queued message (100-byte payload, queued receipt) over ${N}`,
        ].join("\n"),
      );
      // loose bounds: a publish is a few pipelined scripts, not a command per field
      expect(unicast.reads).toBeLessThan(12);
      expect(unicast.scripts).toBeLessThan(12);
      expect(fanout.reads).toBeLessThan(unicast.reads);
      expect(perMessage).toBeGreaterThan(100);
      expect(perDevice).toBeGreaterThan(100);
    } finally {
      await r.close();
    }
  });
});
