/** The bench's pure helpers: payload time stamps, device keys, /metrics parsing, percentiles, the result table. */
import { describe, expect, it } from "vitest";
import { benchDeviceId, deriveDeviceKey, randomSeedHex } from "../../../src/cli/bench/keys.ts";
import { loopDelayOf, ScrapedLoopDelay, worseLoopDelay } from "../../../src/cli/bench/loop-delay.ts";
import { countIncrease, metricSum, parseMetrics, snapshotOf } from "../../../src/cli/bench/prometheus.ts";
import { formatTable, type BenchReport } from "../../../src/cli/bench/report.ts";
import { MIN_STAMPED_PAYLOAD, readStamp, stampedPayload } from "../../../src/cli/bench/stamp.ts";
import { distribution, formatBytes, formatMs, groupDigits, percentile, round } from "../../../src/cli/bench/stats.ts";

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

describe("stamped payloads", () => {
  it("carry the send time in exactly the asked size", () => {
    const at = 1_763_800_000_123.456;
    for (const size of [MIN_STAMPED_PAYLOAD, 100, 1000]) {
      const p = stampedPayload(at, size);
      expect(p).toHaveLength(size);
      expect(readStamp(bytes(p))).toBeCloseTo(at, 3);
    }
  });

  it("read as NaN when there is no stamp", () => {
    expect(readStamp(bytes("hello world"))).toBeNaN();
    expect(readStamp(bytes("12345"))).toBeNaN(); // no separator
    expect(readStamp(bytes(" 12"))).toBeNaN();
    expect(readStamp(new Uint8Array(0))).toBeNaN();
  });
});

describe("device keys", () => {
  it("are 16 bytes from the seed and the id: the same for the same pair, different otherwise", async () => {
    const seed = randomSeedHex();
    expect(seed).toMatch(/^[0-9a-f]{32}$/);
    const a = await deriveDeviceKey(seed, benchDeviceId(1));
    expect(a).toHaveLength(16);
    expect(await deriveDeviceKey(seed, "bench-1")).toEqual(a);
    expect(await deriveDeviceKey(seed, "bench-2")).not.toEqual(a);
    expect(await deriveDeviceKey(randomSeedHex(), "bench-1")).not.toEqual(a);
  });
});

const METRICS = `# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
process_resident_memory_bytes 104857600
nodejs_heap_size_used_bytes 52428800
dtlspush_handshakes_total{result="ok",suite="TLS_PSK_WITH_AES_128_CCM_8"} 40
dtlspush_handshakes_total{result="ok",suite="TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256"} 2
dtlspush_handshakes_total{result="bad_record_mac",suite=""} 3
dtlspush_dtls_handshakes_resumed_total 30
dtlspush_pushes_acked_total 1000
dtlspush_pushes_sent_total 1010
dtlspush_pushes_retransmitted_total 7
dtlspush_sessions 5
dtlspush_devices_online 4
dtlspush_push_to_ack_seconds_bucket{le="0.001"} 900
dtlspush_alerts_sent_total{description="a \\"quoted\\" one"} 1
`;

describe("/metrics parsing", () => {
  it("sums samples by name and labels", () => {
    const s = parseMetrics(METRICS);
    expect(metricSum(s, "dtlspush_handshakes_total")).toBe(45);
    expect(metricSum(s, "dtlspush_handshakes_total", { result: "ok" })).toBe(42);
    expect(metricSum(s, "dtlspush_alerts_sent_total", { description: 'a "quoted" one' })).toBe(1);
    expect(metricSum(s, "nope")).toBeUndefined();
  });

  it("makes the daemon snapshot the bench compares", () => {
    expect(snapshotOf(METRICS, 5)).toEqual({
      at: 5,
      cpuSeconds: 12.5,
      residentBytes: 104857600,
      heapUsedBytes: 52428800,
      handshakesOk: 42,
      handshakesFailed: 3,
      handshakesResumed: 30,
      handshakesBySuite: { TLS_PSK_WITH_AES_128_CCM_8: 40, TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256: 2 },
      pushesSent: 1010,
      pushesAcked: 1000,
      pushesRetransmitted: 7,
      published: 0,
      sessions: 5,
      devicesOnline: 4,
      loopDelayMs: null,
    });
  });

  it("reads prom-client's event-loop lag as the delay beyond the 10 ms sampling timer", () => {
    const lag = `${METRICS}nodejs_eventloop_lag_p50_seconds 0.0101\nnodejs_eventloop_lag_p99_seconds 0.0135\nnodejs_eventloop_lag_max_seconds 0.042\n`;
    expect(snapshotOf(lag, 5).loopDelayMs).toEqual({ p50: 0.1, p99: 3.5, max: 32 });
    // sampled less than the period apart (no lag): never negative
    expect(loopDelayOf(9.5, 9.9, 10).p50).toBe(0);
  });

  it("a window is its worst scrape interval; scrapes before the window do not count", () => {
    const scraped = new ScrapedLoopDelay();
    scraped.scraped({ p50: 9, p99: 90, max: 900 });
    const w = scraped.watch();
    scraped.scraped({ p50: 1, p99: 5, max: 7 });
    scraped.scraped(null);
    scraped.scraped({ p50: 0.5, p99: 8, max: 6 });
    expect(w.stop()).toEqual({ p50: 1, p99: 8, max: 7 });
    expect(scraped.watch().stop()).toBeNull();
    expect(worseLoopDelay(null, null)).toBeNull();
  });

  it("counts what grew between two snapshots, by key", () => {
    expect(countIncrease({ a: 1, b: 5 }, { a: 4, b: 5, c: 2 })).toEqual({ a: 3, c: 2 });
    expect(countIncrease({}, {})).toEqual({});
  });
});

describe("figures", () => {
  it("percentiles by nearest rank", () => {
    const v = Array.from({ length: 1000 }, (_, i) => i + 1);
    expect(percentile(v, 50)).toBe(500);
    expect(percentile(v, 99)).toBe(990);
    expect(percentile(v, 99.9)).toBe(999);
    expect(percentile(v, 100)).toBe(1000);
    expect(percentile([], 50)).toBeNaN();
    const d = distribution([5, 1, 3]);
    expect(d).toMatchObject({ samples: 3, min: 1, max: 5, mean: 3, p50: 3 });
  });

  it("formats for people and for JSON", () => {
    expect(groupDigits(1234567)).toBe("1 234 567");
    expect(groupDigits(-1234.5, 1)).toBe("-1 234.5");
    expect(formatMs(0.4123)).toBe("0.412 ms");
    expect(formatMs(1520)).toBe("1.52 s");
    expect(formatBytes(1536)).toBe("1.50 KiB");
    expect(round(NaN)).toBeNull();
    expect(round(1.23456, 2)).toBe(1.23);
  });

  it("prints a table with the mode's figures", () => {
    const report: BenchReport = {
      mode: "handshake",
      target: "api",
      api: "http://127.0.0.1:8080",
      server: "127.0.0.1:5684",
      devices: 1000,
      workers: 1,
      sourceAddresses: 1,
      payloadBytes: 100,
      verify: false,
      credentials: "certificate (p256)",
      certificates: { caDir: "/srv/certs", curve: "p256", issued: 1000, seconds: 2.5, msEach: 7.25, perSecond: 400 },
      provisionSeconds: 1,
      clockOffsetMs: [0],
      handshake: {
        concurrency: 64,
        seconds: 10,
        handshakes: 12345,
        failures: 0,
        errors: [],
        handshakesPerSecond: 1234.5,
        daemonHandshakes: 12345,
        daemonFailures: 0,
        daemonHandshakesBySuite: { TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8: 12000, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 345 },
        daemonCpuPerHandshakeMicros: 512.3,
        daemonCpuCores: 0.63,
        workersCpuCores: 0.9,
        handshakeMs: { samples: 12345, min: 1, mean: 2, p50: 2, p90: 3, p99: 4, p999: 5, max: 6 },
      },
    };
    const table = formatTable(report);
    expect(table).toContain(
      "dtlspush bench handshake: 1 000 devices, 1 worker, API http://127.0.0.1:8080, DTLS 127.0.0.1:5684, certificate (p256), payload 100 B",
    );
    expect(table).toMatch(/device certificates issued\s+1 000 in 2.5 s, 400\/s \(7.25 ms each in a worker\)\n/);
    expect(table).toMatch(/daemon handshakes by suite\s+TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 12 000, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 345\n/);
    expect(table).toMatch(/handshakes\/s\s+1 235\n/);
    expect(table).toMatch(/daemon CPU per handshake\s+512.3 µs/);
  });
});
