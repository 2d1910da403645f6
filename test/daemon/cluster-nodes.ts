/**
 * Several `dtlspush serve` processes as nodes of one cluster on one real
 * redis-server (bin/dtlspush.js runs dist/: `npm run build` first), each
 * with a data directory of its own and the same key prefix; publisher tokens
 * minted from the keys in Redis; the SDK given the nodes' DTLS ports; an SSE
 * reader of /v1/events. `cleanUpCluster` (afterEach) ends every client,
 * process, Redis and directory.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { issuePublisherToken } from "../../src/auth/index.ts";
import { connect, memoryStateStore, type ConnectOptions, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { loadConfig, openDataDir } from "../../src/daemon/config/index.ts";
import { BIN, waitFor } from "../cli/cli-process.ts";
import { RedisServer } from "../support/redis-server.ts";

export const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const PREFIX = "c14:";
const START_BOUND_MS = 30_000;

export interface Node {
  readonly name: string;
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<unknown>;
  readonly dtlsPort: number;
  readonly api: string;
  /** the store instance (GET /v1/devices shows it as `node`) */
  readonly instance: string;
  stdout(): string;
}

export interface Cluster {
  readonly redis: RedisServer;
  readonly nodes: Node[];
  readonly token: string;
  readonly env: Record<string, string>;
}

const children = new Set<ChildProcessWithoutNullStreams>();
const dirs: string[] = [];
const clients: DtlspushClient[] = [];
const redises: RedisServer[] = [];
const aborts: AbortController[] = [];

export async function cleanUpCluster(): Promise<void> {
  for (const a of aborts.splice(0)) a.abort();
  for (const c of clients.splice(0)) await c.close();
  for (const c of children) c.kill("SIGKILL");
  children.clear();
  for (const r of redises.splice(0)) await r.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "dtlspush-c14-"));
  dirs.push(d);
  return d;
}

/** `dtlspush serve` on the cluster's Redis, free ports; resolves once it logged its store instance. */
export async function startNode(name: string, env: Record<string, string>): Promise<Node> {
  const dir = tmp();
  const argv = [BIN, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", join(dir, "data")];
  // one process per node (with Redis, `serve` would start one worker per core)
  const child = spawn(process.execPath, argv, { cwd: dir, env: { ...process.env, DTLSPUSH_DEBUG: "", DTLSPUSH_CLUSTER_WORKERS: "1", ...env } });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const exited = new Promise((resolve) =>
    child.on("exit", (code) => {
      children.delete(child);
      resolve(code);
    }),
  );
  const m = await waitFor(() => stderr, child, /DTLS \(UDP\)\s+127\.0\.0\.1:(\d+)[\s\S]*HTTP API\s+(http:\/\/127\.0\.0\.1:\d+)/, START_BOUND_MS);
  const inst = await waitFor(() => stdout, child, /"event":"cluster_node"[^\n]*"instance":"(\d+)"/, START_BOUND_MS);
  return { name, child, exited, dtlsPort: Number(m[1]), api: m[2] as string, instance: inst[1] as string, stdout: () => stdout };
}

/** A Redis (AOF, appendfsync always) and `n` nodes on it, named A, B, C…; an admin token minted from the keys in Redis. */
export async function startCluster(n: number, extraEnv: Record<string, string> = {}): Promise<Cluster> {
  const redis = await RedisServer.start();
  redises.push(redis);
  const env = { DTLSPUSH_CLUSTER_REDIS_URL: redis.url, DTLSPUSH_CLUSTER_KEY_PREFIX: PREFIX, ...extraEnv };
  const nodes: Node[] = [];
  // one at a time: the first start creates the keys in Redis (publisher, content, ticket key rings)
  for (let i = 0; i < n; i++) nodes.push(await startNode(String.fromCharCode(65 + i), env));
  const data = await openDataDir(await loadConfig({ flags: { dataDir: join(tmp(), "data") }, env }));
  try {
    const token = (await issuePublisherToken(data.publisherKeys, { subject: "test", scopes: ["admin"], now: Date.now(), ttlSeconds: 600 })).token;
    return { redis, nodes, token, env };
  } finally {
    await data.close();
  }
}

/** An API call with a JSON body: status and JSON answer (undefined when none). */
export async function call(c: Cluster, node: Node, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${node.api}${path}`, {
    method,
    headers: { authorization: `Bearer ${c.token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text === "" ? undefined : JSON.parse(text) };
}

/** Registers a PSK device (key KEY_HEX) with operator topics. */
export async function addDevice(c: Cluster, id: string, topics: string[] = []): Promise<void> {
  const r = await call(c, c.nodes[0] as Node, "PUT", `/v1/devices/${id}`, { psk: { keyHex: KEY_HEX }, topics });
  if (r.status !== 201) throw new Error(`PUT /v1/devices/${id}: ${r.status} ${JSON.stringify(r.json)}`);
}

/** Publishes to a device on `node`; the message id. Throws unless 202. */
export async function publish(c: Cluster, node: Node, device: string, payload: string): Promise<string> {
  const r = await call(c, node, "POST", `/v1/devices/${device}/messages`, { payload });
  if (r.status !== 202) throw new Error(`publish on ${node.name}: ${r.status} ${JSON.stringify(r.json)}`);
  return r.json.id as string;
}

export async function publishTopic(c: Cluster, node: Node, topic: string, payload: string): Promise<{ id: string; recipients: number }> {
  const r = await call(c, node, "POST", `/v1/topics/${encodeURIComponent(topic)}/messages`, { payload });
  if (r.status !== 202) throw new Error(`topic publish on ${node.name}: ${r.status} ${JSON.stringify(r.json)}`);
  return { id: r.json.id as string, recipients: r.json.recipients as number };
}

/** A device connected with the SDK; what it received (in order) and its session count. */
export interface Device {
  readonly client: DtlspushClient;
  readonly got: ReceivedMessage[];
  /** "connected" events (sessions made: 1 after connect, more after each reconnect) */
  ups: number;
  downs: number;
  texts(): string[];
  /** the session's ups and downs (ms since `device`, with the reason of each down), for failure messages */
  trace(): string;
}

export async function device(id: string, servers: readonly { host: string; port: number }[], o: Partial<ConnectOptions> = {}): Promise<Device> {
  const client = await connect({ servers, psk: { identity: id, key: Buffer.from(KEY_HEX, "hex") }, stateStore: memoryStateStore(), ...o });
  clients.push(client);
  const t0 = performance.now();
  const events: string[] = [];
  const note = (what: string): number => events.push(`${(performance.now() - t0).toFixed(0)} ms ${what}`);
  const d: Device = { client, got: [], ups: 1, downs: 0, texts: () => d.got.map((m) => m.text()), trace: () => events.join("; ") };
  client.on("message", (m) => d.got.push(m));
  client.on("connected", () => {
    d.ups++;
    note(`connected (${d.got.length} received)`);
  });
  client.on("disconnected", (e) => {
    d.downs++;
    note(`disconnected: ${e?.message ?? "clean"}`);
  });
  // failed reconnects (each attempt's error; without a listener they are not emitted)
  client.on("error", (e) => note(`error: ${e.message}`));
  return d;
}

export const at = (n: Node): { host: string; port: number } => ({ host: "127.0.0.1", port: n.dtlsPort });

/** Polls `cond` every 25 ms for at most `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** One `receipt` event of /v1/events. */
export interface SseReceipt {
  readonly id: number;
  readonly messageId: string;
  readonly device: string;
  readonly state: string;
}

/** A /v1/events stream being read: receipts so far; `close` drops the connection. */
export interface SseStream {
  readonly receipts: SseReceipt[];
  readonly connected: Promise<void>;
  close(): void;
}

export function events(c: Cluster, node: Node, lastEventId?: number): SseStream {
  const abort = new AbortController();
  aborts.push(abort);
  const receipts: SseReceipt[] = [];
  let resolveConnected: () => void = () => undefined;
  const connected = new Promise<void>((r) => (resolveConnected = r));
  void (async () => {
    const res = await fetch(`${node.api}/v1/events`, {
      headers: { authorization: `Bearer ${c.token}`, ...(lastEventId === undefined ? {} : { "last-event-id": String(lastEventId) }) },
      signal: abort.signal,
    });
    if (res.body === null) throw new Error("no body");
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        if (block.includes(": connected")) resolveConnected();
        const id = /^id: (\d+)$/m.exec(block);
        const data = /^data: (.*)$/m.exec(block);
        if (/^event: receipt$/m.test(block) && id !== null && data !== null) {
          const v = JSON.parse(data[1] as string) as { messageId: string; device: string; state: string };
          receipts.push({ id: Number(id[1]), messageId: v.messageId, device: v.device, state: v.state });
        }
      }
    }
  })().catch(() => undefined);
  return { receipts, connected, close: () => abort.abort() };
}

/** A metric's value in a node's /metrics (first sample matching `name` and the labels text, e.g. `{event="taken"}`). */
export async function metric(c: Cluster, node: Node, name: string, labels = ""): Promise<number | undefined> {
  const res = await fetch(`${node.api}/metrics`, { headers: { authorization: `Bearer ${c.token}` } });
  const text = await res.text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}
