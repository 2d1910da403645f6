import { EventEmitter } from "node:events";
import { register as globalRegistry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { connect, memoryStateStore, type DtlspushClient } from "../../src/client/index.ts";
import { createMetrics } from "../../src/daemon/metrics.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { connect as dtlsConnect, DtlsError, newResumptionRefusalCounts, newRestoreRefusalCounts, type ServerStats } from "../../src/dtls/index.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openMemoryStore, openWorkerStore } from "../../src/store/index.ts";
import { loopBatch } from "../store/fixtures/loop-batch.ts";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const KEY = enc("0123456789abcdef");

const servers: PushServer[] = [];
const clients: DtlspushClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const s of servers.splice(0)) await s.close();
});

async function waitFor(cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The value of one sample line (`name{labels} value`), or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

function emptyStats(): ServerStats {
  return {
    helloVerifyRequestsSent: 0,
    handshakesStarted: 0,
    handshakesCompleted: 0,
    handshakesFailed: 0,
    datagramsDropped: 0,
    unknownConnectionIds: 0,
    addressChanges: 0,
    addressChangesRefused: { unauthenticated: 0, not_newer: 0, not_established: 0, address_in_use: 0 },
    clientHellosDropped: { global_limit: 0, prefix_limit: 0, duplicate: 0, turn_limit: 0 },
    refusedOverCapacity: 0,
    refusals: { over_capacity: 0, host_handshakes_exceeded: 0, host_sessions_exceeded: 0, handshake_memory_exceeded: 0 },
    recordsDropped: { replayed: 0, unauthenticated: 0, cid_mismatch: 0, cid_missing: 0, bad_inner_plaintext: 0 },
    handshakesInProgress: 0,
    handshakeMemoryBytes: 0,
    handshakesResumed: 0,
    resumptionsRefused: newResumptionRefusalCounts(),
    sessionCacheSize: 0,
    sessionsRestored: 0,
    restoresRefused: newRestoreRefusalCounts(),
    sessionsExported: 0,
    handshakesBySuite: {},
    handshakeFailures: {},
    alertsSent: {},
    alertsReceived: {},
  };
}

/** What `attach` reads of a push server, with stats the test controls. */
function fakeServer(stats: ServerStats, o: { sessions?: number; online?: number; depths?: Record<string, number> } = {}): PushServer {
  const depths = o.depths ?? {};
  const engine = Object.assign(new EventEmitter(), {
    onlineCount: () => o.online ?? 0,
    deviceStatus: (id: string) => ({ id, online: false, lastSeen: 0, queueDepth: depths[id] ?? 0, lastSeq: 0, ackedSeq: 0 }),
    queueDepthTotal: () => Object.values(depths).reduce((a, b) => a + b, 0),
  });
  const dtls = Object.assign(new EventEmitter(), {
    stats,
    sessions: () => o.sessions ?? 0,
    socketCount: 4,
    socketBuffers: () => ({ recv: 2_097_152, send: 1_048_576 }),
  });
  const registry = { list: () => Object.keys(depths).map((id) => ({ id })) };
  return { engine, dtls, registry } as unknown as PushServer;
}

describe("metrics fed by the delivery observer", () => {
  it("counts pushes and publishes, and observes latencies in seconds", async () => {
    const m = createMetrics();
    const o = m.observer;
    o.published(3);
    o.pushSent();
    o.pushSent();
    o.pushRetransmitted();
    o.pushAcked(30);
    o.pushExpired();
    o.pushRejected();
    o.rttSample(2);
    o.rttSample(700);
    o.storeCommit(0.3);
    const t = await m.text();
    expect(sample(t, "dtlspush_published_total")).toBe(1);
    expect(sample(t, "dtlspush_pushes_sent_total")).toBe(2);
    expect(sample(t, "dtlspush_pushes_retransmitted_total")).toBe(1);
    expect(sample(t, "dtlspush_pushes_acked_total")).toBe(1);
    expect(sample(t, "dtlspush_pushes_expired_total")).toBe(1);
    expect(sample(t, "dtlspush_pushes_rejected_total")).toBe(1);
    // 30 ms lands in the 50 ms bucket, not the 25 ms one
    expect(sample(t, 'dtlspush_push_to_ack_seconds_bucket{le="0.025"}')).toBe(0);
    expect(sample(t, 'dtlspush_push_to_ack_seconds_bucket{le="0.05"}')).toBe(1);
    expect(sample(t, 'dtlspush_push_to_ack_seconds_bucket{le="300"}')).toBe(1);
    expect(sample(t, "dtlspush_push_to_ack_seconds_count")).toBe(1);
    expect(sample(t, "dtlspush_push_to_ack_seconds_sum")).toBeCloseTo(0.03);
    expect(sample(t, 'dtlspush_rtt_seconds_bucket{le="0.0005"}')).toBe(0);
    expect(sample(t, 'dtlspush_rtt_seconds_bucket{le="0.0025"}')).toBe(1);
    expect(sample(t, 'dtlspush_rtt_seconds_bucket{le="1"}')).toBe(2);
    expect(sample(t, 'dtlspush_rtt_seconds_bucket{le="10"}')).toBe(2);
    expect(sample(t, "dtlspush_rtt_seconds_count")).toBe(2);
    expect(sample(t, 'dtlspush_store_commit_seconds_bucket{le="0.0005"}')).toBe(1);
    expect(sample(t, 'dtlspush_store_commit_seconds_bucket{le="0.00025"}')).toBe(0);
  });

  it("never throws on odd values (NaN, negative) and ignores them", async () => {
    const m = createMetrics();
    expect(() => {
      m.observer.pushAcked(Number.NaN);
      m.observer.rttSample(-1);
      m.observer.storeCommit(Number.POSITIVE_INFINITY);
    }).not.toThrow();
    const t = await m.text();
    expect(sample(t, "dtlspush_pushes_acked_total")).toBe(1);
    expect(sample(t, "dtlspush_push_to_ack_seconds_count")).toBe(0);
    expect(sample(t, "dtlspush_rtt_seconds_count")).toBe(0);
    expect(sample(t, "dtlspush_store_commit_seconds_count")).toBe(0);
  });

  it("uses a registry of its own, with the default process metrics", async () => {
    const a = createMetrics();
    const b = createMetrics();
    a.observer.pushSent();
    expect(sample(await a.text(), "dtlspush_pushes_sent_total")).toBe(1);
    expect(sample(await b.text(), "dtlspush_pushes_sent_total")).toBe(0);
    expect(globalRegistry.getSingleMetric("dtlspush_pushes_sent_total")).toBeUndefined();
    const t = await a.text();
    for (const name of [
      "process_cpu_user_seconds_total",
      "process_resident_memory_bytes",
      "nodejs_eventloop_lag_seconds",
      "nodejs_heap_size_used_bytes",
    ]) {
      expect(t).toContain(`\n${name} `);
    }
    expect(a.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });
});

describe("metrics read from the server at scrape time", () => {
  it("mirrors the DTLS stats as counters (monotonic, labelled) and the gauges", async () => {
    const stats = emptyStats();
    const m = createMetrics();
    m.attach(fakeServer(stats, { sessions: 4, online: 3, depths: { a: 2, b: 0, c: 5 } }));
    stats.handshakesBySuite.TLS_PSK_WITH_AES_128_CCM_8 = 2;
    stats.handshakeFailures.unknown_psk_identity = 1;
    stats.alertsSent.unknown_psk_identity = 1;
    stats.alertsReceived.close_notify = 7;
    stats.refusals.host_handshakes_exceeded = 5;
    Object.assign(stats, { handshakesInProgress: 2, handshakeMemoryBytes: 12_288 });
    stats.helloVerifyRequestsSent = 9;
    stats.datagramsDropped = 4;
    stats.recordsDropped.unauthenticated = 3;
    stats.clientHellosDropped.global_limit = 5;
    stats.clientHellosDropped.prefix_limit = 6;
    let t = await m.text();
    expect(sample(t, 'dtlspush_dtls_handshakes_refused_total{cause="host_handshakes_exceeded"}')).toBe(5);
    expect(sample(t, 'dtlspush_dtls_handshakes_refused_total{cause="handshake_memory_exceeded"}')).toBe(0);
    expect(sample(t, "dtlspush_dtls_handshakes_in_progress")).toBe(2);
    expect(sample(t, "dtlspush_dtls_handshake_memory_bytes")).toBe(12_288);
    expect(sample(t, "dtlspush_dtls_hello_verify_requests_total")).toBe(9);
    expect(sample(t, "dtlspush_dtls_datagrams_dropped_total")).toBe(4);
    expect(sample(t, 'dtlspush_dtls_records_dropped_total{cause="unauthenticated"}')).toBe(3);
    expect(sample(t, 'dtlspush_dtls_records_dropped_total{cause="replayed"}')).toBe(0);
    expect(sample(t, 'dtlspush_dtls_client_hellos_dropped_total{cause="global_limit"}')).toBe(5);
    expect(sample(t, 'dtlspush_dtls_client_hellos_dropped_total{cause="prefix_limit"}')).toBe(6);
    expect(sample(t, 'dtlspush_dtls_client_hellos_dropped_total{cause="duplicate"}')).toBe(0);
    expect(sample(t, 'dtlspush_handshakes_total{result="ok",suite="TLS_PSK_WITH_AES_128_CCM_8"}')).toBe(2);
    expect(sample(t, 'dtlspush_handshakes_total{result="unknown_psk_identity",suite=""}')).toBe(1);
    expect(sample(t, 'dtlspush_alerts_sent_total{description="unknown_psk_identity"}')).toBe(1);
    expect(sample(t, 'dtlspush_alerts_received_total{description="close_notify"}')).toBe(7);
    expect(sample(t, "dtlspush_sessions")).toBe(4);
    expect(sample(t, "dtlspush_devices_online")).toBe(3);
    expect(sample(t, "dtlspush_queue_depth")).toBe(7);
    expect(sample(t, "dtlspush_dtls_sockets")).toBe(4);
    expect(sample(t, 'dtlspush_dtls_socket_buffer_bytes{direction="receive"}')).toBe(2_097_152);
    expect(sample(t, 'dtlspush_dtls_socket_buffer_bytes{direction="send"}')).toBe(1_048_576);
    expect(t).toContain("# TYPE dtlspush_handshakes_total counter");
    expect(t).toContain("# TYPE dtlspush_sessions gauge");

    // Scrapes report the stats' values, never a sum of scrapes.
    stats.handshakesBySuite.TLS_PSK_WITH_AES_128_CCM_8 = 3;
    t = await m.text();
    t = await m.text();
    expect(sample(t, 'dtlspush_handshakes_total{result="ok",suite="TLS_PSK_WITH_AES_128_CCM_8"}')).toBe(3);
    expect(sample(t, 'dtlspush_alerts_received_total{description="close_notify"}')).toBe(7);
  });

  it("reads the queue depth from the engine's total", async () => {
    const m = createMetrics();
    const s = fakeServer(emptyStats(), { depths: { a: 1 } });
    Object.assign(s.engine, { queueDepthTotal: () => 42 });
    m.attach(s);
    expect(sample(await m.text(), "dtlspush_queue_depth")).toBe(42);
  });
});

describe("store metrics", () => {
  it("counts a worker store's commits and group transactions; a store without such stats shows 0", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dtlspush-metrics-store-"));
    const store = await openWorkerStore(join(dir, "s.db"));
    try {
      const m = createMetrics();
      m.attachStore(store);
      // 20 commits handed over at once: the store thread groups them
      await Promise.all(Array.from({ length: 20 }, (_, i) => store.commit(loopBatch(i + 1))));
      const t = await m.text();
      expect(sample(t, "dtlspush_store_commits_total")).toBe(20);
      const transactions = sample(t, "dtlspush_store_transactions_total");
      expect(transactions).toBeGreaterThanOrEqual(1);
      expect(transactions).toBeLessThan(20);
      expect(sample(t, "dtlspush_store_largest_group")).toBeGreaterThan(1);

      const inline = createMetrics();
      inline.attachStore(openMemoryStore());
      expect(sample(await inline.text(), "dtlspush_store_commits_total")).toBe(0);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("metrics of a real push server", () => {
  async function setup() {
    const metrics = createMetrics();
    const s = await startPushServer({ store: openMemoryStore(), dtls: { host: "127.0.0.1", port: 0 }, observer: metrics.observer });
    servers.push(s);
    metrics.attach(s);
    await s.registry.add({ id: "sensor-1", psk: { identity: "sensor-1", key: KEY } });
    return { s, metrics };
  }

  it("a handshake, a session, a device online; a failed PSK handshake moves the failure counter and alert", async () => {
    const { s, metrics } = await setup();
    const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "sensor-1", key: KEY }, stateStore: memoryStateStore() });
    clients.push(c);
    await waitFor(() => s.engine.deviceStatus("sensor-1").online);
    const suite = Object.keys(s.dtls.stats.handshakesBySuite)[0] ?? "";
    expect(suite).toMatch(/^TLS_/);
    let t = await metrics.text();
    expect(sample(t, `dtlspush_handshakes_total{result="ok",suite="${suite}"}`)).toBe(1);
    expect(sample(t, "dtlspush_sessions")).toBe(1);
    expect(sample(t, "dtlspush_devices_online")).toBe(1);

    const refused = await dtlsConnect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "intruder", key: KEY }, timeoutMs: 5000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(DtlsError);
    t = await metrics.text();
    expect(sample(t, 'dtlspush_handshakes_total{result="unknown_psk_identity",suite=""}')).toBe(1);
    expect(sample(t, 'dtlspush_alerts_sent_total{description="unknown_psk_identity"}')).toBe(1);
    expect(sample(t, `dtlspush_handshakes_total{result="ok",suite="${suite}"}`)).toBe(1);
    expect(sample(t, "dtlspush_sessions")).toBe(1);
  });

  it("queue depth counts messages waiting for an offline device", async () => {
    const { s, metrics } = await setup();
    await s.publish({ target: { device: "sensor-1" }, payload: enc("one"), publisher: "test" });
    await s.publish({ target: { device: "sensor-1" }, payload: enc("two"), publisher: "test" });
    const t = await metrics.text();
    expect(sample(t, "dtlspush_queue_depth")).toBe(2);
    expect(sample(t, "dtlspush_devices_online")).toBe(0);
  });

  it("a push acked by the device: sent, acked, push-to-ack and RTT observed, published once, queue empty", async () => {
    const { s, metrics } = await setup();
    const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "sensor-1", key: KEY } });
    clients.push(c);
    const got: string[] = [];
    c.on("message", (msg) => got.push(msg.text()));
    await s.publish({ target: { device: "sensor-1" }, payload: enc("hello"), publisher: "test" });
    await waitFor(() => got.length === 1 && s.engine.deviceStatus("sensor-1").ackedSeq === 1);
    const t = await metrics.text();
    expect(sample(t, "dtlspush_published_total")).toBe(1);
    expect(sample(t, "dtlspush_pushes_sent_total")).toBe(1);
    expect(sample(t, "dtlspush_pushes_acked_total")).toBe(1);
    expect(sample(t, "dtlspush_push_to_ack_seconds_count")).toBe(1);
    expect(sample(t, "dtlspush_pushes_retransmitted_total")).toBe(0);
    expect(sample(t, "dtlspush_rtt_seconds_count")).toBe(1);
    expect(sample(t, "dtlspush_queue_depth")).toBe(0);
    expect(sample(t, "dtlspush_sessions")).toBe(1);
  });
});
