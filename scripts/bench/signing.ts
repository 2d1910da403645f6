/**
 * `node scripts/bench/signing.ts [--workers N] [--count N] [--per-turn N] [--rate N]`:
 * what content signing costs the event loop, on the main thread vs through
 * the worker pool, side by side in one run. Not a test: prints figures.
 *
 * Each mode runs a burst of COUNT publishes offered at RATE per second,
 * PER_TURN together in one event-loop turn (a timer), twice:
 *  - "sign": the signer alone (ContentSigner.sign), the cost of the signature;
 *  - "publish": the whole in-process publish (push server, memory store, 10
 *    registered devices offline), i.e. what a publish costs with each signer.
 * Per publish: main-thread CPU (process.threadCpuUsage over the burst / COUNT),
 * wall latency from the call to its resolution (p50, p99), and the event-loop
 * delay p99 (perf_hooks.monitorEventLoopDelay, 1 ms resolution) during the burst.
 */
import { availableParallelism } from "node:os";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { KeyRing, mainThreadSigner, SigningPool, type ContentSigner, type SignedFields } from "../../src/auth/index.ts";
import { startPushServer } from "../../src/daemon/push-server.ts";
import { openMemoryStore } from "../../src/store/index.ts";

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(name);
  return i < 0 ? def : Number(process.argv[i + 1]);
}
const WORKERS = arg("--workers", Math.max(1, availableParallelism() - 1));
const COUNT = arg("--count", 5000);
const PER_TURN = arg("--per-turn", 50);
/** offered publishes per second: below what one core signs, so latency is the cost, not a queue */
const RATE = arg("--rate", 10_000);
const DEVICES = 10;
const payload = new Uint8Array(100).fill(0x61);

interface Figures {
  cpuUs: number;
  p50Ms: number;
  p99Ms: number;
  eldP99Ms: number;
  totalMs: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** COUNT calls of `op`, PER_TURN per turn; resolves with the figures once all resolved. */
async function burst(op: (i: number) => Promise<unknown>): Promise<Figures> {
  const latencies: number[] = [];
  const eld = monitorEventLoopDelay({ resolution: 1 });
  const cpu0 = process.threadCpuUsage();
  const t0 = performance.now();
  eld.enable();
  const all: Promise<unknown>[] = [];
  await new Promise<void>((resolve) => {
    let issued = 0;
    const turn = (): void => {
      for (let k = 0; k < PER_TURN && issued < COUNT; k++, issued++) {
        const start = performance.now();
        all.push(op(issued).then(() => void latencies.push(performance.now() - start)));
      }
      if (issued >= COUNT) resolve();
      // the next PER_TURN at their offered time (absolute, so a late turn does not slow the rate)
      else setTimeout(turn, Math.max(0, t0 + (issued / RATE) * 1000 - performance.now()));
    };
    turn();
  });
  await Promise.all(all);
  eld.disable();
  const totalMs = performance.now() - t0;
  const cpu = process.threadCpuUsage(cpu0);
  latencies.sort((a, b) => a - b);
  return {
    cpuUs: (cpu.user + cpu.system) / COUNT,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    eldP99Ms: eld.percentile(99) / 1e6,
    totalMs,
  };
}

function fields(i: number): SignedFields {
  const now = Date.now();
  return {
    messageId: `bench-${i}`,
    topic: "",
    device: `dev-${i % DEVICES}`,
    contentType: "",
    publisher: "bench",
    collapseKey: "",
    payload,
    createdAt: now,
    expiresAt: now + 60_000,
    priority: 5,
  };
}

async function signOnly(signer: ContentSigner): Promise<Figures> {
  await burst((i) => signer.sign(fields(i))); // warm-up
  return burst((i) => signer.sign(fields(i)));
}

async function publishes(workers: number): Promise<Figures> {
  const server = await startPushServer({
    store: openMemoryStore(),
    dtls: { host: "127.0.0.1", port: 0 },
    signingWorkers: workers,
    delivery: { maxQueue: 100_000 },
  });
  try {
    for (let d = 0; d < DEVICES; d++)
      await server.registry.upsert({ id: `dev-${d}`, psk: { identity: `dev-${d}`, key: new TextEncoder().encode(`bench-key-${d}`) } });
    const op = (i: number): Promise<unknown> => server.publish({ target: { device: `dev-${i % DEVICES}` }, payload, publisher: "bench" });
    await burst(op); // warm-up
    return await burst(op);
  } finally {
    await server.close();
  }
}

const storage = new Map<string, string>();
const ring = await KeyRing.open(
  { getSetting: (k) => Promise.resolve(storage.get(k)), putSetting: (k, v) => Promise.resolve(void storage.set(k, v)) },
  "content",
);
const pool = await SigningPool.start(ring, WORKERS);
const rows: [string, Figures, Figures][] = [];
try {
  rows.push(["sign", await signOnly(mainThreadSigner(ring)), await signOnly(pool)]);
} finally {
  await pool.close();
}
rows.push(["publish", await publishes(0), await publishes(WORKERS)]);

const f = (n: number, d = 1): string => n.toFixed(d);
const ratio = (a: number, b: number): string => (b === 0 ? "-" : `${(a / b).toFixed(2)}x`);
console.log(
  `content signing, Ed25519: ${COUNT} publishes offered at ${RATE}/s, ${PER_TURN} per event-loop turn; pool of ${WORKERS} worker(s), ${availableParallelism()} cores, node ${process.version}`,
);
console.log("what        figure                              main thread     pool   main/pool");
for (const [what, m, p] of rows) {
  console.log(
    `${what.padEnd(11)} main-thread CPU per publish, µs      ${f(m.cpuUs).padStart(11)} ${f(p.cpuUs).padStart(8)}   ${ratio(m.cpuUs, p.cpuUs)}`,
  );
  console.log(
    `${"".padEnd(11)} latency p50, ms                     ${f(m.p50Ms, 2).padStart(11)} ${f(p.p50Ms, 2).padStart(8)}   ${ratio(m.p50Ms, p.p50Ms)}`,
  );
  console.log(
    `${"".padEnd(11)} latency p99, ms                     ${f(m.p99Ms, 2).padStart(11)} ${f(p.p99Ms, 2).padStart(8)}   ${ratio(m.p99Ms, p.p99Ms)}`,
  );
  console.log(
    `${"".padEnd(11)} event-loop delay p99, ms            ${f(m.eldP99Ms, 2).padStart(11)} ${f(p.eldP99Ms, 2).padStart(8)}   ${ratio(m.eldP99Ms, p.eldP99Ms)}`,
  );
  console.log(
    `${"".padEnd(11)} burst wall time, ms                 ${f(m.totalMs, 0).padStart(11)} ${f(p.totalMs, 0).padStart(8)}   ${ratio(m.totalMs, p.totalMs)}`,
  );
}
