/**
 * A simulated world for the delivery engine: the engine, a memory store, a
 * registry and key rings, and devices running DeviceSession, joined by an
 * in-memory network with seeded loss, duplication, reordering and latency,
 * all on a fake clock. Asynchronous work (signatures, tokens) runs for real;
 * the loop waits for it without moving the clock. With `nodes`, several
 * engines share one memory cluster (memory-cluster.ts) and the same network
 * and clock; a device's session goes to the node it connects to.
 */
import { ManualClock } from "../../src/util/clock.ts";
import { clusterOf, createMemoryCluster, openMemoryStore, type ClusterStore, type MemoryCluster } from "../../src/store/index.ts";
import type { Receipt, Store } from "../../src/store/types.ts";
import { DeviceRegistry, KeyRing, type ContentSigner } from "../../src/auth/index.ts";
import { createPushVerifier } from "../../src/messaging/push-verifier.ts";
import {
  DeliveryEngine,
  type PresenceEvent,
  type PublishRequest,
  type PublishResult,
  type SessionLink,
} from "../../src/messaging/delivery-engine.ts";
import { DeviceSession } from "../../src/messaging/device-session.ts";
import type { DeliveryOptions } from "../../src/messaging/options.ts";
import type { DeliveryObserver } from "../../src/messaging/observer.ts";
import {
  decodeFrame,
  encodeFrame,
  type FrameBody,
  type Push,
  type UnknownFrameBody,
  type Welcome,
  type WireErrorBody,
} from "../../src/wire/index.ts";

export const T0 = 1_780_000_000_000;

export interface NetworkConditions {
  loss: number;
  duplicate: number;
  reorder: number;
  /** one-way latency range, ms */
  latency: [number, number];
}

export const PERFECT: NetworkConditions = { loss: 0, duplicate: 0, reorder: 0, latency: [5, 5] };

export { seededRandom as prng } from "../support/lossy-udp-proxy.ts";
import { seededRandom as prng } from "../support/lossy-udp-proxy.ts";

interface Timed {
  at: number;
  seq: number;
  run: () => void;
}

export interface Delivered {
  seq: number;
  messageId: string;
  payload: string;
  topic: string;
}

/** A simulated device: a DeviceSession over one link at a time, and its persisted state. */
export class SimDevice {
  readonly id: string;
  readonly identity: string;
  /** persisted state (survives `crash`) */
  hwm = 0;
  token = "";
  /** what the application saw, in order */
  readonly delivered: Delivered[] = [];
  readonly rejected: { seq: number; why: string }[] = [];
  readonly errors: WireErrorBody[] = [];
  readonly welcomes: Welcome[] = [];
  byes: (WireErrorBody | undefined)[] = [];
  session: DeviceSession | undefined;
  link: SimLink | undefined;
  /** the node (engine) its next session goes to: 0 is `world.engine`; others exist in a cluster world */
  node = 0;
  /** drop everything this device would send (a mute device) */
  mute = false;
  /** reconnect (with the token) when the session ends or goes stale, as the SDK does */
  autoReconnect = true;
  /** after SEQ_AHEAD, persist hwm 0 and let the session say Hello again, as the SDK does */
  resetOnSeqAhead = true;
  /** high-water marks reset after SEQ_AHEAD (the old values) */
  readonly seqResets: number[] = [];
  stales = 0;
  /** tamper with pushes on the way in */
  tamper: ((push: Push) => Push | undefined) | undefined;
  /** drop server frames on the way in (after `tamper`) when this returns true */
  dropIncoming: ((frame: FrameBody | UnknownFrameBody) => boolean) | undefined;
  /** the network's fate for this device's datagrams, each direction its own stream (devices do not disturb each other's luck) */
  readonly uplinkRandom: () => number;
  readonly downlinkRandom: () => number;
  private readonly world: World;

  constructor(world: World, id: string, identity: string) {
    this.world = world;
    this.id = id;
    this.identity = identity;
    this.uplinkRandom = world.stream(`up:${id}`);
    this.downlinkRandom = world.stream(`down:${id}`);
  }

  /** Opens a new "DTLS session" (to `options.node`, else the device's node) and sends Hello. */
  connect(options: { useToken?: boolean; token?: string; node?: number } = {}): DeviceSession {
    const w = this.world;
    this.disconnect();
    if (options.node !== undefined) this.node = options.node;
    const link = new SimLink(w, this);
    this.link = link;
    const session = new DeviceSession({
      hwm: this.hwm,
      sessionToken: options.token ?? (options.useToken === false ? "" : this.token),
      verify: (push, jwks) => trackVerification(verifyPush(push, jwks)),
    });
    const old = this.session;
    if (old !== undefined) session.adoptRequests(old);
    this.session = session;
    session.on("wake", () => w.dirty.add(this));
    session.on("welcome", (wel) => {
      this.welcomes.push(wel);
      this.token = wel.sessionToken;
    });
    session.on("message", (push) => {
      this.delivered.push({
        seq: push.seq,
        messageId: push.messageId,
        payload: new TextDecoder().decode(push.payload),
        topic: push.topic,
      });
      // the application is done at once; persist, then ack
      this.hwm = push.seq;
      session.processed(push.seq);
      session.persisted(this.hwm);
    });
    session.on("rejected", (push, why) => {
      this.rejected.push({ seq: push.seq, why });
      w.after(0, () => {
        this.hwm = Math.max(this.hwm, session.receiver.hwm);
        session.persisted(this.hwm);
      });
    });
    session.on("serverError", (e) => this.errors.push(e));
    session.on("seqReset", (r) => {
      this.errors.push(r.error);
      if (!this.resetOnSeqAhead) return;
      this.seqResets.push(r.previousHwm);
      this.hwm = 0;
      w.after(0, () => session.resetPersisted(w.clock.now()));
    });
    session.on("refused", (e) => this.errors.push(e));
    session.on("bye", (r) => {
      this.byes.push(r);
      if (this.autoReconnect) w.after(500, () => this.reconnectIfDown(session));
    });
    session.on("stale", () => {
      this.stales++;
      if (this.autoReconnect) this.connect();
    });
    w.engineAt(link.node).attach(link);
    session.start(w.clock.now());
    w.dirty.add(this);
    return session;
  }

  /** The server closed our session (close_notify arrived). */
  serverClosed(link: SimLink): void {
    if (this.link !== link) return;
    this.link = undefined;
    const s = this.session;
    if (this.autoReconnect && s !== undefined) this.world.after(500, () => this.reconnectIfDown(s));
  }

  private reconnectIfDown(s: DeviceSession): void {
    if (this.session === s && (this.link === undefined || this.link.closed)) this.connect();
  }

  /** The session ends (as if the DTLS session closed). */
  disconnect(): void {
    const link = this.link;
    if (link === undefined) return;
    this.link = undefined;
    link.closed = true;
    this.world.engineAt(link.node).detach(link);
  }

  /** The device process dies: only persisted state survives. */
  crash(): void {
    this.disconnect();
    this.session?.removeAllListeners();
    this.session = undefined;
  }

  /** Sends what the session has queued. */
  pump(): void {
    const s = this.session;
    const link = this.link;
    if (s === undefined || link === undefined) return;
    // tombstones and refusals advance hwm inside the receiver: persist them too
    if (s.receiver.hwm > this.hwm && s.receiver.heldCount >= 0) {
      this.hwm = s.receiver.hwm;
      s.persisted(this.hwm);
    }
    // a refreshed token (a Welcome on the running session) is persisted too
    if (s.welcomed !== undefined) this.token = s.sessionToken;
    const records = s.takeRecords(this.world.clock.now());
    if (records.length === 0 || this.mute) return;
    this.world.transmit(
      records,
      (r) => {
        if (link.closed) return;
        this.world.onServerReceive?.(link, r);
        this.world.engineAt(link.node).receive(link, r);
      },
      this.uplinkRandom,
    );
  }

  receiveFromServer(record: Uint8Array, link: SimLink): void {
    if (link !== this.link || this.session === undefined) return;
    this.session.receive(record, this.world.clock.now());
  }

  /** payloads the application received, in order */
  payloads(): string[] {
    return this.delivered.map((d) => d.payload);
  }
}

/** The server's view of one device session. */
export class SimLink implements SessionLink {
  readonly identity: string;
  readonly viaCertificate = false;
  readonly peer: string;
  readonly deviceId: string;
  /** the node whose engine holds this session */
  readonly node: number;
  closed = false;
  closedByServer = false;
  private readonly world: World;
  private readonly device: SimDevice;

  constructor(world: World, device: SimDevice) {
    this.world = world;
    this.device = device;
    this.identity = device.identity;
    this.deviceId = device.id;
    this.node = device.node;
    this.peer = `sim:${device.id}:${++world.linkCounter}`;
  }

  send(records: readonly Uint8Array[]): void {
    if (this.closed) return;
    this.world.serverRecords += records.length;
    this.world.onServerSend?.(this, records);
    this.world.transmit(
      records,
      (r) => {
        const tamper = this.device.tamper;
        if (tamper !== undefined) {
          const out = this.world.tamperRecord(r, tamper);
          if (out === undefined) return;
          r = out;
        }
        const drop = this.device.dropIncoming;
        if (drop !== undefined && drop(decodeFrame(r))) return;
        this.device.receiveFromServer(r, this);
      },
      this.device.downlinkRandom,
    );
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.closedByServer = true;
    this.world.after(0, () => this.world.engineAt(this.node).detach(this));
    // the close_notify may be lost like any datagram: then the device finds out by silence
    this.world.transmit([new Uint8Array(0)], () => this.device.serverClosed(this), this.device.downlinkRandom);
  }
}

/** One node of a cluster world: its view of the shared store, its registry and its engine. */
export interface ClusterNode {
  readonly store: Store;
  readonly registry: DeviceRegistry;
  engine: DeliveryEngine;
  flushWanted: boolean;
  /** the world does not wait for this node's asynchronous work (a test holds its commits back) */
  frozen?: boolean;
}

export interface WorldOptions {
  net?: NetworkConditions;
  seed?: number;
  options?: Partial<DeliveryOptions>;
  store?: Store;
  /** the engine's metrics sink (default none) */
  observer?: DeliveryObserver;
  /**
   * A cluster of this many nodes (engines) on one shared memory store
   * (memory-cluster.ts), each with its own registry: node 0 is `engine`,
   * `store` and `registry`; the others are `nodes[i]`.
   */
  nodes?: number;
  /** the nodes' stores of a cluster world on another shared store (e.g. Redis), one per node; default a memory cluster */
  sharedStores?: readonly (Store & ClusterStore)[];
  /** wraps the store of cluster node i (i >= 1) before its engine opens on it (e.g. to hold its commits back) */
  wrapNodeStore?: (i: number, store: Store & ClusterStore) => Store & ClusterStore;
  /** makes the content signatures (default: the engine's, on the main thread) */
  contentSigner?: (keys: KeyRing) => ContentSigner;
}

export class World {
  readonly clock = new ManualClock(T0);
  readonly store: Store;
  registry!: DeviceRegistry;
  contentKeys!: KeyRing;
  sessionKeys!: KeyRing;
  engine!: DeliveryEngine;
  /** the shared store of a cluster world (on a memory cluster) */
  readonly cluster: MemoryCluster | undefined;
  /** a cluster world (nodes on one shared store) */
  private readonly shared: boolean;
  /** every node of a cluster world (node 0 is this world's engine, store and registry); empty otherwise */
  readonly nodes: ClusterNode[] = [];
  readonly receipts: Receipt[] = [];
  readonly dirty = new Set<SimDevice>();
  readonly devices = new Map<string, SimDevice>();
  net: NetworkConditions;
  linkCounter = 0;
  serverRecords = 0;
  /** every datagram the server sends (before the network has its way with it) */
  onServerSend: ((link: SimLink, records: readonly Uint8Array[]) => void) | undefined;
  /** every record that reaches the server (after the network), just before the engine gets it */
  onServerReceive: ((link: SimLink, record: Uint8Array) => void) | undefined;
  /** presence events of every engine this world ran */
  readonly presence: PresenceEvent[] = [];
  private readonly random: () => number;
  private readonly seed: number;
  private readonly queue: Timed[] = [];
  private eventSeq = 0;
  private flushWanted = false;
  /** a restart loading the store */
  private restarting: Promise<void> = Promise.resolve();
  private readonly engineOptions: Partial<DeliveryOptions>;
  private readonly observer: DeliveryObserver | undefined;
  private readonly contentSigner: WorldOptions["contentSigner"];

  private constructor(o: WorldOptions) {
    this.net = o.net ?? PERFECT;
    this.seed = o.seed ?? 1;
    this.random = prng(this.seed);
    this.shared = o.nodes !== undefined;
    this.cluster = o.nodes === undefined || o.sharedStores !== undefined ? undefined : createMemoryCluster();
    this.store = o.store ?? o.sharedStores?.[0] ?? this.cluster?.node("n0") ?? openMemoryStore();
    this.engineOptions = o.options ?? {};
    this.observer = o.observer;
    this.contentSigner = o.contentSigner;
  }

  static async create(o: WorldOptions = {}): Promise<World> {
    const w = new World(o);
    w.registry = await DeviceRegistry.open(w.store, w.clock);
    w.contentKeys = await KeyRing.open(w.store, "content", { now: T0 });
    w.sessionKeys = await KeyRing.open(w.store, "session", { now: T0 });
    await w.startEngine();
    if (w.shared) {
      w.nodes.push({ store: w.store, registry: w.registry, engine: w.engine, flushWanted: false });
      for (let i = 1; i < (o.nodes ?? 1); i++) {
        const base = o.sharedStores?.[i] ?? (w.cluster as MemoryCluster).node(`n${i}`);
        const store = o.wrapNodeStore?.(i, base) ?? base;
        const registry = await DeviceRegistry.open(store, w.clock);
        const node: ClusterNode = { store, registry, engine: undefined as unknown as DeliveryEngine, flushWanted: false };
        node.engine = await w.openEngine(store, registry, () => {
          node.flushWanted = true;
        });
        w.nodes.push(node);
      }
    }
    return w;
  }

  /** The engine of node i (0: `engine`). */
  engineAt(i: number): DeliveryEngine {
    return i === 0 ? this.engine : (this.nodes[i] as ClusterNode).engine;
  }

  /** Every engine of the world. */
  engines(): DeliveryEngine[] {
    return this.nodes.length === 0 ? [this.engine] : [this.engine, ...this.nodes.slice(1).map((n) => n.engine)];
  }

  private async openEngine(store: Store, registry: DeviceRegistry, requestFlush: () => void): Promise<DeliveryEngine> {
    const cluster = this.shared ? clusterOf(store) : undefined;
    const engine = await DeliveryEngine.open({
      store,
      ...(cluster === undefined ? {} : { cluster }),
      registry,
      contentKeys: this.contentKeys,
      sessionKeys: this.sessionKeys,
      clock: this.clock,
      requestFlush,
      random: prng(this.eventSeq + 7),
      options: this.engineOptions,
      ...(this.observer === undefined ? {} : { observer: this.observer }),
      ...(this.contentSigner === undefined ? {} : { contentSigner: this.contentSigner(this.contentKeys) }),
    });
    engine.on("receipt", (r) => this.receipts.push(r));
    engine.on("presence", (p) => this.presence.push(p));
    return engine;
  }

  /** (Re)creates the engine from the store, as a restarted daemon does. */
  async startEngine(): Promise<void> {
    this.engine?.removeAllListeners();
    this.engine = await this.openEngine(this.store, this.registry, () => {
      this.flushWanted = true;
    });
  }

  /**
   * The daemon dies: sessions vanish without a word; a new engine starts from
   * the store (loading it is asynchronous: the world's loop waits for it, so a
   * timed event may call this without awaiting).
   */
  restartEngine(): Promise<void> {
    const old = this.engine;
    for (const d of this.devices.values()) {
      if (d.link !== undefined) {
        d.link.closed = true;
        d.link = undefined;
      }
    }
    old.removeAllListeners();
    // the old engine's unflushed batch is lost, as in a kill -9 (and so are the
    // releases of its commits still in flight: what it sent is what it sent)
    this.restarting = this.startEngine();
    return this.restarting;
  }

  /** Registers a device (in the registry's cache at once; its store write completes in the background). */
  addDevice(id: string, topics: string[] = []): SimDevice {
    const identity = `id-${id}`;
    void this.registry.add({ id, psk: { identity, key: new TextEncoder().encode(`key-${id}`) }, topics });
    const d = new SimDevice(this, id, identity);
    this.devices.set(id, d);
    return d;
  }

  after(ms: number, run: () => void): void {
    const at = this.clock.now() + ms;
    const t: Timed = { at, seq: this.eventSeq++, run };
    // sorted insert (small queues)
    let i = this.queue.length;
    while (i > 0) {
      const prev = this.queue[i - 1] as Timed;
      if (prev.at < at || (prev.at === at && prev.seq < t.seq)) break;
      i--;
    }
    this.queue.splice(i, 0, t);
  }

  /** A random stream of its own for `name`, derived from the world's seed. */
  stream(name: string): () => number {
    let h = this.seed >>> 0;
    for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
    return prng(h);
  }

  /** Carries records over the impaired network: one datagram per call. */
  transmit(records: readonly Uint8Array[], deliver: (r: Uint8Array) => void, random: () => number = this.random): void {
    const { loss, duplicate, reorder, latency } = this.net;
    const copies = random() < loss ? 0 : random() < duplicate ? 2 : 1;
    for (let c = 0; c < copies; c++) {
      let delay = latency[0] + random() * (latency[1] - latency[0]);
      if (random() < reorder) delay += 1 + random() * 50;
      const batch = records.map((r) => new Uint8Array(r));
      this.after(Math.round(delay), () => {
        for (const r of batch) deliver(r);
      });
    }
  }

  /** Rewrites a Push on the wire (an attacker between the signer and the device); other frames pass. */
  tamperRecord(record: Uint8Array, tamper: (push: Push) => Push | undefined): Uint8Array | undefined {
    const frame = decodeFrame(record);
    if (frame.kind !== "push") return record;
    const changed = tamper(frame.push);
    return changed === undefined ? undefined : encodeFrame({ kind: "push", push: changed });
  }

  /** Lets real asynchronous work (signatures, tokens) finish without moving the clock. */
  async settle(): Promise<void> {
    // WebCrypto finishes on other threads: keep turning the event loop until
    // nothing is pending (a bounded number of turns would let the clock move
    // on while a signature is still being made), and pump nothing while some
    // of it still runs, so the order in which it finishes does not change
    // what is sent: a seed then always gives the same run
    const giveUp = Date.now() + 10_000;
    await this.restarting;
    for (;;) {
      await new Promise<void>((r) => setImmediate(r));
      if (Date.now() > giveUp) throw new Error("the simulated world did not settle within 10 s of real time");
      if (this.pendingAsync() > 0 || this.verifying() > 0) continue;
      this.pumpAll();
      if (!this.flushWanted && !this.nodesWantFlush() && this.dirty.size === 0 && this.pendingAsync() === 0 && this.verifying() === 0) return;
    }
  }

  private pendingAsync(): number {
    let n = 0;
    for (const [i, e] of this.engines().entries()) if (this.nodes[i]?.frozen !== true) n += e.pendingAsync;
    return n;
  }

  private nodesWantFlush(): boolean {
    return this.nodes.some((n, i) => i > 0 && n.flushWanted);
  }

  private verifying(): number {
    return pendingVerifications;
  }

  private pumpAll(): void {
    for (let round = 0; round < 10; round++) {
      if (this.flushWanted) {
        this.flushWanted = false;
        this.engine.flush();
      }
      for (const [i, n] of this.nodes.entries()) {
        if (i === 0 || !n.flushWanted) continue;
        n.flushWanted = false;
        n.engine.flush();
      }
      const dirty = [...this.dirty];
      this.dirty.clear();
      for (const d of dirty) d.pump();
      if (!this.flushWanted && !this.nodesWantFlush() && this.dirty.size === 0) return;
    }
  }

  /** Runs the world for `ms` of simulated time (or until `until` holds). */
  async run(ms: number, until?: () => boolean): Promise<void> {
    const end = this.clock.now() + ms;
    await this.settle();
    for (;;) {
      if (until?.() === true) return;
      let engineAt: number | undefined;
      for (const e of this.engines()) {
        const t = e.nextDeadline();
        if (t !== undefined && (engineAt === undefined || t < engineAt)) engineAt = t;
      }
      let deviceAt: number | undefined;
      for (const d of this.devices.values()) {
        const t = d.session?.nextDeadline();
        if (t !== undefined && (deviceAt === undefined || t < deviceAt)) deviceAt = t;
      }
      const netAt = this.queue[0]?.at;
      const next = Math.min(engineAt ?? Infinity, deviceAt ?? Infinity, netAt ?? Infinity);
      if (next > end) {
        this.clock.set(end);
        return;
      }
      const now = Math.max(this.clock.now(), next);
      this.clock.set(now);
      while (this.queue.length > 0 && (this.queue[0] as Timed).at <= now) (this.queue.shift() as Timed).run();
      await this.restarting;
      if (engineAt !== undefined && engineAt <= now) {
        for (const e of this.engines()) {
          const t = e.nextDeadline();
          if (t !== undefined && t <= now) e.onTimer(now);
        }
      }
      for (const d of this.devices.values()) {
        const t = d.session?.nextDeadline();
        if (t !== undefined && t <= now) d.session?.onTimer(now);
      }
      await this.settle();
    }
  }

  /** Publishes and lets the world run (without moving the clock) until the publish is durable. */
  async publish(req: PublishRequest, node = 0): Promise<PublishResult> {
    let done = false;
    const p = this.engineAt(node)
      .publish(req)
      .finally(() => {
        done = true;
      });
    p.catch(() => undefined);
    for (let i = 0; i < 200 && !done; i++) await this.settle();
    return p;
  }

  receiptsOf(messageId: string): Receipt[] {
    return this.receipts.filter((r) => r.messageId === messageId);
  }
}

const verifyPush = createPushVerifier();

let pendingVerifications = 0;
export function trackVerification<T>(p: Promise<T>): Promise<T> {
  pendingVerifications++;
  return p.finally(() => pendingVerifications--);
}
