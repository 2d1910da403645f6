/**
 * What DTLS handshakes cost the server in memory, and whether closed sessions
 * give it back. Not a test: it prints figures and never fails on a threshold.
 *
 *   node scripts/bench/handshake-memory.ts --mode held [--handshakes N] [--junk] [--json]
 *   node scripts/bench/handshake-memory.ts --mode churn [--sessions N] [--concurrency C] [--json]
 *
 * held: N UDP sockets on 127.0.0.1 each complete the cookie exchange and never
 * send their flight 3, the way a host holds handshakes open; with --junk each
 * also sends what an attacker would have the server keep (fragments declaring
 * 64 KiB, 16 early epoch-1 records of 16 KiB). The server (a child process
 * with --expose-gc, caps raised so that all N are held) reports its memory
 * after GC before and after: the growth divided by the handshakes it holds.
 *
 * churn: N short sessions (handshake, one record echoed, close_notify) over
 * UDP from 127.0.0.1-127.0.0.4, C at a time, against an echo server with the
 * daemon's idle timeout (300 s); the server reports its heap after GC when
 * started, after a warm-up of 1 000 sessions and at the end.
 */
import { fork, type ChildProcess } from "node:child_process";
import { createSocket, type Socket } from "node:dgram";
import { parseArgs } from "node:util";
import { ContentType, HandshakeType, ProtocolVersion } from "../../src/dtls/constants.ts";
import { encodeFragment, encodeHandshake, parseHandshakeFragments } from "../../src/dtls/handshake-codec.ts";
import { connect, listen } from "../../src/dtls/index.ts";
import { decodeHelloVerifyRequest, encodeClientHello, EMPTY, type ClientHello } from "../../src/dtls/messages.ts";
import { encodePlainRecord, parseRecords } from "../../src/dtls/record.ts";
import { nextMessage as next, settledMemory, type MemorySample, type ToServer } from "./child-server.ts";

type Sample = MemorySample;
type FromServer =
  | { readonly kind: "ready"; readonly port: number }
  | { readonly kind: "sample"; readonly label: string; readonly sample: Sample; readonly handshakes: number; readonly sessions: number };

const KEY = new Uint8Array(16).fill(7);
const IDENTITY = "bench";

// ---- the server (child process) ----------------------------------------------

async function sample(): Promise<Sample> {
  const m = await settledMemory();
  return { heapUsed: m.heapUsed, heapTotal: m.heapTotal, arrayBuffers: m.arrayBuffers, external: m.external, rss: m.rss };
}

async function serverMain(held: number): Promise<void> {
  const server = await listen({
    host: "127.0.0.1",
    port: 0,
    psk: { keys: new Map([[IDENTITY, KEY]]) },
    sockets: 1,
    idleTimeoutMs: 300_000,
    maxHandshakes: held + 100,
    maxHandshakesPerHost: held + 100,
    maxSessions: 1_000_000,
    maxSessionsPerHost: 1_000_000,
    handshakeTimeoutMs: 600_000,
    // with our caps: far more than the held handshakes need; without: ignored
    handshakeMemoryBytes: 4 * 1024 * 1024 * 1024,
  });
  server.on("session", (c) => c.on("data", (d) => c.send(d)));
  const send = (m: FromServer): void => void process.send?.(m);
  process.on("disconnect", () => process.exit(0));
  process.on("message", (m: ToServer) => {
    if (m.kind === "stop") {
      void server.close().then(() => process.exit(0));
      return;
    }
    void sample().then((s) => {
      const stats = server.stats as { handshakesStarted: number; handshakesCompleted: number; handshakesFailed: number };
      send({
        kind: "sample",
        label: m.label,
        sample: s,
        handshakes: stats.handshakesStarted - stats.handshakesCompleted - stats.handshakesFailed,
        sessions: server.sessions(),
      });
    });
  });
  send({ kind: "ready", port: server.address().port });
}

// ---- this process ------------------------------------------------------------

const nextMessage = (child: ChildProcess, kind: FromServer["kind"]): Promise<FromServer> => next<FromServer>(child, kind);

async function measure(child: ChildProcess, label: string): Promise<FromServer & { kind: "sample" }> {
  const m = nextMessage(child, "sample");
  child.send({ kind: "measure", label } satisfies ToServer);
  return (await m) as FromServer & { kind: "sample" };
}

function hello(cookie: Uint8Array): ClientHello {
  return {
    version: ProtocolVersion.DTLS1_2,
    random: crypto.getRandomValues(new Uint8Array(32)),
    sessionId: EMPTY,
    cookie,
    cipherSuites: [0x00a8],
    compressionMethods: new Uint8Array([0]),
    extensions: undefined,
  };
}

/** A socket that completes the cookie exchange and then only sends junk (if asked). */
async function holdHandshake(port: number, junk: boolean): Promise<Socket> {
  const socket = createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind({ address: "127.0.0.1", port: 0 }, () => socket.connect(port, "127.0.0.1", () => resolve())));
  const answer = (): Promise<Uint8Array | undefined> =>
    new Promise((resolve) => {
      const t = setTimeout(() => resolve(undefined), 2000);
      socket.once("message", (m) => {
        clearTimeout(t);
        resolve(new Uint8Array(m));
      });
    });
  /** Sends `datagram` until an answer comes (a loaded machine drops some), at most 5 times. */
  const exchange = async (datagram: Uint8Array, what: string): Promise<Uint8Array> => {
    for (let i = 0; i < 5; i++) {
      socket.send(datagram);
      const a = await answer();
      if (a !== undefined) return a;
    }
    throw new Error(`no ${what}`);
  };
  const first = hello(EMPTY);
  const hvr = await exchange(
    encodePlainRecord(ContentType.handshake, ProtocolVersion.DTLS1_2, 0, 0, encodeHandshake(HandshakeType.client_hello, 0, encodeClientHello(first))),
    "HelloVerifyRequest",
  );
  const cookie = decodeHelloVerifyRequest(
    (parseHandshakeFragments((parseRecords(hvr)[0] as { body: Uint8Array }).body)[0] as { body: Uint8Array }).body,
  ).cookie;
  const second = { ...first, cookie };
  await exchange(
    encodePlainRecord(
      ContentType.handshake,
      ProtocolVersion.DTLS1_2,
      0,
      1,
      encodeHandshake(HandshakeType.client_hello, 1, encodeClientHello(second)),
    ),
    "ServerHello (refused?)",
  );
  if (junk) {
    for (const seq of [2, 3]) {
      const declared = new Uint8Array(0xffff);
      socket.send(
        encodePlainRecord(
          ContentType.handshake,
          ProtocolVersion.DTLS1_2,
          0,
          seq,
          encodeFragment(HandshakeType.client_key_exchange, seq, declared, 0, 1),
        ),
      );
    }
    const body = new Uint8Array(16 * 1024).fill(0x5a);
    for (let i = 0; i < 16; i++) {
      socket.send(encodePlainRecord(ContentType.application_data, ProtocolVersion.DTLS1_2, 1, i, body));
      if (i % 4 === 3) await new Promise((r) => setTimeout(r, 2)); // let the server read
    }
  }
  return socket;
}

async function held(child: ChildProcess, port: number, n: number, junk: boolean, json: boolean): Promise<void> {
  const before = await measure(child, "before");
  const sockets: Socket[] = [];
  for (let i = 0; i < n; i += 50) sockets.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, () => holdHandshake(port, junk)))));
  await new Promise((r) => setTimeout(r, 200));
  const after = await measure(child, "held");
  for (const s of sockets) s.close();
  const count = after.handshakes;
  const per = (k: keyof Sample): number => Math.round((after.sample[k] - before.sample[k]) / count);
  const result = {
    mode: "held",
    junk,
    handshakesHeld: count,
    heapBytesPerHandshake: per("heapUsed"),
    arrayBufferBytesPerHandshake: per("arrayBuffers"),
    externalBytesPerHandshake: per("external"),
    rssBytesPerHandshake: per("rss"),
  };
  if (json) console.log(JSON.stringify(result));
  else {
    console.log(
      `server memory per held handshake (${count} held${junk ? ", each sent 2 fragments declaring 64 KiB and 16 early records of 16 KiB" : ""})`,
    );
    console.log(`  V8 heap            ${String(result.heapBytesPerHandshake).padStart(10)} bytes`);
    console.log(`  ArrayBuffers       ${String(result.arrayBufferBytesPerHandshake).padStart(10)} bytes`);
    console.log(`  external (all)     ${String(result.externalBytesPerHandshake).padStart(10)} bytes`);
    console.log(`  resident (RSS)     ${String(result.rssBytesPerHandshake).padStart(10)} bytes`);
  }
}

async function churn(child: ChildProcess, port: number, n: number, concurrency: number, json: boolean): Promise<void> {
  const started = await measure(child, "started");
  let next = 0;
  let failed = 0;
  const one = async (i: number): Promise<void> => {
    const c = await connect({
      host: "127.0.0.1",
      port,
      localAddress: `127.0.0.${1 + (i % 4)}`,
      psk: { identity: IDENTITY, key: KEY },
      timeoutMs: 10_000,
    });
    const echoed = new Promise<void>((resolve) => c.once("data", () => resolve()));
    c.send(new Uint8Array([1, 2, 3, 4]));
    await echoed;
    c.close();
  };
  const run = async (upTo: number): Promise<void> => {
    const lane = async (): Promise<void> => {
      while (next < upTo) {
        const i = next++;
        await one(i).catch(() => failed++);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, lane));
  };
  const warmup = Math.min(1000, n);
  await run(warmup);
  await new Promise((r) => setTimeout(r, 1500)); // the last close_notify datagrams are read
  const warm = await measure(child, "warm");
  const t0 = performance.now();
  await run(n);
  const seconds = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 1500));
  const end = await measure(child, "end");
  const pct = (a: number, b: number): number => Math.round(((b - a) / a) * 1000) / 10;
  const result = {
    mode: "churn",
    sessions: n,
    failed,
    seconds: Math.round(seconds * 10) / 10,
    sessionsOpenAtEnd: end.sessions,
    handshakesAtEnd: end.handshakes,
    heapUsed: { started: started.sample.heapUsed, afterWarmup: warm.sample.heapUsed, end: end.sample.heapUsed },
    heapGrowthSinceStartPercent: pct(started.sample.heapUsed, end.sample.heapUsed),
    heapGrowthSinceWarmupPercent: pct(warm.sample.heapUsed, end.sample.heapUsed),
    external: { started: started.sample.external, afterWarmup: warm.sample.external, end: end.sample.external },
    heapTotal: { started: started.sample.heapTotal, afterWarmup: warm.sample.heapTotal, end: end.sample.heapTotal },
    rss: { started: started.sample.rss, afterWarmup: warm.sample.rss, end: end.sample.rss },
  };
  if (json) console.log(JSON.stringify(result));
  else {
    console.log(
      `${n} sessions opened and closed (handshake, one record echoed, close_notify), ${failed} failed, ${result.seconds} s after the warm-up`,
    );
    console.log(`  sessions / handshakes left on the server: ${end.sessions} / ${end.handshakes}`);
    const mb = (b: number): string => `${(b / 1048576).toFixed(1)} MiB`;
    console.log(
      `  heap after GC: started ${mb(started.sample.heapUsed)}, after ${warmup} sessions ${mb(warm.sample.heapUsed)}, at the end ${mb(end.sample.heapUsed)}`,
    );
    console.log(`  heap growth: ${result.heapGrowthSinceStartPercent} % since start, ${result.heapGrowthSinceWarmupPercent} % since the warm-up`);
    console.log(`  external (Buffers, native): started ${mb(started.sample.external)}, at the end ${mb(end.sample.external)}`);
    console.log(`  V8 heap reserved: started ${mb(started.sample.heapTotal)}, at the end ${mb(end.sample.heapTotal)}`);
    console.log(`  resident: started ${mb(started.sample.rss)}, at the end ${mb(end.sample.rss)}`);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      server: { type: "string" },
      mode: { type: "string", default: "held" },
      handshakes: { type: "string", default: "1000" },
      junk: { type: "boolean", default: false },
      sessions: { type: "string", default: "30000" },
      concurrency: { type: "string", default: "64" },
      json: { type: "boolean", default: false },
    },
  });
  const handshakes = Number(values.handshakes);
  if (values.server !== undefined) return serverMain(Number(values.server));
  if (values.mode !== "held" && values.mode !== "churn") throw new Error(`--mode is held or churn, not ${values.mode}`);
  const child = fork(import.meta.filename, ["--server", String(values.mode === "held" ? handshakes : 0)], {
    execArgv: [...process.execArgv.filter((a) => a !== "--expose-gc"), "--expose-gc"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const ready = (await nextMessage(child, "ready")) as FromServer & { kind: "ready" };
  try {
    if (values.mode === "held") await held(child, ready.port, handshakes, values.junk, values.json);
    else await churn(child, ready.port, Number(values.sessions), Math.max(1, Number(values.concurrency)), values.json);
  } finally {
    child.send({ kind: "stop" } satisfies ToServer);
    await new Promise((r) => child.once("exit", r));
  }
}

await main();
