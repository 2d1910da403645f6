/**
 * `npm run bench:flood`: what a spoofed ClientHello flood does to established
 * DTLS sessions, with the old behaviour and the new side by side in one run.
 * Not a test: prints figures, never fails on a threshold. Bounded in count and
 * time; all traffic goes to 127.0.0.1 (sources inside 127.0.0.0/8).
 *
 *   node scripts/bench/flood.ts [--rates 100000,0] [--seconds 4] [--prefixes 64]
 *        [--sessions 4] [--interval-ms 2] [--recv-buffer BYTES] [--timeline] [--json]
 *
 * For each flood rate (0: as fast as this machine generates) and each of two
 * server set-ups:
 *   - old: no HelloVerifyRequest limits (both rates 0) and 4 MiB receive buffers,
 *     what the server did before (the per-turn de-duplication and cookie cap
 *     stay, but this flood's sources never repeat and it carries no cookies);
 *   - new: the defaults (HelloVerifyRequest limits, receive buffers sized for latency);
 * a DTLS echo server (src/dtls `listen`, 4 SO_REUSEPORT sockets) runs in a child
 * process of its own; this process opens `--sessions` PSK sessions from
 * 127.0.0.1 before the flood, starts the flood generator (a small C program
 * compiled here with the system `cc` into a temporary directory; sendmmsg over
 * a raw socket writing random sources 127.20.x.y:port when permitted, else UDP
 * sockets bound to 256 loopback addresses), then sends one record every
 * `--interval-ms` round robin over the sessions and times each echo.
 * Figures: records lost (no echo within 1 s of the flood's end), echo
 * round trip p50 / p99 / max, datagrams the kernel dropped on the server's
 * sockets (/proc/net/udp), HelloVerifyRequests sent, ClientHellos dropped by
 * cause, server CPU, and whether a new client completes a handshake while the
 * flood goes on (and how long it took).
 */
import { execFileSync, fork, spawn, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { connect, listen, type DtlsConnection, type ListenOptions, type ServerStats } from "../../src/dtls/index.ts";

const KEY = Buffer.from("000102030405060708090a0b0c0d0e0f", "hex");
const OLD_BUFFER_BYTES = 4 * 1024 * 1024;

interface ServerSetup {
  readonly name: "old" | "new";
  readonly options: Pick<ListenOptions, "helloVerifyRatePerSecond" | "helloVerifyRatePerPrefix" | "recvBufferBytes" | "sendBufferBytes">;
}

type FromServer = { kind: "ready"; port: number } | { kind: "stats"; stats: ServerStats; cpuMicros: number };

// ---- the server (child process) ---------------------------------------------

async function serve(options: ServerSetup["options"]): Promise<void> {
  const server = await listen({ host: "127.0.0.1", port: 0, psk: { keys: new Map([["bench", KEY]]) }, sockets: 4, ...options });
  server.on("session", (c) => c.on("data", (d) => c.send(d)));
  server.on("error", () => undefined);
  const send = (m: FromServer): void => void process.send?.(m);
  process.on("message", (m: { kind: string }) => {
    if (m.kind === "stats") {
      const u = process.cpuUsage();
      send({ kind: "stats", stats: structuredClone(server.stats), cpuMicros: u.user + u.system });
    }
  });
  process.on("disconnect", () => process.exit(0));
  send({ kind: "ready", port: server.address().port });
}

// ---- the driver ----------------------------------------------------------------

interface Result {
  readonly rate: number;
  readonly setup: ServerSetup["name"];
  readonly generated: number;
  readonly generatedPerSecond: number;
  readonly mode: string;
  readonly records: number;
  readonly lost: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly kernelDrops: number;
  readonly helloVerifyPerSecond: number;
  readonly hellosDropped: Record<string, number>;
  readonly serverCpu: number;
  readonly newHandshakeMs: number | undefined;
  /** per 250 ms of the run: records lost, and the slowest echo (ms) */
  readonly timeline: { lost: number; worst: number }[];
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** Datagrams the kernel dropped on the sockets bound to `port` (the drops column of /proc/net/udp). */
function kernelDrops(port: number): number {
  let text: string;
  try {
    text = readFileSync("/proc/net/udp", "utf8");
  } catch {
    return NaN;
  }
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  let drops = 0;
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1]?.endsWith(`:${hexPort}`)) drops += Number(f[12]);
  }
  return drops;
}

/** The first datagram our own DTLS client sends: a real first ClientHello (no cookie). */
async function captureClientHello(): Promise<Buffer> {
  const sock = createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  const first = new Promise<Buffer>((r) => sock.once("message", (m) => r(m)));
  const attempt = connect({ host: "127.0.0.1", port: sock.address().port, psk: { identity: "bench", key: KEY }, timeoutMs: 300 }).catch(
    () => undefined,
  );
  const hello = await first;
  await attempt;
  sock.close();
  return hello;
}

function compileGenerator(dir: string): string {
  const source = join(dirname(import.meta.filename), "flood-gen.c");
  const binary = join(dir, "flood-gen");
  execFileSync("cc", ["-O2", "-o", binary, source], { stdio: "inherit" });
  return binary;
}

function startServer(
  setup: ServerSetup,
): Promise<{ child: ChildProcess; port: number; stats: () => Promise<{ stats: ServerStats; cpuMicros: number }> }> {
  const child = fork(import.meta.filename, ["--serve", JSON.stringify(setup.options)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const stats = (): Promise<{ stats: ServerStats; cpuMicros: number }> =>
    new Promise((resolve) => {
      const on = (m: FromServer): void => {
        if (m.kind !== "stats") return;
        child.off("message", on);
        resolve(m);
      };
      child.on("message", on);
      child.send({ kind: "stats" });
    });
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`server exited with ${code}`)));
    child.on("message", (m: FromServer) => {
      if (m.kind === "ready") resolve({ child, port: m.port, stats });
    });
  });
}

function runGenerator(
  binary: string,
  helloFile: string,
  port: number,
  rate: number,
  seconds: number,
  prefixes: number,
): Promise<{ sent: number; seconds: number; mode: string }> {
  return new Promise((resolve, reject) => {
    const gen = spawn(binary, [helloFile, String(port), String(rate), String(seconds), String(prefixes)], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    gen.stdout.on("data", (d: Buffer) => (out += d.toString()));
    gen.once("error", reject);
    gen.once("exit", (code) => {
      const m = /sent (\d+) seconds ([\d.]+) mode (\w+)/.exec(out);
      if (code !== 0 || m === null) reject(new Error(`flood generator failed (${code}): ${out}`));
      else resolve({ sent: Number(m[1]), seconds: Number(m[2]), mode: m[3] as string });
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function scenario(
  setup: ServerSetup,
  rate: number,
  o: { binary: string; helloFile: string; seconds: number; prefixes: number; sessions: number; intervalMs: number },
): Promise<Result> {
  const server = await startServer(setup);
  const sessions: DtlsConnection[] = [];
  try {
    for (let i = 0; i < o.sessions; i++) {
      sessions.push(await connect({ host: "127.0.0.1", port: server.port, psk: { identity: "bench", key: KEY }, timeoutMs: 5000 }));
    }
    const sentAt: number[] = [];
    const rtt: (number | undefined)[] = [];
    for (const c of sessions) {
      c.on("data", (d: Buffer) => {
        const n = d.readUInt32BE(0);
        const t = sentAt[n];
        if (t !== undefined && rtt[n] === undefined) rtt[n] = performance.now() - t;
      });
      c.on("error", () => undefined);
    }
    const drops0 = kernelDrops(server.port);
    const before = await server.stats();
    const warmMs = 500;
    const flood = runGenerator(o.binary, o.helloFile, server.port, rate, o.seconds + warmMs / 1000, o.prefixes);
    await sleep(warmMs);
    // a new device connecting while the flood goes on
    const t0 = performance.now();
    const newcomer = connect({ host: "127.0.0.1", port: server.port, psk: { identity: "bench", key: KEY }, timeoutMs: o.seconds * 1000 }).then(
      (c) => {
        c.close();
        return performance.now() - t0;
      },
      () => undefined,
    );
    let n = 0;
    const end = performance.now() + o.seconds * 1000;
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        if (performance.now() >= end) {
          clearInterval(tick);
          resolve();
          return;
        }
        const record = Buffer.alloc(16);
        record.writeUInt32BE(n, 0);
        sentAt[n] = performance.now();
        (sessions[n % sessions.length] as DtlsConnection).send(record);
        n++;
      }, o.intervalMs);
    });
    const generated = await flood;
    await sleep(1000);
    const after = await server.stats();
    const newHandshakeMs = await newcomer;
    const times = rtt.filter((t): t is number => t !== undefined).sort((a, b) => a - b);
    const timeline: { lost: number; worst: number }[] = [];
    const startedAt = sentAt[0] ?? 0;
    for (let i = 0; i < n; i++) {
      const slot = Math.floor(((sentAt[i] ?? startedAt) - startedAt) / 250);
      const e = (timeline[slot] ??= { lost: 0, worst: 0 });
      const t = rtt[i];
      if (t === undefined) e.lost++;
      else e.worst = Math.max(e.worst, t);
    }
    const dropped: Record<string, number> = {};
    for (const [cause, k] of Object.entries(after.stats.clientHellosDropped)) {
      dropped[cause] = k - (before.stats.clientHellosDropped[cause as keyof ServerStats["clientHellosDropped"]] ?? 0);
    }
    const floodSeconds = generated.seconds;
    return {
      rate,
      setup: setup.name,
      generated: generated.sent,
      generatedPerSecond: generated.sent / floodSeconds,
      mode: generated.mode,
      records: n,
      lost: n - times.length,
      p50: percentile(times, 50),
      p99: percentile(times, 99),
      max: times[times.length - 1] ?? NaN,
      kernelDrops: kernelDrops(server.port) - drops0,
      helloVerifyPerSecond: (after.stats.helloVerifyRequestsSent - before.stats.helloVerifyRequestsSent) / floodSeconds,
      hellosDropped: dropped,
      serverCpu: (after.cpuMicros - before.cpuMicros) / 1e6 / (floodSeconds + 1),
      newHandshakeMs,
      timeline: Array.from(timeline, (e) => e ?? { lost: 0, worst: 0 }),
    };
  } finally {
    for (const c of sessions) c.close();
    server.child.disconnect();
    await new Promise((r) => server.child.once("exit", r));
  }
}

function fmt(x: number, digits = 1): string {
  return Number.isFinite(x) ? x.toFixed(digits) : "-";
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rates: { type: "string", default: "100000,0" },
      seconds: { type: "string", default: "4" },
      prefixes: { type: "string", default: "64" },
      sessions: { type: "string", default: "4" },
      "interval-ms": { type: "string", default: "2" },
      timeline: { type: "boolean", default: false },
      "recv-buffer": { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  const rates = values.rates.split(",").map(Number);
  const seconds = Math.min(30, Math.max(1, Number(values.seconds)));
  const prefixes = Math.min(60_000, Math.max(1, Number(values.prefixes)));
  const sessions = Math.min(64, Math.max(1, Number(values.sessions)));
  const intervalMs = Math.max(1, Number(values["interval-ms"]));
  if (rates.some((r) => !Number.isFinite(r) || r < 0 || r > 10_000_000)) throw new Error("--rates: numbers from 0 (as fast as possible) to 10000000");
  const setups: ServerSetup[] = [
    {
      name: "old",
      options: { helloVerifyRatePerSecond: 0, helloVerifyRatePerPrefix: 0, recvBufferBytes: OLD_BUFFER_BYTES, sendBufferBytes: OLD_BUFFER_BYTES },
    },
    { name: "new", options: values["recv-buffer"] === undefined ? {} : { recvBufferBytes: Number(values["recv-buffer"]) } },
  ];
  const loadBefore = loadavg();
  const dir = mkdtempSync(join(tmpdir(), "dtlspush-flood-"));
  const results: Result[] = [];
  try {
    const binary = compileGenerator(dir);
    const helloFile = join(dir, "client-hello.bin");
    writeFileSync(helloFile, await captureClientHello());
    for (const rate of rates) {
      for (const setup of setups) {
        results.push(await scenario(setup, rate, { binary, helloFile, seconds, prefixes, sessions, intervalMs }));
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (values.json) {
    console.log(JSON.stringify(results, null, 2));
    return;
  }
  console.log(`ClientHello flood vs ${sessions} established sessions (one 16-byte record every ${intervalMs} ms, echoed), ${seconds} s per run`);
  console.log(
    `load average before / after: ${loadBefore.map((l) => l.toFixed(2)).join(" ")} / ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")} on ${availableParallelism()} CPUs`,
  );
  console.log(
    "offered/s   setup  generated/s  records  lost   loss%   p50 ms   p99 ms   max ms  kernel drops  HVR/s     CH dropped (global/prefix/dup/turn)  server CPU  new handshake",
  );
  for (const r of results) {
    const d = r.hellosDropped;
    console.log(
      [
        (r.rate === 0 ? "max" : String(r.rate)).padEnd(10),
        r.setup.padEnd(5),
        fmt(r.generatedPerSecond, 0).padStart(12),
        String(r.records).padStart(8),
        String(r.lost).padStart(5),
        fmt((100 * r.lost) / Math.max(1, r.records), 2).padStart(7),
        fmt(r.p50).padStart(8),
        fmt(r.p99).padStart(8),
        fmt(r.max).padStart(8),
        String(r.kernelDrops).padStart(13),
        fmt(r.helloVerifyPerSecond, 0).padStart(7),
        `${d.global_limit ?? 0}/${d.prefix_limit ?? 0}/${d.duplicate ?? 0}/${d.turn_limit ?? 0}`.padStart(38),
        `${fmt(100 * r.serverCpu, 0)}%`.padStart(11),
        (r.newHandshakeMs === undefined ? "none" : `${fmt(r.newHandshakeMs, 0)} ms`).padStart(14),
      ].join(" "),
    );
  }
  if (values.timeline) {
    console.log("per 250 ms of each run: records lost / slowest echo ms");
    for (const r of results) {
      console.log(
        `${(r.rate === 0 ? "max" : String(r.rate)).padEnd(10)} ${r.setup.padEnd(5)} ${r.timeline.map((e) => `${e.lost}/${fmt(e.worst, 0)}`).join(" ")}`,
      );
    }
  }
  for (const rate of rates) {
    const old = results.find((r) => r.rate === rate && r.setup === "old");
    const neu = results.find((r) => r.rate === rate && r.setup === "new");
    if (old === undefined || neu === undefined) continue;
    const loss = (r: Result): number => r.lost / Math.max(1, r.records);
    const ratio = (a: number, b: number): string => (b > 0 ? `x${fmt(a / b, 1)}` : a > 0 ? "new: none" : "both none");
    console.log(
      `${rate === 0 ? "max rate" : `${rate}/s`}: established records lost old/new ${fmt(100 * loss(old), 2)}% / ${fmt(100 * loss(neu), 2)}% (${ratio(loss(old), loss(neu))}), ` +
        `p99 old/new ${fmt(old.p99)} / ${fmt(neu.p99)} ms (${ratio(old.p99, neu.p99)}); flood generated ${fmt(old.generatedPerSecond, 0)} / ${fmt(neu.generatedPerSecond, 0)} per s (${old.mode} socket)`,
    );
  }
}

if (process.argv[2] === "--serve") {
  await serve(JSON.parse(process.argv[3] ?? "{}") as ServerSetup["options"]);
} else {
  await main();
}
