/**
 * `dtlspush bench` end to end: every mode against a daemon started here
 * (startDaemon, memory store, ports 0) with a handful of devices in a real
 * worker process over real UDP; the JSON output's figures must agree with
 * each other and with the daemon; devices are removed afterwards (or kept);
 * a rate-limited API and SIGINT end the run cleanly.
 */
import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bench, benchDevices, runBench, startBenchDaemon, stopBenchDaemon, testIo, type BenchTestDaemon } from "./bench/harness.ts";

type TestDaemon = BenchTestDaemon;
const start = (rateLimitPerMinute = 0): Promise<TestDaemon> => startBenchDaemon({ rateLimitPerMinute });
const stop = stopBenchDaemon;

describe("dtlspush bench against a running daemon", () => {
  let d: TestDaemon;
  beforeAll(async () => {
    d = await start();
  });
  afterAll(async () => {
    await stop(d);
  });

  it("push: every accepted publish is received once and acked; latency and CPU figures are plausible", async () => {
    const { report, io } = await bench(["push", ...d.args, "--devices", "4", "--duration", "1", "--json"]);
    const p = report.push;
    expect(p).toBeDefined();
    if (p === undefined) return;
    expect(report).toMatchObject({ mode: "push", target: "api", devices: 4, workers: 1, payloadBytes: 100, verify: false });
    expect(p.connect).toMatchObject({ ok: 4, failed: 0 });
    expect(p.published).toBeGreaterThan(0);
    expect(p.publishErrors).toEqual({});
    expect(p.received).toBe(p.published);
    expect(p.acked).toBe(p.received);
    expect(p.undelivered).toBe(0);
    expect(p.ackedInWindow).toBeGreaterThan(0);
    expect(p.ackedPerSecond).toBeGreaterThan(0);
    expect(p.latencyMs.samples).toBe(p.received);
    expect(p.latencyMs.p50).toBeGreaterThan(0);
    expect(p.latencyMs.p99 ?? 0).toBeGreaterThanOrEqual(p.latencyMs.p50 ?? 0);
    expect(p.latencyMs.max ?? 0).toBeLessThan(10_000);
    expect(p.daemonCpuPerPushMicros).toBeGreaterThan(0);
    // read from the daemon's /metrics (prom-client's event-loop lag) over the window
    expect(p.eventLoopDelayMs).not.toBeNull();
    expect(p.eventLoopDelayMs?.p99 ?? -1).toBeGreaterThanOrEqual(p.eventLoopDelayMs?.p50 ?? 0);
    expect(p.sessionsLost).toBe(0);
    expect(report.clockOffsetMs).toHaveLength(1);
    expect(Math.abs(report.clockOffsetMs[0] ?? 99)).toBeLessThan(50);
    expect(io.err()).toMatch(/push: publishing stopped after/);
    expect(benchDevices(d)).toEqual([]);
  });

  it("push --batch: publishes through POST /v1/messages, N a request; the figures are the same kind", async () => {
    const requests: number[] = [];
    const onRequest = (req: { method?: string; url?: string }): void => {
      if (req.method === "POST") requests.push(req.url === "/v1/messages" ? 1 : 0);
    };
    d.daemon.http.app.server.on("request", onRequest);
    let report: Awaited<ReturnType<typeof bench>>["report"];
    try {
      ({ report } = await bench([
        "push",
        ...d.args,
        "--devices",
        "4",
        "--count",
        "250",
        "--duration",
        "5",
        "--batch",
        "20",
        "--concurrency",
        "2",
        "--json",
      ]));
    } finally {
      d.daemon.http.app.server.off("request", onRequest);
    }
    const p = report.push;
    expect(p).toMatchObject({ batch: 20, published: 250, received: 250, acked: 250, undelivered: 0, publishErrors: {} });
    expect(p?.ackedPerSecond).toBeGreaterThan(0);
    expect(p?.latencyMs.samples).toBe(250);
    expect(p?.daemonCpuPerPushMicros).toBeGreaterThan(0);
    // the publishes went as batches (the registration of the devices is the only other POST)
    const batches = requests.filter((x) => x === 1).length;
    expect(batches).toBeGreaterThanOrEqual(13);
    expect(batches).toBeLessThan(250);
  });

  it("push --rate --count: paced, and stops at the count", async () => {
    const { report } = await bench([
      "push",
      ...d.args,
      "--devices",
      "3",
      "--duration",
      "5",
      "--rate",
      "200",
      "--count",
      "50",
      "--payload",
      "64",
      "--verify",
      "--json",
    ]);
    const p = report.push;
    expect(p).toMatchObject({ published: 50, received: 50, acked: 50, rateTarget: 200, rejected: 0 });
    // 50 publishes at 200/s take about a quarter of a second, not the 5 s duration
    expect(p?.windowSeconds).toBeGreaterThan(0.2);
    expect(p?.windowSeconds).toBeLessThan(2);
    expect(report).toMatchObject({ payloadBytes: 64, verify: true });
  });

  it("handshake: the devices' handshakes are the daemon's", async () => {
    const { report } = await bench(["handshake", ...d.args, "--devices", "4", "--duration", "1", "--concurrency", "2", "--json"]);
    const h = report.handshake;
    expect(h).toBeDefined();
    if (h === undefined) return;
    expect(h.concurrency).toBe(2);
    expect(h.handshakes).toBeGreaterThan(4);
    expect(h.failures).toBe(0);
    expect(h.daemonHandshakes).toBe(h.handshakes);
    expect(h.daemonFailures).toBe(0);
    expect(h.handshakesPerSecond).toBeGreaterThan(0);
    expect(h.daemonCpuPerHandshakeMicros).toBeGreaterThan(0);
    expect(h.handshakeMs.p50).toBeGreaterThan(0);
    expect(d.daemon.push.dtls.sessions()).toBe(0);
  });

  it("sessions: idle sessions are counted by the daemon and memory is read before and after", async () => {
    const { report } = await bench(["sessions", ...d.args, "--devices", "5", "--duration", "0.3", "--json"]);
    const s = report.sessions;
    expect(s).toMatchObject({ sessions: 5, daemonSessions: 5, daemonDevicesOnline: 5, sessionsLost: 0, holdSeconds: 0.3 });
    expect(s?.residentBytesBefore).toBeGreaterThan(10_000_000);
    expect(s?.residentBytesAfter).toBeGreaterThan(10_000_000);
    expect(s?.heapUsedBytesAfter).toBeGreaterThan(0);
    expect(typeof s?.residentBytesPerSession).toBe("number");
    // the devices said Bye: no session is left
    await expect.poll(() => d.daemon.push.dtls.sessions()).toBe(0);
  });

  it("fanout: every device receives each round exactly once; received and acked times are measured", async () => {
    const { report } = await bench(["fanout", ...d.args, "--devices", "6", "--count", "2", "--keep", "--json"]);
    const f = report.fanout;
    expect(f).toBeDefined();
    if (f === undefined) return;
    expect(f.allReceivedOnce).toBe(true);
    expect(f.rounds).toHaveLength(2);
    for (const r of f.rounds) {
      expect(r).toMatchObject({ recipients: 6, received: 6, duplicates: 0 });
      expect(r.receivedMs.samples).toBe(6);
      expect(r.allReceivedMs).toBeGreaterThan(0);
      expect(r.allReceivedMs ?? 0).toBeGreaterThanOrEqual(r.firstReceivedMs ?? Infinity);
      expect(r.allAckedMs).toBeGreaterThan(0);
      expect(r.acceptedMs).toBeGreaterThan(0);
    }
    expect(f.allReceivedMs).toBe(Math.max(...f.rounds.map((r) => r.allReceivedMs ?? 0)));
    expect(f.eventLoopDelayMs).not.toBeNull();
    // --keep: the devices stay, with the fanout topic
    const kept = benchDevices(d);
    expect(kept).toHaveLength(6);
    expect(d.daemon.push.registry.get("bench-0")?.topics).toEqual(["bench-fanout"]);
    for (const id of kept) await d.daemon.push.registry.remove(id);
  });

  it("--source-addresses: the devices send from 127.0.0.1 .. 127.0.0.N, round-robin", async () => {
    const peers = new Map<string, number>();
    const onSession = (c: { info: { peer: { address: string } } }): void => {
      peers.set(c.info.peer.address, (peers.get(c.info.peer.address) ?? 0) + 1);
    };
    d.daemon.push.dtls.on("session", onSession);
    try {
      const { report } = await bench(["sessions", ...d.args, "--devices", "6", "--source-addresses", "3", "--duration", "0.2", "--json"]);
      expect(report.sourceAddresses).toBe(3);
      expect(report.sessions).toMatchObject({ sessions: 6, daemonSessions: 6, sessionsLost: 0 });
    } finally {
      d.daemon.push.dtls.off("session", onSession);
    }
    expect(Object.fromEntries(peers)).toEqual({ "127.0.0.1": 2, "127.0.0.2": 2, "127.0.0.3": 2 });
    await expect.poll(() => d.daemon.push.dtls.sessions()).toBe(0);
  });

  it("prints a table without --json", async () => {
    const io = testIo();
    const code = await runBench(["sessions", ...d.args, "--devices", "2", "--duration", "0.2"], io);
    expect(code).toBe(0);
    expect(io.out()).toMatch(
      /^dtlspush bench sessions: 2 devices, 1 worker, API http:\/\/127\.0\.0\.1:\d+, DTLS 127\.0\.0\.1:\d+, psk, payload 100 B\n/,
    );
    expect(io.out()).toMatch(/idle sessions held\s+2 for 0.2 s/);
    expect(io.out()).toMatch(/resident memory per session/);
  });

  it("SIGINT stops the run early, cleans up and exits 1", async () => {
    const io = testIo();
    const t0 = Date.now();
    const done = runBench(["push", ...d.args, "--devices", "3", "--duration", "30", "--rate", "50", "--json"], io);
    await expect.poll(() => io.err(), { timeout: 10_000 }).toMatch(/push: \d/);
    io.signal();
    expect(await done).toBe(1);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(io.err()).toMatch(/interrupted by SIGINT/);
    expect(io.out()).toBe("");
    expect(benchDevices(d)).toEqual([]);
  });
});

describe("dtlspush bench", () => {
  it("says what to do when the daemon's API rate limit refuses it", async () => {
    const d = await start(3);
    try {
      const io = testIo();
      expect(await runBench(["sessions", ...d.args, "--devices", "10", "--duration", "0.1"], io)).toBe(1);
      expect(io.err()).toMatch(/rate_limit_per_minute = 0/);
    } finally {
      await stop(d);
    }
  });

  it("--in-process: starts its own daemon and publishes by calling it", async () => {
    const { report } = await bench(["push", "--in-process", "--store", "memory", "--devices", "3", "--duration", "0.5", "--json"]);
    expect(report.target).toBe("in-process");
    expect(report.push?.published).toBeGreaterThan(0);
    expect(report.push?.acked).toBe(report.push?.published);
    expect(report.push?.received).toBe(report.push?.published);
    // read from the in-process daemon's metrics over the window
    expect(report.push?.eventLoopDelayMs).toMatchObject({ p50: expect.any(Number), p99: expect.any(Number), max: expect.any(Number) });
  });

  it.runIf(existsSync("/proc/sys/net/ipv4/ip_local_port_range"))(
    "refuses more devices than its source addresses have UDP ports for, before anything starts",
    async () => {
      const io = testIo();
      const code = await runBench(
        [
          "sessions",
          "--devices",
          "900000",
          "--workers",
          "64",
          "--source-addresses",
          "2",
          "--server",
          "127.0.0.1:5684",
          "--api",
          "http://127.0.0.1:1",
          "--token",
          "t",
        ],
        io,
      );
      expect(code).toBe(1);
      expect(io.err()).toMatch(
        /900 000 devices need 900 000 UDP source ports at once, but 2 source addresses \(127\.0\.0\.1-127\.0\.0\.2\) .* use --source-addresses \d+ or more/,
      );
      const remote = testIo();
      expect(
        await runBench(
          ["sessions", "--devices", "100000", "--workers", "7", "--server", "192.0.2.1:5684", "--api", "http://127.0.0.1:1", "--token", "t"],
          remote,
        ),
      ).toBe(1);
      expect(remote.err()).toMatch(/the server 192\.0\.2\.1 is not on 127\.0\.0\.0\/8/);
    },
  );
});
