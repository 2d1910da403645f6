import { EventEmitter } from "node:events";
import type { Clock } from "../util/clock.ts";
import { Scheduler } from "../util/scheduler.ts";
import type { DeliveryState, MessageRecord, Receipt, ReceiptInput, ReceiptState, Store } from "../store/types.ts";
import {
  DeviceRegistry,
  issueSessionToken,
  contentSignatureLength,
  mainThreadSigner,
  verifySessionToken,
  type ContentSigner,
  type SignedFields,
  type KeyRing,
} from "../auth/index.ts";
import { decodeFrame, encodeFrame, ErrorCode, pushOverhead, WireError, type Ack, type FrameInit, type Hello, type Push, type SeqRange } from "../wire/index.ts";
import { randomId } from "../dtls/crypto.ts";
import { StoreError } from "../store/errors.ts";
import { DeviceQueue, Entry } from "./device-queue.ts";
import { MessagingError } from "./errors.ts";
import { guardedObserver, NO_OBSERVER, type DeliveryObserver, type EngineFailure, type FrameRefusal } from "./observer.ts";
import { resolveDeliveryOptions, type DeliveryOptions } from "./options.ts";
import { checkedTopic, checkPublishRequest, pushTooLarge, type PublishRequest } from "./publish-request.ts";
import { TopicIndex } from "./topic-index.ts";
import { wireErrorCode } from "./wire-errors.ts";
import { BatchBuilder } from "./write-batch.ts";
import { checkMessageRecord } from "../store/validate.ts";

export type { PublishRequest, PublishTarget } from "./publish-request.ts";

/** One DTLS session as the engine sees it. */
export interface SessionLink {
  /** the DTLS identity: PSK identity or certificate identity */
  readonly identity: string;
  /** the session was authenticated by a client certificate */
  readonly viaCertificate: boolean;
  /** for logs, e.g. "127.0.0.1:50123" */
  readonly peer: string;
  /** sends each element as one record */
  send(records: readonly Uint8Array[]): void;
  /** ends the DTLS session (close_notify); the driver then calls `detach` */
  close(): void;
}

export interface PublishResult {
  readonly messageId: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  /** devices the message was queued for */
  readonly recipients: number;
  /** recipients refused (topic publishes only; a direct publish that is refused throws) */
  readonly rejected: readonly { readonly device: string; readonly reason: string }[];
}

export interface DeviceStatus {
  readonly id: string;
  readonly online: boolean;
  /** ms; 0 when never seen since the daemon started */
  readonly lastSeen: number;
  /** messages queued or in flight */
  readonly queueDepth: number;
  readonly lastSeq: number;
  readonly ackedSeq: number;
}

export interface PresenceEvent {
  readonly device: string;
  readonly online: boolean;
  readonly at: number;
  readonly peer: string;
}

/** An operation that failed and was isolated (the engine went on). */
export interface EngineFailureEvent {
  readonly cause: EngineFailure;
  /** the device concerned, "" when none */
  readonly device: string;
  readonly error: Error;
}

interface EngineEvents {
  receipt: [Receipt];
  presence: [PresenceEvent];
  /** one device's operation, one publish or one listener failed; only it was failed (for logs) */
  failure: [EngineFailureEvent];
  /** a commit failed: the engine has stopped; restart the process to recover from the store */
  fatal: [Error];
}

export interface DeliveryEngineDeps {
  readonly store: Store;
  readonly registry: DeviceRegistry;
  /** signs publishes; its JWKS goes to devices in Welcome */
  readonly contentKeys: KeyRing;
  /** makes the content signatures with contentKeys (default: on the main thread; a SigningPool signs off it) */
  readonly contentSigner?: ContentSigner;
  /** signs session tokens */
  readonly sessionKeys: KeyRing;
  /** wall clock, ms since the epoch */
  readonly clock: Clock;
  /** called when the engine has work for `flush()`; the driver calls flush soon (e.g. setImmediate) */
  readonly requestFlush: () => void;
  readonly random?: () => number;
  /** metrics sink (default: none) */
  readonly observer?: DeliveryObserver;
  readonly newId?: () => string;
  readonly options?: Partial<DeliveryOptions>;
}

/** Per DTLS session state. */
class LinkState {
  readonly kind = "link";
  readonly link: SessionLink;
  readonly sessionId: string;
  device: DeviceQueue<LinkState> | undefined;
  helloBusy = false;
  closed = false;
  /** close after this turn's records are sent */
  closeAfterFlush = false;
  lastHeard: number;
  constructor(link: SessionLink, sessionId: string, now: number) {
    this.link = link;
    this.sessionId = sessionId;
    this.lastHeard = now;
  }
}

type TimerKey = Entry | DeviceQueue<LinkState> | LinkState;

/** A publish that passed its checks, with the fields its content signature covers. */
interface PreparedPublish {
  readonly req: PublishRequest;
  readonly fields: SignedFields;
}

interface PendingPublish {
  readonly result: PublishResult;
  readonly resolve: (r: PublishResult) => void;
  readonly reject: (e: Error) => void;
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** A flushed turn waiting for its commit (and those of the turns before it). */
interface FlushedTurn {
  readonly batch: BatchBuilder;
  readonly publishes: readonly PendingPublish[];
  readonly outbox: ReadonlyMap<LinkState, readonly Uint8Array[]>;
  readonly after: readonly (() => void)[];
}

function duplicateMessage(id: string): MessagingError {
  return new MessagingError("duplicate_message", `a message with id ${JSON.stringify(id)} was already published`);
}


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
 */
export class DeliveryEngine extends EventEmitter<EngineEvents> {
  readonly options: DeliveryOptions;
  private readonly store: Store;
  private readonly registry: DeviceRegistry;
  private readonly contentKeys: KeyRing;
  private readonly contentSigner: ContentSigner;
  private readonly sessionKeys: KeyRing;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly observer: DeliveryObserver;
  /** devices with pushes to start that a big fan-out left for the next turns */
  private readonly deferredPumps = new Set<DeviceQueue<LinkState>>();
  private pumpedThisTurn = 0;
  /** pushes in flight to online devices (bound by options.maxInflight) */
  private inflightOnline = 0;
  private readonly newId: () => string;
  private readonly requestFlushHook: () => void;

  private readonly devices = new Map<string, DeviceQueue<LinkState>>();
  private readonly links = new Map<SessionLink, LinkState>();
  private readonly timers = new Scheduler<TimerKey>();
  /** topic -> devices subscribed by themselves */
  private readonly ownSubscribers = new TopicIndex();
  /** topic -> devices the registry assigns it to */
  private readonly assignedSubscribers = new TopicIndex();
  /** registered devices (from the registry at start, then its change events) -> revoked */
  private readonly revoked = new Map<string, boolean>();
  /** uplink publishes being processed, by message id */
  private readonly uplinkInProgress = new Map<string, Promise<PublishResult>>();
  /** devices reported as out of seqs (once per process) */
  private readonly exhausted = new Set<string>();

  private batch = new BatchBuilder();
  private outbox = new Map<LinkState, Uint8Array[]>();
  private publishes: PendingPublish[] = [];
  private afterFlush: (() => void)[] = [];
  private flushRequested = false;
  private asyncOps = 0;
  /** flushed turns not yet released (their commit, or an earlier turn's, is in flight) */
  private turnsInFlight = 0;
  /** the release of the last flushed turn: a turn is released after the one flushed before it */
  private released: Promise<void> = Promise.resolve();
  /** duplicate-id guard: ids queued in this turn's batch or in a commit not yet durable */
  private readonly idsNotDurable = new Set<string>();
  /** duplicate-id guard: ids durable while an existence check issued before their commit was unanswered */
  private readonly idsRecentlyDurable = new Set<string>();
  /** ids made durable by each commit, with the last existence check issued before that commit */
  private readonly durableLog: { readonly ids: readonly string[]; readonly lastCheck: number }[] = [];
  /** existence checks issued (numbered from 1) */
  private checksIssued = 0;
  /** existence checks whose publishes have not finished queueing, in the order issued */
  private readonly checksOpen = new Set<number>();
  private nextOrder = 1;
  private jwksJson: string;
  private stopped: Error | undefined;
  private closing = false;
  private readonly unsubscribeRegistry: () => void;

  private constructor(deps: DeliveryEngineDeps) {
    super();
    this.options = resolveDeliveryOptions(deps.options);
    this.store = deps.store;
    this.registry = deps.registry;
    this.contentKeys = deps.contentKeys;
    this.contentSigner = deps.contentSigner ?? mainThreadSigner(deps.contentKeys);
    this.sessionKeys = deps.sessionKeys;
    this.clock = deps.clock;
    this.random = deps.random ?? Math.random;
    this.observer = guardedObserver(deps.observer ?? NO_OBSERVER);
    this.newId = deps.newId ?? randomId;
    this.requestFlushHook = deps.requestFlush;
    this.jwksJson = JSON.stringify(this.contentKeys.jwks());
    this.unsubscribeRegistry = this.registry.onChange((id, record) => this.registryChanged(id, record));
  }

  /** Builds the engine from the store's delivery state and the registry. */
  static async open(deps: DeliveryEngineDeps): Promise<DeliveryEngine> {
    const state = await deps.store.loadDeliveryState();
    const engine = new DeliveryEngine(deps);
    engine.load(state);
    return engine;
  }

  private load(state: DeliveryState): void {
    const now = this.clock.now();
    for (const c of state.counters) {
      const q = this.queue(c.device);
      // the store holds safe integers; an inconsistent pair (acked above assigned) is read as assigned
      q.lastSeq = c.lastSeq;
      q.ackedSeq = Math.min(c.ackedSeq, c.lastSeq);
    }
    const messages = new Map(state.messages.map((m) => [m.id, m]));
    // in-flight entries go in by seq (priorities can make seq order differ from enqueue order)
    const deliveries = [...state.deliveries].sort((a, b) =>
      a.device < b.device ? -1 : a.device > b.device ? 1 : (a.seq || Infinity) - (b.seq || Infinity) || a.order - b.order,
    );
    for (const d of deliveries) {
      const message = messages.get(d.messageId);
      if (message === undefined) continue;
      const q = this.queue(d.device);
      const entry = new Entry(message, q, d.order);
      this.nextOrder = Math.max(this.nextOrder, d.order + 1);
      if (d.seq > 0) {
        entry.seq = d.seq;
        if (d.seq > q.lastSeq) q.lastSeq = d.seq; // never reuse a seq the store shows as assigned
        entry.tombstone = d.tombstone;
        // sent by an earlier process: a transmission whose time we do not know (no RTT sample from it)
        entry.transmissions = 1;
        q.addInflight(entry);
      } else {
        q.addPending(entry);
      }
      if (!entry.tombstone) this.timers.schedule(entry, Math.max(now, message.expiresAt));
    }
    for (const s of state.subscriptions) {
      this.queue(s.device).subscribe(s.topic);
      this.ownSubscribers.add(s.topic, s.device);
    }
    for (const d of this.registry.list()) {
      this.revoked.set(d.id, d.revoked);
      this.assignTopics(d.id, d.revoked ? [] : d.topics);
    }
  }

  // ---------------------------------------------------------------- sessions

  /** A DTLS session was established. */
  attach(link: SessionLink): void {
    const now = this.clock.now();
    const ls = new LinkState(link, this.newId(), now);
    this.links.set(link, ls);
    this.timers.schedule(ls, now + this.heartbeatTimeout());
    this.wake();
  }

  /** The DTLS session ended (or the driver gave up on it). */
  detach(link: SessionLink): void {
    const ls = this.links.get(link);
    if (ls === undefined) return;
    this.links.delete(link);
    ls.closed = true;
    this.timers.cancel(ls);
    this.outbox.delete(ls);
    this.unbind(ls);
  }

  /**
   * One record from a session. Never throws: a frame that fails while being
   * served fails only its session (Bye INTERNAL), never the turn's batch,
   * another device or the caller.
   */
  receive(link: SessionLink, record: Uint8Array): void {
    const ls = this.links.get(link);
    if (ls === undefined || ls.closed || this.stopped) return;
    try {
      this.receiveFrame(ls, record);
    } catch (e) {
      this.failDevice(ls, ls.device?.id ?? "", e);
    }
  }

  private receiveFrame(ls: LinkState, record: Uint8Array): void {
    const now = this.clock.now();
    ls.lastHeard = now;
    if (ls.device !== undefined) ls.device.lastSeen = now;
    let frame;
    try {
      frame = decodeFrame(record);
    } catch (e) {
      this.refuse(ls, "undecodable", ErrorCode.BAD_FRAME, e instanceof WireError ? e.message : "undecodable frame");
      return;
    }
    switch (frame.kind) {
      case "hello":
        void this.hello(ls, frame.hello);
        return;
      case "unknown":
        return; // a newer body: ignored, as protobuf intends
      case "bye":
        this.closeLink(ls);
        return;
      case "error":
        return;
      default:
        break;
    }
    const dev = ls.device;
    if (dev === undefined) {
      this.refuse(ls, "hello_required", ErrorCode.HELLO_REQUIRED, `${frame.kind} before Welcome: send Hello first`);
      return;
    }
    switch (frame.kind) {
      case "ack":
        this.ack(ls, dev, frame.ack, now);
        break;
      case "ping":
        this.send(ls, { kind: "pong", pong: { time: frame.ping.time, serverTime: now } });
        break;
      case "publish":
        this.uplinkPublish(ls, dev, frame.publish);
        break;
      case "subscribe":
        this.subscribe(ls, dev, frame.subscribe.requestId, frame.subscribe.topics, true);
        break;
      case "unsubscribe":
        this.subscribe(ls, dev, frame.unsubscribe.requestId, frame.unsubscribe.topics, false);
        break;
      default:
        // frames only the server sends
        this.refuse(ls, "server_frame", ErrorCode.BAD_FRAME, `a device does not send ${frame.kind}`);
    }
  }

  private async hello(ls: LinkState, hello: Hello): Promise<void> {
    if (ls.helloBusy) return; // the device repeats Hello until Welcome; one at a time
    ls.helloBusy = true;
    this.asyncOps++;
    try {
      await this.helloInner(ls, hello);
    } catch (e) {
      this.failDevice(ls, ls.device?.id ?? "", e);
    } finally {
      ls.helloBusy = false;
      this.asyncOps--;
    }
  }

  private async helloInner(ls: LinkState, hello: Hello): Promise<void> {
    const { link } = ls;
    if (this.closing) {
      this.bye(ls, ErrorCode.SHUTTING_DOWN, "the server is shutting down");
      return;
    }
    if (hello.version === 0) {
      this.refuse(ls, "unsupported_version", ErrorCode.UNSUPPORTED_VERSION, "Hello.version 0: this server speaks version 1");
      return;
    }
    const record = this.registry.deviceForSession(link.identity, link.viaCertificate);
    if (record === undefined) {
      this.bye(ls, ErrorCode.DEVICE_UNKNOWN, `no enabled device has the identity ${JSON.stringify(link.identity)}`);
      return;
    }
    // received_seq is a claim: the store is durable, so a device cannot have seen a seq above the last
    // one this server assigned it. A higher one is a lie or state from another server (or from a store
    // restored from an older copy): refused, never stored (storing it would let one device push the
    // counter to 2^53-1 and make its next push impossible). SEQ_AHEAD (not BAD_FRAME) tells an honest
    // device apart: it resets its high-water mark to 0 and says Hello again. lastSeq only grows, so this
    // check, made before the awaits below, still holds after them.
    const known = this.queue(record.id);
    if (hello.receivedSeq > known.lastSeq) {
      this.refuse(
        ls,
        "hello_seq_ahead",
        ErrorCode.SEQ_AHEAD,
        `Hello.received_seq ${hello.receivedSeq} is above the last seq this server sent device ${record.id} (${known.lastSeq}): the device's saved state is not from this server's store; reset it (received_seq 0) and say Hello again`,
      );
      return;
    }
    const identity = DeviceRegistry.sessionIdentity(link.identity, link.viaCertificate);
    let resumed = false;
    if (hello.sessionToken !== "") {
      try {
        await verifySessionToken(this.sessionKeys, hello.sessionToken, {
          deviceId: record.id,
          identity,
          now: this.clock.now(),
        });
        resumed = true;
      } catch (e) {
        if (ls.closed) return;
        // the device may send a Hello without a token: its DTLS identity is enough for a fresh session
        this.refuse(ls, "token_refused", wireErrorCode(e), `session token refused: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
    }
    const issued = await issueSessionToken(this.sessionKeys, {
      deviceId: record.id,
      identity,
      sessionId: ls.sessionId,
      now: this.clock.now(),
      ttlSeconds: this.options.sessionTokenTtlSeconds,
    });
    if (ls.closed || this.stopped) return;
    const current = this.registry.get(record.id);
    if (current === undefined || current.revoked) {
      this.bye(ls, ErrorCode.DEVICE_REVOKED, `device ${record.id} is revoked`);
      return;
    }
    const now = this.clock.now();
    const dev = this.queue(record.id);
    const fresh = ls.device !== dev;
    if (fresh) this.bind(ls, dev, now);
    // at most lastSeq (checked above): everything up to it was processed by the device
    this.cumulative(dev, hello.receivedSeq, now);
    this.send(ls, {
      kind: "welcome",
      welcome: {
        version: 1,
        deviceId: record.id,
        sessionToken: issued.token,
        tokenExpiresAt: issued.expiresAt,
        heartbeatIntervalMs: this.options.heartbeatIntervalMs,
        serverTime: now,
        jwks: this.jwksJson,
        limits: {
          maxPayload: this.uplinkPayloadLimit(record.id),
          window: this.options.window,
          maxTopics: this.options.maxTopics,
        },
        resumed,
        ackedSeq: dev.ackedSeq,
        topics: this.topicsOf(dev),
      },
    });
    if (fresh) {
      // a new session: whatever was in flight may never have arrived
      for (const e of dev.inflight.values()) {
        e.sacked = false;
        // what was sent on the old session is no RTT sample for this one, and its backoff starts over
        e.transmissions = 1;
        e.timeouts = 0;
        this.transmit(e, now);
      }
      this.armRetransmit(dev);
    }
    this.pump(dev, now);
  }

  private bind(ls: LinkState, dev: DeviceQueue<LinkState>, now: number): void {
    const old = dev.link;
    if (old !== undefined && old !== ls) {
      old.device = undefined;
      this.bye(old, ErrorCode.SESSION_REPLACED, `a newer session of device ${dev.id} took over`);
    }
    if (ls.device !== undefined && ls.device !== dev) this.unbind(ls);
    if (dev.link === undefined) this.inflightOnline += dev.inflight.size;
    dev.link = ls;
    ls.device = dev;
    dev.lastSeen = now;
    this.notify("presence", { device: dev.id, online: true, at: now, peer: ls.link.peer });
  }

  private unbind(ls: LinkState): void {
    const dev = ls.device;
    if (dev === undefined) return;
    ls.device = undefined;
    if (dev.link !== ls) return;
    dev.link = undefined;
    this.inflightOnline -= dev.inflight.size;
    // room for others: devices waiting for it are pumped at the next flush
    if (this.deferredPumps.size > 0) this.wake();
    this.timers.cancel(dev);
    this.notify("presence", { device: dev.id, online: false, at: this.clock.now(), peer: ls.link.peer });
  }

  private heartbeatTimeout(): number {
    return this.options.heartbeatIntervalMs * this.options.missedHeartbeats + Math.ceil(this.options.heartbeatIntervalMs / 2);
  }

  // ---------------------------------------------------------------- acks

  private ack(ls: LinkState, dev: DeviceQueue<LinkState>, ack: Ack, now: number): void {
    const problem = this.ackProblem(dev, ack);
    if (problem !== undefined) {
      // nothing of a bad ack is applied: the device gets the Error, its pushes stay in flight
      this.refuse(ls, problem[0], ErrorCode.BAD_FRAME, problem[1]);
      return;
    }
    const rejected = ack.rejected.length > 0 ? new Set(ack.rejected) : undefined;
    this.cumulative(dev, ack.cumulative, now, rejected);
    if (ack.ranges.length > 0) {
      // one walk over the pushes in flight (in seq order) and the ranges sorted by first: at most
      // window + ranges steps (both bounded), however wide the ranges claim to be
      const ranges = [...ack.ranges].sort((a, b) => a.first - b.first);
      let i = 0;
      for (const e of dev.inflight.values()) {
        // a range ending below this seq ends below every later one too
        while (i < ranges.length && (ranges[i] as SeqRange).last < e.seq) i++;
        if (i === ranges.length) break;
        if (e.sacked || (ranges[i] as SeqRange).first > e.seq) continue;
        if (e.transmissions === 1 && !e.tombstone) this.rttSample(dev, now - e.sentAt);
        // not retransmitted while sacked, except as the head of the window (see retransmitDue)
        e.sacked = true;
      }
    }
    this.armRetransmit(dev);
    this.pump(dev, now);
  }

  /**
   * What is wrong with an Ack, judged against what the server sent this
   * device (every number in it is a claim): cumulative and every seq at most
   * lastSeq, ranges non-empty, and no more ranges or rejected seqs than a
   * device can have (one per push in the window, plus the 64 refusals the SDK
   * repeats). Seqs at or below ackedSeq are allowed (acks arrive reordered)
   * and change nothing; so are ranges in any order, overlapping or not.
   */
  private ackProblem(dev: DeviceQueue<LinkState>, ack: Ack): [FrameRefusal, string] | undefined {
    const last = dev.lastSeq;
    if (ack.cumulative > last) return ["ack_seq_ahead", `Ack.cumulative ${ack.cumulative} is above the last seq sent (${last})`];
    const limit = this.options.window + ACK_LIST_SLACK;
    if (ack.ranges.length > limit || ack.rejected.length > limit) {
      return ["ack_too_long", `an Ack holds at most ${limit} ranges and ${limit} rejected seqs`];
    }
    for (const r of ack.ranges) {
      if (r.first < 1 || r.last < r.first || r.last > last) {
        return ["ack_bad_range", `Ack range ${r.first}..${r.last} is not a non-empty range of seqs sent (1..${last})`];
      }
    }
    for (const seq of ack.rejected) {
      if (seq < 1 || seq > last) return ["ack_bad_rejected", `Ack.rejected ${seq} is not a seq sent (1..${last})`];
    }
    return undefined;
  }

  private rttSample(dev: DeviceQueue<LinkState>, ms: number): void {
    dev.rtt.sample(ms);
    this.observer.rttSample(ms);
  }

  /** Everything <= seq was received by the device. */
  private cumulative(dev: DeviceQueue<LinkState>, seq: number, now: number, rejected?: Set<number>): void {
    if (seq <= dev.ackedSeq) return;
    const upto = Math.min(seq, dev.lastSeq);
    for (const e of dev.inflight.values()) {
      if (e.seq > upto) break;
      if (e.transmissions === 1 && !e.sacked && !e.tombstone) this.rttSample(dev, now - e.sentAt);
      dev.removeInflight(e);
      if (dev.link !== undefined) this.inflightOnline--;
      this.timers.cancel(e);
      this.batch.removeDelivery(dev.id, e.message.id);
      if (!e.tombstone) {
        const refused = rejected?.has(e.seq) === true;
        if (refused) this.observer.pushRejected();
        else if (e.firstSentAt > 0) this.observer.pushAcked(now - e.firstSentAt);
        this.receipt(e.message, dev.id, refused ? "rejected" : "delivered", now, refused ? "device_refused" : "", e.seq);
      }
    }
    if (upto > dev.ackedSeq) {
      dev.ackedSeq = upto;
      this.touchCounters(dev);
      // the device makes progress, so the path works: what is still in flight backs off from scratch
      // (as TCP resets its backoff on a new ack); otherwise one unlucky push waits up to maxBackoff
      for (const e of dev.inflight.values()) {
        if (e.timeouts === 0) continue;
        e.timeouts = 0;
        const due = now + dev.rtt.timeout(1, this.options.jitter, this.random());
        if (e.dueAt > due) e.dueAt = due;
      }
    }
  }

  // ---------------------------------------------------------------- sending

  /**
   * Moves queued messages into the window and sends them. While other devices
   * wait for room (pumpDeferred), a device takes its turn behind them.
   */
  private pump(dev: DeviceQueue<LinkState>, now: number, waited = false): void {
    const ls = dev.link;
    if (ls === undefined || ls.closed) return;
    if (!waited && this.deferredPumps.size > 0 && dev.pending.length > 0) {
      this.deferredPumps.add(dev);
      this.wake();
      return;
    }
    let sent = false;
    while (dev.inflight.size < this.options.window) {
      if (this.inflightOnline >= this.options.maxInflight) {
        // full: this device goes on when acks free room (pumpDeferred at a later flush)
        if (dev.pending.length > 0) this.deferredPumps.add(dev);
        break;
      }
      if (dev.lastSeq >= MAX_SAFE) {
        // no seq left (counters left at 2^53-1 by an earlier version that trusted Hello.received_seq):
        // the messages wait and expire; the device and everyone else go on
        if (dev.pending.length > 0) this.sequenceExhausted(dev);
        break;
      }
      const e = dev.shiftPending();
      if (e === undefined) break;
      if (e.message.expiresAt <= now) {
        dev.forget(e);
        this.dropUnsent(e, now, "ttl");
        continue;
      }
      // everything that can fail is done before any state changes: the Push is encoded first
      const seq = dev.lastSeq + 1;
      let frame: Uint8Array;
      try {
        frame = encodeFrame({ kind: "push", push: pushFields(e.message, seq) });
      } catch (error) {
        dev.forget(e);
        this.unsendable(e, now, error);
        continue;
      }
      const row = { device: dev.id, messageId: e.message.id, order: e.order, seq, tombstone: false };
      this.batch.addDelivery(row);
      e.seq = seq;
      e.frame = frame;
      dev.lastSeq = seq;
      dev.addInflight(e);
      this.inflightOnline++;
      // no counters row here: the delivery row holds the seq, which `load` reads back as
      // taken; the ack that removes the row writes the counters (and deleteDevice keeps it)
      this.receipt(e.message, dev.id, "sent", now, "", e.seq);
      e.firstSentAt = now;
      this.observer.pushSent();
      this.transmit(e, now);
      sent = true;
    }
    if (sent) this.armRetransmit(dev);
  }

  private transmit(e: Entry, now: number): void {
    const dev = e.queue as DeviceQueue<LinkState>;
    const ls = dev.link;
    if (ls === undefined) return;
    if (e.frame === undefined) {
      try {
        e.frame = encodeFrame({ kind: "push", push: this.pushOf(e) });
      } catch (error) {
        // a message loaded from the store that cannot become a Push: its seq is resolved by a tombstone
        this.unsendable(e, now, error);
        e.frame = encodeFrame({ kind: "push", push: this.pushOf(e) });
      }
    }
    e.transmissions++;
    e.sentAt = now;
    e.dueAt = now + dev.rtt.timeout(1 + e.timeouts, this.options.jitter, this.random());
    this.queueRecord(ls, e.frame);
  }

  private pushOf(e: Entry): Partial<Push> {
    if (e.tombstone) return { seq: e.seq, messageId: e.message.id, expired: true };
    return pushFields(e.message, e.seq);
  }

  private armRetransmit(dev: DeviceQueue<LinkState>): void {
    this.timers.schedule(dev, dev.link === undefined ? undefined : dev.nextDue());
    this.wake();
  }

  /**
   * Retransmits the pushes whose timer ran out. A selectively acked push is
   * not resent, unless it is the head of the window: if the cumulative ack
   * that should have covered it was lost, only a duplicate makes the device
   * repeat that ack (RFC 6675 likewise distrusts SACK state after a timeout).
   */
  private retransmitDue(dev: DeviceQueue<LinkState>, now: number): void {
    if (dev.link === undefined) return;
    let head = true;
    for (const e of dev.inflight.values()) {
      if (e.dueAt !== 0 && e.dueAt <= now) {
        e.timeouts++;
        if (!e.sacked || head) {
          this.observer.pushRetransmitted();
          this.transmit(e, now);
        } else e.dueAt = now + dev.rtt.timeout(1 + e.timeouts, this.options.jitter, this.random());
      }
      head = false;
    }
    this.armRetransmit(dev);
  }

  // ---------------------------------------------------------------- expiry

  private expire(e: Entry, now: number): void {
    const dev = e.queue as DeviceQueue<LinkState>;
    if (dev.byMessage.get(e.message.id) !== e) return;
    if (e.seq === 0) {
      dev.removePending(e);
      this.dropUnsent(e, now, "ttl");
      return;
    }
    // its seq is taken: the device gets a tombstone for it so its sequence has no hole
    e.tombstone = true;
    e.frame = undefined;
    e.sacked = false;
    this.batch.addDelivery({ device: dev.id, messageId: e.message.id, order: e.order, seq: e.seq, tombstone: true });
    this.receipt(e.message, dev.id, "expired", now, "ttl", e.seq);
    this.observer.pushExpired();
    if (dev.link !== undefined) {
      e.transmissions = 0;
      e.timeouts = 0;
      e.sentAt = 0;
      this.transmit(e, now);
      this.armRetransmit(dev);
    }
  }

  /**
   * A message that cannot be encoded as a Push (only a store written by
   * another version can hold one): rejected for this device with reason
   * "unsendable". Without a seq it is removed; with one it becomes a
   * tombstone, so the device's sequence has no hole.
   */
  private unsendable(e: Entry, now: number, error: unknown): void {
    const dev = e.queue as DeviceQueue<LinkState>;
    this.reportFailure("device", dev.id, error);
    if (e.seq === 0) {
      this.timers.cancel(e);
      this.batch.removeDelivery(dev.id, e.message.id);
      this.receipt(e.message, dev.id, "rejected", now, "unsendable", 0);
      return;
    }
    const wasTombstone = e.tombstone;
    e.tombstone = true;
    e.frame = undefined;
    this.timers.cancel(e);
    this.batch.addDelivery({ device: dev.id, messageId: e.message.id, order: e.order, seq: e.seq, tombstone: true });
    if (!wasTombstone) this.receipt(e.message, dev.id, "rejected", now, "unsendable", e.seq);
  }

  /** Counted and reported once per device and process: it has messages and no seq left. */
  private sequenceExhausted(dev: DeviceQueue<LinkState>): void {
    if (this.exhausted.has(dev.id)) return;
    this.exhausted.add(dev.id);
    this.reportFailure(
      "sequence_exhausted",
      dev.id,
      new MessagingError("sequence_exhausted", `device ${dev.id} has used every sequence number (its stored lastSeq is ${dev.lastSeq})`),
    );
  }

  /** Removes an entry that never got a seq (already out of the pending list). */
  private dropUnsent(e: Entry, now: number, reason: string): void {
    this.timers.cancel(e);
    this.batch.removeDelivery(e.queue.id, e.message.id);
    this.receipt(e.message, e.queue.id, "expired", now, reason, 0);
    if (reason !== "collapsed") this.observer.pushExpired();
  }

  // ---------------------------------------------------------------- publishing

  /**
   * Publishes a message to one device or to every subscriber of a topic:
   * signs it once, queues it for each recipient in one durable batch, and
   * resolves once that batch is committed. Throws MessagingError for bad
   * input, an unknown or revoked device, or (direct publishes) a full queue.
   */
  async publish(req: PublishRequest): Promise<PublishResult> {
    const [outcome] = await this.publishMany([req]);
    if (outcome?.status === "fulfilled") return outcome.value;
    throw outcome?.reason;
  }

  /**
   * Publishes several messages as one: each is checked and signed on its own
   * (signatures made together, off the event loop when the signer is a pool),
   * then all are queued in the same turn, so they join one durable commit
   * whatever order their signatures come back in. One outcome per request, in
   * order: its result, or its own MessagingError (one bad request does not
   * fail the others; a failed commit fails all that it held).
   */
  async publishMany(reqs: readonly PublishRequest[]): Promise<PromiseSettledResult<PublishResult>[]> {
    const prepared = reqs.map((req): PreparedPublish | MessagingError => {
      try {
        return this.preparePublish(req);
      } catch (e) {
        return this.publishError(e);
      }
    });
    // ids the publisher chose may be taken: one existence check for the whole batch, while it is signed
    const chosen = prepared.flatMap((p) => (p instanceof MessagingError || p.req.id === undefined ? [] : [p.fields.messageId]));
    const check = chosen.length === 0 ? undefined : this.checkIds(chosen);
    const [signed, stored] = await Promise.all([
      Promise.allSettled(prepared.map((p) => (p instanceof MessagingError ? undefined : this.sign(p)))),
      check === undefined ? undefined : check.answer.then(
        (ids) => ids,
        (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
      ),
    ]);
    // from here on synchronous: every request is queued in this turn
    let queued: Promise<PublishResult>[];
    try {
      queued = prepared.map((p, i): Promise<PublishResult> => {
        if (p instanceof MessagingError) return Promise.reject(p);
        const s = signed[i] as PromiseSettledResult<string | undefined>;
        try {
          if (s.status === "rejected") throw s.reason;
          if (p.req.id !== undefined) {
            if (stored instanceof Error) throw stored;
            if (stored?.has(p.fields.messageId) === true) throw duplicateMessage(p.fields.messageId);
          }
          return this.queuePublish(p, s.value as string);
        } catch (e) {
          return Promise.reject(this.publishError(e));
        }
      });
    } finally {
      if (check !== undefined) this.checkDone(check.seq);
    }
    return Promise.allSettled(queued);
  }

  /**
   * Asks the store which of `ids` are stored messages. The answer can be
   * stale by the time the publish queues (a commit holding one of the ids
   * may have become durable meanwhile): the ids of such commits stay in the
   * guard (idsRecentlyDurable) until every check issued before that commit
   * is done (checkDone), so queuePublish still finds them.
   */
  private checkIds(ids: readonly string[]): { readonly seq: number; readonly answer: Promise<Set<string>> } {
    const seq = ++this.checksIssued;
    this.checksOpen.add(seq);
    this.asyncOps++;
    const answer = this.store.existingMessageIds(ids).finally(() => this.asyncOps--);
    return { seq, answer };
  }

  /** A check's publishes are queued (or failed): durable ids no earlier open check could miss leave the guard. */
  private checkDone(seq: number): void {
    this.checksOpen.delete(seq);
    this.pruneDurableGuard();
  }

  private pruneDurableGuard(): void {
    const oldestOpen = this.checksOpen.values().next().value ?? Infinity;
    while (this.durableLog.length > 0 && (this.durableLog[0] as { lastCheck: number }).lastCheck < oldestOpen) {
      const { ids } = this.durableLog.shift() as { ids: readonly string[] };
      for (const id of ids) this.idsRecentlyDurable.delete(id);
    }
  }

  private async sign(p: PreparedPublish): Promise<string> {
    this.asyncOps++;
    try {
      return await this.contentSigner.sign(p.fields);
    } finally {
      this.asyncOps--;
    }
  }

  /**
   * Every publish failure as a MessagingError: the engine's own, a string
   * that cannot be encoded (a lone surrogate) or a record the store would
   * refuse are bad requests; anything else fails only this publish
   * ("internal", counted and reported as a failure).
   */
  private publishError(e: unknown): MessagingError {
    if (e instanceof MessagingError) return e;
    if (e instanceof WireError || (e instanceof StoreError && e.code === "commit_failed")) {
      return new MessagingError("bad_request", `the message cannot be stored or sent: ${e.message}`, { cause: e });
    }
    this.reportFailure("publish", "", e);
    return new MessagingError("internal", "the publish failed; nothing was published", { cause: e });
  }

  /** The checks a publish passes before it is signed, and the fields to sign. */
  private preparePublish(req: PublishRequest): PreparedPublish {
    this.checkRunning();
    const o = this.options;
    const payload = req.payload;
    const { ttl, priority, contentType, collapseKey, topic, device } = checkPublishRequest(req, o);
    if (device !== "") this.checkDirectTarget(device);
    const now = this.clock.now();
    const id = req.id ?? this.newId();
    const fields = {
      messageId: id,
      topic,
      device,
      contentType,
      publisher: req.publisher,
      collapseKey,
      payload,
      createdAt: now,
      expiresAt: now + ttl * 1000,
      priority,
    };
    return { req, fields };
  }

  /** Queues a signed publish for its recipients (synchronous); resolves once its batch is committed. */
  private queuePublish(p: PreparedPublish, signature: string): Promise<PublishResult> {
    const o = this.options;
    const { req, fields } = p;
    const { messageId: id, topic, device, contentType, collapseKey, payload, priority } = fields;
    const now = this.clock.now();
    const record: MessageRecord = {
      id,
      topic,
      device,
      payload: new Uint8Array(payload),
      contentType,
      createdAt: fields.createdAt,
      expiresAt: fields.expiresAt,
      priority,
      collapseKey,
      publisher: req.publisher,
      signature,
    };
    // the largest Push this message can become must fit in one record
    const size = pushOverhead(pushFields(record, MAX_SAFE)) + payload.byteLength;
    if (size > o.maxRecordPayload) throw pushTooLarge(size, payload.byteLength, o);
    // a record the store would refuse fails this publish now, before it changes anything
    checkMessageRecord(record);
    // from here on synchronous: no other turn interleaves
    this.checkRunning();
    // the store was asked before (publishMany); these are the ids it may not have shown yet
    if (this.idsNotDurable.has(id) || this.idsRecentlyDurable.has(id)) throw duplicateMessage(id);
    if (device !== "") this.checkDirectTarget(device);
    const recipients = device !== "" ? [device] : this.subscribersOf(topic);
    const accepted: DeviceQueue<LinkState>[] = [];
    const rejected: { device: string; reason: string }[] = [];
    for (const r of recipients) {
      const q = this.queue(r);
      if (q.lastSeq >= MAX_SAFE) {
        rejected.push({ device: r, reason: "sequence_exhausted" });
        continue;
      }
      // a publish that replaces an unsent message by its collapse key takes no more room
      const replaces = collapseKey !== "" && q.pendingWithCollapseKey(collapseKey) !== undefined;
      if (replaces || this.makeRoom(q, now)) accepted.push(q);
      else rejected.push({ device: r, reason: "queue_full" });
    }
    if (device !== "" && rejected[0]?.reason === "sequence_exhausted") {
      throw new MessagingError(
        "sequence_exhausted",
        `device ${device} has used every sequence number (its stored counters are at 2^53-1, left by an earlier version); nothing was published`,
      );
    }
    if (device !== "" && accepted.length === 0) {
      throw new MessagingError(
        "queue_full",
        `device ${device} has ${this.options.maxQueue} messages queued (the limit); nothing was published`,
      );
    }
    this.batch.addMessage(record);
    this.idsNotDurable.add(id);
    for (const q of accepted) {
      if (collapseKey !== "") {
        const old = q.pendingWithCollapseKey(collapseKey);
        if (old !== undefined) {
          q.removePending(old);
          this.dropUnsent(old, now, "collapsed");
        }
      }
      const e = new Entry(record, q, this.nextOrder++);
      q.addPending(e);
      this.timers.schedule(e, record.expiresAt);
      this.batch.addDelivery({ device: q.id, messageId: id, order: e.order, seq: 0, tombstone: false });
      this.receipt(record, q.id, "queued", now, "", 0);
    }
    for (const r of rejected) this.receipt(record, r.device, "rejected", now, r.reason, 0);
    // a big fan-out goes out over several turns (pumpPerTurn devices each), so the devices' acks are
    // read in between and each push's retransmission timer starts when it really leaves
    for (const q of accepted) {
      if (q.link === undefined) continue;
      if (this.deferredPumps.size === 0 && this.pumpedThisTurn < this.options.pumpPerTurn) {
        this.pumpedThisTurn++;
        // a failure while pushing to one recipient fails that device's session, not the publish
        this.isolated(q, () => this.pump(q, now));
      } else this.deferredPumps.add(q);
    }
    const result: PublishResult = {
      messageId: id,
      createdAt: record.createdAt,
      expiresAt: record.expiresAt,
      recipients: accepted.length,
      rejected,
    };
    return new Promise<PublishResult>((resolve, reject) => {
      this.publishes.push({ result, resolve, reject });
      this.wake();
    });
  }

  private checkRunning(): void {
    if (this.stopped) throw new MessagingError("internal", "the delivery engine stopped after a store failure", { cause: this.stopped });
    if (this.closing) throw new MessagingError("shutting_down", "the server is shutting down");
  }

  private checkDirectTarget(device: string): void {
    const revoked = this.revoked.get(device);
    if (revoked === undefined) throw new MessagingError("device_unknown", `no device ${JSON.stringify(device)} is registered`);
    if (revoked) throw new MessagingError("device_revoked", `device ${device} is revoked`);
  }

  /** Whether the queue can take one more message (applying the drop-oldest policy). */
  private makeRoom(q: DeviceQueue<LinkState>, now: number): boolean {
    if (q.depth < this.options.maxQueue) return true;
    if (this.options.queueFullPolicy !== "drop-oldest") return false;
    const oldest = q.oldestPending();
    if (oldest === undefined) return false;
    q.removePending(oldest);
    this.dropUnsent(oldest, now, "evicted");
    return true;
  }

  private uplinkPublish(ls: LinkState, dev: DeviceQueue<LinkState>, p: { requestId: number; topic: string; payload: Uint8Array; contentType: string; ttlSeconds: number; priority: number }): void {
    const id = `up:${dev.id}:${p.requestId}`;
    const answer = (r: PublishResult | Error): void => {
      if (ls.closed) return;
      // runs in a promise callback: whatever fails here fails this session, never the process
      this.isolatedLink(ls, () => {
        if (r instanceof Error) {
          if (r instanceof MessagingError) {
            if (r.code === "payload_too_large") this.observer.frameRefused("publish_too_large");
            else if (r.code === "bad_request" || r.code === "bad_topic") this.observer.frameRefused("publish_invalid");
          }
          this.send(ls, {
            kind: "publishAck",
            publishAck: { requestId: p.requestId, error: { code: wireErrorCode(r), message: r.message, requestId: p.requestId } },
          });
        } else {
          this.send(ls, { kind: "publishAck", publishAck: { requestId: p.requestId, messageId: r.messageId } });
        }
      });
    };
    const running = this.uplinkInProgress.get(id);
    if (running !== undefined) return; // its PublishAck follows
    // the limit the Welcome announced (docs/protocol.md section 7): a larger payload is refused even
    // when this particular Push would still fit, so a device never depends on more than it was told
    const limit = this.uplinkPayloadLimit(dev.id);
    if (p.payload.byteLength > limit) {
      answer(
        new MessagingError(
          "payload_too_large",
          `payload is ${p.payload.byteLength} bytes; the limit is ${limit} (Welcome.limits.max_payload)`,
        ),
      );
      return;
    }
    const done = this.publish({
      target: { topic: p.topic },
      payload: p.payload,
      contentType: p.contentType,
      ttlSeconds: p.ttlSeconds === 0 ? undefined : p.ttlSeconds,
      priority: p.priority === 0 ? undefined : p.priority,
      publisher: `device:${dev.id}`,
      id,
    });
    this.uplinkInProgress.set(id, done);
    // a repeat of a publish already done (the id is stored): answered again, nothing published
    const repeat = (e: Error): PublishResult | Error =>
      e instanceof MessagingError && e.code === "duplicate_message"
        ? { messageId: id, createdAt: 0, expiresAt: 0, recipients: 0, rejected: [] }
        : e;
    done.then(answer, (e: Error) => answer(repeat(e))).finally(() => this.uplinkInProgress.delete(id));
  }

  // ---------------------------------------------------------------- topics

  private subscribe(ls: LinkState, dev: DeviceQueue<LinkState>, requestId: number, topics: readonly string[], add: boolean): void {
    try {
      const most = this.requestTopicLimit();
      if (topics.length > most) {
        this.observer.frameRefused("subscribe_too_long");
        throw new MessagingError("too_many_topics", `a Subscribe or Unsubscribe lists at most ${most} topics, this one ${topics.length}`);
      }
      const checked = topics.map(checkedTopic);
      if (add) {
        const after = new Set([...dev.subscriptions, ...checked]);
        if (after.size > this.options.maxTopics) {
          throw new MessagingError("too_many_topics", `a device may subscribe to at most ${this.options.maxTopics} topics`);
        }
      }
      for (const t of checked) {
        if (add === dev.subscriptions.has(t)) continue;
        if (add) {
          dev.subscribe(t);
          this.ownSubscribers.add(t, dev.id);
          this.batch.addSubscription({ device: dev.id, topic: t }, true);
        } else {
          dev.unsubscribe(t);
          this.ownSubscribers.remove(t, dev.id);
          this.batch.addSubscription({ device: dev.id, topic: t }, false);
        }
      }
      this.send(ls, { kind: "subscribed", subscribed: { requestId, topics: this.topicsOf(dev) } });
    } catch (e) {
      // anything but a refusal of the request is a failure of this session (see receive)
      if (!(e instanceof MessagingError)) throw e;
      if (e.code !== "too_many_topics" || topics.length <= this.requestTopicLimit()) this.observer.frameRefused("subscribe_invalid");
      this.send(ls, {
        kind: "subscribed",
        subscribed: { requestId, topics: this.topicsOf(dev), error: { code: wireErrorCode(e), message: e.message, requestId } },
      });
    }
  }

  /** Topics one Subscribe or Unsubscribe may list: maxTopics, and at least 100 (so an Unsubscribe can clear old ones). */
  private requestTopicLimit(): number {
    return Math.max(this.options.maxTopics, 100);
  }

  private topicsOf(dev: DeviceQueue<LinkState>): string[] {
    return [...new Set([...dev.registryTopics, ...dev.subscriptions])].sort();
  }

  /** Devices that receive a publish to `topic`: enabled, subscribed by themselves or assigned by the registry. */
  /**
   * The largest payload this device can publish to a one-character topic (no
   * content type): maxPayload, or less when the Push to subscribers would not
   * fit one record. Announced in Welcome.limits.maxPayload.
   */
  private uplinkPayloadLimit(device: string): number {
    const overhead = pushOverhead({
      seq: MAX_SAFE,
      messageId: `up:${device}:${MAX_SAFE}`,
      topic: "t",
      publisher: `device:${device}`,
      signature: "x".repeat(contentSignatureLength(this.contentKeys)),
      createdAt: MAX_SAFE,
      expiresAt: MAX_SAFE,
      priority: 9,
    });
    return Math.max(0, Math.min(this.options.maxPayload, this.options.maxRecordPayload - overhead));
  }

  subscribersOf(topic: string): string[] {
    const out = new Set<string>();
    for (const d of this.ownSubscribers.devices(topic)) out.add(d);
    for (const d of this.assignedSubscribers.devices(topic)) out.add(d);
    const enabled: string[] = [];
    for (const d of out) if (this.revoked.get(d) === false) enabled.push(d);
    return enabled.sort();
  }

  private assignTopics(id: string, topics: readonly string[]): void {
    const q = this.queue(id);
    for (const t of q.registryTopics) this.assignedSubscribers.remove(t, id);
    q.registryTopics = [...topics];
    for (const t of topics) this.assignedSubscribers.add(t, id);
  }

  private registryChanged(id: string, record: { revoked: boolean; topics: readonly string[] } | undefined): void {
    try {
      this.applyRegistryChange(id, record);
    } catch (e) {
      // the registry's caller (an admin request) is not failed for the engine's trouble with one device
      const link = this.devices.get(id)?.link;
      if (link === undefined) this.reportFailure("device", id, e);
      else this.failDevice(link, id, e);
    }
  }

  private applyRegistryChange(id: string, record: { revoked: boolean; topics: readonly string[] } | undefined): void {
    const now = this.clock.now();
    const q = this.devices.get(id);
    if (record === undefined) this.revoked.delete(id);
    else this.revoked.set(id, record.revoked);
    if (record === undefined) {
      // removed: its queue goes (the store deleted its deliveries)
      if (q === undefined) return;
      if (q.link !== undefined) this.bye(q.link, ErrorCode.DEVICE_UNKNOWN, `device ${id} was removed`);
      for (const e of [...q.byMessage.values()]) {
        this.timers.cancel(e);
        if (!e.tombstone) this.receipt(e.message, id, "rejected", now, "device_removed", e.seq);
      }
      for (const t of q.subscriptions) this.ownSubscribers.remove(t, id);
      for (const t of q.registryTopics) this.assignedSubscribers.remove(t, id);
      this.timers.cancel(q);
      this.devices.delete(id);
      this.wake();
      return;
    }
    this.assignTopics(id, record.revoked ? [] : record.topics);
    if (record.revoked && q?.link !== undefined) {
      this.bye(q.link, ErrorCode.DEVICE_REVOKED, `device ${id} was revoked`);
      this.wake();
    }
  }

  // ---------------------------------------------------------------- timers, flush

  /** The earliest time `onTimer` has work; undefined when none. */
  nextDeadline(): number | undefined {
    // a stopped engine does no more work (its deadlines would be due at once, forever)
    if (this.stopped) return undefined;
    return this.timers.next();
  }

  /** Runs the due timers; one that fails fails only its device (see receive). */
  onTimer(now: number): void {
    if (this.stopped) return;
    for (const key of this.timers.due(now)) {
      switch (key.kind) {
        case "entry":
          this.isolated(key.queue as DeviceQueue<LinkState>, () => this.expire(key, now));
          break;
        case "device":
          this.isolated(key, () => this.retransmitDue(key, now));
          break;
        case "link": {
          if (key.closed) break;
          const quietUntil = key.lastHeard + this.heartbeatTimeout();
          if (quietUntil > now) {
            this.timers.schedule(key, quietUntil);
            break;
          }
          // missed heartbeats: offline; its queue stays
          this.isolatedLink(key, () => {
            this.unbind(key);
            this.closeLink(key);
          });
          break;
        }
      }
    }
    this.wake();
  }

  /**
   * Hands the turn's batch to the store, and once it is durable sends the
   * turn's records, runs its after-flush actions, answers its publishers and
   * emits its receipts ("releases" the turn). The engine does not wait: the
   * next turn builds its batch while this commit is in flight (the store may
   * group the commits). Turns are released in the order they were flushed,
   * a turn without changes too when an earlier commit is still in flight.
   *
   * Every record of the batch was checked as it joined (see BatchBuilder), so
   * a failed commit is a failure of the store itself (I/O error, disk full):
   * it stops the engine (event "fatal"), since in-memory state is then ahead
   * of the store and only a restart from the store is consistent. That turn's
   * publishes and those of every later turn are rejected and none of their
   * records is sent (the store refuses their commits anyway).
   */
  flush(): void {
    this.flushRequested = false;
    if (this.stopped) {
      this.rejectUnflushed(this.stopped);
      return;
    }
    if (this.deferredPumps.size > 0) this.pumpDeferred();
    this.pumpedThisTurn = 0; // what this flush sends is the turn's budget
    const turn: FlushedTurn = {
      batch: this.batch,
      publishes: this.publishes,
      outbox: this.outbox,
      after: this.afterFlush,
    };
    this.batch = new BatchBuilder();
    this.publishes = [];
    this.outbox = new Map();
    this.afterFlush = [];
    if (turn.batch.empty && this.turnsInFlight === 0) {
      this.release(turn, []);
      return;
    }
    const ids = turn.batch.messageIdList();
    const lastCheck = this.checksIssued;
    const commit = turn.batch.empty ? Promise.resolve<Receipt[]>([]) : this.commit(turn.batch);
    // settled now (no unhandled rejection while an earlier turn is still in flight), used in order below
    const outcome = commit.then(
      (receipts) => ({ receipts }),
      (e: unknown) => ({ error: e instanceof Error ? e : new Error(String(e)) }),
    );
    this.turnsInFlight++;
    this.asyncOps++;
    this.released = this.released
      .then(() => outcome)
      .then((o) => {
        this.turnsInFlight--;
        this.asyncOps--;
        if ("error" in o) this.fail(turn, o.error);
        else if (this.stopped) this.rejectTurn(turn, this.stopped);
        else {
          this.durable(ids, lastCheck);
          this.release(turn, o.receipts);
        }
      })
      // release isolates each send, action and listener; should anything still throw, the turns after go on
      .catch((e: unknown) => this.reportFailure("device", "", e));
  }

  /** The store's commit; a store that throws instead of rejecting fails the same way. */
  private commit(batch: BatchBuilder): Promise<Receipt[]> {
    try {
      return this.store.commit(batch.build());
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Resolves once every turn flushed so far is released (or failed). */
  drained(): Promise<void> {
    return this.released;
  }

  /** The turn's commit is durable: its ids leave the not-durable guard (see checkIds for why some stay a while). */
  private durable(ids: readonly string[], lastCheck: number): void {
    if (ids.length === 0) return;
    for (const id of ids) this.idsNotDurable.delete(id);
    const oldestOpen = this.checksOpen.values().next().value ?? Infinity;
    if (oldestOpen > lastCheck) return;
    for (const id of ids) this.idsRecentlyDurable.add(id);
    this.durableLog.push({ ids, lastCheck });
  }

  private release(turn: FlushedTurn, receipts: readonly Receipt[]): void {
    for (const [ls, records] of turn.outbox) {
      if (!ls.closed && records.length > 0) this.isolatedLink(ls, () => ls.link.send(records));
    }
    for (const fn of turn.after) {
      try {
        fn();
      } catch (e) {
        this.reportFailure("device", "", e);
      }
    }
    for (const p of turn.publishes) {
      this.observer.published(p.result.recipients);
      p.resolve(p.result);
    }
    for (const r of receipts) this.notify("receipt", r);
  }

  /** The commit of `turn` failed: the engine stops; nothing of the turn leaves. */
  private fail(turn: FlushedTurn, error: Error): void {
    const first = this.stopped === undefined;
    this.stopped ??= error;
    this.rejectTurn(turn, error);
    this.rejectUnflushed(error);
    if (first) this.emit("fatal", error);
  }

  private rejectTurn(turn: FlushedTurn, error: Error): void {
    const failure = new MessagingError("internal", `the store refused a commit: ${error.message}`, { cause: error });
    for (const p of turn.publishes) p.reject(failure);
  }

  /** After a store failure: the publishes queued since the last flush are rejected too. */
  private rejectUnflushed(error: Error): void {
    const publishes = this.publishes;
    this.publishes = [];
    this.batch = new BatchBuilder();
    this.outbox = new Map();
    this.afterFlush = [];
    this.rejectTurn({ batch: this.batch, publishes, outbox: this.outbox, after: [] }, error);
  }

  /**
   * Starts the pushes of up to pumpPerTurn devices that wait (a fan-out's, or
   * those maxInflight held back); asks for another turn if more wait and there
   * is room. Without room, acks (or sessions that end) free it and wake the engine.
   */
  private pumpDeferred(): void {
    const now = this.clock.now();
    for (const q of this.deferredPumps) {
      if (this.pumpedThisTurn >= this.options.pumpPerTurn || this.inflightOnline >= this.options.maxInflight) break;
      this.deferredPumps.delete(q);
      this.pumpedThisTurn++;
      this.isolated(q, () => this.pump(q, now, true));
    }
    if (this.deferredPumps.size > 0 && this.inflightOnline < this.options.maxInflight) this.wake();
  }

  // ---------------------------------------------------------------- queries

  /** Hellos and publishes waiting for a signature (asynchronous crypto) or the store, and turns waiting for their commit. */
  get pendingAsync(): number {
    return this.asyncOps;
  }

  deviceStatus(id: string): DeviceStatus {
    const q = this.devices.get(id);
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
    for (const q of this.devices.values()) n += q.depth;
    return n;
  }

  /** Devices online now. */
  onlineCount(): number {
    let n = 0;
    for (const q of this.devices.values()) if (q.link !== undefined) n++;
    return n;
  }

  /** The message and its receipts, from the store (what is durable). */
  async messageStatus(id: string): Promise<{ message: MessageRecord; receipts: Receipt[] } | undefined> {
    const [message, receipts] = await Promise.all([this.store.getMessage(id), this.store.receiptsForMessage(id)]);
    if (message === undefined) return undefined;
    return { message, receipts };
  }

  /** Call after rotating the content-signing keys, so Welcome carries the new JWKS. */
  keysChanged(): void {
    this.jwksJson = JSON.stringify(this.contentKeys.jwks());
  }

  /** Stops taking publishes and Hellos, says Bye to every session, flushes, and resolves once every turn is released. */
  async shutdown(): Promise<void> {
    this.closing = true;
    for (const ls of this.links.values()) this.bye(ls, ErrorCode.SHUTTING_DOWN, "the server is shutting down");
    this.flush();
    this.unsubscribeRegistry();
    await this.released;
  }

  // ---------------------------------------------------------------- helpers

  private queue(id: string): DeviceQueue<LinkState> {
    let q = this.devices.get(id);
    if (q === undefined) {
      q = new DeviceQueue<LinkState>(id, this.options.rtt);
      this.devices.set(id, q);
    }
    return q;
  }

  private touchCounters(dev: DeviceQueue<LinkState>): void {
    this.batch.setCounters({ device: dev.id, lastSeq: dev.lastSeq, ackedSeq: dev.ackedSeq });
  }

  private receipt(m: MessageRecord, device: string, state: ReceiptState, at: number, reason: string, seq: number): void {
    const r: ReceiptInput = { messageId: m.id, device, state, at, reason, seq, topic: m.topic };
    this.batch.addReceipt(r);
    this.wake();
  }

  private send(ls: LinkState, frame: FrameInit): void {
    this.queueRecord(ls, encodeFrame(frame));
  }

  private queueRecord(ls: LinkState, record: Uint8Array): void {
    if (ls.closed) return;
    const list = this.outbox.get(ls);
    if (list === undefined) this.outbox.set(ls, [record]);
    else list.push(record);
    this.wake();
  }

  private sendError(ls: LinkState, code: number, message: string): void {
    this.send(ls, { kind: "error", error: { code, message } });
  }

  /** A device's frame refused: counted by cause, answered with an Error; nothing of it is applied or stored. */
  private refuse(ls: LinkState, cause: FrameRefusal, code: number, message: string): void {
    this.observer.frameRefused(cause);
    this.sendError(ls, code, message);
  }

  /** Runs one device's operation; a failure fails only that device (its session, when it has one). */
  private isolated(dev: DeviceQueue<LinkState>, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      const ls = dev.link;
      if (ls === undefined) this.reportFailure("device", dev.id, e);
      else this.failDevice(ls, dev.id, e);
    }
  }

  /** Runs one session's operation; a failure fails only that session. */
  private isolatedLink(ls: LinkState, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.failDevice(ls, ls.device?.id ?? "", e);
    }
  }

  /**
   * Serving one session failed unexpectedly: counted, reported (event
   * "failure"), and the session ends with Bye INTERNAL; the device reconnects
   * and its queue (in memory and in the store) is where it was. Never throws.
   */
  private failDevice(ls: LinkState, device: string, error: unknown): void {
    this.reportFailure("device", device, error);
    if (ls.closed) return;
    try {
      this.bye(ls, ErrorCode.INTERNAL, "the server failed to serve this session; reconnect later");
    } catch {
      try {
        this.closeLink(ls);
      } catch {
        // the transport is gone as well; detach will come
      }
    }
  }

  /** Counts and reports a failure the engine isolated. Never throws. */
  private reportFailure(cause: EngineFailure, device: string, error: unknown): void {
    this.observer.engineFailure(cause);
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

  /** Error + Bye, then the session is closed after this turn's records are sent. */
  private bye(ls: LinkState, code: number, message: string): void {
    if (ls.closed || ls.closeAfterFlush) return;
    this.send(ls, { kind: "bye", bye: { reason: { code, message } } });
    ls.closeAfterFlush = true;
    this.unbind(ls);
    this.afterFlush.push(() => this.closeLink(ls));
  }

  private closeLink(ls: LinkState): void {
    if (ls.closed) return;
    this.unbind(ls);
    ls.closed = true;
    this.timers.cancel(ls);
    this.links.delete(ls.link);
    ls.link.close();
  }

  private wake(): void {
    if (this.flushRequested) return;
    this.flushRequested = true;
    this.requestFlushHook();
  }
}

/** Ack ranges and rejected seqs a device may send beyond one per push in its window. */
const ACK_LIST_SLACK = 64;

function pushFields(m: MessageRecord, seq: number): Partial<Push> {
  return {
    seq,
    messageId: m.id,
    topic: m.topic,
    device: m.device,
    payload: m.payload,
    contentType: m.contentType,
    createdAt: m.createdAt,
    expiresAt: m.expiresAt,
    priority: m.priority,
    collapseKey: m.collapseKey,
    publisher: m.publisher,
    signature: m.signature,
  };
}
