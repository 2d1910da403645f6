/**
 * `npm run bench:memory`: the push daemon's memory per idle session, server
 * side only. Not a test: it prints figures and never fails on a threshold.
 *
 * A child process (with --expose-gc) runs startPushServer on a memory store
 * and registers N PSK devices; this process connects N devices with the SDK
 * over our own DTLS client on 127.0.0.1, each says Hello and gets its Welcome.
 * The child collects garbage and reads its V8 heap and resident memory at
 * three points (started, devices registered, sessions open) and reports them
 * over IPC; the figures per session are the growth from "registered" to
 * "sessions open", divided by the sessions the daemon holds.
 *
 *   node scripts/bench/session-memory.ts [--sessions N] [--concurrency C] [--hold S] [--json] [--snapshot DIR] [--cid-length L]
 *
 * --cid-length L is the server's Connection ID length (default 6, as the
 * daemon's; 0 turns CID off, to compare).
 *
 * --snapshot DIR also writes V8 heap snapshots of the server at "registered"
 * and "sessions" (registered.heapsnapshot, sessions.heapsnapshot); compare
 * them with scripts/bench/heap-diff.ts to see what each session holds.
 *
 * The heap figure is the one to compare. Resident memory grows by more than
 * the sessions hold: V8 keeps the young generation and the old-space pages it
 * grew during the burst of handshakes, and the allocator keeps what freed
 * crypto contexts used; a longer --hold lets V8 shrink its heap (heapTotal),
 * not always the resident size.
 */
import { fork, type ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeHeapSnapshot } from "node:v8";
import { parseArgs } from "node:util";
import { connect, type DtlspushClient } from "../../src/client/index.ts";
import { startPushServer } from "../../src/daemon/push-server.ts";
import { openMemoryStore } from "../../src/store/index.ts";
import { nextMessage as next, settledMemory, type MemorySample, type ToServer } from "./child-server.ts";

type Sample = MemorySample;
type FromServer =
  | { readonly kind: "ready"; readonly port: number }
  | { readonly kind: "sample"; readonly label: string; readonly sample: Sample; readonly sessions: number; readonly online: number };

const identity = (i: number): string => `mem-${i}`;
const pskOf = (i: number): Uint8Array => {
  const k = new Uint8Array(16);
  new DataView(k.buffer).setUint32(12, i);
  return k;
};

// ---- the daemon (child process) ---------------------------------------------

async function sample(): Promise<Sample> {
  const m = await settledMemory();
  return { heapUsed: m.heapUsed, rss: m.rss, arrayBuffers: m.arrayBuffers, external: m.external, heapTotal: m.heapTotal };
}

async function serverMain(n: number, snapshotDir: string | undefined, cidLength: number): Promise<void> {
  const send = (m: FromServer): void => void process.send?.(m);
  const server = await startPushServer({
    store: openMemoryStore(),
    dtls: { host: "127.0.0.1", port: 0, maxHandshakes: 10_000, maxSessions: n + 100, connectionIdLength: cidLength },
  });
  const report = async (label: string): Promise<void> => {
    const s = await sample();
    if (snapshotDir !== undefined && label !== "started") writeHeapSnapshot(join(snapshotDir, `${label}.heapsnapshot`));
    send({ kind: "sample", label, sample: s, sessions: server.dtls.sessions(), online: server.engine.onlineCount() });
  };
  await report("started");
  for (let i = 0; i < n; i++) await server.registry.add({ id: identity(i), psk: { identity: identity(i), key: pskOf(i) } });
  await report("registered");
  process.on("disconnect", () => process.exit(0)); // the parent is gone
  process.on("message", (m: ToServer) => {
    if (m.kind === "measure") void report(m.label);
    else void server.close().then(() => process.exit(0));
  });
  send({ kind: "ready", port: server.address().port });
}

// ---- the devices (this process) ----------------------------------------------

const nextMessage = (child: ChildProcess, kind: FromServer["kind"]): Promise<FromServer> => next<FromServer>(child, kind);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      server: { type: "boolean", default: false },
      sessions: { type: "string", default: "5000" },
      concurrency: { type: "string", default: "50" },
      hold: { type: "string", default: "2" },
      json: { type: "boolean", default: false },
      snapshot: { type: "string" },
      "cid-length": { type: "string", default: "6" },
    },
  });
  const cidLength = Number(values["cid-length"]);
  const n = Number(values.sessions);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--sessions must be a positive integer, not ${values.sessions}`);
  if (values.server) return serverMain(n, values.snapshot, cidLength);
  if (values.snapshot !== undefined) mkdirSync(values.snapshot, { recursive: true });
  const concurrency = Math.max(1, Number(values.concurrency));
  const holdMs = Number(values.hold) * 1000;

  const snapshotArgs = values.snapshot === undefined ? [] : ["--snapshot", values.snapshot];
  const child = fork(import.meta.filename, ["--server", "--sessions", String(n), "--cid-length", String(cidLength), ...snapshotArgs], {
    execArgv: [...process.execArgv.filter((a) => a !== "--expose-gc"), "--expose-gc"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const samples = new Map<string, FromServer & { kind: "sample" }>();
  child.on("message", (m: FromServer) => {
    if (m.kind === "sample") samples.set(m.label, m);
  });
  const ready = (await nextMessage(child, "ready")) as FromServer & { kind: "ready" };

  const clients: DtlspushClient[] = [];
  let next = 0;
  let failed = 0;
  let firstError = "";
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      try {
        clients.push(await connect({ host: "127.0.0.1", port: ready.port, psk: { identity: identity(i), key: pskOf(i) }, reconnect: false }));
      } catch (e) {
        if (failed++ === 0) firstError = e instanceof Error ? e.message : String(e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  const connectSeconds = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, holdMs));

  const measured = nextMessage(child, "sample");
  child.send({ kind: "measure", label: "sessions" } satisfies ToServer);
  await measured;
  for (const c of clients) await c.close();
  child.send({ kind: "stop" } satisfies ToServer);
  await new Promise((r) => child.once("exit", r));

  const at = (label: string): FromServer & { kind: "sample" } => {
    const s = samples.get(label);
    if (s === undefined) throw new Error(`no "${label}" sample from the server`);
    return s;
  };
  const started = at("started");
  const registered = at("registered");
  const open = at("sessions");
  const sessions = open.sessions;
  const per = (key: keyof Sample, from: FromServer & { kind: "sample" }, to: FromServer & { kind: "sample" }, count: number): number =>
    count > 0 ? Math.round((to.sample[key] - from.sample[key]) / count) : NaN;
  const result = {
    sessions,
    devicesOnline: open.online,
    failedConnects: failed,
    connectSeconds: Math.round(connectSeconds * 10) / 10,
    heapBytesPerSession: per("heapUsed", registered, open, sessions),
    rssBytesPerSession: per("rss", registered, open, sessions),
    arrayBufferBytesPerSession: per("arrayBuffers", registered, open, sessions),
    heapReservedBytesPerSession: per("heapTotal", registered, open, sessions),
    heapBytesPerRegisteredDevice: per("heapUsed", started, registered, n),
    heapUsedBytes: open.sample.heapUsed,
    rssBytes: open.sample.rss,
    samples: { started: started.sample, registered: registered.sample, sessions: open.sample },
  };
  if (values.json) {
    console.log(JSON.stringify(result));
    return;
  }
  const row = (name: string, value: number, unit: string): void => console.log(`  ${name.padEnd(40)} ${String(value).padStart(12)} ${unit}`);
  console.log(`server memory with ${sessions} idle sessions (${failed} connects failed, ${result.connectSeconds} s to connect)`);
  if (failed > 0) console.log(`  first failure: ${firstError}`);
  row("heap per session", result.heapBytesPerSession, "bytes");
  row("resident (RSS) per session", result.rssBytesPerSession, "bytes");
  row("  of which ArrayBuffers", result.arrayBufferBytesPerSession, "bytes");
  row("V8 heap reserved (heapTotal) per session", result.heapReservedBytesPerSession, "bytes");
  row("heap per registered device (no session)", result.heapBytesPerRegisteredDevice, "bytes");
  row("heap used", result.heapUsedBytes, "bytes");
  row("resident", result.rssBytes, "bytes");
}

await main();
