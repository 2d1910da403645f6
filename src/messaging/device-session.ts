import { EventEmitter } from "node:events";
import { decodeFrame, encodeFrame, ErrorCode, errorCodeName, type FrameInit, type Push, type Welcome, type WireErrorBody } from "../wire/index.ts";
import { DeviceReceiver } from "./device-receiver.ts";
import { MessagingError } from "./errors.ts";
import { messagingCodeOfWire } from "./wire-errors.ts";

/**
 * The device side of one DTLS session, sans-I/O: Hello until Welcome, pushes
 * verified, de-duplicated and handed over in seq order one at a time, acks,
 * heartbeats, uplink requests (Publish, Subscribe, Unsubscribe) repeated until
 * answered, token refresh.
 *
 * The driver feeds `receive(record)` and `onTimer(now)` (at `nextDeadline()`),
 * sends what `takeRecords()` returns whenever `wake` is called, and tells the
 * session `processed(seq)` when the application is done with a "message"
 * event. Persisting `hwm` (event "hwm") before the ack that covers it is the
 * driver's job: `ackReady()` tells when the persisted mark allows an ack.
 *
 * Acks are delayed and cumulative, like TCP's: one goes when it covers
 * `ackEvery` more pushes than the last one, or `ackDelayMs` after the first
 * thing it would report, whichever comes first; at once for a duplicate, an
 * out-of-order arrival (a gap, or a push that fills one), a push beyond the
 * receiver's room, a Welcome and before a Bye, so the server's retransmission
 * logic hears of those without delay. An ack that would repeat the last one
 * exactly is not sent unless it answers one of those. A Ping goes only after a
 * heartbeat interval in which the session sent nothing (acks, publishes and
 * every other frame count as traffic).
 *
 * A Hello refused with SEQ_AHEAD (the server's store has lost seqs this device
 * saw) resets the high-water mark to 0 once per session: event "seqReset"; the
 * driver persists hwm 0 and calls `resetPersisted(now)`, which says Hello again
 * with received_seq 0. A second refusal (of a Hello with 0) is event "refused".
 */
export interface DeviceSessionOptions {
  /** highest seq this device processed (persisted by the previous run) */
  readonly hwm: number;
  /** a token from an earlier Welcome, to resume */
  readonly sessionToken?: string;
  /** the first uplink request id (persisted so ids never repeat) */
  readonly nextRequestId?: number;
  /**
   * checks a push's signature against the JWKS of the latest Welcome: true to
   * accept, false to refuse, "unknown_key" when the signing key is not in the
   * JWKS (the session then refreshes its Welcome once and checks again, so a
   * key rotated in on the server is learned without refusing anything)
   */
  readonly verify: (push: Push, jwks: string) => Promise<PushVerdict>;
  /** first Hello/request retransmission timeout, ms (default 1000; doubles up to 8000) */
  readonly retryMs?: number;
  /** client description sent in Hello */
  readonly client?: string;
  /** heartbeat intervals without a word from the server before "stale" (default 3) */
  readonly missedHeartbeats?: number;
  /** a Hello unanswered (nothing heard from the server) for this long before the first Welcome means "stale", ms (default 60 000) */
  readonly helloTimeoutMs?: number;
  /**
   * a push whose expiresAt lies more than this far in the past by the device's
   * clock is refused (acked as rejected, never handed over), ms (default
   * 60 000, a margin for clock skew; Infinity turns the check off)
   */
  readonly expiryGraceMs?: number;
  /**
   * delayed acks: an ack waits at most this long after the first thing it
   * would report (a push received, a mark persisted), ms (default 5; 0 acks
   * at once, in the driver's next flush)
   */
  readonly ackDelayMs?: number;
  /** ...or until it covers this many more pushes cumulatively, whichever comes first (default 4) */
  readonly ackEvery?: number;
}

/** Defaults of the delayed-ack bound (see DeviceSessionOptions and docs/client-sdk.md). */
export const ACK_DEFAULTS = { ackDelayMs: 5, ackEvery: 4 } as const;

/** Checks the delayed-ack options: whole numbers in range. Returns the message of the first problem, or undefined. */
export function ackOptionsProblem(o: { readonly ackDelayMs?: number; readonly ackEvery?: number }): string | undefined {
  const bad = (name: "ackDelayMs" | "ackEvery", v: number | undefined, min: number, max: number): string | undefined =>
    v === undefined || (Number.isSafeInteger(v) && v >= min && v <= max)
      ? undefined
      : `${name} must be a whole number from ${min} to ${max}, got ${String(v)}`;
  return bad("ackDelayMs", o.ackDelayMs, 0, 1000) ?? bad("ackEvery", o.ackEvery, 1, 1024);
}

export type PushVerdict = boolean | "unknown_key";

interface Request {
  readonly id: number;
  readonly frame: Uint8Array;
  dueAt: number;
  tries: number;
  readonly resolve: (value: Answer) => void;
  readonly reject: (error: Error) => void;
}

type Answer =
  | { kind: "publishAck"; messageId: string; error: WireErrorBody | undefined }
  | { kind: "subscribed"; topics: string[]; error: WireErrorBody | undefined };

interface SessionEvents {
  /** every Welcome: the first one, and each refresh (new token, maybe new JWKS) */
  welcome: [Welcome];
  message: [Push];
  /** a push refused (bad or unknown-key signature) */
  rejected: [Push, string];
  /** an Error frame from the server */
  serverError: [WireErrorBody];
  /** the server ended the session (Bye) */
  bye: [WireErrorBody | undefined];
  /** there are records to send */
  wake: [];
  /** nothing heard from the server for `missedHeartbeats` intervals (before the Welcome: for `helloTimeoutMs`): the driver should reconnect */
  stale: [];
  /**
   * the server refused our Hello's received_seq (SEQ_AHEAD): hwm is reset to 0 and the Hello waits until
   * the driver has persisted that and calls `resetPersisted`
   */
  seqReset: [SeqReset];
  /** the server refused a Hello in a way another Hello cannot fix (SEQ_AHEAD for received_seq 0): end the session */
  refused: [WireErrorBody];
}

/** A high-water mark reset after the server answered SEQ_AHEAD. */
export interface SeqReset {
  /** the high-water mark the device had (and sent in its Hello) */
  readonly previousHwm: number;
  /** the new one: 0 */
  readonly hwm: number;
  /** the server's Error */
  readonly error: WireErrorBody;
}

const MAX_RETRY_MS = 8000;
/** The heartbeat interval a Welcome may set: what the daemon's delivery.heartbeat_seconds allows (1 s to 1 h). */
export const MIN_HEARTBEAT_MS = 1000;
export const MAX_HEARTBEAT_MS = 3_600_000;
/** A session token is refreshed at most this often, whatever lifetime the server claims. */
export const MIN_REFRESH_MS = 10_000;
const TOKEN_ERRORS = new Set<number>([ErrorCode.TOKEN_INVALID, ErrorCode.TOKEN_EXPIRED, ErrorCode.TOKEN_IDENTITY_MISMATCH]);

export class DeviceSession extends EventEmitter<SessionEvents> {
  readonly receiver: DeviceReceiver;
  private readonly verifyPush: (push: Push, jwks: string) => Promise<PushVerdict>;
  private readonly retryMs: number;
  private readonly client: string;
  private token: string;
  private welcome: Welcome | undefined;
  private helloDue = 0;
  private helloTries = 0;
  private helloFrame: Uint8Array | undefined;
  private pingDue = 0;
  private refreshDue = 0;
  /** the Welcome's heartbeat interval, within MIN/MAX_HEARTBEAT_MS (a server's value is a claim too) */
  private heartbeatMs = 0;
  private lastSent = 0;
  private requestId: number;
  private readonly requests = new Map<number, Request>();
  private out: Uint8Array[] = [];
  /**
   * an ack goes with the next records taken: "signal" (a duplicate, a gap, a
   * Welcome...) even if it repeats the last one, "due" (the delay ran out)
   * unless it does
   */
  private ackOwed: "signal" | "due" | undefined;
  /** when the delayed ack must go at the latest; 0: none pending */
  private ackDue = 0;
  /** the last ack sent (undefined: none yet this session) */
  private lastAck: { cumulative: number; ranges: string; rejected: number } | undefined;
  /** the last Ack sent, encoded, until the next Ping carries it once more */
  private ackToRepeat: Uint8Array | undefined;
  private readonly ackDelayMs: number;
  private readonly ackEvery: number;
  /** hwm the driver has persisted; acks never claim more */
  private persistedHwm: number;
  private ended = false;
  private lastHeard = 0;
  private staleAfter = 0;
  private readonly missedHeartbeats: number;
  private readonly helloTimeoutMs: number;
  private readonly expiryGraceMs: number;
  /** the latest time the driver gave us */
  private now = 0;
  /** pushes signed by a key the current JWKS lacks, waiting for a refreshed Welcome */
  private awaitingKeys: Push[] = [];
  /** "pending": hwm reset after SEQ_AHEAD, Hello paused until the driver persisted it; "done": at most once per session */
  private seqReset: "none" | "pending" | "done" = "none";
  /** SEQ_AHEAD answers still due to Hellos sent before the reset (repeats of the refused Hello): not a second refusal */
  private staleRefusals = 0;

  constructor(options: DeviceSessionOptions) {
    super();
    this.receiver = new DeviceReceiver(options.hwm);
    this.persistedHwm = options.hwm;
    this.verifyPush = options.verify;
    this.retryMs = options.retryMs ?? 1000;
    this.client = options.client ?? "dtlspush-sdk";
    this.token = options.sessionToken ?? "";
    this.requestId = options.nextRequestId ?? 1;
    this.missedHeartbeats = options.missedHeartbeats ?? 3;
    this.helloTimeoutMs = options.helloTimeoutMs ?? 60_000;
    this.expiryGraceMs = options.expiryGraceMs ?? 60_000;
    const problem = ackOptionsProblem(options);
    if (problem !== undefined) throw new MessagingError("bad_option", problem);
    this.ackDelayMs = options.ackDelayMs ?? ACK_DEFAULTS.ackDelayMs;
    this.ackEvery = options.ackEvery ?? ACK_DEFAULTS.ackEvery;
  }

  get welcomed(): Welcome | undefined {
    return this.welcome;
  }

  get sessionToken(): string {
    return this.token;
  }

  /** the next uplink request id (persist it with hwm) */
  get nextRequestId(): number {
    return this.requestId;
  }

  /** Sends the first Hello. */
  start(now: number): void {
    this.now = now;
    this.lastHeard = now;
    this.sendHello(now);
  }

  /** Called with the hwm once it is persisted; acks may now cover it. `now`: the time, when the driver has it. */
  persisted(hwm: number, now = this.now): void {
    // a save of the old mark, made before the reset, finishing now: not a mark of the new numbering
    if (this.seqReset === "pending") return;
    if (hwm > this.persistedHwm) {
      this.now = Math.max(this.now, now);
      this.persistedHwm = hwm;
      this.wantAck(false);
      this.wake();
    }
  }

  /**
   * Something an ack would report happened: `immediate` for what the server
   * must hear of at once; otherwise the delayed ack's deadline starts (unless
   * it runs already).
   */
  private wantAck(immediate: boolean): void {
    if (immediate) this.ackOwed = "signal";
    else if (this.ackDelayMs === 0) this.ackOwed ??= "due";
    else if (this.ackDue === 0) this.ackDue = this.now + this.ackDelayMs;
  }

  receive(record: Uint8Array, now: number): void {
    if (this.ended) return;
    this.now = now;
    this.lastHeard = now;
    let frame;
    try {
      frame = decodeFrame(record);
    } catch {
      return; // an undecodable frame from the server: ignore, it will retransmit what matters
    }
    switch (frame.kind) {
      case "welcome":
        this.onWelcome(frame.welcome, now);
        break;
      case "push":
        this.onPush(frame.push);
        break;
      case "publishAck":
        this.answer(frame.publishAck.requestId, {
          kind: "publishAck",
          messageId: frame.publishAck.messageId,
          error: frame.publishAck.error,
        });
        break;
      case "subscribed":
        this.answer(frame.subscribed.requestId, {
          kind: "subscribed",
          topics: frame.subscribed.topics,
          error: frame.subscribed.error,
        });
        break;
      case "error":
        if (frame.error.code === ErrorCode.SEQ_AHEAD) {
          this.onSeqAhead(frame.error);
          break;
        }
        if (TOKEN_ERRORS.has(frame.error.code) && (this.welcome === undefined || this.helloDue > 0)) {
          // token refused (first Hello or a refresh): a fresh session with the DTLS identity alone
          this.token = "";
          this.helloFrame = undefined;
          this.sendHello(now);
        }
        this.emit("serverError", frame.error);
        break;
      case "bye":
        this.ended = true;
        this.emit("bye", frame.bye.reason);
        break;
      default:
        break; // pong, unknown bodies
    }
  }

  /**
   * SEQ_AHEAD: the server never sent the seq our Hello claims (its store lost them). Its state is
   * authoritative: new pushes will carry seqs we hold as seen, and de-duplication would drop them. So
   * hwm goes back to 0 (at-least-once over loss), once per session; a refusal of a Hello with 0 is a
   * different failure and ends the session.
   */
  private onSeqAhead(error: WireErrorBody): void {
    if (this.seqReset === "pending") return; // a repeat of the refused Hello: the reset is under way
    if (this.helloDue === 0) {
      this.emit("serverError", error); // no Hello of ours waits for an answer: not about us
      return;
    }
    if (this.seqReset === "done" && this.staleRefusals > 0) {
      this.staleRefusals--; // the answer to a repeat of the Hello sent before the reset
      return;
    }
    if (this.seqReset === "done" || this.persistedHwm === 0) {
      this.ended = true;
      this.emit("refused", error);
      return;
    }
    const previousHwm = this.persistedHwm;
    this.seqReset = "pending";
    // every Hello sent so far carried the old mark; one of them was answered by this Error
    this.staleRefusals = Math.max(0, this.helloTries - 1);
    this.receiver.reset(0);
    this.persistedHwm = 0;
    this.awaitingKeys = [];
    this.helloDue = 0; // no Hello with the old mark any more; the next one waits for resetPersisted
    this.helloFrame = undefined;
    this.helloTries = 0;
    this.emit("seqReset", { previousHwm, hwm: 0, error });
  }

  /** The driver persisted hwm 0 after "seqReset": says Hello again with received_seq 0. */
  resetPersisted(now: number): void {
    if (this.ended || this.seqReset !== "pending") return;
    this.seqReset = "done";
    this.now = now;
    this.lastHeard = now; // the Hello timeout starts over
    this.sendHello(now);
  }

  private onWelcome(w: Welcome, now: number): void {
    this.welcome = w;
    this.token = w.sessionToken;
    this.helloDue = 0;
    this.helloFrame = undefined;
    this.helloTries = 0;
    const lifetime = Math.max(0, w.tokenExpiresAt - w.serverTime);
    // a token that claims to expire at once is refreshed no more often than MIN_REFRESH_MS
    this.refreshDue = now + Math.max(MIN_REFRESH_MS, Math.floor((lifetime * 2) / 3));
    const hb = (this.heartbeatMs = Math.min(MAX_HEARTBEAT_MS, Math.max(MIN_HEARTBEAT_MS, w.heartbeatIntervalMs)));
    this.pingDue = now + hb;
    this.staleAfter = hb * this.missedHeartbeats + Math.ceil(hb / 2);
    if (this.receiver.serverAcked(w.ackedSeq)) this.persistedHwm = Math.max(this.persistedHwm, w.ackedSeq);
    this.lastAck = undefined; // a new session (or a refresh): what it heard before is not assumed
    this.ackToRepeat = undefined;
    this.emit("welcome", w);
    // pushes signed by a key we did not know: check them once more against this JWKS
    const waiting = this.awaitingKeys;
    this.awaitingKeys = [];
    for (const push of waiting) this.check(push, w.jwks, true);
    // requests sent before the Welcome went unanswered (HELLO_REQUIRED): send them now
    for (const r of this.requests.values()) r.dueAt = now;
    this.wantAck(true);
    this.wake();
  }

  private onPush(push: Push): void {
    const welcome = this.welcome;
    if (welcome === undefined) return;
    const gapBefore = !this.receiver.contiguous;
    const result = this.receiver.accept(push);
    // a duplicate (our ack was lost), a push beyond our room, or one out of order (a gap, or one that
    // fills a gap): the server hears of it at once; an in-order push waits for the delayed ack
    this.wantAck(result !== "new" || gapBefore || !this.receiver.contiguous);
    this.wake();
    if (result !== "new") return;
    if (!this.receiver.pending(push.seq)) {
      this.drain();
      return;
    }
    this.check(push, welcome.jwks, false);
  }

  /** Verifies a push; `final` after a refresh (an unknown key is then a refusal). */
  private check(push: Push, jwks: string, final: boolean): void {
    this.verifyPush(push, jwks).then(
      (verdict) => this.settle(push, jwks, verdict, final),
      (e: unknown) => this.settle(push, jwks, false, true, e instanceof Error ? e.message : String(e)),
    );
  }

  private settle(push: Push, jwks: string, verdict: PushVerdict, final: boolean, why = "signature refused"): void {
    if (this.ended) return;
    if (verdict === "unknown_key") {
      const current = this.welcome?.jwks;
      if (current !== undefined && current !== jwks) {
        this.check(push, current, true); // a newer Welcome arrived while this was being checked
        return;
      }
      if (!final) {
        this.awaitingKeys.push(push);
        if (this.helloDue === 0) this.sendHello(this.now); // refresh: the Welcome brings the current JWKS
        return;
      }
      why = "signed by a key that is not in the server's JWKS";
    }
    let ok = verdict === true;
    if (ok && push.expiresAt > 0 && push.expiresAt + this.expiryGraceMs < this.now) {
      ok = false;
      why = "expired before it arrived";
    }
    this.receiver.settle(push.seq, ok);
    if (!ok) this.emit("rejected", push, why);
    this.drain();
  }

  private drain(): void {
    const before = this.receiver.hwm;
    const next = this.receiver.next();
    if (this.receiver.hwm !== before) this.wantAck(false);
    if (next !== undefined) this.emit("message", next);
    this.wake();
  }

  /** The application is done with push `seq` ("message" event). */
  processed(seq: number): void {
    this.receiver.processed(seq);
    this.wantAck(false);
    this.drain();
  }

  /** Publishes to a topic; resolves with the message id once the server has it durably. */
  publish(
    topic: string,
    payload: Uint8Array,
    options: { contentType?: string; ttlSeconds?: number; priority?: number } = {},
    now: number,
  ): Promise<string> {
    const id = this.requestId++;
    const frame = encodeFrame({
      kind: "publish",
      publish: {
        requestId: id,
        topic,
        payload,
        contentType: options.contentType ?? "",
        ttlSeconds: options.ttlSeconds ?? 0,
        priority: options.priority ?? 0,
      },
    });
    return this.request(id, frame, now).then((a) => {
      if (a.kind !== "publishAck") throw new MessagingError("bad_request", "unexpected answer");
      if (a.error !== undefined) throw answerError(a.error);
      return a.messageId;
    });
  }

  /** Subscribes (or with add false unsubscribes); resolves with every topic the device is now subscribed to. */
  subscribe(topics: readonly string[], add: boolean, now: number): Promise<string[]> {
    const id = this.requestId++;
    const frame = encodeFrame(
      add
        ? { kind: "subscribe", subscribe: { requestId: id, topics: [...topics] } }
        : { kind: "unsubscribe", unsubscribe: { requestId: id, topics: [...topics] } },
    );
    return this.request(id, frame, now).then((a) => {
      if (a.kind !== "subscribed") throw new MessagingError("bad_request", "unexpected answer");
      if (a.error !== undefined) throw answerError(a.error);
      return a.topics;
    });
  }

  private request(id: number, frame: Uint8Array, now: number): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      const r: Request = { id, frame, dueAt: now + this.retryMs, tries: 1, resolve, reject };
      this.requests.set(id, r);
      if (this.welcome !== undefined) this.queue(frame, now);
      this.wake();
    });
  }

  private answer(id: number, a: Answer): void {
    const r = this.requests.get(id);
    if (r === undefined) return;
    this.requests.delete(id);
    r.resolve(a);
  }

  /** Pending uplink requests (they are re-sent on the next session). */
  get pendingRequests(): number {
    return this.requests.size;
  }

  /** Fails every pending request with `error` (the client is closing for good). */
  abandonRequests(error: Error): void {
    const pending = [...this.requests.values()];
    this.requests.clear();
    for (const r of pending) r.reject(error);
  }

  /** Moves pending requests to a new session (after a reconnect). */
  adoptRequests(from: DeviceSession): void {
    for (const [id, r] of from.requests) this.requests.set(id, r);
    from.requests.clear();
    this.requestId = Math.max(this.requestId, from.requestId);
  }

  nextDeadline(): number | undefined {
    // an ended session has nothing to do (its old deadlines would fire at once, forever)
    if (this.ended) return undefined;
    let min: number | undefined;
    const consider = (t: number): void => {
      if (t > 0 && (min === undefined || t < min)) min = t;
    };
    consider(this.helloDue);
    if (this.welcome !== undefined) {
      consider(this.pingDue);
      consider(this.refreshDue);
      consider(this.ackDue);
      for (const r of this.requests.values()) consider(r.dueAt);
    }
    return min;
  }

  onTimer(now: number): void {
    if (this.ended) return;
    this.now = now;
    if (this.helloDue > 0 && this.helloDue <= now) {
      if (this.welcome === undefined && now - this.lastHeard >= this.helloTimeoutMs) {
        // no answer at all (e.g. the server lost its DTLS sessions in a restart): stop repeating, reconnect
        this.helloDue = 0;
        this.emit("stale");
        return;
      }
      this.sendHello(now);
    }
    if (this.welcome !== undefined) {
      if (this.ackDue > 0 && this.ackDue <= now) {
        // the delayed ack is due: it goes with the next records taken (no deadline stays in the past)
        this.ackDue = 0;
        this.ackOwed ??= "due";
      }
      if (this.refreshDue > 0 && this.refreshDue <= now) {
        this.refreshDue = 0;
        this.sendHello(now); // refresh: Hello with the current token answers with a new Welcome
      }
      for (const r of this.requests.values()) {
        if (r.dueAt > now) continue;
        r.tries++;
        r.dueAt = now + Math.min(MAX_RETRY_MS, this.retryMs * 2 ** (r.tries - 1));
        this.queue(r.frame, now);
      }
      if (this.staleAfter > 0 && now - this.lastHeard >= this.staleAfter) {
        this.staleAfter = 0;
        this.emit("stale");
      }
      if (this.pingDue <= now) {
        // a Ping only after an interval in which nothing went out: any record tells the server we are here
        const interval = this.heartbeatMs;
        if (now - this.lastSent >= interval) {
          const repeat = this.takeAckRepeat();
          if (repeat !== undefined) this.queue(repeat, now);
          this.queue(encodeFrame({ kind: "ping", ping: { time: now } }), now);
          this.pingDue = now + interval;
        } else this.pingDue = this.lastSent + interval;
      }
    }
    this.wake();
  }

  private sendHello(now: number): void {
    this.helloFrame ??= encodeFrame({
      kind: "hello",
      hello: { version: 1, sessionToken: this.token, receivedSeq: this.persistedHwm, client: this.client },
    });
    this.helloTries++;
    this.helloDue = now + Math.min(MAX_RETRY_MS, this.retryMs * 2 ** (this.helloTries - 1));
    this.queue(this.helloFrame, now);
    this.wake();
  }

  /**
   * ackEvery, but at most half the server's window (Welcome.limits.window): a
   * server whose window is full waits for our ack, so with a small window the
   * ack must go before the window fills, not after the delay.
   */
  private ackEveryNow(): number {
    const window = this.welcome?.limits?.window ?? 0;
    return window > 0 ? Math.min(this.ackEvery, Math.max(1, Math.floor(window / 2))) : this.ackEvery;
  }

  /** Records to send now (includes an ack when one is due). */
  takeRecords(now: number): Uint8Array[] {
    if (this.welcome !== undefined && (this.ackOwed !== undefined || this.ackDue > 0)) {
      const ack = this.receiver.ack();
      // never acknowledge beyond what is persisted: a crash must not lose a message
      const cumulative = Math.min(ack.cumulative, this.persistedHwm);
      const last = this.lastAck;
      const covers = cumulative - (last?.cumulative ?? 0);
      if (this.ackOwed !== undefined || covers >= this.ackEveryNow() || this.ackDue <= now) {
        const immediate = this.ackOwed === "signal";
        this.ackOwed = undefined;
        this.ackDue = 0;
        const key = { cumulative, ranges: ack.ranges.map((r) => `${r.first}-${r.last}`).join(","), rejected: ack.rejected.at(-1) ?? 0 };
        // a delayed ack that would say exactly what the last one said is not worth a datagram
        if (immediate || last === undefined || last.cumulative !== key.cumulative || last.ranges !== key.ranges || last.rejected !== key.rejected) {
          this.lastAck = key;
          const frame: FrameInit = { kind: "ack", ack: { ...ack, cumulative } };
          this.ackToRepeat = encodeFrame(frame);
          this.queue(this.ackToRepeat, now);
        }
      }
    }
    const out = this.out;
    this.out = [];
    return out;
  }

  /**
   * The last Ack sent, once, to go with a Ping (a heartbeat, or the driver's
   * dead-server probe): nothing acknowledges an Ack, so a lost last one would
   * otherwise wait for the server's backed-off retransmission, holding the
   * pushes it covers in the server's window and their "delivered" receipts.
   * undefined when no Ack went since the last one repeated.
   */
  takeAckRepeat(): Uint8Array | undefined {
    const a = this.ackToRepeat;
    this.ackToRepeat = undefined;
    return a;
  }

  /** The driver sent a record of its own to the server (e.g. a dead-server probe): traffic, so no Ping is owed for an interval. */
  sentElsewhere(now: number): void {
    if (now > this.lastSent) this.lastSent = now;
  }

  private queue(frame: Uint8Array, now: number): void {
    this.out.push(frame);
    this.lastSent = now;
  }

  /** Ends the session: a Bye to the server. */
  bye(now: number): void {
    if (this.ended) return;
    // the last ack goes before the Bye (the server ignores what follows a Bye), delayed or not
    if (this.ackDue > 0) this.ackOwed ??= "due";
    const pending = this.takeRecords(now); // (takeRecords swaps this.out: read it after)
    this.out.push(...pending);
    this.ended = true;
    this.queue(encodeFrame({ kind: "bye", bye: {} }), now);
    this.wake();
  }

  private wake(): void {
    this.emit("wake");
  }
}

function answerError(e: WireErrorBody): MessagingError {
  return new MessagingError(messagingCodeOfWire(e.code), e.message || errorCodeName(e.code));
}
