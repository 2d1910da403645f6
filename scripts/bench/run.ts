/**
 * `npm run bench`: figures for the DTLS engine on this machine. Not a test:
 * it prints numbers and ratios, never fails on a threshold. Every loop is
 * bounded in count and time; all traffic stays on 127.0.0.1.
 *
 *  1. Server CPU per PSK handshake, in process (sans-I/O, no sockets); 1c. full vs
 *     resumed (abbreviated) handshakes: server CPU and bytes on the wire.
 *  2. Server CPU per PSK handshake over loopback UDP (server in its own process).
 *  3. Application records echoed per second per server core over UDP, against a
 *     plain UDP echo server measured the same way (the ratio is the DTLS cost).
 */
import { spawn, type ChildProcessByStdio } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { createCipheriv, createDecipheriv, createHmac, createSecretKey } from "node:crypto";
import { createSocket } from "node:dgram";
import { createInterface } from "node:readline";
import { Connection } from "../../src/dtls/connection.ts";
import { ClientHandshake, type ClientResumption } from "../../src/dtls/handshake-client.ts";
import { serverResumption } from "../../src/dtls/resumption.ts";
import type { SavedSession, TicketKeySource } from "../../src/dtls/resumption-options.ts";
import { decodeSavedSession } from "../../src/dtls/saved-session.ts";
import { connect, type DtlsConnection } from "../../src/dtls/index.ts";
import { verifyChain } from "../../src/dtls/cert-verify.ts";
import { loadPrivateKey, parseCertificate, pemCertificates, type Certificate, type EcdhGroup } from "../../src/crypto/index.ts";
import { DEFAULT_RETRANSMIT, type ServerCredential } from "../../src/dtls/options.ts";
import { createCertificateAuthority, issueServerCertificate } from "../../src/pki/index.ts";
import { ServerCore } from "../../src/dtls/server-core.ts";
import { suiteByName, type SuiteName } from "../../src/dtls/suites.ts";

const KEY = Buffer.from("000102030405060708090a0b0c0d0e0f", "hex");
const quick = process.argv.includes("--quick");
const json = process.argv.includes("--json");
const results: Record<string, number> = {};
function report(name: string, value: number, unit: string): void {
  results[name] = value;
  if (!json) console.log(`  ${name.padEnd(52)} ${value.toFixed(value < 10 ? 2 : 0).padStart(10)} ${unit}`);
}

// ---- 1. in-process handshakes ---------------------------------------------
interface HandshakeSetup {
  suite: SuiteName;
  groups?: EcdhGroup[];
  /** A server certificate (for certificate suites); the client pins its fingerprint. */
  certificate?: { credential: ServerCredential; fingerprint: string };
  /** Server resumption on (tickets, or session IDs only); off when absent. */
  resumption?: "ticket" | "session_id";
  /** Every measured handshake resumes the session of one full handshake made first (unmeasured). */
  resume?: boolean;
}

const NO_TICKETS: TicketKeySource = { current: () => undefined, byName: () => undefined };

function inProcessHandshakes(setup: HandshakeSetup, n: number): { serverUs: number; clientUs: number; bytes: number } {
  const config = {
    suites: [suiteByName(setup.suite)],
    groups: setup.groups,
    mtu: 1200,
    requireExtendedMasterSecret: false,
    retransmit: DEFAULT_RETRANSMIT,
    idleTimeoutMs: 0,
  };
  let toServer: Uint8Array[] = [];
  let toClient: Uint8Array[] = [];
  let established = 0;
  const cert = setup.certificate;
  const server = new ServerCore(
    {
      ...config,
      psk: cert ? undefined : { lookup: () => KEY },
      certificates: cert ? [cert.credential] : [],
      maxHandshakes: n + 10,
      maxSessions: n + 10,
      resumption: setup.resumption === undefined ? undefined : serverResumption(setup.resumption === "ticket" ? {} : { ticketKeys: NO_TICKETS }),
    },
    {
      send: (_p, d) => toClient.push(d),
      established: () => established++,
      handshakeFailed: (_p, e) => {
        throw e;
      },
    },
    0,
  );
  let saved: SavedSession | undefined;
  const resumption = (): ClientResumption => ({
    offer: setup.resume && saved !== undefined ? decodeSavedSession(saved) : undefined,
    server: "bench",
    wallClock: Date.now,
    onSession: (s) => {
      saved ??= s;
    },
  });
  const auth = cert
    ? {
        psk: undefined,
        verifyServer: (chain: readonly Certificate[]) => verifyChain(chain, { anchors: [], fingerprint: cert.fingerprint }, new Date()),
      }
    : { psk: { identity: "bench-1", key: KEY }, verifyServer: undefined };
  // this thread's CPU time, not the wall clock: other load on the machine (or a preempted slice) adds nothing
  let serverUs = 0;
  let clientUs = 0;
  let bytes = 0;
  const rounds = setup.resume ? n + 1 : n;
  for (let i = 0; i < rounds; i++) {
    if (setup.resume && i === 1) {
      // the first (full) handshake only made the session to resume: not measured
      if (saved === undefined) throw new Error("the full handshake gave no session to resume");
      serverUs = 0;
      clientUs = 0;
      bytes = 0;
      established = 0;
    }
    const peer = { address: "127.0.0.1", port: 1024 + (i % 60000), key: `c${i}` };
    const t0 = process.threadCpuUsage();
    const client = new Connection(
      "client",
      config,
      { sendDatagram: (d) => toServer.push(d), established: () => {}, data: () => {}, closed: () => {} },
      0,
    );
    client.attach(new ClientHandshake(client, auth, 0, resumption()));
    clientUs += cpuSince(t0);
    while (toServer.length > 0 || toClient.length > 0) {
      const ins = toServer;
      toServer = [];
      const s0 = process.threadCpuUsage();
      for (const d of ins) {
        bytes += d.length;
        server.receive(peer, d, 0, peer.key);
      }
      serverUs += cpuSince(s0);
      const outs = toClient;
      toClient = [];
      const c0 = process.threadCpuUsage();
      for (const d of outs) {
        bytes += d.length;
        client.receive(d, 0);
      }
      clientUs += cpuSince(c0);
    }
  }
  if (established !== n) throw new Error(`only ${established}/${n} handshakes completed`);
  return { serverUs: serverUs / n, clientUs: clientUs / n, bytes: bytes / n };
}

/** Microseconds of this thread's CPU (user + system) since `start` (process.threadCpuUsage, ~0.4 us per call). */
function cpuSince(start: NodeJS.CpuUsage): number {
  const d = process.threadCpuUsage(start);
  return d.user + d.system;
}

// ---- child server helpers ---------------------------------------------------
interface Child {
  proc: ChildProcessByStdio<Writable, Readable, null>;
  port: number;
  /** User and system CPU of the server process so far, in microseconds. */
  cpu(): Promise<{ user: number; system: number }>;
  stop(): void;
}

async function startServer(args: string[]): Promise<Child> {
  const flags = (process.env.BENCH_SERVER_NODE_FLAGS ?? "").split(" ").filter((f) => f !== "");
  const proc = spawn(process.execPath, [...flags, "scripts/bench/echo-server.ts", ...args], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: proc.stdout });
  const waiters: ((l: string) => void)[] = [];
  lines.on("line", (l) => waiters.shift()?.(l));
  const next = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("bench server did not answer")), 10_000);
      waiters.push((l) => {
        clearTimeout(t);
        resolve(l);
      });
    });
  const port = Number((await next()).split(" ")[1]);
  return {
    proc,
    port,
    async cpu() {
      const p = next();
      proc.stdin.write("cpu\n");
      const [, user, system] = (await p).split(" ");
      return { user: Number(user), system: Number(system) };
    },
    stop() {
      proc.stdin.end();
      proc.kill();
    },
  };
}

// ---- 2. UDP handshakes ------------------------------------------------------
async function udpHandshakes(suite: SuiteName, n: number, concurrency: number): Promise<{ serverUs: number; userUs: number; perSecond: number }> {
  const srv = await startServer([`--suite=${suite}`]);
  try {
    // Warm up (JIT) before measuring.
    for (let i = 0; i < 50; i++) {
      const c = await connect({ host: "127.0.0.1", port: srv.port, psk: { identity: "bench-w", key: KEY }, suites: [suite] });
      c.close();
    }
    const cpu0 = await srv.cpu();
    const t0 = performance.now();
    let started = 0;
    const worker = async (): Promise<void> => {
      while (started < n) {
        started++;
        const c = await connect({ host: "127.0.0.1", port: srv.port, psk: { identity: "bench-1", key: KEY }, suites: [suite], timeoutMs: 10_000 });
        c.close();
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    const wall = performance.now() - t0;
    const cpu1 = await srv.cpu();
    const user = cpu1.user - cpu0.user;
    return { serverUs: (user + cpu1.system - cpu0.system) / n, userUs: user / n, perSecond: (n / wall) * 1000 };
  } finally {
    srv.stop();
  }
}

// ---- 3. echo throughput -------------------------------------------------------
/**
 * Each client keeps `window` records in flight. UDP may drop under load, so a
 * client that hears nothing for 20 ms assumes its window was lost and refills
 * it; the run stops at `total` echoes or `maxMs`, whichever comes first.
 */
async function echoLoad(
  open: () => Promise<{ send(b: Uint8Array): void; onData(f: () => void): void; close(): void }>,
  clients: number,
  window: number,
  total: number,
  maxMs: number,
): Promise<{ echoed: number; wallMs: number }> {
  const payload = new Uint8Array(100).fill(0x61);
  const conns = await Promise.all(Array.from({ length: clients }, open));
  let echoed = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    const state = conns.map(() => ({ inflight: 0, lastHeard: performance.now() }));
    const fill = (i: number): void => {
      const st = state[i]!;
      while (st.inflight < window) {
        st.inflight++;
        conns[i]!.send(payload);
      }
    };
    const done = (): void => {
      clearInterval(watchdog);
      clearTimeout(deadline);
      resolve();
    };
    const deadline = setTimeout(done, maxMs);
    const watchdog = setInterval(() => {
      const now = performance.now();
      state.forEach((st, i) => {
        if (now - st.lastHeard > 20) {
          st.inflight = 0;
          st.lastHeard = now;
          fill(i);
        }
      });
    }, 10);
    conns.forEach((c, i) => {
      c.onData(() => {
        const st = state[i]!;
        echoed++;
        st.lastHeard = performance.now();
        if (st.inflight > 0) st.inflight--;
        if (echoed >= total) done();
        else fill(i);
      });
      fill(i);
    });
  });
  const wallMs = performance.now() - t0;
  for (const c of conns) c.close();
  return { echoed, wallMs };
}

async function echoBench(
  raw: boolean,
  suite: SuiteName,
  total: number,
): Promise<{ perCoreSecond: number; wallPerSecond: number; cpuUsPerEcho: number; userUsPerEcho: number }> {
  const srv = await startServer(raw ? ["--raw"] : [`--suite=${suite}`]);
  try {
    const open = async () => {
      if (raw) {
        const s = createSocket("udp4");
        await new Promise<void>((r) => s.connect(srv.port, "127.0.0.1", () => r()));
        return { send: (b: Uint8Array) => s.send(b), onData: (f: () => void) => s.on("message", f), close: () => s.close() };
      }
      const c: DtlsConnection = await connect({ host: "127.0.0.1", port: srv.port, psk: { identity: "bench-1", key: KEY }, suites: [suite] });
      return { send: (b: Uint8Array) => c.send(b), onData: (f: () => void) => c.on("data", f), close: () => c.close() };
    };
    await echoLoad(open, 4, 16, 20_000, 5_000); // warm-up
    const cpu0 = await srv.cpu();
    const r = await echoLoad(open, 8, 16, total, 30_000);
    const cpu1 = await srv.cpu();
    const user = cpu1.user - cpu0.user;
    const cpuUs = user + cpu1.system - cpu0.system;
    return {
      perCoreSecond: r.echoed / (cpuUs / 1e6),
      wallPerSecond: (r.echoed / r.wallMs) * 1000,
      cpuUsPerEcho: cpuUs / r.echoed,
      userUsPerEcho: user / r.echoed,
    };
  } finally {
    srv.stop();
  }
}

/** Cost of the primitives on this machine, to read the figures below against. */
function calibrate(): { hmacUs: number; aeadUs: number } {
  const key = createSecretKey(Buffer.alloc(32, 1));
  const key16 = createSecretKey(Buffer.alloc(16, 1));
  const data = Buffer.alloc(64, 2);
  const iv = Buffer.alloc(12, 3);
  const aad = Buffer.alloc(13);
  const pt = Buffer.alloc(100);
  const time = (n: number, f: () => void): number => {
    for (let i = 0; i < n / 10; i++) f();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) f();
    return ((performance.now() - t0) / n) * 1000;
  };
  const hmacUs = time(50_000, () => createHmac("sha256", key).update(data).digest());
  const sealed = (() => {
    const c = createCipheriv("aes-128-gcm", key16, iv);
    c.setAAD(aad);
    const body = c.update(pt);
    c.final();
    return { body, tag: c.getAuthTag() };
  })();
  const aeadUs = time(50_000, () => {
    const c = createCipheriv("aes-128-gcm", key16, iv);
    c.setAAD(aad);
    c.update(pt);
    c.final();
    c.getAuthTag();
    const d = createDecipheriv("aes-128-gcm", key16, iv);
    d.setAuthTag(sealed.tag);
    d.setAAD(aad);
    d.update(sealed.body);
    d.final();
  });
  return { hmacUs, aeadUs };
}

if (!json) console.log(`dtlspush DTLS benchmark — Node ${process.version}${quick ? " (quick)" : ""}`);
if (!json) console.log("\n0. This machine: bare node:crypto costs (KeyObject keys), for reading the figures below");
const cal = calibrate();
report("HMAC-SHA256 of 64 B (one createHmac)", cal.hmacUs, "us");
report("AES-128-GCM seal + open of a 100 B record (bare)", cal.aeadUs, "us");
const N = quick ? 300 : 3000;
if (!json) console.log("\n1. PSK handshake, in process (protocol + crypto, no sockets)");
for (const suite of ["TLS_PSK_WITH_AES_128_CCM_8", "TLS_PSK_WITH_AES_128_GCM_SHA256"] as SuiteName[]) {
  inProcessHandshakes({ suite }, 200); // warm-up
  const r = inProcessHandshakes({ suite }, N);
  report(`handshake server CPU, in process, ${suite}`, r.serverUs, "us");
  report(`  = in units of one HMAC on this machine`, r.serverUs / cal.hmacUs, "HMACs");
  report(`handshake client CPU, in process, ${suite}`, r.clientUs, "us");
}
if (!json) console.log("\n1b. Full ECDHE_ECDSA handshake, in process (P-256 certificate, ECDSA P-256 signature)");
const { ca } = await createCertificateAuthority();
const p256 = await issueServerCertificate(ca, { kind: "p256" });
const certificate = {
  credential: { chain: pemCertificates(p256.chainPem).map(parseCertificate), signer: loadPrivateKey(p256.keyPem) },
  fingerprint: p256.fingerprint.hex,
};
// In TLS 1.2 supported_groups also lists the curves a client can verify certificates on (RFC 8422 5.1),
// so the x25519 run offers secp256r1 too; the server prefers x25519 for the key exchange.
for (const groups of [["x25519", "secp256r1"], ["secp256r1"]] as EcdhGroup[][]) {
  const setup: HandshakeSetup = { suite: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", groups, certificate };
  inProcessHandshakes(setup, 100); // warm-up
  const r = inProcessHandshakes(setup, quick ? 200 : 1500);
  report(`ECDHE_ECDSA handshake server CPU, in process, ${groups[0]}`, r.serverUs, "us");
  report(`ECDHE_ECDSA handshake client CPU (incl. verifying), ${groups[0]}`, r.clientUs, "us");
}
if (!json)
  console.log("\n1c. Full vs resumed handshakes, in process (server resumption on: a full handshake issues a ticket or caches a session ID)");
{
  const psk: SuiteName = "TLS_PSK_WITH_AES_128_GCM_SHA256";
  const ecdsa: HandshakeSetup = { suite: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", groups: ["x25519", "secp256r1"], certificate };
  const m = quick ? 300 : 1000;
  const cases: { label: string; setup: HandshakeSetup; count: number }[] = [
    { label: `full ${psk}`, setup: { suite: psk, resumption: "ticket" }, count: m },
    { label: "full ECDHE_ECDSA x25519", setup: { ...ecdsa, resumption: "ticket" }, count: quick ? 100 : 400 },
    { label: `resumed ${psk}, ticket`, setup: { suite: psk, resumption: "ticket", resume: true }, count: m },
    { label: `resumed ${psk}, session ID`, setup: { suite: psk, resumption: "session_id", resume: true }, count: m },
    { label: "resumed ECDHE_ECDSA, ticket", setup: { ...ecdsa, resumption: "ticket", resume: true }, count: m },
  ];
  for (const c of cases) inProcessHandshakes(c.setup, 100); // warm-up
  // interleaved rounds, the best of each: other load on the machine only ever adds time
  const best = cases.map(() => ({ serverUs: Infinity, bytes: 0 }));
  for (let round = 0; round < 5; round++) {
    cases.forEach((c, i) => {
      const r = inProcessHandshakes(c.setup, c.count);
      const b = best[i] as { serverUs: number; bytes: number };
      b.serverUs = Math.min(b.serverUs, r.serverUs);
      b.bytes = r.bytes;
    });
  }
  cases.forEach((c, i) => {
    report(`${c.label}: server CPU (best of 5)`, best[i]?.serverUs ?? NaN, "us");
    report(`${c.label}: bytes on the wire (both ways)`, best[i]?.bytes ?? NaN, "B");
  });
  const [fullPsk, fullEcdsa, resumedPsk, resumedId, resumedEcdsa] = best as [
    (typeof best)[0],
    (typeof best)[0],
    (typeof best)[0],
    (typeof best)[0],
    (typeof best)[0],
  ];
  report("resumed (ticket) / full PSK, server CPU (target <= 0.33)", resumedPsk.serverUs / fullPsk.serverUs, "x");
  report("resumed (session ID) / full PSK, server CPU", resumedId.serverUs / fullPsk.serverUs, "x");
  report("resumed ECDHE_ECDSA / full ECDHE_ECDSA, server CPU (target <= 0.1)", resumedEcdsa.serverUs / fullEcdsa.serverUs, "x");
  report("resumed / full PSK, bytes on the wire", resumedPsk.bytes / fullPsk.bytes, "x");
  report("resumed / full ECDHE_ECDSA, bytes on the wire", resumedEcdsa.bytes / fullEcdsa.bytes, "x");
}
if (!json) console.log("\n2. PSK handshake over loopback UDP (server process CPU / handshakes)");
const hs = await udpHandshakes("TLS_PSK_WITH_AES_128_CCM_8", quick ? 300 : 2000, 8);
report("handshake server CPU, UDP, TLS_PSK_WITH_AES_128_CCM_8", hs.serverUs, "us");
report("  of which user (the rest is kernel: UDP syscalls)", hs.userUs, "us");
report("handshakes per second, wall clock (client-bound)", hs.perSecond, "/s");
if (!json) console.log("\n3. 100-byte application records echoed over loopback UDP (8 clients, 16 in flight each)");
const total = quick ? 50_000 : 300_000;
const rawEcho = await echoBench(true, "TLS_PSK_WITH_AES_128_CCM_8", total);
report("raw UDP echo: server CPU per echo (reference)", rawEcho.cpuUsPerEcho, "us");
report("raw UDP echo:   of which user", rawEcho.userUsPerEcho, "us");
report("raw UDP echo: echoes per server-core second", rawEcho.perCoreSecond, "/s");
for (const suite of ["TLS_PSK_WITH_AES_128_CCM_8", "TLS_PSK_WITH_AES_128_GCM_SHA256", "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256"] as SuiteName[]) {
  const e = await echoBench(false, suite, total);
  report(`DTLS echo ${suite}: server CPU per echo`, e.cpuUsPerEcho, "us");
  report(`DTLS echo ${suite}:   of which user`, e.userUsPerEcho, "us");
  report(`DTLS echo ${suite}: records per server-core second`, e.perCoreSecond, "/s");
  report(`DTLS echo ${suite}: wall-clock records/s`, e.wallPerSecond, "/s");
  report(`DTLS echo ${suite}: CPU ratio to raw UDP echo`, e.cpuUsPerEcho / rawEcho.cpuUsPerEcho, "x");
  report(`DTLS echo ${suite}: DTLS cost over raw UDP / bare AEAD`, (e.cpuUsPerEcho - rawEcho.cpuUsPerEcho) / cal.aeadUs, "x");
}
if (json) console.log(JSON.stringify(results, null, 2));
else console.log("\nTargets: <= 100 us server CPU per PSK handshake and >= 60k records/s echoed per core; <= 250 us per full ECDHE_ECDSA handshake.");
