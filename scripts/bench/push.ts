/**
 * `npm run bench:push`: end-to-end push figures on loopback. The push server
 * (SQLite store in a temporary directory) and the devices (the SDK over our
 * DTLS client) share this process, so the figures include both sides' CPU.
 * Not a test: prints figures, never fails on a threshold. Bounded in count and
 * time; traffic stays on 127.0.0.1.
 *
 *  1. Sustained: D devices, M pushes each, published as fast as publishes
 *     complete -> acked pushes per second.
 *  2. Paced: one push at a time -> p50/p99 publish-to-ack latency (publish
 *     call to the engine's "delivered" receipt, i.e. the device's ack committed).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../../src/store/index.ts";
import { startPushServer } from "../../src/daemon/push-server.ts";
import { connect, type DtlspushClient } from "../../src/client/index.ts";

const quick = process.argv.includes("--quick");
const DEVICES = quick ? 20 : 100;
const PER_DEVICE = quick ? 50 : 200;
const PACED = quick ? 200 : 1000;
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const payload = new Uint8Array(100).fill(0x61);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

const dir = mkdtempSync(join(tmpdir(), "dtlspush-bench-"));
const store = await openStore({ kind: "sqlite", path: join(dir, "bench.db") });
const server = await startPushServer({ store, dtls: { host: "127.0.0.1", port: 0 }, delivery: { maxQueue: 100_000 } });
const clients: DtlspushClient[] = [];
try {
  const port = server.address().port;
  const ids = Array.from({ length: DEVICES }, (_, i) => `bench-${i}`);
  for (const id of ids) await server.registry.upsert({ id, psk: { identity: id, key: enc(`bench-key-${id}`) } });
  for (const id of ids) clients.push(await connect({ host: "127.0.0.1", port, psk: { identity: id, key: enc(`bench-key-${id}`) } }));
  let received = 0;
  for (const c of clients) c.on("message", () => received++);
  const sentAt = new Map<string, number>();
  const latencies: number[] = [];
  let delivered = 0;
  server.engine.on("receipt", (r) => {
    if (r.state !== "delivered") return;
    delivered++;
    const t = sentAt.get(r.messageId);
    if (t !== undefined) latencies.push(performance.now() - t);
  });

  // 1. sustained
  const total = DEVICES * PER_DEVICE;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const deadline = Date.now() + 120_000;
  for (let k = 0; k < PER_DEVICE && Date.now() < deadline; k++) {
    await Promise.all(ids.map((id) => server.publish({ target: { device: id }, payload, publisher: "bench" })));
  }
  while (delivered < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  console.log(`sustained: ${DEVICES} devices x ${PER_DEVICE} pushes of 100 bytes, SQLite store`);
  console.log(`  acked pushes per second                 ${(delivered / secs).toFixed(0)}`);
  console.log(`  process CPU per acked push (both sides)  ${((cpu.user + cpu.system) / delivered).toFixed(0)} µs`);
  console.log(`  received by the devices                 ${received} of ${total}`);

  // 2. paced latency
  delivered = 0;
  for (let i = 0; i < PACED && Date.now() < deadline + 60_000; i++) {
    const id = ids[i % ids.length] as string;
    const start = performance.now();
    const p = server.publish({ target: { device: id }, payload, publisher: "bench" });
    const r = await p;
    sentAt.set(r.messageId, start);
    const before = delivered;
    while (delivered === before && Date.now() < deadline + 60_000) await new Promise((res) => setImmediate(res));
  }
  latencies.sort((a, b) => a - b);
  console.log(`paced: ${latencies.length} pushes one at a time`);
  console.log(`  publish-to-ack p50                      ${percentile(latencies, 50).toFixed(2)} ms`);
  console.log(`  publish-to-ack p99                      ${percentile(latencies, 99).toFixed(2)} ms`);
} finally {
  await Promise.all(clients.map((c) => c.close()));
  await server.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
