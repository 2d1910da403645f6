import { EventEmitter } from "node:events";
import { Scheduler } from "../util/scheduler.ts";
import type { DeliveryState, MessageRecord, Receipt } from "../store/types.ts";
import type { ClusterStore } from "../store/cluster-types.ts";
import { mainThreadSigner } from "../auth/index.ts";
import { ErrorCode } from "../wire/index.ts";
import { defaultCrypto } from "../crypto/index.ts";
import type { DeliveryEngineDeps, DeviceStatus, EngineEvents, PublishResult, SessionLink } from "./delivery-types.ts";
import { addStoredDelivery, Holds, loadCounters, loadOrder } from "./cluster-holds.ts";
import { EngineTurn } from "./engine-turn.ts";
import { IdGuard } from "./id-guard.ts";
import { DeviceTable, deviceOf, type EngineEnv, type EngineParts, type TimerKey } from "./engine-parts.ts";
import { guardedObserver, NO_OBSERVER, type EngineFailure } from "./observer.ts";
import { resolveDeliveryOptions, type DeliveryOptions } from "./options.ts";
import type { PublishRequest } from "./publish-request.ts";
import { Publishing } from "./publishing.ts";
import { SendWindow } from "./send-window.ts";
import { Sessions } from "./sessions.ts";
import type { LinkRestoreOutcome } from "./link-snapshot.ts";
import { Topics } from "./topics.ts";

export type { PublishRequest, PublishTarget } from "./publish-request.ts";
export { LINK_RESTORE_OUTCOMES, type LinkRestoreOutcome } from "./link-snapshot.ts";
export type { DeliveryEngineDeps, DeviceStatus, EngineFailureEvent, PresenceEvent, PublishResult, SessionLink } from "./delivery-types.ts";

/**
 * The server side of delivery, sans-I/O: per-device queues and sequence
 * numbers, the in-flight window, acks, retransmission, expiry, collapse keys,
 * topics, sessions (Hello/Welcome, tokens, heartbeats) and receipts.
 *
 * Live state is in memory; every change goes into one batch per turn, which
 * `flush()` commits to the store *before* any record of that turn is sent or
 * any publisher is answered: nothing leaves the engine that a crash could
 * take back. The driver: calls `attach`/`receive`/`detach` for DTLS sessions,
 * `flush()` when asked through `requestFlush`, and `onTimer(now)` at
 * `nextDeadline()`.
 *
 * This class is the facade: the work is done by its parts (engine-parts.ts
 * lists their contracts; docs/delivery.md section 17 maps them): Sessions
 * (sessions.ts), SendWindow (send-window.ts), Publishing (publishing.ts),
 * Topics (topics.ts) and EngineTurn (engine-turn.ts, the batch and flush).
 */
export class DeliveryEngine extends EventEmitter<EngineEvents> {
  readonly options: DeliveryOptions;
  private readonly env: EngineEnv;
  private readonly turn: EngineTurn;
  private readonly sessions: Sessions;
  private readonly window: SendWindow;
  private readonly publishing: Publishing;
  private readonly topics: Topics;
  private readonly holds: Holds;
  private readonly unsubscribeRegistry: () => void;

  private constructor(deps: DeliveryEngineDeps) {
    super();
    this.options = resolveDeliveryOptions(deps.options);
    const observer = guardedObserver(deps.observer ?? NO_OBSERVER);
    const idSource = (deps.crypto ?? defaultCrypto).random;
    this.env = {
      options: this.options,
      store: deps.store,
      cluster: deps.cluster,
      registry: deps.registry,
      clock: deps.clock,
      random: deps.random ?? Math.random,
      observer,
      // time-ordered: the store's index of message ids then grows at its end (docs/store.md)
      newId: deps.newId ?? (() => idSource.timeOrderedId(deps.clock.now())),
      timers: new Scheduler<TimerKey>(),
      devices: new DeviceTable(this.options.rtt),
      ids: new IdGuard(),
      notify: (event, arg) => this.notify(event, arg),
      reportFailure: (cause, device, error) => this.reportFailure(cause, device, error),
      fatal: (error) => this.emit("fatal", error),
    };
    // the parts know one another through `parts` (filled in just below, before any of them runs)
    const parts = {} as { -readonly [K in keyof EngineParts]: EngineParts[K] };
    this.turn = parts.turn = new EngineTurn(this.env, parts, deps.requestFlush);
    this.sessions = parts.sessions = new Sessions(this.env, parts, { sessionKeys: deps.sessionKeys, contentKeys: deps.contentKeys });
    this.window = parts.window = new SendWindow(this.env, parts);
    this.publishing = parts.publishing = new Publishing(this.env, parts, {
      contentKeys: deps.contentKeys,
      contentSigner: deps.contentSigner ?? mainThreadSigner(deps.contentKeys),
    });
    this.topics = parts.topics = new Topics(this.env, parts);
    this.holds = parts.holds = new Holds(this.env, parts, {
      loadedOrder: (order) => this.publishing.loadedOrder(order),
      moved: (dev) => this.sessions.moved(dev),
      subscriptionChanged: (device, topic, subscribed) => this.topics.subscriptionChanged(device, topic, subscribed),
      reloadSubscriptions: async () => this.topics.reloadSubscriptions(await (deps.cluster as ClusterStore).loadSubscriptions()),
      registryChanged: (device) => deps.registry.refresh(device),
    });
    this.unsubscribeRegistry = deps.registry.onChange((id, record) => this.topics.registryChanged(id, record));
  }

  /** Builds the engine from the store's delivery state and the registry. */
  static async open(deps: DeliveryEngineDeps): Promise<DeliveryEngine> {
    if (deps.cluster !== undefined) {
      // a shared store: no queue is loaded (each comes with its device's claim), only the topic index
      const subscriptions = await deps.cluster.loadSubscriptions();
      const engine = new DeliveryEngine(deps);
      engine.load({ counters: [], deliveries: [], messages: [], subscriptions });
      return engine;
    }
    const state = await deps.store.loadDeliveryState();
    const engine = new DeliveryEngine(deps);
    engine.load(state);
    return engine;
  }

  private load(state: DeliveryState): void {
    const { clock, devices, registry } = this.env;
    const now = clock.now();
    // the store holds safe integers
    for (const c of state.counters) loadCounters(devices.queue(c.device), c);
    const messages = new Map(state.messages.map((m) => [m.id, m]));
    // in-flight entries go in by seq (priorities can make seq order differ from enqueue order)
    const deliveries = [...state.deliveries].sort((a, b) => (a.device < b.device ? -1 : a.device > b.device ? 1 : loadOrder(a, b)));
    for (const d of deliveries) {
      const message = messages.get(d.messageId);
      if (message === undefined) continue;
      this.publishing.loadedOrder(d.order);
      addStoredDelivery(this.env, devices.queue(d.device), d, message, now);
    }
    for (const s of state.subscriptions) this.topics.loadSubscription(s.device, s.topic);
    for (const d of registry.list()) this.topics.loadRegistered(d.id, d);
  }

  // ---------------------------------------------------------------- sessions

  /** A DTLS session was established. */
  attach(link: SessionLink): void {
    this.sessions.attach(link);
  }

  /** A DTLS session carried over a daemon restart (`saved`: what exportLink gave): attached and bound again without Hello when its device is still valid. */
  attachRestored(link: SessionLink, saved: Uint8Array): LinkRestoreOutcome {
    return this.sessions.attachRestored(link, saved);
  }

  /** What the session is to the engine, saved with its DTLS snapshot on a restart (undefined: not worth saving; it is not restored). */
  exportLink(link: SessionLink): Uint8Array | undefined {
    return this.sessions.exportLink(link);
  }

  /** The DTLS session ended (or the driver gave up on it). */
  detach(link: SessionLink): void {
    this.sessions.detach(link);
  }

  /**
   * One record from a session. Never throws: a frame that fails while being
   * served fails only its session (Bye INTERNAL), never the turn's batch,
   * another device or the caller.
   */
  receive(link: SessionLink, record: Uint8Array): void {
    this.sessions.receive(link, record);
  }

  // ---------------------------------------------------------------- publishing

  /**
   * Publishes a message to one device or to every subscriber of a topic:
   * signs it once, queues it for each recipient in one durable batch, and
   * resolves once that batch is committed. Throws MessagingError for bad
   * input, an unknown or revoked device, or (direct publishes) a full queue.
   */
  publish(req: PublishRequest): Promise<PublishResult> {
    return this.publishing.publish(req);
  }

  /**
   * Publishes several messages as one: each is checked and signed on its own
   * (signatures made together, off the event loop when the signer is a pool),
   * then all are queued in the same turn, so they join one durable commit
   * whatever order their signatures come back in. One outcome per request, in
   * order: its result, or its own MessagingError (one bad request does not
   * fail the others; a failed commit fails all that it held).
   */
  publishMany(reqs: readonly PublishRequest[]): Promise<PromiseSettledResult<PublishResult>[]> {
    return this.publishing.publishMany(reqs);
  }

  /** Devices that receive a publish to `topic`: enabled, subscribed by themselves or assigned by the registry. */
  subscribersOf(topic: string): string[] {
    return this.topics.subscribersOf(topic);
  }

  // ---------------------------------------------------------------- timers, flush

  /** The earliest time `onTimer` has work; undefined when none. */
  nextDeadline(): number | undefined {
    // a stopped engine does no more work (its deadlines would be due at once, forever)
    if (this.turn.stopped) return undefined;
    return this.env.timers.next();
  }

  /** Runs the due timers; one that fails fails only its device (see receive). */
  onTimer(now: number): void {
    if (this.turn.stopped) return;
    for (const key of this.env.timers.due(now)) {
      switch (key.kind) {
        case "entry":
          this.sessions.isolated(deviceOf(key), () => this.window.expire(key, now));
          break;
        case "device":
          this.sessions.isolated(key, () => this.window.retransmitDue(key, now));
          break;
        case "link":
          this.sessions.heartbeatDue(key, now);
          break;
      }
    }
    this.turn.wake();
  }

  /**
   * Hands the turn's batch to the store; once it is durable the turn's
   * records go out and its publishers are answered (EngineTurn.flush).
   */
  flush(): void {
    this.turn.flush();
  }

  /** Resolves once every turn flushed so far is released (or failed). */
  drained(): Promise<void> {
    return this.turn.drained();
  }

  // ---------------------------------------------------------------- queries

  /** Hellos and publishes waiting for a signature (asynchronous crypto) or the store, and turns waiting for their commit. */
  get pendingAsync(): number {
    return this.sessions.pendingHellos + this.publishing.pendingAsync + this.turn.pendingCommits;
  }

  /**
   * The device as this node knows it. On a shared store only a device this
   * node holds is online here with its queue; for the others ask the store
   * (`holders`, `queueDepths`), or use `heldDevices`.
   */
  deviceStatus(id: string): DeviceStatus {
    const q = this.env.devices.get(id);
    return {
      id,
      online: q?.link !== undefined,
      lastSeen: q?.lastSeen ?? 0,
      queueDepth: q?.depth ?? 0,
      lastSeq: q?.lastSeq ?? 0,
      ackedSeq: q?.ackedSeq ?? 0,
    };
  }

  /** Messages queued or in flight over all devices (walks every device: for scrapes, not hot paths). */
  queueDepthTotal(): number {
    let n = 0;
    for (const q of this.env.devices.values()) n += q.depth;
    return n;
  }

  /** On a shared store: the devices whose queue this node holds (every device it has a session for). */
  heldDevices(): string[] {
    return this.holds.heldDevices();
  }

  /** Devices online now. */
  onlineCount(): number {
    let n = 0;
    for (const q of this.env.devices.values()) if (q.link !== undefined) n++;
    return n;
  }

  /** The message and its receipts, from the store (what is durable). */
  async messageStatus(id: string): Promise<{ message: MessageRecord; receipts: Receipt[] } | undefined> {
    const [message, receipts] = await Promise.all([this.env.store.getMessage(id), this.env.store.receiptsForMessage(id)]);
    if (message === undefined) return undefined;
    return { message, receipts };
  }

  /** Call after rotating the content-signing keys, so Welcome carries the new JWKS. */
  keysChanged(): void {
    this.sessions.keysChanged();
  }

  /** Stops taking publishes and Hellos, says Bye to every session, flushes, and resolves once every turn is released. */
  async shutdown(): Promise<void> {
    this.turn.closing = true;
    this.sessions.byeAll(ErrorCode.SHUTTING_DOWN, "the server is shutting down");
    this.flush();
    this.unsubscribeRegistry();
    await this.turn.drained();
    this.holds.close();
  }

  /**
   * Stops taking publishes and Hellos like `shutdown`, but tells no session
   * Bye: the final commit, and resolves once every turn is released (what
   * they queued is then handed to the sessions). For a restart that keeps
   * the sessions (exportLink).
   */
  async suspend(): Promise<void> {
    this.turn.closing = true;
    this.flush();
    this.unsubscribeRegistry();
    this.holds.close();
    await this.turn.drained();
  }

  // ---------------------------------------------------------------- events

  /** Counts and reports a failure the engine isolated. Never throws. */
  private reportFailure(cause: EngineFailure, device: string, error: unknown): void {
    this.env.observer.engineFailure(cause);
    const err = error instanceof Error ? error : new Error(String(error));
    for (const fn of this.listeners("failure")) {
      try {
        fn({ cause, device, error: err });
      } catch {
        // a failing failure listener has nobody left to tell
      }
    }
  }

  /** Emits to each listener on its own: one that throws fails neither the others nor the engine. */
  private notify<K extends "receipt" | "presence">(event: K, arg: EngineEvents[K][0]): void {
    const listeners = this.listeners(event) as ((a: EngineEvents[K][0]) => void)[];
    for (const fn of listeners) {
      try {
        fn(arg);
      } catch (e) {
        this.reportFailure("listener", "", e);
      }
    }
  }
}
