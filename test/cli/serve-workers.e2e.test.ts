/**
 * `dtlspush serve --workers 2` as real processes (a supervisor and two
 * workers; bin/dtlspush.js runs dist/: `npm run build` first) on a real
 * redis-server: devices added through the API of either worker connect to
 * both, and spread over them (each device's node from the workers' presence
 * log lines) and receive pushes published on either worker; one worker
 * SIGKILLed, its devices resume their DTLS session (abbreviated handshake,
 * the ticket keys are in Redis) on the other worker (or on the restarted one
 * when the kernel picks it for them) and receive pushes there, nothing twice,
 * and the supervisor restarts the dead one; a device whose NAT rebinding
 * makes the kernel send its records to the other worker keeps its session on
 * the first (forwarded by the CID's worker prefix, answered from the shared
 * port, no new handshake), and the supervisor SIGKILLed, the workers stop; and
 * `--workers 2` without Redis is one line.
 */
import { get } from "node:http";
import { createServer } from "node:net";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DeviceRegistry, issuePublisherToken } from "../../src/auth/index.ts";
import { connect, memoryStateStore, type DtlspushClient, type LivenessOptions } from "../../src/client/index.ts";
import { loadConfig, openDataDir } from "../../src/daemon/config/index.ts";
import { RebindingProxy } from "../dtls/udp-proxy.ts";
import { ProcessScope, type Proc } from "../support/daemon-process.ts";
import { describeRedis, type RedisServer } from "../support/redis-server.ts";
import { waitFor } from "./cli-process.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const START_BOUND_MS = 30_000;
/** a killed worker is noticed fast: idleMs + (probes + 1) x RTO */
const LIVENESS = { idleMs: 500, probes: 1, minRtoMs: 300, maxRtoMs: 300 } satisfies LivenessOptions;
const RECONNECT = { initialDelayMs: 200, maxDelayMs: 1000 };
/** devices connected at most until the workers hold what the test needs (each lands on either with about even odds) */
const MAX_DEVICES = 24;
/** source ports tried at most until the kernel sends a rebound device's records to the other worker */
const MAX_REBINDS = 40;
/** scrapes of /metrics (a new connection each, spread by the kernel) at most until every worker answered */
const MAX_SCRAPES = 60;

const scope = new ProcessScope();
const closers: (() => void)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) c();
  await scope.cleanup();
});
const tmp = (): string => scope.tmp();

interface Supervisor extends Proc {
  readonly dtlsPort: number;
  readonly api: string;
  /** worker index -> { node, pid } of its latest start */
  workers(): Map<number, { node: string; pid: number }>;
  /** the workers' JSON log lines */
  logs(): Record<string, unknown>[];
}

function dtlspush(args: readonly string[], cwd: string, env: Record<string, string>): Proc {
  return scope.dtlspush(args, cwd, env);
}

async function serveWorkers(r: RedisServer, dir: string): Promise<Supervisor> {
  const env = { DTLSPUSH_CLUSTER_REDIS_URL: r.url, DTLSPUSH_HTTP_PUBLIC_METRICS: "true" };
  const p = dtlspush(["serve", "--workers", "2", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", join(dir, "data")], dir, env);
  const m = await waitFor(p.stderr, p.child, /DTLS \(UDP\)\s+127\.0\.0\.1:(\d+)[\s\S]*HTTP API\s+(http:\/\/127\.0\.0\.1:\d+)/, START_BOUND_MS);
  return {
    ...p,
    dtlsPort: Number(m[1]),
    api: m[2] as string,
    workers() {
      const w = new Map<number, { node: string; pid: number }>();
      for (const x of p.stderr().matchAll(/worker (\d+) started \(node (\S+), pid (\d+)\)/g))
        w.set(Number(x[1]), { node: x[2] as string, pid: Number(x[3]) });
      return w;
    },
    logs() {
      return p
        .stdout()
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
  };
}

async function until(cond: () => boolean | Promise<boolean>, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Devices written into Redis before the workers start (each worker loads the
 * registry at start), and a publisher token with the admin scope minted from
 * the keys in Redis.
 */
async function seed(r: RedisServer, dir: string, ids: readonly string[]): Promise<string> {
  const data = await openDataDir(await loadConfig({ flags: { dataDir: join(dir, "cli-data") }, env: { DTLSPUSH_CLUSTER_REDIS_URL: r.url } }));
  try {
    const registry = await DeviceRegistry.open(data.store, { now: () => Date.now() });
    for (const id of ids) await registry.add({ id, psk: { identity: id, key: Buffer.from(KEY_HEX, "hex") } });
    return (await issuePublisherToken(data.publisherKeys, { subject: "test", scopes: ["admin"], now: Date.now(), ttlSeconds: 600 })).token;
  } finally {
    await data.close();
  }
}

async function addDevice(s: Supervisor, token: string, id: string): Promise<void> {
  const res = await fetch(`${s.api}/v1/devices/${id}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", connection: "close" },
    body: JSON.stringify({ psk: { keyHex: KEY_HEX } }),
  });
  await res.arrayBuffer();
  expect(res.status).toBe(201);
}

/** A push to `device` through the API of whichever worker the new connection reaches; 202 expected. */
async function publish(s: Supervisor, token: string, device: string, text: string): Promise<void> {
  const res = await fetch(`${s.api}/v1/devices/${device}/messages`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", connection: "close" },
    body: JSON.stringify({ id: text, payload: text }),
  });
  await res.arrayBuffer();
  expect(res.status, `publish ${text}`).toBe(202);
}

/** GET on a connection of its own (the kernel spreads connections over the workers by their source port). */
function getFresh(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get(url, { agent: false, headers: { connection: "close" } }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (c: string) => (body += c));
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
}

/** /metrics of every worker: scraped over new connections until each node answered once. */
async function metricsOfEach(s: Supervisor, nodes: readonly string[]): Promise<Map<string, string>> {
  const seen = new Map<string, string>();
  for (let i = 0; i < MAX_SCRAPES && seen.size < nodes.length; i++) {
    const text = await getFresh(`${s.api}/metrics`);
    const node = /dtlspush_cluster_node_info\{(?:[^}]*,)?node="([^"]+)"/.exec(text)?.[1];
    if (node !== undefined) seen.set(node, text);
  }
  expect([...seen.keys()].sort(), "every worker answered a scrape").toEqual([...nodes].sort());
  return seen;
}

/** The sum of a metric's samples (all labels, or those matching `labels`). */
function metric(text: string, name: string, labels = ""): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels !== "" && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** The node each device is online on, from the workers' latest presence lines. */
function onlineNodes(s: Supervisor): Map<string, string> {
  return new Map([...onlineAt(s)].map(([d, at]) => [d, at.node]));
}

/** The node and process each device is online on, from the workers' latest presence lines (each carries its pid). */
function onlineAt(s: Supervisor): Map<string, { node: string; pid: number }> {
  const at = new Map<string, { node: string; pid: number }>();
  for (const l of s.logs()) {
    if (l["event"] !== "presence") continue;
    const device = String(l["device"]);
    const where = { node: String(l["node"]), pid: Number(l["pid"]) };
    if (l["online"] === true) at.set(device, where);
    else if (at.get(device)?.pid === where.pid) at.delete(device);
  }
  return at;
}

async function device(port: number, id: string, o: { connectionId?: boolean } = {}): Promise<DtlspushClient> {
  const c = await connect({
    host: "127.0.0.1",
    port,
    ...(o.connectionId === undefined ? {} : { connectionId: o.connectionId }),
    psk: { identity: id, key: Buffer.from(KEY_HEX, "hex") },
    stateStore: memoryStateStore(),
    liveness: LIVENESS,
    reconnect: RECONNECT,
  });
  return scope.client(c);
}

describe("dtlspush serve --workers without Redis", () => {
  it("--workers 2 without cluster.redis_url is refused with one line", async () => {
    const dir = tmp();
    const p = dtlspush(["serve", "--workers", "2", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", join(dir, "data")], dir, {});
    expect((await p.exit).code).toBe(1);
    expect(p.stderr()).toBe(
      "dtlspush: error: cluster.workers (from --workers): 2 worker processes need cluster.redis_url (the embedded SQLite store belongs to one process); set cluster.redis_url or use 1 worker (config_invalid)\n",
    );
  }, 20_000);
});

describeRedis("dtlspush serve --workers 2 on Redis", () => {
  it("devices spread over both workers; one worker SIGKILLed: its devices (with and without CID) resume on a live worker and get pushes; it is restarted", async () => {
    const r = await scope.redis();
    const dir = tmp();
    const token = await seed(r, dir, []);
    const s = await serveWorkers(r, dir);
    const started = s.workers();
    expect([...started.keys()].sort()).toEqual([0, 1]);
    const nodeOf = (k: number): string => started.get(k)?.node ?? "";
    expect(nodeOf(0)).toMatch(/^n-[0-9a-f]{12}-w0$/);
    expect(nodeOf(1)).toBe(nodeOf(0).replace(/-w0$/, "-w1"));
    const health = (await (await fetch(`${s.api}/healthz`)).json()) as { node: string };
    expect([nodeOf(0), nodeOf(1)]).toContain(health.node);

    const ids: string[] = [];
    const clients: DtlspushClient[] = [];
    const got: string[] = [];
    const count = (node: string): number => [...onlineNodes(s).entries()].filter(([d, n]) => ids.includes(d) && n === node).length;
    // each device its own socket (source port): the kernel spreads them over the workers
    // every other device without a Connection ID (found by address only); worker 1, the one killed, must hold both kinds
    const plain = (d: string): boolean => Number(d.slice(1)) % 2 === 1;
    const held = (node: string, cid: boolean): number =>
      [...onlineNodes(s).entries()].filter(([d, n]) => ids.includes(d) && n === node && plain(d) !== cid).length;
    while (count(nodeOf(0)) < 2 || held(nodeOf(1), true) < 1 || held(nodeOf(1), false) < 1) {
      expect(ids.length, "devices connected until worker 0 holds two, worker 1 one with a CID and one without").toBeLessThan(MAX_DEVICES);
      // added through the API of whichever worker the connection reaches: every worker knows it at once
      const id = `d${ids.length}`;
      await addDevice(s, token, id);
      ids.push(id);
      const c = await device(s.dtlsPort, id, { connectionId: !plain(id) });
      c.on("message", (m) => got.push(`${id}:${m.text()}`));
      clients.push(c);
      await until(
        () => onlineNodes(s).has(id),
        10_000,
        () => `${id} online`,
      );
    }
    // a push to every device, published on either worker, reaches it on the worker holding it
    for (const id of ids) await publish(s, token, id, `${id}-1`);
    await until(
      () => ids.every((id) => got.includes(`${id}:${id}-1`)),
      20_000,
      () => `the first pushes: ${got.join(" ")}`,
    );
    const before = onlineNodes(s);
    const victim = nodeOf(1);
    const moved = ids.filter((d) => before.get(d) === victim);
    const stayed = ids.filter((d) => before.get(d) === nodeOf(0));
    expect(moved.length).toBeGreaterThanOrEqual(2);

    process.kill(started.get(1)?.pid ?? 0, "SIGKILL");
    await until(
      () => /worker 1 exited \(signal SIGKILL\); restarting it in 0\.5 s \(restart 1\)/.test(s.stderr()),
      10_000,
      () => `the exit line in ${s.stderr()}`,
    );
    // the killed worker's devices are back, with their DTLS session resumed, on a live worker: the other one, or the
    // restarted one when the kernel picks it for them once it is back (whichever their reconnection reached first)
    const killed = started.get(1)?.pid ?? 0;
    await until(
      () => moved.every((d) => (onlineAt(s).get(d)?.pid ?? killed) !== killed),
      20_000,
      () => `${moved.join(", ")} online again: ${JSON.stringify([...onlineAt(s)])}`,
    );
    for (const c of clients.filter((c) => moved.includes(c.deviceId))) expect(c.resumed, `${c.deviceId} resumed`).toBe(true);
    // and they receive pushes there; nothing twice
    for (const id of ids) await publish(s, token, id, `${id}-2`);
    await until(
      () => ids.every((id) => got.includes(`${id}:${id}-2`)),
      20_000,
      () => `the second pushes: ${got.join(" ")}`,
    );
    expect([...got].sort()).toEqual(ids.flatMap((id) => [`${id}:${id}-1`, `${id}:${id}-2`]).sort());
    // the other worker's devices saw nothing
    for (const d of stayed) expect(onlineNodes(s).get(d)).toBe(nodeOf(0));
    expect(s.logs().filter((l) => l["event"] === "presence" && stayed.includes(String(l["device"])) && l["online"] === false)).toEqual([]);
    // the supervisor restarted worker 1 (a new pid, the same node id), and it serves
    await until(
      () => (s.workers().get(1)?.pid ?? 0) !== started.get(1)?.pid,
      20_000,
      () => `worker 1 restarted: ${s.stderr()}`,
    );
    expect(s.workers().get(1)?.node).toBe(victim);
    const m = await metricsOfEach(s, [nodeOf(0), nodeOf(1)]);
    expect(metric(m.get(victim) ?? "", "dtlspush_worker_restarts", 'worker="1"')).toBe(1);
    expect(metric(m.get(nodeOf(0)) ?? "", "dtlspush_worker_restarts", 'worker="0"')).toBe(0);
    s.child.kill("SIGTERM");
    expect((await s.exit).code).toBe(0);
    expect(s.stderr()).toMatch(/worker 0 stopped \(status 0\)/);
    expect(s.stderr()).toMatch(/worker 1 stopped \(status 0\)/);
  }, 90_000);

  it("an HTTP port another process holds with SO_REUSEPORT is refused, not joined", async () => {
    const r = await scope.redis();
    const other = createServer();
    closers.push(() => other.close());
    await new Promise<void>((resolve) => other.listen({ host: "127.0.0.1", port: 0, reusePort: true } as object, () => resolve()));
    const port = (other.address() as { port: number }).port;
    const dir = tmp();
    const p = dtlspush(["serve", "--workers", "2", "--listen", "127.0.0.1:0", "--http", `127.0.0.1:${port}`, "--data-dir", join(dir, "data")], dir, {
      DTLSPUSH_CLUSTER_REDIS_URL: r.url,
    });
    expect((await p.exit).code).toBe(1);
    expect(p.stderr()).toBe(
      `dtlspush: error: http.listen (from --http): TCP 127.0.0.1:${port} is already in use by another process (config_invalid)\n`,
    );
  }, 30_000);

  it("a device rebound so that its records reach the other worker keeps its session: forwarded by CID, answered from the shared port", async () => {
    const r = await scope.redis();
    const dir = tmp();
    await seed(r, dir, ["nat-1"]);
    const s = await serveWorkers(r, dir);
    const nodes = [...s.workers().values()].map((w) => w.node);
    const token = await seed(r, dir, []);
    const proxy = await RebindingProxy.start(s.dtlsPort);
    closers.push(() => proxy.close());
    const c = await device(proxy.port, "nat-1");
    let disconnects = 0;
    c.on("disconnected", () => disconnects++);
    await until(
      () => onlineNodes(s).has("nat-1"),
      10_000,
      () => "nat-1 online",
    );
    const owner = onlineNodes(s).get("nat-1") as string;
    const other = nodes.find((n) => n !== owner) as string;
    const handshakes = async (): Promise<number> => {
      const m = await metricsOfEach(s, nodes);
      return [...m.values()].reduce((n, t) => n + metric(t, "dtlspush_handshakes_total"), 0);
    };
    expect(await handshakes()).toBe(1);

    let tries = 0;
    let m = await metricsOfEach(s, nodes);
    while (metric(m.get(other) ?? "", "dtlspush_dtls_forwarded_total", 'direction="out"') === 0) {
      expect(++tries, "a source port the kernel sends to the other worker").toBeLessThanOrEqual(MAX_REBINDS);
      await proxy.rebind("127.0.0.1");
      // a request and its answer over the session (the device's Subscribe, the server's answer)
      expect(await c.subscribe([`t${tries}`])).toContain(`t${tries}`);
      m = await metricsOfEach(s, nodes);
    }
    // one more round trip over the other worker, and a push published on either worker reaches the device
    expect(await c.subscribe(["after"])).toContain("after");
    const pushed: string[] = [];
    c.on("message", (msg) => pushed.push(msg.text()));
    await publish(s, token, "nat-1", "through-the-forwarder");
    await until(
      () => pushed.length === 1,
      10_000,
      () => "the push",
    );
    expect(pushed).toEqual(["through-the-forwarder"]);
    m = await metricsOfEach(s, nodes);
    const ownerText = m.get(owner) ?? "";
    const otherText = m.get(other) ?? "";
    expect(metric(otherText, "dtlspush_dtls_forwarded_total", 'direction="out"')).toBeGreaterThanOrEqual(2);
    expect(metric(ownerText, "dtlspush_dtls_forwarded_total", 'direction="in"')).toBe(
      metric(otherText, "dtlspush_dtls_forwarded_total", 'direction="out"'),
    );
    expect(metric(ownerText, "dtlspush_dtls_address_changes_total")).toBeGreaterThanOrEqual(1);
    expect(metric(otherText, "dtlspush_dtls_unknown_connection_ids_total")).toBe(0);
    expect(metric(otherText, "dtlspush_dtls_forward_dropped_total")).toBe(0);
    expect(metric(ownerText, "dtlspush_sessions")).toBe(1);
    expect(metric(otherText, "dtlspush_sessions")).toBe(0);
    // no new handshake, no reconnect; the device is online on the first worker only
    expect(await handshakes()).toBe(1);
    expect(disconnects).toBe(0);
    expect(onlineNodes(s).get("nat-1")).toBe(owner);
    // every answer came from the shared DTLS port, whichever worker's socket sent it
    expect([...proxy.serverSources]).toEqual([`127.0.0.1:${s.dtlsPort}`]);

    // the supervisor SIGKILLed: the workers notice their IPC channel closing and stop (no orphans)
    const pids = [...s.workers().values()].map((w) => w.pid);
    expect(pids).toHaveLength(2);
    s.child.kill("SIGKILL");
    await s.exited;
    // gone, or a zombie nobody reaped yet (an orphan's parent may be a container's init)
    const alive = (pid: number): boolean => {
      try {
        return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
      } catch {
        return false;
      }
    };
    await until(
      () => pids.every((p) => !alive(p)),
      15_000,
      () => `workers ${pids.join(", ")} gone`,
    );
  }, 90_000);
});
