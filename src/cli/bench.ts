/**
 * `dtlspush bench <handshake|push|sessions|fanout>`: a load generator that
 * drives a running daemon (or one it starts in process) with many simulated
 * devices over real UDP, from worker processes. See docs/bench.md.
 */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { formatHostPort } from "./args.ts";
import { formatApiUrl, formatCommandFailure } from "./api-client.ts";
import type { CliIo, LeafCommand } from "./command.ts";
import { formatHelp } from "./command.ts";
import { CliError } from "./errors.ts";
import { resolveBenchCa, type BenchCa } from "./bench/ca.ts";
import { Progress, type RunContext } from "./bench/context.ts";
import { ISSUE_CONCURRENCY } from "./bench/device-certs.ts";
import { runFanout, FANOUT_TOPIC } from "./bench/fanout.ts";
import { Fleet } from "./bench/fleet.ts";
import { runHandshake } from "./bench/handshake.ts";
import { benchDeviceId, DEVICE_PREFIX, randomSeedHex } from "./bench/keys.ts";
import { COMMAND, DEFAULT_CONCURRENCY, globalTimeoutSeconds, minimumWorkers, OPTIONS, parseBenchArgs, type BenchConfig } from "./bench/options.ts";
import { provisionDevices, removeDevices } from "./bench/provision.ts";
import { runPush } from "./bench/push.ts";
import { formatTable, type BenchReport, type CertificatesSummary } from "./bench/report.ts";
import { runSessions } from "./bench/sessions.ts";
import { planSourceAddresses, type SourcePlan } from "./bench/source-addresses.ts";
import { groupDigits } from "./bench/stats.ts";
import { apiTarget, inProcessTarget, type BenchTarget } from "./bench/target.ts";

/** How often workers report what their devices received, ms. */
const STATS_INTERVAL_MS = 50;
/** One device's DTLS handshake and Hello/Welcome may take this long, ms. */
const CONNECT_TIMEOUT_MS = 20_000;

function help(): string {
  return formatHelp({
    usage: [
      `${COMMAND} <handshake|push|sessions|fanout> [--api URL] [--token JWT] [--config FILE | --data-dir DIR]`,
      "[--server HOST:PORT] [--devices N] [--duration S] [--count N] [--rate N] [--payload BYTES]",
      "[--workers N] [--source-addresses N] [--concurrency N] [--window N] [--verify] [--in-process [--store KIND]]",
      "[--cert [--curve p256|p384] [--ca-dir DIR]] [--keep] [--json]",
    ],
    description:
      "Load generator: simulated devices (our DTLS client with PSK or a certificate, and the\n" +
      "device protocol) in worker processes drive the daemon over real UDP. Devices bench-0 ..\n" +
      "bench-<N-1> are registered through the API with a PSK derived from a random per-run seed\n" +
      "(--cert: with a certificate each, issued by the workers from the daemon's device CA),\n" +
      "and removed afterwards unless --keep. Figures come from the devices and from the\n" +
      "daemon's /metrics, so the bench needs an admin token (given, or minted from the local\n" +
      "data directory).\n" +
      "Every device has a UDP socket of its own: against a server on 127.0.0.0/8 the devices\n" +
      "send from 127.0.0.1, 127.0.0.2, ... (one ephemeral port range's worth each), so one\n" +
      "machine can simulate 100 000 devices and more.\n" +
      "\n" +
      "  handshake  devices connect and close again, over and over: handshakes/s and the\n" +
      "             daemon's CPU per handshake\n" +
      "  push       publishes to random devices for --duration: acked pushes/s, publish-to-\n" +
      "             device latency p50/p99/p99.9, the daemon's CPU per push\n" +
      "  sessions   devices connect and stay idle: the daemon's memory per session\n" +
      "  fanout     one publish to the topic all devices have: time until all received it\n" +
      "             and until the daemon counted all acks\n" +
      "\n" +
      "Progress goes to standard error once a second; the result table (or --json) to\n" +
      "standard output. Run the daemon under test with http.rate_limit_per_minute = 0.\n" +
      "Every run is bounded (--timeout); SIGINT stops it and cleans up.",
    positionals: [{ name: "MODE", description: "handshake, push, sessions or fanout" }],
    options: OPTIONS,
    examples: [
      `DTLSPUSH_HTTP_RATE_LIMIT_PER_MINUTE=0 dtlspush serve --data-dir /tmp/d &`,
      `${COMMAND} push --data-dir /tmp/d --devices 1000 --duration 10`,
      `${COMMAND} push --data-dir /tmp/d --devices 1000 --rate 500 --json`,
      `${COMMAND} handshake --data-dir /tmp/d --devices 1000`,
      `${COMMAND} handshake --data-dir /tmp/d --devices 1000 --cert`,
      `${COMMAND} sessions --data-dir /tmp/d --devices 10000`,
      `${COMMAND} fanout --data-dir /tmp/d --devices 10000`,
      `${COMMAND} sessions --data-dir /tmp/d --devices 100000`,
      `${COMMAND} push --in-process --devices 1000`,
    ],
  });
}

/** The size of the system's ephemeral port range (Linux), or undefined where it cannot be read. */
async function ephemeralPorts(): Promise<{ low: number; high: number } | undefined> {
  try {
    const [low, high] = (await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8")).trim().split(/\s+/).map(Number);
    if (low === undefined || high === undefined || !Number.isInteger(low) || !Number.isInteger(high)) return undefined;
    return { low, high };
  } catch {
    return undefined;
  }
}

/**
 * Every device connection has its own UDP socket: the ephemeral port range
 * bounds the devices per source address. The source addresses that hold them
 * (CliError naming the limit when they cannot).
 */
async function sourcePlan(c: BenchConfig, serverHost: string): Promise<SourcePlan> {
  return planSourceAddresses({
    devices: c.devices,
    sockets: c.mode === "handshake" ? Math.min(c.devices, c.concurrency ?? DEFAULT_CONCURRENCY.handshakes) : c.devices,
    requested: c.sourceAddresses,
    serverHost,
    ports: await ephemeralPorts(),
  });
}

interface Abort {
  readonly stopped: () => boolean;
  readonly reason: () => string | undefined;
  /** resolves after `ms`, or at once when stopped */
  sleep(ms: number): Promise<void>;
  stop(reason: string): void;
  onStop(fn: () => void): void;
  dispose(): void;
}

function abortControl(timeoutSeconds: number): Abort {
  let reason: string | undefined;
  const listeners: (() => void)[] = [];
  const sleepers = new Set<() => void>();
  const timer = setTimeout(() => a.stop(`the run took longer than its bound of ${timeoutSeconds} s (--timeout)`), timeoutSeconds * 1000);
  timer.unref();
  const a: Abort = {
    stopped: () => reason !== undefined,
    reason: () => reason,
    sleep(ms) {
      if (reason !== undefined) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          sleepers.delete(wake);
          resolve();
        }, ms);
        const wake = (): void => {
          clearTimeout(t);
          resolve();
        };
        sleepers.add(wake);
      });
    },
    stop(why) {
      if (reason !== undefined) return;
      reason = why;
      for (const w of sleepers) w();
      sleepers.clear();
      for (const f of listeners) f();
    },
    onStop(fn) {
      listeners.push(fn);
    },
    dispose() {
      clearTimeout(timer);
    },
  };
  return a;
}

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const c = parseBenchArgs(argv, process.env);
  // a known server address is checked before anything starts; the configuration's (or the in-process daemon's) once known
  if (c.server !== undefined) await sourcePlan(c, c.server.host);
  const progress = new Progress((line) => io.stderr.write(`${line}\n`));
  const abort = abortControl(globalTimeoutSeconds(c));
  let fleet: Fleet | undefined;
  let signals = 0;
  const offSignal = io.onShutdownSignal((signal) => {
    signals++;
    if (signals === 1) {
      progress.say(`bench: ${signal}: stopping and cleaning up (again to stop at once)`);
      abort.stop(`interrupted by ${signal}`);
    } else {
      fleet?.kill();
    }
  });
  abort.onStop(() => void fleet?.close(2_000));
  const connections = c.concurrency ?? DEFAULT_CONCURRENCY.api;

  let target: BenchTarget | undefined;
  let registered: number[] = [];
  try {
    target = c.inProcess
      ? await inProcessTarget({ store: c.store, configFile: c.access.configFile, connections })
      : await apiTarget({
          access: c.access,
          api: c.api,
          server: c.server,
          connections,
          env: process.env,
          cwd: process.cwd(),
          wantConfig: c.cert !== undefined && (c.access.explicit || c.cert.caDir === undefined),
        });
    const t = target;
    const sources = await sourcePlan(c, t.dtls.host);
    // --cert: the CA, checked against the daemon's configuration before any device is registered
    const ca: BenchCa | undefined =
      c.cert === undefined
        ? undefined
        : await resolveBenchCa({
            caDir: c.cert.caDir === undefined ? undefined : resolve(process.cwd(), c.cert.caDir),
            // a configuration only found in the working directory is not taken for the daemon's once --ca-dir says which CA
            config: t.kind === "in-process" || c.access.explicit || c.cert.caDir === undefined ? t.config : undefined,
            daemon: t.kind === "in-process" ? "the in-process daemon" : `the daemon at ${formatApiUrl(t.apiUrl)}`,
          });
    const seedHex = randomSeedHex();
    const indexes = Array.from({ length: c.devices }, (_, i) => i);
    const ids = indexes.map((i) => benchDeviceId(i));

    // 1. register the devices
    const tp = performance.now();
    let done = 0;
    progress.start((s) => `provisioning: ${s.toFixed(1)} s, ${groupDigits(done)} of ${groupDigits(c.devices)} devices registered`);
    registered = indexes;
    try {
      await provisionDevices({
        http: t.http,
        indexes,
        prefix: DEVICE_PREFIX,
        credential: ca === undefined ? { kind: "psk", seedHex } : { kind: "certificate" },
        topics: c.mode === "fanout" ? [FANOUT_TOPIC] : [],
        progress: (k) => (done = k),
        stop: abort.stopped,
      });
    } finally {
      progress.stop();
    }
    const provisionSeconds = (performance.now() - tp) / 1000;
    if (abort.stopped()) throw new CliError(abort.reason() ?? "stopped");

    // 2. the device workers (with --cert they issue their devices' certificates first)
    const workers = c.workers ?? minimumWorkers(c.devices);
    const tw = performance.now();
    const started = Fleet.launch({
      workers,
      indexes,
      prefix: DEVICE_PREFIX,
      sourceAddresses: sources.addresses,
      host: t.dtls.host,
      port: t.dtls.port,
      seedHex,
      cert:
        ca === undefined || c.cert === undefined
          ? undefined
          : { caCertPem: ca.certPem, caKeyPem: ca.keyPem, trustPem: ca.trustPem, curve: c.cert.curve, concurrency: ISSUE_CONCURRENCY },
      verify: c.verify,
      trackIds: c.mode === "fanout",
      statsIntervalMs: STATS_INTERVAL_MS,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
    });
    fleet = started;
    if (ca !== undefined) {
      progress.start((s) => {
        const p = started.certificates();
        return `certificates: ${s.toFixed(1)} s, ${groupDigits(p.issued)} of ${groupDigits(c.devices)} issued${p.msEach === null ? "" : ` (${p.msEach.toFixed(2)} ms each)`}`;
      });
    }
    try {
      await started.ready();
    } catch (e) {
      if (abort.stopped()) throw new CliError(abort.reason() ?? "stopped");
      throw e;
    } finally {
      progress.stop();
    }
    let certificates: CertificatesSummary | undefined;
    if (ca !== undefined && c.cert !== undefined) {
      const p = started.certificates();
      const seconds = (performance.now() - tw) / 1000;
      certificates = {
        caDir: ca.dir,
        curve: c.cert.curve,
        issued: p.issued,
        seconds: Math.round(seconds * 1000) / 1000,
        msEach: p.msEach === null ? null : Math.round(p.msEach * 1000) / 1000,
        perSecond: Math.round((p.issued / seconds) * 10) / 10,
      };
      progress.say(
        `certificates: ${groupDigits(p.issued)} of ${groupDigits(c.devices)} issued in ${seconds.toFixed(1)} s (${p.msEach === null ? "-" : p.msEach.toFixed(2)} ms each, ${started.size} worker${started.size === 1 ? "" : "s"})`,
      );
    }
    const ctx: RunContext = { config: c, target: t, fleet, ids, seedHex, progress, stopped: abort.stopped, sleep: (ms) => abort.sleep(ms) };

    // 3. the load
    const base = {
      mode: c.mode,
      target: t.kind,
      api: formatApiUrl(t.apiUrl),
      server: formatHostPort(t.dtls.host, t.dtls.port),
      devices: c.devices,
      workers: fleet.size,
      sourceAddresses: Math.max(1, sources.addresses.length),
      payloadBytes: c.payloadBytes,
      verify: c.verify,
      credentials: c.cert === undefined ? "psk" : `certificate (${c.cert.curve})`,
      ...(certificates === undefined ? {} : { certificates }),
      provisionSeconds: Math.round(provisionSeconds * 1000) / 1000,
      clockOffsetMs: fleet.clockOffsets.map((o) => Math.round(o * 1000) / 1000),
    };
    let report: BenchReport;
    try {
      switch (c.mode) {
        case "handshake":
          report = { ...base, handshake: await runHandshake(ctx) };
          break;
        case "push":
          report = { ...base, push: await runPush(ctx) };
          break;
        case "sessions":
          report = { ...base, sessions: await runSessions(ctx) };
          break;
        case "fanout":
          report = { ...base, fanout: await runFanout(ctx) };
          break;
      }
    } catch (e) {
      if (abort.stopped()) throw new CliError(abort.reason() ?? "stopped");
      throw e;
    }
    if (abort.stopped()) throw new CliError(abort.reason() ?? "stopped");
    await fleet.close();
    io.stdout.write(c.json ? `${JSON.stringify(report, null, 2)}\n` : formatTable(report));
    return 0;
  } catch (e) {
    const line = formatCommandFailure(COMMAND, e);
    if (line === undefined) throw e;
    io.stderr.write(`${line}\n`);
    return 1;
  } finally {
    progress.stop();
    await fleet?.close(2_000);
    if (target !== undefined) {
      if (!c.keep && registered.length > 0 && signals < 2) {
        let removed = 0;
        progress.start((s) => `cleanup: ${s.toFixed(1)} s, ${groupDigits(removed)} of ${groupDigits(registered.length)} devices removed`);
        try {
          const r = await removeDevices({
            http: target.http,
            indexes: registered,
            prefix: DEVICE_PREFIX,
            progress: (k) => (removed = k),
            stop: () => signals >= 2,
          });
          if (r.failed > 0) io.stderr.write(`${COMMAND}: ${r.failed} bench devices could not be removed\n`);
        } catch (e) {
          io.stderr.write(`${COMMAND}: removing the bench devices failed: ${(e as Error).message}\n`);
        } finally {
          progress.stop();
        }
      }
      await target.close();
    }
    abort.dispose();
    offSignal();
  }
}

export const benchCommand: LeafCommand = {
  kind: "command",
  name: "bench",
  summary: "Load generator: handshakes, pushes, idle sessions and fan-out against a daemon",
  help,
  run,
};
