import { createClient, ErrorReply } from "redis";
import { describeError, refusedAfterFailure, StoreError } from "./errors.ts";
import { compareText } from "./memory-store.ts";
import { DEFAULT_REDIS_KEY_PREFIX, redactRedisUrl, type RedisStoreOptions } from "./redis-options.ts";
import type { ClusterEvent, ClusterStore, DeviceHold, StoredQueue, SubscriptionChange } from "./cluster-types.ts";
import {
  CLAIM_SCRIPT,
  COMMIT_SCRIPT,
  DELETE_DEVICE_SCRIPT,
  EXISTING_SCRIPT,
  FIND_DEVICE_SCRIPT,
  HOLDERS_SCRIPT,
  LOAD_STATE_SCRIPT,
  MESSAGE_RECEIPTS_SCRIPT,
  PRUNE_SCRIPT,
  PUT_DEVICE_SCRIPT,
  QUEUE_DEPTHS_SCRIPT,
  READ_QUEUE_SCRIPT,
  RELEASE_IDS_SCRIPT,
  RELEASE_SCRIPT,
  RESERVE_IDS_SCRIPT,
  SUBSCRIPTIONS_SCRIPT,
} from "./redis-scripts.ts";
import type {
  DeliveryRecord,
  DeliveryState,
  DeviceCounters,
  DeviceRecord,
  MessageRecord,
  Receipt,
  ReceiptInput,
  ReceiptState,
  Store,
  Subscription,
  WriteBatch,
} from "./types.ts";
import { checkBatch, checkDevice, checkSetting, receiptRecord } from "./validate.ts";

/**
 * The Store on Redis (the cluster's shared state). One connection; every call
 * is one command or one Lua script sent at once, so calls take effect in call
 * order and calls made in one event-loop turn leave in one write (node-redis
 * pipelines them): N commits back to back cost one round trip, not N.
 *
 * Each commit is one script that validates the whole batch before writing, so
 * a refused batch changes nothing. The prefix rule holds across the pipeline
 * with a fence: the store's own counter (`P fence:<n>`) that each commit
 * script checks against the number of commits before it and advances; a
 * script sent after one that failed (or was lost with the connection) finds
 * the fence behind and refuses itself.
 *
 * A lost connection makes the store unavailable, not failed (outage mode):
 * it reconnects with backoff; meanwhile calls reject at once with
 * store_unavailable, except commits, which are kept in order and sent again
 * once Redis is back. Whether a commit whose answer was lost was applied is
 * told by the fence (applied iff the fence passed its number; its first
 * receipt id is in `P fres:<n>`), so the re-sent rest applies exactly once,
 * in order. An outage longer than `outageMaxMs`, or a Redis that comes back
 * without commits it had acknowledged, fails the store: every call then
 * rejects with store_failed (the daemon exits; a restart reads back what
 * Redis holds, a prefix of the batches). An error reply of Redis to a commit
 * fails the commits too (the prefix rule).
 *
 * It is also the cluster side of the store (cluster-types.ts): holds with
 * epochs, fenced commits, and the events of the other nodes, PUBLISHed by the
 * scripts (atomic with their writes) and received on a second connection
 * that is subscribed before this resolves.
 */
export async function openRedisStore(options: RedisStoreOptions): Promise<Store & ClusterStore> {
  const prefix = options.keyPrefix ?? DEFAULT_REDIS_KEY_PREFIX;
  const timeoutMs = options.connectTimeoutMs ?? 5_000;
  const where = redactRedisUrl(options.url);
  const fail = (cause: unknown): StoreError =>
    new StoreError("store_open_failed", `Cannot open the Redis store at ${where}: ${redactText(describeError(cause), options.url)}`);
  // no reconnect while opening (an unreachable Redis fails the start at once), backoff once open
  const link = { reconnect: false };
  const strategy = (retries: number): number | false => (link.reconnect ? reconnectBackoff(retries) : false);
  let client: RedisClient;
  try {
    client = createClient({ url: options.url, disableOfflineQueue: true, socket: { connectTimeout: timeoutMs, reconnectStrategy: strategy } });
  } catch (e) {
    throw fail(e);
  }
  let lastError: unknown;
  client.on("error", (e: unknown) => (lastError = e));
  let timer: NodeJS.Timeout | undefined;
  let subscriber: RedisClient | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    await Promise.race([client.connect(), timeout]);
    const shas = await Promise.race([loadScripts(client), timeout]);
    const instance = String(await Promise.race([client.incr(`${prefix}instances`), timeout]));
    await Promise.race([client.set(`${prefix}fence:${instance}`, "0"), timeout]);
    await Promise.race([client.del(`${prefix}fres:${instance}`), timeout]);
    const livenessMs = Math.max(100, Math.floor(options.livenessMs ?? DEFAULT_LIVENESS_MS));
    await Promise.race([client.set(`${prefix}alive:${instance}`, "1", { PX: livenessMs }), timeout]);
    // named, so an operator tells the event connections apart in CLIENT LIST
    const name = `dtlspush-events-${prefix}${instance}`.replace(/[^!-~]/g, "_");
    const sub = client.duplicate({ name, socket: { connectTimeout: timeoutMs, reconnectStrategy: strategy } });
    subscriber = sub;
    const outageMaxMs = Math.max(0, Math.floor(options.outageMaxMs ?? DEFAULT_OUTAGE_MAX_MS));
    const store = new RedisStore({ client, subscriber: sub, link, prefix, instance, shas, where, livenessMs, outageMaxMs });
    await Promise.race([store.subscribe(), timeout]);
    link.reconnect = true;
    return store;
  } catch (e) {
    subscriber?.destroy();
    client.destroy();
    throw fail(lastError ?? e);
  } finally {
    clearTimeout(timer);
  }
}

type RedisClient = ReturnType<typeof createClient>;

/** How long an instance's liveness key lives without a refresh (refreshed every third of it). */
export const DEFAULT_LIVENESS_MS = 5_000;

/** How long Redis may be away before the store fails (outageMaxMs). */
export const DEFAULT_OUTAGE_MAX_MS = 300_000;

/** The reconnect delay of both connections: 50 ms doubling to 1 s, until the store closes or fails. */
function reconnectBackoff(retries: number): number {
  return Math.min(50 * 2 ** Math.min(retries, 5), 1_000);
}

const SCRIPTS = {
  commit: COMMIT_SCRIPT,
  putDevice: PUT_DEVICE_SCRIPT,
  findDevice: FIND_DEVICE_SCRIPT,
  deleteDevice: DELETE_DEVICE_SCRIPT,
  loadState: LOAD_STATE_SCRIPT,
  existing: EXISTING_SCRIPT,
  messageReceipts: MESSAGE_RECEIPTS_SCRIPT,
  prune: PRUNE_SCRIPT,
  claim: CLAIM_SCRIPT,
  release: RELEASE_SCRIPT,
  readQueue: READ_QUEUE_SCRIPT,
  holders: HOLDERS_SCRIPT,
  queueDepths: QUEUE_DEPTHS_SCRIPT,
  subscriptions: SUBSCRIPTIONS_SCRIPT,
  reserveIds: RESERVE_IDS_SCRIPT,
  releaseIds: RELEASE_IDS_SCRIPT,
} as const;
type ScriptName = keyof typeof SCRIPTS;

async function loadScripts(client: RedisClient): Promise<Record<ScriptName, string>> {
  const names = Object.keys(SCRIPTS) as ScriptName[];
  const shas = await Promise.all(names.map((n) => client.scriptLoad(SCRIPTS[n])));
  return Object.fromEntries(names.map((n, i) => [n, shas[i]])) as Record<ScriptName, string>;
}

/** `text` with the URL's password (raw and decoded) replaced, in case a cause repeats it. */
function redactText(text: string, url: string): string {
  let password = "";
  try {
    password = new URL(url).password;
  } catch {
    return text.replaceAll(url, "(the Redis URL)");
  }
  if (password === "") return text;
  let decoded = password;
  try {
    decoded = decodeURIComponent(password);
  } catch {
    // a malformed escape: the raw form is all a message could repeat
  }
  return text.replaceAll(password, "***").replaceAll(decoded, "***");
}

// --- encodings

function encodeDevice(d: DeviceRecord): string {
  return JSON.stringify({
    id: d.id,
    ...(d.psk !== undefined
      ? { psk: { identity: d.psk.identity, key: Buffer.from(d.psk.key.buffer, d.psk.key.byteOffset, d.psk.key.byteLength).toString("base64") } }
      : {}),
    ...(d.certIdentity !== undefined ? { certIdentity: d.certIdentity } : {}),
    revoked: d.revoked,
    topics: d.topics,
    createdAt: d.createdAt,
    updatedAt: d.updatedAt,
  });
}

function decodeDevice(s: string): DeviceRecord {
  const j = JSON.parse(s) as {
    id: string;
    psk?: { identity: string; key: string };
    certIdentity?: string;
    revoked: boolean;
    topics: string[];
    createdAt: number;
    updatedAt: number;
  };
  return {
    id: j.id,
    ...(j.psk !== undefined ? { psk: { identity: j.psk.identity, key: new Uint8Array(Buffer.from(j.psk.key, "base64")) } } : {}),
    ...(j.certIdentity !== undefined ? { certIdentity: j.certIdentity } : {}),
    revoked: j.revoked,
    topics: j.topics,
    createdAt: j.createdAt,
    updatedAt: j.updatedAt,
  };
}

type MessageRow = [string, string, string, string, number, number, number, string, string, string];

function encodeMessage(m: MessageRecord): string {
  const payload = Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength).toString("base64");
  return JSON.stringify([m.topic, m.device, payload, m.contentType, m.createdAt, m.expiresAt, m.priority, m.collapseKey, m.publisher, m.signature]);
}

function decodeMessage(id: string, s: string): MessageRecord {
  const [topic, device, payload, contentType, createdAt, expiresAt, priority, collapseKey, publisher, signature] = JSON.parse(s) as MessageRow;
  return {
    id,
    topic,
    device,
    payload: new Uint8Array(Buffer.from(payload, "base64")),
    contentType,
    createdAt,
    expiresAt,
    priority,
    collapseKey,
    publisher,
    signature,
  };
}

function encodeReceipt(r: ReceiptInput): string {
  return JSON.stringify([r.messageId, r.device, r.state, r.at, r.reason, r.seq, r.topic]);
}

/** A stored member "id:json". */
function decodeReceipt(member: string): Receipt {
  const colon = member.indexOf(":");
  const [messageId, device, state, at, reason, seq, topic] = JSON.parse(member.slice(colon + 1)) as [
    string,
    string,
    ReceiptState,
    number,
    string,
    number,
    string,
  ];
  return { id: Number(member.slice(0, colon)), messageId, device, state, at, reason, seq, topic };
}

function decodeDelivery(device: string, messageId: string, v: string): DeliveryRecord {
  const [order, seq, tomb] = v.split(":");
  return { device, messageId, order: Number(order), seq: Number(seq), tombstone: tomb === "1" };
}

function decodeCounters(device: string, v: string): DeviceCounters {
  const [lastSeq, ackedSeq] = v.split(":");
  return { device, lastSeq: Number(lastSeq), ackedSeq: Number(ackedSeq) };
}

/** The commit script's arguments for `batch` (checked). */
function commitArgs(prefix: string, instance: string, fence: number, keep: number, batch: WriteBatch): string[] {
  const a: string[] = [prefix, instance, String(fence), String(keep)];
  const fs = batch.fence ?? [];
  a.push(String(fs.length));
  for (const f of fs) a.push(f.device, String(f.epoch));
  const ms = batch.messages ?? [];
  a.push(String(ms.length));
  for (const m of ms) a.push(m.id, encodeMessage(m), String(m.expiresAt));
  const ds = batch.deliveries ?? [];
  a.push(String(ds.length));
  for (const d of ds) a.push(d.device, d.messageId, `${d.order}:${d.seq}:${d.tombstone ? 1 : 0}`);
  const rm = batch.removeDeliveries ?? [];
  a.push(String(rm.length));
  for (const k of rm) a.push(k.device, k.messageId);
  const cs = batch.counters ?? [];
  a.push(String(cs.length));
  for (const c of cs) a.push(c.device, `${c.lastSeq}:${c.ackedSeq}`);
  for (const list of [batch.subscribe ?? [], batch.unsubscribe ?? []]) {
    a.push(String(list.length));
    for (const s of list) a.push(s.device, s.topic);
  }
  const rs = batch.receipts ?? [];
  a.push(String(rs.length));
  for (const r of rs) a.push(r.messageId, String(r.at), encodeReceipt(r));
  return a;
}

function pairs(flat: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i] as string, flat[i + 1] as string]);
  return out;
}

/** What a call does, for the error it rejects with when Redis answers an error. */
type CallKind = "read" | "write";

/** What the commit script answers. */
type CommitReply = [0, number] | [1, string] | [2, string, string] | [3, string];

export interface RedisStoreStats {
  /** commands and scripts sent */
  commands: number;
  /** commits the server applied */
  commits: number;
  /** times the connection to Redis was lost (outages begun) */
  outages: number;
  /** commits sent again after a reconnection (the fence decided which had been applied) */
  replayed: number;
  /** calls refused at once with store_unavailable while Redis was away */
  unavailableRefusals: number;
}

/** The store's state towards Redis: "unavailable" during an outage; "failed" is final. */
export type RedisStoreState = "available" | "unavailable" | "failed";

/** A commit handed to the store and not settled yet. */
interface PendingCommit {
  /** its number: the fence value it expects */
  readonly k: number;
  readonly args: readonly string[];
  readonly copies: readonly Receipt[];
  readonly resolve: (receipts: Receipt[]) => void;
  readonly reject: (e: Error) => void;
  /** times sent (a second send is a replay) */
  sends: number;
}

interface RedisStoreParts {
  readonly client: RedisClient;
  readonly subscriber: RedisClient;
  /** whether both connections reconnect (read by their reconnect strategy) */
  readonly link: { reconnect: boolean };
  readonly prefix: string;
  readonly instance: string;
  readonly shas: Record<ScriptName, string>;
  readonly where: string;
  readonly livenessMs: number;
  readonly outageMaxMs: number;
}

/** A queue as the scripts answer it: the flat hash and the JSON of each message (same order). */
function decodeQueue(device: string, flat: readonly string[], msgs: readonly string[]): StoredQueue {
  const rows = pairs(flat);
  const deliveries = rows.map(([mid, v]) => decodeDelivery(device, mid, v));
  deliveries.sort((a, b) => a.order - b.order || compareText(a.messageId, b.messageId));
  // a queue holds a message once (its hash is keyed by message id)
  const messages = rows.map(([mid], i) => decodeMessage(mid, msgs[i] as string)).sort((a, b) => compareText(a.id, b.id));
  return { deliveries, messages };
}

/** The events of one message published by the scripts (redis-scripts.ts), with its sender; undefined when malformed. */
function decodeEvents(text: string): { from: string; events: ClusterEvent[] } | undefined {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!Array.isArray(j) || typeof j[0] !== "string") return undefined;
  const from = j[0];
  const str = (v: unknown): v is string => typeof v === "string";
  const num = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  switch (j[1]) {
    case "q":
      // an empty Lua table encodes as {}: never published, but read as no devices
      return Array.isArray(j[2]) && j[2].every(str) ? { from, events: [{ kind: "queued", devices: j[2] }] } : undefined;
    case "t":
      return str(j[2]) && num(j[3]) ? { from, events: [{ kind: "taken", device: j[2], epoch: j[3] }] } : undefined;
    case "g":
      return str(j[2]) ? { from, events: [{ kind: "registry", device: j[2] }] } : undefined;
    case "c": {
      const changes = decodeChanges(j[3] ?? []);
      if (!num(j[2]) || changes === undefined) return undefined;
      const events: ClusterEvent[] = [];
      if (changes.length > 0) events.push({ kind: "subscriptions", changes });
      if (j[2] > 0) events.push({ kind: "receipts", lastId: j[2] });
      return { from, events };
    }
  }
  return undefined;
}

/** Which channel each event kind travels on: the instance's own, or the one every node hears. */
const CHANNEL_OF: Record<ClusterEvent["kind"], "own" | "shared" | "none"> = {
  queued: "own",
  taken: "own",
  subscriptions: "shared",
  receipts: "shared",
  registry: "shared",
  resync: "none",
};

/** The subscription changes of a "c" event ([device, topic, 1|0, ...]). */
function decodeChanges(flat: unknown): SubscriptionChange[] | undefined {
  if (!Array.isArray(flat) || flat.length % 3 !== 0) return undefined;
  const out: SubscriptionChange[] = [];
  for (let i = 0; i < flat.length; i += 3) {
    const [device, topic, on] = [flat[i], flat[i + 1], flat[i + 2]];
    if (typeof device !== "string" || typeof topic !== "string" || (on !== 0 && on !== 1)) return undefined;
    out.push({ device, topic, subscribed: on === 1 });
  }
  return out;
}

export class RedisStore implements Store, ClusterStore {
  readonly kind = "redis";
  readonly stats: RedisStoreStats = { commands: 0, commits: 0, outages: 0, replayed: 0, unavailableRefusals: 0 };
  private readonly client: RedisClient;
  private readonly link: { reconnect: boolean };
  private readonly outageMaxMs: number;
  /** false from a lost connection until the reconnection has settled the commits in flight */
  private connected = true;
  /** the current outage: since when (ms, Date.now), its bound */
  private outage: { readonly since: number; readonly timer: NodeJS.Timeout } | undefined;
  /** time spent unavailable in outages that ended, ms */
  private outageMsDone = 0;
  /** increased at every lost connection: answers for an older one are ignored */
  private generation = 0;
  /** commits sent on the current connection, waiting for their answer, in order */
  private inFlight: PendingCommit[] = [];
  /** commits not sent on the current connection (during an outage), in order */
  private waiting: PendingCommit[] = [];
  /** commits known applied: the fence a reconnection must find at least */
  private applied = 0;
  /** recoveries begun: only the latest one goes on after an await */
  private recoveries = 0;
  private readonly stateListeners = new Set<(state: RedisStoreState) => void>();
  /** the event connection (SUBSCRIBE only) */
  private readonly subscriber: RedisClient;
  private readonly prefix: string;
  readonly instance: string;
  private readonly livenessMs: number;
  private livenessTimer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<(event: ClusterEvent) => void>();
  /** the event connection was ready once: its next "ready" is a reconnect (resync) */
  private subscribed = false;
  private readonly shas: Record<ScriptName, string>;
  private readonly where: string;
  /** commits sent so far: the fence value the next commit expects */
  private sent = 0;
  /** the first commit failure (the prefix rule) */
  private commitFailure: Error | undefined;
  /** the connection failure: every call is refused */
  private broken: StoreError | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** settles after every call made so far (calls settle in call order) */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(parts: RedisStoreParts) {
    const { client, subscriber } = parts;
    this.client = client;
    this.subscriber = subscriber;
    this.link = parts.link;
    this.livenessMs = parts.livenessMs;
    this.outageMaxMs = parts.outageMaxMs;
    this.prefix = parts.prefix;
    this.instance = parts.instance;
    this.shas = parts.shas;
    this.where = parts.where;
    // an error event without a reply is the connection: node-redis reconnects (outage mode)
    client.on("error", (e: unknown) => {
      if (!(e instanceof ErrorReply)) this.connectionLost(e);
    });
    client.on("ready", () => {
      if (this.outage !== undefined) void this.recover();
    });
    client.on("end", () => {
      if (!this.closed) this.breakWith(new Error("the connection closed"));
    });
    // the event connection reconnects by itself; its errors are its reconnects
    subscriber.on("error", () => undefined);
    subscriber.on("ready", () => {
      if (this.subscribed && !this.closed) this.emit({ kind: "resync" });
    });
  }

  /** Connects the event connection, subscribes to both channels, and starts the liveness refresh. */
  async subscribe(): Promise<void> {
    await this.subscriber.connect();
    await this.subscriber.subscribe([this.key("ev"), this.key(`ev:${this.instance}`)], (message, channel) => this.received(message, channel));
    this.subscribed = true;
    const every = Math.max(50, Math.floor(this.livenessMs / 3));
    this.livenessTimer = setInterval(() => this.refreshLiveness(), every);
    this.livenessTimer.unref();
  }

  private refreshLiveness(): void {
    if (!this.available) return;
    this.stats.commands++;
    this.client.sendCommand(["SET", this.key(`alive:${this.instance}`), "1", "PX", String(this.livenessMs)]).catch(() => undefined);
  }

  private received(message: string, channel: string): void {
    const decoded = decodeEvents(message);
    // a node's own commits are no news to it
    if (decoded === undefined || decoded.from === this.instance) return;
    const on = channel === this.key("ev") ? "shared" : "own";
    for (const event of decoded.events) if (CHANNEL_OF[event.kind] === on) this.emit(event);
  }

  private emit(event: ClusterEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch {
        // a throwing listener fails nobody
      }
    }
  }

  onClusterEvent(listener: (event: ClusterEvent) => void): () => void {
    const own = (event: ClusterEvent): void => listener(event);
    this.listeners.add(own);
    return () => this.listeners.delete(own);
  }

  /** "available", "unavailable" (Redis away: calls refused at once, commits kept) or "failed". */
  get state(): RedisStoreState {
    if (this.broken !== undefined) return "failed";
    return this.connected ? "available" : "unavailable";
  }

  /** Whether calls are taken now (false during an outage, after a failure and once closed). */
  get available(): boolean {
    return !this.closed && this.state === "available";
  }

  /** Time spent unavailable since open, the current outage included, seconds. */
  outageSeconds(): number {
    const current = this.outage === undefined ? 0 : Date.now() - this.outage.since;
    return (this.outageMsDone + current) / 1000;
  }

  /** Listens to changes of `state`; returns the unsubscribe. A throwing listener fails nobody. */
  onStateChange(listener: (state: RedisStoreState) => void): () => void {
    const own = (state: RedisStoreState): void => listener(state);
    this.stateListeners.add(own);
    return () => this.stateListeners.delete(own);
  }

  private tellState(): void {
    const state = this.state;
    for (const listener of [...this.stateListeners]) {
      try {
        listener(state);
      } catch {
        // a throwing listener fails nobody
      }
    }
  }

  private unavailable(): StoreError {
    const since = this.outage === undefined ? "" : ` for ${((Date.now() - this.outage.since) / 1000).toFixed(1)} s`;
    return new StoreError("store_unavailable", `The Redis store at ${this.where} is unreachable${since}; nothing was done: try again later.`);
  }

  /** The connection is gone: outage mode until `recover` (or the bound fails the store). */
  private connectionLost(e: unknown): void {
    if (this.closed || this.broken !== undefined || !this.connected) return;
    this.connected = false;
    this.generation++;
    this.stats.outages++;
    // what was sent may or may not have been applied: the fence tells once Redis is back
    this.waiting = [...this.inFlight, ...this.waiting];
    this.inFlight = [];
    const seconds = this.outageMaxMs / 1000;
    const timer = setTimeout(
      () => this.breakWith(new Error(`Redis was unreachable for ${seconds} s (the outage bound), last: ${describeError(e)}`)),
      this.outageMaxMs,
    );
    timer.unref();
    this.outage = { since: Date.now(), timer };
    this.tellState();
  }

  private endOutage(): void {
    if (this.outage === undefined) return;
    clearTimeout(this.outage.timer);
    this.outageMsDone += Date.now() - this.outage.since;
    this.outage = undefined;
  }

  /**
   * Redis answers again: reads the fence and the last commits' results,
   * settles the commits it says were applied, loads the scripts (a restarted
   * Redis has none), and sends the rest again, in order, before any new call.
   */
  private async recover(): Promise<void> {
    const run = ++this.recoveries;
    const stale = (): boolean => this.broken !== undefined || this.closed || run !== this.recoveries;
    let fence: unknown;
    let results: unknown;
    for (;;) {
      if (stale()) return;
      try {
        [fence, results] = await Promise.all([
          this.client.sendCommand(["GET", this.key(`fence:${this.instance}`)]),
          this.client.sendCommand(["LRANGE", this.key(`fres:${this.instance}`), "0", "-1"]),
        ]);
        const shas = await loadScripts(this.client);
        if (Object.entries(shas).some(([name, sha]) => this.shas[name as ScriptName] !== sha))
          throw new Error("the scripts loaded again have other hashes");
        break;
      } catch (e) {
        // a restarted Redis answers LOADING while it reads its append-only file
        if (e instanceof ErrorReply && e.message.startsWith("LOADING")) {
          await new Promise((r) => setTimeout(r, 100));
          continue;
        }
        if (e instanceof ErrorReply || !(e instanceof Error) || e.message.includes("hashes")) this.breakWith(e);
        // a connection lost again: the next "ready" recovers
        return;
      }
    }
    if (stale()) return;
    // the fence exists from open to close: missing or behind, Redis lost data this store relies on
    const f = Number(fence ?? Number.NaN);
    const list = (results as string[]).map(Number);
    if (!Number.isSafeInteger(f) || f < this.applied) {
      this.breakWith(
        new Error(
          `Redis came back without commits it had acknowledged (this store's fence is ${fence === null ? "gone" : `at ${String(fence)}`}, ${this.applied} were applied): its data was lost`,
        ),
      );
      return;
    }
    while (this.waiting[0] !== undefined && this.waiting[0].k < f) {
      const c = this.waiting.shift() as PendingCommit;
      const first = list[list.length - (f - c.k)];
      if (first === undefined) {
        this.waiting.unshift(c);
        this.breakWith(new Error(`commit ${c.k} was applied but its result is no longer kept`));
        return;
      }
      this.settleCommit(c, [0, first]);
    }
    if (this.waiting[0] !== undefined && this.waiting[0].k !== f) {
      this.breakWith(new Error(`the fence of this store is at ${f}, but its next commit is ${this.waiting[0].k}`));
      return;
    }
    this.endOutage();
    this.connected = true;
    for (const c of this.waiting) if (c.sends > 0) this.stats.replayed++;
    this.pump();
    this.refreshLiveness();
    this.tellState();
  }

  /** The store fails for good: every pending and later call rejects with store_failed, both connections end. */
  private breakWith(e: unknown): void {
    if (this.broken !== undefined || this.closed) return;
    this.broken = new StoreError(
      "store_failed",
      `The Redis store at ${this.where} failed: ${describeError(e)}; nothing more is stored until a restart.`,
      {
        cause: e,
      },
    );
    this.commitFailure ??= this.broken;
    this.endOutage();
    this.link.reconnect = false;
    const pending = [...this.inFlight, ...this.waiting];
    this.inFlight = [];
    this.waiting = [];
    for (const c of pending) c.reject(this.broken);
    for (const connection of [this.client, this.subscriber]) {
      try {
        if (connection.isOpen) connection.destroy();
      } catch {
        // already ended
      }
    }
    this.tellState();
  }

  /**
   * Sends `args` now (so it takes effect in call order) and settles after
   * every earlier call. `then` maps the reply. An error reply of Redis
   * rejects the call (read_failed, write_failed); a lost connection rejects
   * it with store_unavailable. During an outage it rejects at once with
   * store_unavailable (before the calls ahead of it settle).
   */
  private call<T>(args: readonly string[], then: (reply: unknown) => T, kind: CallKind = "read"): Promise<T> {
    let p: Promise<T>;
    if (this.closed) p = Promise.reject(new StoreError("store_closed", "The Redis store is closed."));
    else if (this.broken !== undefined) p = Promise.reject(this.broken);
    else if (!this.connected) {
      this.stats.unavailableRefusals++;
      return Promise.reject(this.unavailable());
    } else {
      this.stats.commands++;
      p = this.client.sendCommand([...args]).then(
        (reply) => {
          try {
            return then(reply);
          } catch (e) {
            if (e instanceof StoreError) throw e;
            throw new StoreError(
              "store_corrupt",
              `A value under ${JSON.stringify(this.prefix)} does not have the shape this version writes: ${describeError(e)}`,
            );
          }
        },
        (e: unknown) => {
          throw this.failure(e, kind);
        },
      );
    }
    return this.settleInOrder(p);
  }

  private failure(e: unknown, kind: CallKind): StoreError {
    if (e instanceof ErrorReply) {
      const answer = `Redis answered ${JSON.stringify(e.message)}`;
      return new StoreError(kind === "read" ? "read_failed" : "write_failed", answer, { cause: e });
    }
    this.connectionLost(e);
    return this.broken ?? this.unavailable();
  }

  private settleInOrder<T>(p: Promise<T>): Promise<T> {
    // `p` may reject before the calls ahead of it settle: handled through `settled`
    p.catch(() => undefined);
    const settled = this.tail.then(
      () => p,
      () => p,
    );
    this.tail = settled.catch(() => undefined);
    return settled;
  }

  private script<T>(name: ScriptName, args: readonly string[], then: (reply: unknown) => T, kind: CallKind = "read"): Promise<T> {
    return this.call(["EVALSHA", this.shas[name], "0", this.prefix, ...args], then, kind);
  }

  private key(name: string): string {
    return this.prefix + name;
  }

  // --- device registry

  putDevice(device: DeviceRecord): Promise<void> {
    try {
      if (!this.closed) checkDevice(device);
    } catch (e) {
      return this.settleInOrder(Promise.reject(e as Error));
    }
    const args = [device.id, encodeDevice(device), device.psk?.identity ?? "", device.certIdentity ?? "", this.instance];
    return this.script(
      "putDevice",
      args,
      (reply) => {
        const r = reply as [0] | [1, "psk" | "cert", string];
        if (r[0] === 0) return;
        const what =
          r[1] === "psk" ? `PSK identity ${JSON.stringify(device.psk?.identity)}` : `Certificate identity ${JSON.stringify(device.certIdentity)}`;
        throw new StoreError("identity_in_use", `${what} of device ${JSON.stringify(device.id)} is already used by device ${JSON.stringify(r[2])}.`);
      },
      "write",
    );
  }

  getDevice(id: string): Promise<DeviceRecord | undefined> {
    return this.call(["HGET", this.key("dev"), id], (r) => (r === null ? undefined : decodeDevice(r as string)));
  }

  findDeviceByPskIdentity(identity: string): Promise<DeviceRecord | undefined> {
    return this.script("findDevice", ["psk", identity], (r) => (r === null ? undefined : decodeDevice(r as string)));
  }

  findDeviceByCertIdentity(identity: string): Promise<DeviceRecord | undefined> {
    return this.script("findDevice", ["cert", identity], (r) => (r === null ? undefined : decodeDevice(r as string)));
  }

  listDevices(): Promise<DeviceRecord[]> {
    return this.call(["HVALS", this.key("dev")], (r) => (r as string[]).map(decodeDevice).sort((a, b) => compareText(a.id, b.id)));
  }

  deleteDevice(id: string): Promise<boolean> {
    return this.script("deleteDevice", [id, this.instance], (r) => r === 1, "write");
  }

  // --- delivery journal

  commit(batch: WriteBatch): Promise<Receipt[]> {
    if (this.closed) return this.call([], () => []);
    if (this.commitFailure !== undefined) return this.settleInOrder(Promise.reject(refusedAfterFailure(this.commitFailure)));
    let args: string[];
    try {
      checkBatch(batch);
      const unanswered = this.inFlight.length + this.waiting.length;
      args = commitArgs(this.prefix, this.instance, this.sent, unanswered + 1, batch);
    } catch (e) {
      this.commitFailure = e as Error;
      return this.settleInOrder(Promise.reject(e as Error));
    }
    const receipts = batch.receipts ?? [];
    // ids come from the script's answer (settleCommit)
    const copies = receipts.map((r) => receiptRecord(r, 0));
    const k = this.sent++;
    const p = new Promise<Receipt[]>((resolve, reject) => {
      this.waiting.push({ k, args, copies, resolve, reject, sends: 0 });
    });
    // kept in order during an outage; sent at once otherwise
    if (this.connected) this.pump();
    return this.settleInOrder(p);
  }

  /** Sends the waiting commits, in order (only while connected: a reconnection sends them once settled). */
  private pump(): void {
    while (this.connected && this.waiting.length > 0) {
      const c = this.waiting.shift() as PendingCommit;
      this.inFlight.push(c);
      c.sends++;
      this.stats.commands++;
      const generation = this.generation;
      this.client.sendCommand(["EVALSHA", this.shas.commit, "0", ...c.args]).then(
        (reply) => {
          if (generation !== this.generation) return;
          this.inFlight.splice(this.inFlight.indexOf(c), 1);
          this.settleCommit(c, reply as unknown as CommitReply);
        },
        (e: unknown) => {
          if (generation !== this.generation) return;
          if (!(e instanceof ErrorReply)) {
            // kept: the fence tells after the reconnection whether it was applied
            this.connectionLost(e);
            return;
          }
          this.inFlight.splice(this.inFlight.indexOf(c), 1);
          c.reject(
            this.failCommit(
              new StoreError("store_failed", `Redis answered ${JSON.stringify(e.message)} to a commit; nothing more is committed until a restart.`, {
                cause: e,
              }),
            ),
          );
        },
      );
    }
  }

  private settleCommit(c: PendingCommit, r: CommitReply): void {
    switch (r[0]) {
      case 0:
        this.stats.commits++;
        this.applied = Math.max(this.applied, c.k + 1);
        c.resolve(c.copies.map((copy, i) => ({ ...copy, id: r[1] + i })));
        return;
      case 1:
        c.reject(
          this.failCommit(
            new StoreError("duplicate_message", `Message id ${JSON.stringify(r[1])} is already stored; nothing of the batch was applied.`),
          ),
        );
        return;
      case 2:
        c.reject(
          this.failCommit(
            new StoreError(
              "commit_failed",
              `Delivery to device ${JSON.stringify(r[1])} references message ${JSON.stringify(r[2])}, which is not stored; nothing of the batch was applied.`,
            ),
          ),
        );
        return;
      case 3:
        c.reject(refusedAfterFailure(this.commitFailure ?? new Error(`the commit fence of this store is at ${r[1]}, an earlier commit was lost`)));
        return;
    }
  }

  private failCommit(e: StoreError): StoreError {
    this.commitFailure ??= e;
    return e;
  }

  // --- cluster (cluster-types.ts)

  claimDevice(device: string): Promise<DeviceHold> {
    return this.script(
      "claim",
      [this.instance, device],
      (reply) => {
        const [epoch, previous, ctr, flat, msgs] = reply as [number, string, string, string[], string[]];
        const counters = ctr === "" ? undefined : decodeCounters(device, ctr);
        return { device, epoch, counters, ...decodeQueue(device, flat, msgs), previous };
      },
      "write",
    );
  }

  releaseDevice(device: string, epoch: number): Promise<void> {
    return this.script("release", [this.instance, device, String(epoch)], () => undefined, "write");
  }

  readQueue(device: string): Promise<StoredQueue> {
    return this.script("readQueue", [device], (reply) => {
      const [flat, msgs] = reply as [string[], string[]];
      return decodeQueue(device, flat, msgs);
    });
  }

  holders(devices: readonly string[]): Promise<Map<string, string>> {
    return this.script("holders", devices, (r) => new Map(devices.map((d, i) => [d, (r as string[])[i] ?? ""])));
  }

  loadSubscriptions(): Promise<Subscription[]> {
    return this.script("subscriptions", [], (reply) => {
      const out: Subscription[] = [];
      for (const [device, topics] of (reply as [string, string[]][]).sort((a, b) => compareText(a[0], b[0]))) {
        for (const topic of topics.sort(compareText)) out.push({ device, topic });
      }
      return out;
    });
  }

  queueDepths(devices: readonly string[]): Promise<Map<string, number>> {
    return this.script("queueDepths", devices, (r) => new Map(devices.map((d, i) => [d, (r as number[])[i] ?? 0])));
  }

  reserveMessageIds(ids: readonly string[], ttlMs: number): Promise<Set<string>> {
    const ttl = String(Math.max(1, Math.ceil(ttlMs)));
    return this.script("reserveIds", [this.instance, ttl, ...ids], (r) => new Set(ids.filter((_, i) => (r as number[])[i] === 1)), "write");
  }

  releaseMessageIds(ids: readonly string[]): Promise<void> {
    return this.script("releaseIds", [this.instance, ...ids], () => undefined, "write");
  }

  loadDeliveryState(): Promise<DeliveryState> {
    return this.script("loadState", [], (reply) => {
      const [ctr, queues, ids, msgs, subs] = reply as [string[], [string, string[]][], string[], string[], [string, string[]][]];
      const counters = pairs(ctr)
        .map(([d, v]) => decodeCounters(d, v))
        .sort((a, b) => compareText(a.device, b.device));
      const deliveries: DeliveryRecord[] = [];
      for (const [device, flat] of queues.sort((a, b) => compareText(a[0], b[0]))) {
        const queue = pairs(flat).map(([mid, v]) => decodeDelivery(device, mid, v));
        queue.sort((a, b) => a.order - b.order || compareText(a.messageId, b.messageId));
        deliveries.push(...queue);
      }
      const messages = ids.map((id, i) => decodeMessage(id, msgs[i] as string)).sort((a, b) => compareText(a.id, b.id));
      const subscriptions: Subscription[] = [];
      for (const [device, topics] of subs.sort((a, b) => compareText(a[0], b[0]))) {
        for (const topic of topics.sort(compareText)) subscriptions.push({ device, topic });
      }
      return { counters, deliveries, messages, subscriptions };
    });
  }

  getMessage(id: string): Promise<MessageRecord | undefined> {
    return this.call(["HGET", this.key("msg"), id], (r) => (r === null ? undefined : decodeMessage(id, r as string)));
  }

  existingMessageIds(ids: readonly string[]): Promise<Set<string>> {
    return this.script("existing", ids, (r) => new Set(ids.filter((_, i) => (r as number[])[i] === 1)));
  }

  receiptsForMessage(messageId: string): Promise<Receipt[]> {
    return this.script("messageReceipts", [messageId], (r) => (r as string[]).map(decodeReceipt));
  }

  receiptsAfter(afterId: number, limit: number): Promise<Receipt[]> {
    const n = Math.floor(limit);
    if (!(n > 0)) return this.call(["PING"], () => []);
    const from = Number.isFinite(afterId) ? `(${Math.floor(afterId)}` : afterId > 0 ? "+inf" : "-inf";
    return this.call(["ZRANGE", this.key("r"), from, "+inf", "BYSCORE", "LIMIT", "0", String(n)], (r) => (r as string[]).map(decodeReceipt));
  }

  prune(before: number): Promise<number> {
    return this.script("prune", [String(before)], (r) => r as number, "write");
  }

  // --- settings

  getSetting(key: string): Promise<string | undefined> {
    return this.call(["HGET", this.key("set"), key], (r) => (r === null ? undefined : (r as string)));
  }

  putSetting(key: string, value: string): Promise<void> {
    try {
      if (!this.closed) checkSetting(key, value);
    } catch (e) {
      return this.settleInOrder(Promise.reject(e as Error));
    }
    return this.call(["HSET", this.key("set"), key, value], () => undefined, "write");
  }

  /** CONFIG GET of the persistence settings, described (readRedisPersistence). */
  persistence(): Promise<RedisPersistence> {
    return this.call(["CONFIG", "GET", "appendonly", "appendfsync", "save"], (reply) => {
      const flat = Array.isArray(reply) ? (reply as string[]) : Object.entries(reply as Record<string, string>).flat();
      const config = new Map(pairs(flat));
      return describePersistence(config.get("appendonly") === "yes", config.get("appendfsync") ?? "", config.get("save") ?? "");
    });
  }

  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    clearInterval(this.livenessTimer);
    const fence = this.available
      ? this.call(
          ["DEL", this.key(`fence:${this.instance}`), this.key(`fres:${this.instance}`), this.key(`alive:${this.instance}`)],
          () => undefined,
          "write",
        ).catch(() => undefined)
      : undefined;
    if (!this.connected && this.broken === undefined) {
      // closed during an outage: what is kept is not sent (a restart reads what Redis holds)
      const kept = [...this.inFlight, ...this.waiting];
      this.inFlight = [];
      this.waiting = [];
      for (const c of kept)
        c.reject(
          new StoreError(
            "store_unavailable",
            `The Redis store at ${this.where} was closed while Redis was unreachable; the commit may not be stored.`,
          ),
        );
      this.endOutage();
    }
    this.closed = true;
    this.link.reconnect = false;
    this.listeners.clear();
    this.stateListeners.clear();
    const last = this.tail;
    this.closing = (async () => {
      await fence;
      await last;
      // a connection that is not ready (reconnecting) has nothing to finish: ended at once
      for (const connection of [this.subscriber, this.client]) {
        try {
          if (connection.isReady) await connection.close();
          else if (connection.isOpen) connection.destroy();
        } catch {
          if (connection.isOpen) connection.destroy();
        }
      }
    })();
    return this.closing;
  }
}

/** What a 202 means with the persistence a Redis server reports (CONFIG GET). */
export interface RedisPersistence {
  readonly appendonly: boolean;
  readonly appendfsync: string;
  /** the RDB snapshot rule ("" = no snapshots) */
  readonly save: string;
  /** "durable", "second", "os", "snapshot" or "none" */
  readonly level: "durable" | "second" | "os" | "snapshot" | "none";
  /** one line for the daemon's log */
  readonly summary: string;
}

/** Reads the server's persistence settings and says what an acknowledged commit (a 202) survives. */
export async function readRedisPersistence(store: Store): Promise<RedisPersistence> {
  if (!(store instanceof RedisStore)) throw new StoreError("read_failed", "readRedisPersistence needs a Redis store.");
  return store.persistence();
}

export function describePersistence(appendonly: boolean, appendfsync: string, save: string): RedisPersistence {
  const base = { appendonly, appendfsync, save };
  if (appendonly && appendfsync === "always") {
    return {
      ...base,
      level: "durable",
      summary:
        "Redis persistence: appendonly yes, appendfsync always: a 202 is on Redis's disk (fsynced) and survives a crash of Redis or its machine.",
    };
  }
  if (appendonly && appendfsync === "everysec") {
    return {
      ...base,
      level: "second",
      summary:
        "Redis persistence: appendonly yes, appendfsync everysec: a 202 survives a Redis crash; a power loss of its machine can lose about the last second of 202s.",
    };
  }
  if (appendonly) {
    return {
      ...base,
      level: "os",
      summary: `Redis persistence: appendonly yes, appendfsync ${appendfsync}: a 202 survives a Redis crash, but the OS decides when it reaches the disk; a power loss can lose about 30 s of 202s.`,
    };
  }
  if (save.trim() !== "") {
    return {
      ...base,
      level: "snapshot",
      summary: `Redis persistence: RDB snapshots only (save "${save}"): a Redis crash loses every 202 since the last snapshot. Set appendonly yes.`,
    };
  }
  return {
    ...base,
    level: "none",
    summary:
      "Redis persistence: NONE (appendonly no, no snapshots): a Redis restart loses every queued message. Set appendonly yes and appendfsync always.",
  };
}
