import { contentSignatureLength, type ContentSigner, type KeyRing, type SignedFields } from "../auth/index.ts";
import type { MessageRecord } from "../store/types.ts";
import { pushFrameSize, pushOverhead, WireError } from "../wire/index.ts";
import { StoreError } from "../store/errors.ts";
import { checkMessageRecord } from "../store/validate.ts";
import type { PublishResult } from "./delivery-types.ts";
import { pendingEntry } from "./device-queue.ts";
import { MAX_SAFE, pushBodyOf, type Device, type EngineEnv, type EngineParts, type PublishingPart, type UplinkPublish } from "./engine-parts.ts";
import { MessagingError } from "./errors.ts";
import type { LinkState } from "./link-state.ts";
import { checkPublishRequest, pushTooLarge, type PublishRequest } from "./publish-request.ts";
import { wireErrorCode } from "./wire-errors.ts";

function duplicateMessage(id: string): MessagingError {
  return new MessagingError("duplicate_message", `a message with id ${JSON.stringify(id)} was already published`);
}

/** Why a publish is refused: the engine's reason, or a shared store that is unreachable (store_unavailable). */
type PublishRefusal = MessagingError | StoreError;

/** A publish that passed its checks, with the fields its content signature covers. */
interface PreparedPublish {
  readonly req: PublishRequest;
  readonly fields: SignedFields;
}

/**
 * Publishing: a publish is checked, signed (once, whatever the number of
 * recipients), then queued for each recipient in one turn (collapse keys,
 * queue limits) and answered once that turn's batch is committed. Uplink
 * publishes from devices go the same way. Owns the signer, the order
 * counter of queued messages and the uplink publishes in progress.
 */
export class Publishing implements PublishingPart {
  private readonly env: EngineEnv;
  private readonly parts: EngineParts;
  private readonly contentKeys: KeyRing;
  private readonly contentSigner: ContentSigner;
  /** uplink publishes being processed, by message id */
  private readonly uplinkInProgress = new Map<string, Promise<PublishResult>>();
  /** signatures being made */
  private signing = 0;
  /** existence checks of publishers' ids waiting for the store */
  private checking = 0;
  /** on a shared store: publisher-chosen ids reserved by checks whose publishes are not queued yet (id -> checks) */
  private readonly reserving = new Map<string, number>();
  private nextOrder = 1;

  constructor(env: EngineEnv, parts: EngineParts, keys: { readonly contentKeys: KeyRing; readonly contentSigner: ContentSigner }) {
    this.env = env;
    this.parts = parts;
    this.contentKeys = keys.contentKeys;
    this.contentSigner = keys.contentSigner;
  }

  /** Publishes waiting for a signature (asynchronous crypto) or for the store's answer on their ids. */
  get pendingAsync(): number {
    return this.signing + this.checking;
  }

  /** A stored entry has this order: later ones get higher ones. */
  loadedOrder(order: number): void {
    this.nextOrder = Math.max(this.nextOrder, order + 1);
  }

  /** See DeliveryEngine.publish. */
  async publish(req: PublishRequest): Promise<PublishResult> {
    const [outcome] = await this.publishMany([req]);
    if (outcome?.status === "fulfilled") return outcome.value;
    throw outcome?.reason;
  }

  /** See DeliveryEngine.publishMany. */
  async publishMany(reqs: readonly PublishRequest[]): Promise<PromiseSettledResult<PublishResult>[]> {
    const prepared = reqs.map((req): PreparedPublish | PublishRefusal => {
      try {
        return this.preparePublish(req);
      } catch (e) {
        return this.publishError(e);
      }
    });
    // ids the publisher chose may be taken: one existence check for the whole batch, while it is signed
    const chosen = prepared.flatMap((p) => (p instanceof Error || p.req.id === undefined ? [] : [p.fields.messageId]));
    const check = chosen.length === 0 ? undefined : this.checkIds(chosen);
    // on a shared store, direct publishes to devices held elsewhere (or by nobody) are checked against their stored depth
    const remote = prepared.flatMap((p) =>
      p instanceof Error || p.fields.device === "" || this.parts.holds.held(p.fields.device) ? [] : [p.fields.device],
    );
    const depths = remote.length === 0 ? undefined : this.storedDepths(remote);
    const caught = <T>(answer: Promise<T> | undefined): Promise<T | Error | undefined> | undefined =>
      answer?.then(
        (v) => v,
        (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
      );
    const [signed, stored, depth] = await Promise.all([
      Promise.allSettled(prepared.map((p) => (p instanceof Error ? Promise.resolve(undefined) : this.sign(p)))),
      caught(check?.answer),
      caught(depths),
    ]);
    // from here on synchronous: every request is queued in this turn
    let queued: Promise<PublishResult>[];
    try {
      queued = prepared.map((p, i): Promise<PublishResult> => {
        if (p instanceof Error) return Promise.reject(p);
        const s = signed[i] as PromiseSettledResult<string | undefined>;
        try {
          if (s.status === "rejected") throw s.reason;
          if (p.req.id !== undefined) {
            if (stored instanceof Error) throw stored;
            if (stored?.has(p.fields.messageId) === true) throw duplicateMessage(p.fields.messageId);
          }
          if (depth instanceof Error) throw depth;
          return this.queuePublish(p, s.value as string, depth);
        } catch (e) {
          return Promise.reject(this.publishError(e));
        }
      });
    } finally {
      if (check !== undefined) {
        this.env.ids.checkDone(check.seq);
        this.releaseUnqueued(chosen);
      }
    }
    return Promise.allSettled(queued);
  }

  /**
   * Asks the store which of `ids` are stored messages. The answer can be
   * stale by the time the publish queues; the IdGuard (id-guard.ts) covers
   * what it may miss within this node. On a shared store the ids are also
   * reserved for this node (cluster-types.ts), so the same id published on
   * another node at the same time is refused there (or here) as a duplicate,
   * never reaching two commits.
   */
  private checkIds(ids: readonly string[]): { readonly seq: number; readonly answer: Promise<Set<string>> } {
    const seq = this.env.ids.checkIssued();
    this.checking++;
    const cluster = this.env.cluster;
    let asked: Promise<Set<string>>;
    if (cluster === undefined) asked = this.env.store.existingMessageIds(ids);
    else {
      for (const id of ids) this.reserving.set(id, (this.reserving.get(id) ?? 0) + 1);
      asked = cluster.reserveMessageIds(ids, this.env.options.idReservationSeconds * 1000);
    }
    const answer = asked.finally(() => this.checking--);
    return { seq, answer };
  }

  /**
   * After a check's publishes were queued (or failed): the reservations of
   * ids that are neither queued here nor wanted by another check still open
   * are ended, so a publisher retrying a refused publish on another node is
   * not told its id is taken. A queued id keeps its reservation until the
   * commit storing it (which ends it); a failed release expires on its own.
   */
  private releaseUnqueued(ids: readonly string[]): void {
    const cluster = this.env.cluster;
    if (cluster === undefined) return;
    const free = new Set<string>();
    for (const id of ids) {
      const left = (this.reserving.get(id) ?? 1) - 1;
      if (left > 0) {
        this.reserving.set(id, left);
        continue;
      }
      this.reserving.delete(id);
      if (!this.env.ids.has(id)) free.add(id);
    }
    if (free.size > 0) cluster.releaseMessageIds([...free]).catch(() => undefined);
  }

  /** The stored depth of devices this node does not hold (one call for the whole batch). */
  private storedDepths(devices: readonly string[]): Promise<Map<string, number>> | undefined {
    const cluster = this.env.cluster;
    if (cluster === undefined) return undefined;
    this.checking++;
    return cluster.queueDepths([...new Set(devices)]).finally(() => this.checking--);
  }

  /** The next enqueue order: on a shared store comparable across nodes (ms * 1000, above every order seen), so FIFO holds within a priority. */
  private takeOrder(now: number): number {
    const order = this.env.cluster === undefined ? this.nextOrder : Math.max(this.nextOrder, now * 1000);
    this.nextOrder = order + 1;
    return order;
  }

  private async sign(p: PreparedPublish): Promise<string> {
    this.signing++;
    try {
      return await this.contentSigner.sign(p.fields);
    } finally {
      this.signing--;
    }
  }

  /**
   * Every publish failure as a MessagingError: the engine's own, a string
   * that cannot be encoded (a lone surrogate) or a record the store would
   * refuse are bad requests; anything else fails only this publish
   * ("internal", counted and reported as a failure). A shared store that is
   * unreachable (store_unavailable) refuses it as it is (HTTP 503).
   */
  private publishError(e: unknown): PublishRefusal {
    if (e instanceof MessagingError) return e;
    if (e instanceof StoreError && e.code === "store_unavailable") return e;
    if (e instanceof WireError || (e instanceof StoreError && e.code === "commit_failed")) {
      return new MessagingError("bad_request", `the message cannot be stored or sent: ${e.message}`, { cause: e });
    }
    this.env.reportFailure("publish", "", e);
    return new MessagingError("internal", "the publish failed; nothing was published", { cause: e });
  }

  /** The checks a publish passes before it is signed, and the fields to sign. */
  private preparePublish(req: PublishRequest): PreparedPublish {
    this.checkRunning();
    // nothing is queued in memory for a store that cannot take it now (Redis away)
    if (this.env.store.available === false)
      throw new StoreError("store_unavailable", "the shared store (Redis) is unreachable; nothing was published");
    const o = this.env.options;
    const payload = req.payload;
    const { ttl, priority, contentType, collapseKey, topic, device } = checkPublishRequest(req, o);
    if (device !== "") this.checkDirectTarget(device);
    const now = this.env.clock.now();
    const id = req.id ?? this.env.newId();
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
  private queuePublish(p: PreparedPublish, signature: string, depths: Map<string, number> | undefined): Promise<PublishResult> {
    const o = this.env.options;
    const { turn, window, topics } = this.parts;
    const { req, fields } = p;
    const { messageId: id, topic, device, contentType, collapseKey, payload, priority } = fields;
    const now = this.env.clock.now();
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
    const size = pushFrameSize(pushBodyOf(record).length, MAX_SAFE);
    if (size > o.maxRecordPayload) throw pushTooLarge(size, payload.byteLength, o);
    // a record the store would refuse fails this publish now, before it changes anything
    checkMessageRecord(record);
    // from here on synchronous: no other turn interleaves
    this.checkRunning();
    // the store was asked before (publishMany); these are the ids it may not have shown yet
    if (this.env.ids.has(id)) throw duplicateMessage(id);
    if (device !== "") this.checkDirectTarget(device);
    const recipients = device !== "" ? [device] : topics.subscribersOf(topic);
    const accepted: Device[] = [];
    /** recipients whose queue is not in this node's memory (shared store): their delivery is only written */
    const elsewhere: string[] = [];
    const rejected: { device: string; reason: string }[] = [];
    const { holds } = this.parts;
    for (const r of recipients) {
      if (!holds.held(r)) {
        // the holder (or the next claim) applies the cap and collapse keys of a topic's recipients;
        // a direct publish is refused here against the stored depth, as for a device held here
        const stored = depths?.get(r);
        if (device !== "" && stored !== undefined && o.queueFullPolicy === "reject" && stored >= o.maxQueue) {
          rejected.push({ device: r, reason: "queue_full" });
        } else {
          if (stored !== undefined) depths?.set(r, stored + 1);
          elsewhere.push(r);
        }
        continue;
      }
      const q = this.env.devices.queue(r);
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
    if (device !== "" && accepted.length === 0 && elsewhere.length === 0) {
      throw new MessagingError("queue_full", `device ${device} has ${o.maxQueue} messages queued (the limit); nothing was published`);
    }
    turn.batch.addMessage(record);
    this.env.ids.queued(id);
    for (const q of accepted) {
      if (collapseKey !== "") {
        const old = q.pendingWithCollapseKey(collapseKey);
        if (old !== undefined) {
          q.removePending(old);
          window.dropUnsent(old, now, "collapsed");
        }
      }
      const e = pendingEntry(record, q, this.takeOrder(now));
      q.addPending(e);
      this.env.timers.schedule(e, record.expiresAt);
      turn.batch.addDelivery({ device: q.id, messageId: id, order: e.order, seq: 0, tombstone: false });
      turn.receipt(record, q.id, "queued", now, "", 0);
    }
    for (const r of elsewhere) {
      turn.batch.addDelivery({ device: r, messageId: id, order: this.takeOrder(now), seq: 0, tombstone: false });
      holds.queuedUnheld(r);
      turn.receipt(record, r, "queued", now, "", 0);
    }
    for (const r of rejected) turn.receipt(record, r.device, "rejected", now, r.reason, 0);
    // a big fan-out goes out over several turns (pumpPerTurn devices each), so the devices' acks are
    // read in between and each push's retransmission timer starts when it really leaves
    for (const q of accepted) if (q.link !== undefined) turn.pumpSoon(q, now);
    const result: PublishResult = {
      messageId: id,
      createdAt: record.createdAt,
      expiresAt: record.expiresAt,
      recipients: accepted.length + elsewhere.length,
      rejected,
    };
    return turn.answerAfterCommit(result);
  }

  private checkRunning(): void {
    const { stopped, closing } = this.parts.turn;
    if (stopped) throw new MessagingError("internal", "the delivery engine stopped after a store failure", { cause: stopped });
    if (closing) throw new MessagingError("shutting_down", "the server is shutting down");
  }

  private checkDirectTarget(device: string): void {
    const revoked = this.parts.topics.revokedState(device);
    if (revoked === undefined) throw new MessagingError("device_unknown", `no device ${JSON.stringify(device)} is registered`);
    if (revoked) throw new MessagingError("device_revoked", `device ${device} is revoked`);
  }

  /** Whether the queue can take one more message (applying the drop-oldest policy). */
  private makeRoom(q: Device, now: number): boolean {
    const o = this.env.options;
    if (q.depth < o.maxQueue) return true;
    if (o.queueFullPolicy !== "drop-oldest") return false;
    const oldest = q.oldestPending();
    if (oldest === undefined) return false;
    q.removePending(oldest);
    this.parts.window.dropUnsent(oldest, now, "evicted");
    return true;
  }

  uplinkPublish(ls: LinkState, dev: Device, p: UplinkPublish): void {
    const { turn, sessions } = this.parts;
    const id = `up:${dev.id}:${p.requestId}`;
    const answer = (r: PublishResult | Error): void => {
      if (ls.phase === "closed") return;
      // runs in a promise callback: whatever fails here fails this session, never the process
      sessions.isolatedLink(ls, () => {
        if (r instanceof Error) {
          if (r instanceof MessagingError) {
            if (r.code === "payload_too_large") this.env.observer.frameRefused("publish_too_large");
            else if (r.code === "bad_request" || r.code === "bad_topic") this.env.observer.frameRefused("publish_invalid");
          }
          turn.send(ls, {
            kind: "publishAck",
            publishAck: { requestId: p.requestId, error: { code: wireErrorCode(r), message: r.message, requestId: p.requestId } },
          });
        } else {
          turn.send(ls, { kind: "publishAck", publishAck: { requestId: p.requestId, messageId: r.messageId } });
        }
      });
    };
    const running = this.uplinkInProgress.get(id);
    if (running !== undefined) return; // its PublishAck follows
    // the limit the Welcome announced (docs/protocol.md section 7): a larger payload is refused even
    // when this particular Push would still fit, so a device never depends on more than it was told
    const limit = this.uplinkPayloadLimit(dev.id);
    if (p.payload.byteLength > limit) {
      answer(new MessagingError("payload_too_large", `payload is ${p.payload.byteLength} bytes; the limit is ${limit} (Welcome.limits.max_payload)`));
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
      e instanceof MessagingError && e.code === "duplicate_message" ? { messageId: id, createdAt: 0, expiresAt: 0, recipients: 0, rejected: [] } : e;
    done.then(answer, (e: Error) => answer(repeat(e))).finally(() => this.uplinkInProgress.delete(id));
  }

  /**
   * The largest payload this device can publish to a one-character topic (no
   * content type): maxPayload, or less when the Push to subscribers would not
   * fit one record. Announced in Welcome.limits.maxPayload.
   */
  uplinkPayloadLimit(device: string): number {
    const o = this.env.options;
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
    return Math.max(0, Math.min(o.maxPayload, o.maxRecordPayload - overhead));
  }
}
