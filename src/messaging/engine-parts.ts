import type { Clock } from "../util/clock.ts";
import type { Scheduler } from "../util/scheduler.ts";
import type { MessageRecord, ReceiptState, Store } from "../store/types.ts";
import type { ClusterStore } from "../store/cluster-types.ts";
import type { DeviceRegistry } from "../auth/index.ts";
import { encodePushBody, pushFrame, type Ack, type FrameInit } from "../wire/index.ts";
import { DeviceQueue, type Entry, type PendingEntry } from "./device-queue.ts";
import type { EngineEvents, PublishResult } from "./delivery-types.ts";
import type { BoundLink, LinkState } from "./link-state.ts";
import type { DeliveryObserver, EngineFailure, FrameRefusal } from "./observer.ts";
import type { DeliveryOptions } from "./options.ts";
import type { IdGuard } from "./id-guard.ts";
import type { BatchBuilder } from "./write-batch.ts";

/*
 * The delivery engine's parts and what each offers the others. DeliveryEngine
 * (delivery-engine.ts) builds them and is the only one that knows them all;
 * each part owns its state and reaches the others only through these
 * contracts (so the files import no one another). docs/delivery.md section 17
 * maps them.
 */

/** A device as the engine holds it: its queue, online on a bound session. */
export type Device = DeviceQueue<BoundLink>;

/** What the one scheduler runs: expiry (entry), retransmission (device), heartbeat (link). */
export type TimerKey = Entry | Device | LinkState;

/** Services every part uses; none of them is a part's state. */
export interface EngineEnv {
  readonly options: DeliveryOptions;
  readonly store: Store;
  /** the store's cluster side when it is shared (the same object as store) */
  readonly cluster: ClusterStore | undefined;
  readonly registry: DeviceRegistry;
  readonly clock: Clock;
  readonly random: () => number;
  readonly observer: DeliveryObserver;
  readonly newId: () => string;
  /** the one scheduler of every deadline (see TimerKey) */
  readonly timers: Scheduler<TimerKey>;
  /** every device the engine knows, by id */
  readonly devices: DeviceTable;
  /** message ids queued or recently durable, which the store's answers may not show yet */
  readonly ids: IdGuard;
  /** emits to each listener on its own: one that throws fails neither the others nor the engine */
  notify<K extends "receipt" | "presence">(event: K, arg: EngineEvents[K][0]): void;
  /** counts and reports a failure the engine isolated; never throws */
  reportFailure(cause: EngineFailure, device: string, error: unknown): void;
  /** a commit failed: event "fatal" */
  fatal(error: Error): void;
}

/** The per-turn batch and flush (engine-turn.ts). */
export interface TurnPart {
  /** this turn's changes (a new builder after each flush) */
  readonly batch: BatchBuilder;
  /** set when a commit failed: the engine does no more work */
  readonly stopped: Error | undefined;
  /** shutting down: no more publishes or Hellos */
  closing: boolean;
  /** asks the driver for a flush at the end of this turn */
  wake(): void;
  receipt(m: MessageRecord, device: string, state: ReceiptState, at: number, reason: string, seq: number): void;
  touchCounters(dev: Device): void;
  send(ls: LinkState, frame: FrameInit): void;
  /** a record for the session, sent after this turn's commit */
  queueRecord(ls: LinkState, record: Uint8Array): void;
  /** drops the records waiting for a session that is gone */
  dropRecords(ls: LinkState): void;
  /** drops every record not sent yet to the session, also those of the commit in flight (its device moved to another node) */
  silence(ls: LinkState): void;
  /** batches handed to the store so far (a read issued now sees the removals of every one of them) */
  readonly issued: number;
  /** runs fn after this turn's records are sent */
  afterFlush(fn: () => void): void;
  /** resolves with result once this turn's batch is committed */
  answerAfterCommit(result: PublishResult): Promise<PublishResult>;
  /** devices wait for a turn to start their pushes (pumpDeferred) */
  readonly othersWaiting: boolean;
  /** the device waits for a later turn to start its pushes (pumpDeferred at a later flush) */
  defer(dev: Device): void;
  /** starts the device's pushes in this turn if the turn's budget allows, else defers it */
  pumpSoon(dev: Device, now: number): void;
}

/** Sessions: attach/detach, Hello/Welcome, bind, heartbeats, Bye (sessions.ts). */
export interface SessionsPart {
  /** Error + Bye, then the session is closed after this turn's records are sent */
  bye(ls: LinkState, code: number, message: string): void;
  /** a device's frame refused: counted by cause, answered with an Error */
  refuse(ls: LinkState, cause: FrameRefusal, code: number, message: string): void;
  /** serving one session failed: reported, the session ends with Bye INTERNAL; never throws */
  failDevice(ls: LinkState, device: string, error: unknown): void;
  /** runs one device's operation; a failure fails only that device */
  isolated(dev: Device, fn: () => void): void;
  /** runs one session's operation; a failure fails only that session */
  isolatedLink(ls: LinkState, fn: () => void): void;
}

/** The send window: pump, transmit, acks, retransmission, expiry (send-window.ts). */
export interface WindowPart {
  /** pushes in flight to online devices (bound by options.maxInflight) */
  readonly inflightOnline: number;
  pump(dev: Device, now: number, waited?: boolean): void;
  ack(ls: LinkState, dev: Device, ack: Ack, now: number): void;
  /** everything <= seq was received by the device */
  cumulative(dev: Device, seq: number, now: number, rejected?: Set<number>): void;
  /** a new session: everything in flight is sent again */
  resendAll(dev: Device, now: number): void;
  /** the device came online (its pushes in flight count against maxInflight) */
  online(dev: Device): void;
  /** the device went offline */
  offline(dev: Device): void;
  /** the entry's message expired: an unsent one is removed, one with a seq becomes a tombstone */
  expire(e: Entry, now: number): void;
  /** removes an entry that never got a seq (already out of the pending list) */
  dropUnsent(e: PendingEntry, now: number, reason: string): void;
}

/** A device's uplink Publish frame, as the engine reads it. */
export interface UplinkPublish {
  readonly requestId: number;
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly contentType: string;
  readonly ttlSeconds: number;
  readonly priority: number;
}

/** Publishing: checks, signatures, queueing, queue limits, uplink publishes (publishing.ts). */
export interface PublishingPart {
  uplinkPublish(ls: LinkState, dev: Device, p: UplinkPublish): void;
  /** the largest payload this device can publish (Welcome.limits.max_payload) */
  uplinkPayloadLimit(device: string): number;
}

/** Topics and the registry's view of devices (topics.ts). */
export interface TopicsPart {
  subscribe(ls: LinkState, dev: Device, requestId: number, topics: readonly string[], add: boolean): void;
  /** the device's topics: assigned by the registry and its own, sorted */
  topicsOf(dev: Device): string[];
  /** devices that receive a publish to topic: enabled, subscribed by themselves or assigned by the registry */
  subscribersOf(topic: string): string[];
  /** undefined: not registered; true: revoked */
  revokedState(device: string): boolean | undefined;
}

/**
 * The device holds on a shared store (cluster-holds.ts): which devices' queues
 * this node keeps in memory. Without a shared store every device is held.
 */
export interface HoldsPart {
  /** the device's queue is in this node's memory */
  held(device: string): boolean;
  /** the epoch fencing the device's holder-only writes: 0 when not held; undefined when the store is not shared */
  fenceOf(device: string): number | undefined;
  /** takes the device's hold and loads its queue, unless held already (a claim in progress is shared) */
  claim(device: string): Promise<void>;
  /** the device went offline: its hold is given up after this turn's commit unless a session binds it again */
  offline(dev: Device): void;
  /** a delivery leaves the device's queue in this turn's batch */
  removed(device: string, messageId: string): void;
  /** this turn queues a delivery (unsent) for a device not held here */
  queuedUnheld(device: string): void;
}

export interface EngineParts {
  readonly turn: TurnPart;
  readonly holds: HoldsPart;
  readonly sessions: SessionsPart;
  readonly window: WindowPart;
  readonly publishing: PublishingPart;
  readonly topics: TopicsPart;
}

/** Every device the engine knows (registered, or with stored state), by id. */
export class DeviceTable {
  private readonly byId = new Map<string, Device>();
  private readonly rtt: DeliveryOptions["rtt"];

  constructor(rtt: DeliveryOptions["rtt"]) {
    this.rtt = rtt;
  }

  get(id: string): Device | undefined {
    return this.byId.get(id);
  }

  /** The device's queue, made at first use. */
  queue(id: string): Device {
    let q = this.byId.get(id);
    if (q === undefined) {
      q = new DeviceQueue<BoundLink>(id, this.rtt);
      this.byId.set(id, q);
    }
    return q;
  }

  delete(id: string): void {
    this.byId.delete(id);
  }

  values(): IterableIterator<Device> {
    return this.byId.values();
  }
}

export const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** The device an entry is queued for. */
export function deviceOf(e: Entry): Device {
  return e.queue as Device;
}

/**
 * Each message's Push encoded once without its seq (encodePushBody): a topic
 * message to many devices, or a message sent again under a new seq, is not
 * encoded again; per seq only the Frame's first bytes are written (pushFrame).
 */
const pushBodies = new WeakMap<MessageRecord, Uint8Array>();

/** The message's Push without its seq, encoded at the first call (throws WireError when it cannot be). */
export function pushBodyOf(m: MessageRecord): Uint8Array {
  let body = pushBodies.get(m);
  if (body === undefined) {
    body = encodePushBody({
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
    });
    pushBodies.set(m, body);
  }
  return body;
}

/** The Frame of the message's Push with this seq: what encodeFrame gives for the whole Push, encoded once per message. */
export function pushFrameOf(m: MessageRecord, seq: number): Uint8Array {
  const frame = pushFrame(pushBodyOf(m), seq);
  // a message to one device gets one seq, and its entry keeps the frame for retransmissions
  if (m.device !== "") pushBodies.delete(m);
  return frame;
}
