import { EventEmitter } from "node:events";
import { ackOptionsProblem, DeviceSession } from "../messaging/device-session.ts";
import { MessagingError } from "../messaging/errors.ts";
import { createPushVerifier } from "../messaging/push-verifier.ts";
import type { CryptoProvider } from "../crypto/index.ts";
import { decodeSavedSession } from "../dtls/saved-session.ts";
import { DtlspushError } from "../util/errors.ts";
import { decodeFrame, encodeFrame, ErrorCode, errorCodeName, type FrameBody, type Push, type Welcome, type WireErrorBody } from "../wire/index.ts";
import { checkLivenessOptions, LivenessMonitor, type AnyFrame, type LivenessOptions } from "./liveness.ts";
import { memoryStateStore, type ClientState, type ClientStateStore } from "./state-store.ts";
import { openTransport, TransportError, type Transport, type TransportName, type TransportOptions } from "./transport.ts";

/** One server of `ConnectOptions.servers`. */
export interface ServerAddress {
  readonly host: string;
  readonly port: number;
}

export interface ConnectOptions extends Omit<TransportOptions, "host" | "port"> {
  /** the server (with `port`); or give `servers` instead */
  readonly host?: string;
  readonly port?: number;
  /**
   * several servers (nodes of one cluster), tried in this order: `connect` tries each once until one
   * answers; a later failure (unreachable, the session lost) moves to the next one, wrapping around,
   * each attempt after the reconnect backoff. Either `host`/`port` or `servers`, not both.
   */
  readonly servers?: readonly ServerAddress[];
  /** default "dtlspush" (our own DTLS client) */
  readonly transport?: TransportName;
  /** persistence of hwm/token/request ids; default in memory */
  readonly stateStore?: ClientStateStore;
  /** "auto" (default): a message counts as processed when the "message" listeners return; "manual": call `message.ack()` */
  readonly ackMode?: "auto" | "manual";
  /** automatic reconnection (default on): backoff from initialDelayMs doubling to maxDelayMs, with jitter */
  readonly reconnect?: false | { readonly initialDelayMs?: number; readonly maxDelayMs?: number };
  /** Hello/request retransmission timeout, ms (default 1000) */
  readonly retryMs?: number;
  /**
   * dead-server detection (default on): once a session has its Welcome, probe
   * with a Ping after `idleMs` of silence; a frame awaiting an answer (Hello,
   * Publish, Subscribe, Ping) unanswered for (probes + 1) RTOs ends the
   * session and reconnects. See docs/client-sdk.md for the bound. `false`
   * leaves only the heartbeat timeout (missed heartbeats, about two minutes
   * with the default server).
   */
  readonly liveness?: false | LivenessOptions;
  /**
   * delayed acks: an ack goes at most this long after the first push (or
   * processed message) it reports, ms (default 5; 0: at once, one ack per
   * event-loop turn). Adds at most this much to publish-to-ack latency and to
   * the server's round-trip samples; see docs/client-sdk.md.
   */
  readonly ackDelayMs?: number;
  /** ...or as soon as it acknowledges this many more messages, whichever comes first (default 4) */
  readonly ackEvery?: number;
  /** the crypto provider that checks the pushes' signatures and runs the DTLS handshake and records (default: the Node one, src/crypto) */
  readonly crypto?: CryptoProvider;
}

/** A verified push, handed to the application once, in seq order. */
export interface ReceivedMessage {
  readonly id: string;
  readonly seq: number;
  /** "" for a message to this device alone */
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly contentType: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly priority: number;
  readonly collapseKey: string;
  readonly publisher: string;
  /** the payload as UTF-8 text */
  text(): string;
  /** manual ack mode: the application is done with it (the next message follows) */
  ack(): void;
}

interface ClientEvents {
  message: [ReceivedMessage];
  /** a session is up (after every (re)connect) */
  connected: [Welcome];
  /** the session ended; a reconnect follows unless the client is closed or the server refused us */
  disconnected: [Error | undefined];
  /** a push whose signature did not verify: never handed over, acked as refused */
  rejected: [{ readonly seq: number; readonly messageId: string; readonly reason: string }];
  /** an Error frame from the server, or a failure the client cannot recover from alone */
  error: [Error];
  /** something the client recovered from by itself that the application should know (code "seq_reset") */
  warning: [ClientWarning];
}

/**
 * `seq_reset`: the server refused the persisted high-water mark (SEQ_AHEAD: its store lost seqs this
 * device saw, e.g. restored from an older backup). The client reset the mark to 0, persisted that and
 * said Hello again: messages whose seqs it had seen before may be new ones and are handed over
 * (at-least-once rather than loss). See docs/client-sdk.md.
 */
export interface ClientWarning {
  readonly code: "seq_reset";
  readonly message: string;
  /** the high-water mark before the reset */
  readonly previousHwm: number;
  /** the high-water mark after it (0) */
  readonly hwm: number;
}

/** Bye/Error codes after which reconnecting cannot help. */
const TERMINAL = new Set<number>([ErrorCode.DEVICE_REVOKED, ErrorCode.DEVICE_UNKNOWN, ErrorCode.SESSION_REPLACED]);

export class ClientError extends DtlspushError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "ClientError";
  }
}

function wireError(e: WireErrorBody | undefined, what: string): ClientError {
  const name = errorCodeName(e?.code ?? 0).toLowerCase();
  return new ClientError(name, `${what}: ${e?.message || name}`);
}

/**
 * A device connected to a dtlspush server: receives verified pushes exactly
 * once and in order, publishes and subscribes, reconnects and resumes by
 * itself. Made by `connect`.
 */
export class DtlspushClient extends EventEmitter<ClientEvents> {
  private readonly options: ConnectOptions;
  private readonly stateStore: ClientStateStore;
  private state: ClientState;
  private transport: Transport | undefined;
  private session: DeviceSession | undefined;
  private timer: NodeJS.Timeout | undefined;
  private flushQueued = false;
  private closed = false;
  private attempt = 0;
  /** the current attempt repeats one whose handshake timed out although the server answered */
  private retriedSame = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private readonly verifyPush: ReturnType<typeof createPushVerifier>;
  private saving: Promise<void> = Promise.resolve();
  private welcome: Welcome | undefined;
  /** a message that arrived while nobody listened for "message": handed over when a listener comes */
  private parked: { session: DeviceSession; push: Push } | undefined;
  /** dead-server detection; one per client so the RTT estimate outlives a session */
  private readonly liveness: LivenessMonitor | undefined;
  /**
   * the message the application holds (manual ack pending): a later session that offers the same seq
   * again (the server never got the ack) is not handed over twice; the application's ack settles it
   */
  private handedOut: { readonly seq: number; session: DeviceSession; acked: boolean } | undefined;
  /** ends the current session with an error (and fails its open() before the Welcome) */
  private failSession: { session: DeviceSession; fail: (error: Error) => void } | undefined;
  /** high-water mark resets so far: an ack of a message handed out before a reset must not raise the new mark */
  private resets = 0;
  /** the DTLS session offered on the next connect (persisted with the state); replaced by each new one */
  private dtlsSession: Uint8Array | undefined;
  /** the servers in order, and the one the current (or next) attempt goes to */
  private readonly servers: readonly ServerAddress[];
  private serverIndex = 0;
  /** DTLS sessions of the other servers ("host:port" -> session): failing over keeps them */
  private readonly otherDtlsSessions = new Map<string, Uint8Array>();
  /** `connect` is making the first session: it tries the servers itself, no background reconnect */
  private connecting = true;

  /** use `connect` */
  constructor(options: ConnectOptions, stateStore: ClientStateStore, state: ClientState) {
    super();
    this.options = options;
    this.verifyPush = createPushVerifier(options.crypto);
    this.stateStore = stateStore;
    this.state = state;
    this.servers = serverList(options);
    const saved = state.dtlsSession === undefined ? undefined : new Uint8Array(Buffer.from(state.dtlsSession, "base64"));
    for (const [key, text] of Object.entries(state.dtlsSessions ?? {})) this.otherDtlsSessions.set(key, new Uint8Array(Buffer.from(text, "base64")));
    this.takeDtlsSessionFor(this.servers[0] as ServerAddress, saved);
    if (options.liveness !== false) {
      const checked = checkLivenessOptions(options.liveness ?? {});
      if (typeof checked === "string") throw new ClientError("bad_option", checked);
      this.liveness = new LivenessMonitor(checked);
    }
    const ackProblem = ackOptionsProblem(options);
    if (ackProblem !== undefined) throw new ClientError("bad_option", ackProblem);
    // the typed event map has no "newListener"; it is an EventEmitter all the same
    (this as unknown as EventEmitter).on("newListener", (event: string | symbol) => {
      if (event !== "message" || this.parked === undefined) return;
      const { session, push } = this.parked;
      this.parked = undefined;
      setImmediate(() => this.deliver(session, push));
    });
  }

  /** The device id the server knows this device by (after the first Welcome). */
  get deviceId(): string {
    return this.welcome?.deviceId ?? "";
  }

  /** Topics this device receives (from the latest Welcome or Subscribed). */
  get topics(): readonly string[] {
    return this.welcome?.topics ?? [];
  }

  get connected(): boolean {
    return this.session?.welcomed !== undefined && this.transport !== undefined;
  }

  /** The server of the current session (or of the next attempt when there is none). */
  get server(): ServerAddress {
    return this.servers[this.serverIndex] as ServerAddress;
  }

  /** The highest seq processed and persisted. */
  get highWaterMark(): number {
    return this.state.hwm;
  }

  /** The DTLS session of the latest connection was resumed (an abbreviated handshake). */
  get resumed(): boolean {
    return this.transport?.resumed === true;
  }

  /**
   * A reconnect's first handshake retransmission: after the round trips of earlier sessions (liveness
   * RTO, which outlives a session), that RTO, at most RFC 6347's 1 s; before any, the transport's 1 s.
   * On a lossy path every lost flight then costs the path's RTO rather than a second.
   */
  private learnedHandshakeRetransmit(): number | undefined {
    const m = this.liveness;
    if (m?.smoothedRtt === undefined) return undefined;
    return Math.min(1000, m.rto); // the RTO is at least liveness.minRtoMs, itself at least 10
  }

  /** Opens one session; resolves at its Welcome, rejects when the transport or the server refuses. */
  async open(): Promise<Welcome> {
    const server = this.servers[this.serverIndex] as ServerAddress;
    this.takeDtlsSessionFor(server, this.dtlsSession);
    const offered = this.dtlsSession;
    const { servers: _servers, ...options } = this.options;
    const transport = await openTransport(this.options.transport ?? "dtlspush", {
      handshakeRetransmitMs: this.learnedHandshakeRetransmit(),
      ...options,
      host: server.host,
      port: server.port,
      ...(offered === undefined ? {} : { session: offered }),
    });
    if (this.closed) {
      await transport.close();
      throw new ClientError("closed", "the client was closed");
    }
    // a full handshake (the offer refused, or none made) brought a new session: it replaces the old one
    this.dtlsSession = transport.session ?? (transport.resumed === true ? offered : undefined);
    transport.onSession?.((s) => {
      if (this.transport !== transport) return;
      this.dtlsSession = s;
      this.saveState();
    });
    const session = new DeviceSession({
      hwm: this.state.hwm,
      sessionToken: this.state.sessionToken,
      nextRequestId: this.state.nextRequestId,
      verify: this.verifyPush,
      client: "dtlspush-sdk",
      helloTimeoutMs: this.options.timeoutMs ?? 10_000,
      ...(this.options.retryMs !== undefined ? { retryMs: this.options.retryMs } : {}),
      ...(this.options.ackDelayMs !== undefined ? { ackDelayMs: this.options.ackDelayMs } : {}),
      ...(this.options.ackEvery !== undefined ? { ackEvery: this.options.ackEvery } : {}),
    });
    const previous = this.session;
    if (previous !== undefined) session.adoptRequests(previous);
    this.session = session;
    this.transport = transport;
    this.liveness?.reset(Date.now()); // the handshake just completed: the server was alive
    return new Promise<Welcome>((resolve, reject) => {
      let welcomed = false;
      const fail = (err: Error): void => {
        if (!welcomed) reject(err);
        this.sessionEnded(session, err, false);
      };
      this.failSession = { session, fail };
      session.on("wake", () => this.queueFlush());
      session.on("welcome", (w) => {
        // topics may have changed by subscribe() since the first Welcome: the latest Welcome says them all
        this.welcome = w;
        this.saveState(); // a refresh brings a new token: keep it at once
        if (welcomed) return;
        welcomed = true;
        this.attempt = 0;
        this.retriedSame = false;
        this.emit("connected", w);
        resolve(w);
      });
      session.on("message", (push) => this.deliver(session, push));
      session.on("rejected", (push, reason) => {
        this.emit("rejected", { seq: push.seq, messageId: push.messageId, reason });
        this.saveState();
      });
      session.on("serverError", (e) => {
        if (this.listenerCount("error") > 0) this.emit("error", wireError(e, "the server reported an error"));
      });
      session.on("seqReset", (r) => this.resetHwm(session, r.previousHwm, r.error.message, fail));
      session.on("refused", (e) => {
        const err = wireError(e, "the server refused the Hello even with received_seq 0");
        if (!welcomed) reject(err);
        this.sessionEnded(session, err, true);
      });
      session.on("bye", (reason) => {
        const err = reason !== undefined && reason.code !== 0 ? wireError(reason, "the server ended the session") : undefined;
        const terminal = reason !== undefined && TERMINAL.has(reason.code);
        if (!welcomed && err !== undefined) reject(err);
        this.sessionEnded(session, err, terminal);
      });
      session.on("stale", () => {
        const err = welcomed
          ? new ClientError("stale", "no word from the server for several heartbeat intervals")
          : new ClientError("stale", "the server did not answer the Hello");
        fail(err);
      });
      transport.onRecord((r) => {
        if (this.session !== session) return;
        const now = Date.now();
        this.liveness?.heard(decodeQuietly(r), now);
        session.receive(r, now);
        this.armTimer();
      });
      transport.onClose((e) => {
        if (!welcomed) reject(e ?? new ClientError("closed", "the server closed the session before its Welcome"));
        this.sessionEnded(session, e, false);
      });
      session.start(Date.now());
      this.armTimer();
    });
  }

  private deliver(session: DeviceSession, push: Push): void {
    if (this.session !== session) return;
    const held = this.handedOut;
    if (held !== undefined && held.seq === push.seq && held.session !== session) {
      // offered again by a newer session while (or after) the application had it from an older one
      if (held.acked) {
        this.handedOut = undefined;
        session.processed(push.seq);
        this.saveState();
      } else {
        held.session = session; // the application's ack settles it in this session
      }
      return;
    }
    if (this.listenerCount("message") === 0) {
      // nobody would see it: auto ack would lose it
      this.parked = { session, push };
      return;
    }
    const handed = { seq: push.seq, session, acked: false };
    const resets = this.resets;
    this.handedOut = handed;
    let done = false;
    const ack = (): void => {
      if (done) return;
      done = true;
      if (this.resets !== resets) return; // the seqs it was numbered in are gone (resetHwm)
      const current = this.session;
      if (current === handed.session) {
        if (this.handedOut === handed) this.handedOut = undefined;
        current.processed(push.seq);
        this.saveState();
        return;
      }
      // the session it came in ended before this ack: processed all the same. Persist that now; the
      // current session skips the seq when the server offers it again (deliver, above)
      handed.acked = true;
      this.saveState(push.seq);
    };
    const message: ReceivedMessage = {
      id: push.messageId,
      seq: push.seq,
      topic: push.topic,
      payload: push.payload,
      contentType: push.contentType,
      createdAt: push.createdAt,
      expiresAt: push.expiresAt,
      priority: push.priority,
      collapseKey: push.collapseKey,
      publisher: push.publisher,
      text: () => new TextDecoder().decode(push.payload),
      ack,
    };
    try {
      this.emit("message", message);
    } catch (e) {
      // the application threw: not processed; offered again a second later
      if (this.handedOut === handed) this.handedOut = undefined;
      if (this.listenerCount("error") > 0) this.emit("error", e instanceof Error ? e : new Error(String(e)));
      setTimeout(() => this.deliver(session, push), 1000).unref();
      return;
    }
    if ((this.options.ackMode ?? "auto") === "auto") ack();
  }

  /**
   * The server answered SEQ_AHEAD to the Hello: its store lost seqs this device saw. Its numbering
   * wins: hwm 0 is persisted (after any save under way), the application is told ("warning"
   * seq_reset), and only then the session says Hello again with 0 (so a crash in between cannot bring
   * back the old mark against seqs the server assigns anew). A message the application holds from
   * before is forgotten: its ack changes nothing.
   */
  private resetHwm(session: DeviceSession, previousHwm: number, serverMessage: string, fail: (error: Error) => void): void {
    this.resets++;
    this.handedOut = undefined;
    this.parked = undefined;
    const next: ClientState = { hwm: 0, sessionToken: session.sessionToken, nextRequestId: session.nextRequestId, ...this.savedDtlsSession() };
    this.state = next;
    this.saving = this.saving
      .then(() => this.stateStore.save(next))
      .then(
        () => {
          if (this.session === session) {
            session.resetPersisted(Date.now());
            this.armTimer();
          }
          if (this.listenerCount("warning") === 0) return;
          const warning: ClientWarning = {
            code: "seq_reset",
            message: `the server does not know the high-water mark ${previousHwm} (its store lost those seqs: ${serverMessage}); reset to 0 — messages may be handed over again`,
            previousHwm,
            hwm: 0,
          };
          try {
            this.emit("warning", warning);
          } catch (e) {
            // a throwing listener must not break the chain of saves
            if (this.listenerCount("error") > 0) this.emit("error", e instanceof Error ? e : new Error(String(e)));
          }
        },
        (e: unknown) => fail(new ClientError("state_save_failed", `cannot save the reset device state: ${(e as Error).message}`, { cause: e })),
      );
  }

  /** Persists hwm (at least `processed`)/token/request id, then lets the session ack up to the persisted mark. */
  private saveState(processed = 0): void {
    const session = this.session;
    if (session === undefined) return;
    const next: ClientState = {
      hwm: Math.max(this.state.hwm, session.receiver.hwm, processed),
      sessionToken: session.sessionToken,
      nextRequestId: session.nextRequestId,
      ...this.savedDtlsSession(),
    };
    this.state = next;
    this.saving = this.saving
      .then(() => this.stateStore.save(next))
      .then(
        () => session.persisted(next.hwm, Date.now()),
        (e: unknown) => {
          if (this.listenerCount("error") > 0)
            this.emit("error", new ClientError("state_save_failed", `cannot save the device state: ${(e as Error).message}`, { cause: e }));
        },
      );
  }

  /** The DTLS sessions as ClientState keeps them (base64): the current server's, and the others' when there are. */
  private savedDtlsSession(): { dtlsSession?: string; dtlsSessions?: Record<string, string> } {
    const current = this.dtlsSession === undefined ? {} : { dtlsSession: Buffer.from(this.dtlsSession).toString("base64") };
    if (this.otherDtlsSessions.size === 0) return current;
    const others: Record<string, string> = {};
    for (const [key, s] of this.otherDtlsSessions) others[key] = Buffer.from(s).toString("base64");
    return { ...current, dtlsSessions: others };
  }

  /**
   * Makes `server`'s DTLS session the one offered next: `current` (the session held so far) is kept
   * for the server it was made with, unless that is `server`; sessions of servers not configured go.
   */
  private takeDtlsSessionFor(server: ServerAddress, current: Uint8Array | undefined): void {
    const key = serverKey(server);
    if (current !== undefined) {
      const madeWith = decodeSavedSession(current)?.server ?? key;
      if (madeWith !== key) this.otherDtlsSessions.set(madeWith, current);
      else this.otherDtlsSessions.delete(key);
      this.dtlsSession = madeWith === key ? current : undefined;
    } else {
      this.dtlsSession = undefined;
    }
    const mine = this.otherDtlsSessions.get(key);
    if (mine !== undefined) {
      this.dtlsSession = mine;
      this.otherDtlsSessions.delete(key);
    }
    const known = new Set(this.servers.map(serverKey));
    for (const k of [...this.otherDtlsSessions.keys()]) if (!known.has(k)) this.otherDtlsSessions.delete(k);
  }

  /** `connect`: the first session, trying each server once in order; rejects with the last failure. */
  async openFirst(): Promise<Welcome> {
    let failure: unknown;
    try {
      for (let i = 0; i < this.servers.length; i++) {
        if (this.closed) break;
        this.serverIndex = i;
        try {
          return await this.open();
        } catch (e) {
          failure = e;
        }
      }
      throw failure ?? new ClientError("closed", "the client was closed");
    } finally {
      this.connecting = false;
    }
  }

  private queueFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(() => {
      this.flushQueued = false;
      const s = this.session;
      const t = this.transport;
      if (s === undefined || t === undefined) return;
      const now = Date.now();
      const records = s.takeRecords(now);
      if (records.length > 0) {
        if (this.liveness !== undefined) {
          for (const r of records) {
            const f = decodeQuietly(r);
            if (f !== undefined) this.liveness.sent(f, now);
          }
        }
        try {
          t.send(records);
        } catch {
          // the transport is closing; its onClose handles the rest
        }
      }
      this.armTimer();
    });
  }

  private armTimer(): void {
    let at = this.session?.nextDeadline();
    // before a session's Welcome its Hello has its own timeout (timeoutMs): the handshake just showed the
    // server alive, and a server slow to answer Hellos (many devices reconnecting) must not get more handshakes
    if (this.liveness !== undefined && this.transport !== undefined && this.session?.welcomed !== undefined) {
      const probeAt = this.liveness.deadline();
      if (at === undefined || probeAt < at) at = probeAt;
    }
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (at === undefined || this.closed) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        const now = Date.now();
        this.session?.onTimer(now);
        this.checkLiveness(now);
        this.armTimer();
      },
      Math.max(0, at - Date.now()),
    );
    this.timer.unref();
  }

  /** Probes a silent server with a Ping; ends the session when (probes + 1) RTOs passed without a word. */
  private checkLiveness(now: number): void {
    const m = this.liveness;
    const s = this.session;
    const t = this.transport;
    if (m === undefined || s === undefined || t === undefined || s.welcomed === undefined) return;
    const action = m.onTimer(now);
    if (action === "probe") {
      const ping: FrameBody = { kind: "ping", ping: { time: now } };
      m.sent(ping, now);
      s.sentElsewhere(now); // the probe is traffic: no heartbeat Ping owed for an interval
      const repeat = s.takeAckRepeat(); // the last Ack once more: it may have been lost, and nothing else says so
      try {
        t.send(repeat === undefined ? [encodeFrame(ping)] : [repeat, encodeFrame(ping)]);
      } catch {
        // the transport is closing; its onClose handles the rest
      }
    } else if (action === "dead") {
      const f = this.failSession;
      if (f === undefined || f.session !== s) return;
      const { probes } = m.options;
      f.fail(
        new ClientError(
          "server_unresponsive",
          `no answer from the server for ${m.waitingFor(now)} ms (${probes} probe${probes === 1 ? "" : "s"}, RTO ${m.rto} ms): it lost our session or is down`,
        ),
      );
    }
  }

  private sessionEnded(session: DeviceSession, error: Error | undefined, terminal: boolean): void {
    if (this.session !== session || this.transport === undefined) return;
    const t = this.transport;
    this.transport = undefined;
    this.failSession = undefined;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    void t.close();
    this.emit("disconnected", error);
    if (terminal) {
      if (this.listenerCount("error") > 0 && error !== undefined) this.emit("error", error);
      this.closed = true;
      session.abandonRequests(error ?? new ClientError("closed", "the server ended the session for good"));
      return;
    }
    this.scheduleReconnect();
  }

  /**
   * `answered`: the failed attempt was a handshake timeout during which the server sent something: it
   * is up and the path loses datagrams, so it gets one more attempt before the next server (which, if
   * the path is the device's own, would be no better, and may be the dead server just left).
   */
  private scheduleReconnect(answered = false): void {
    if (this.closed || this.connecting || this.options.reconnect === false) return;
    // failover: every failed attempt or lost session moves on to the next server (wrapping around),
    // except a first timed-out handshake with a server that answered
    const again = answered && !this.retriedSame;
    this.retriedSame = again;
    if (!again) this.serverIndex = (this.serverIndex + 1) % this.servers.length;
    const r = this.options.reconnect ?? {};
    const base = r.initialDelayMs ?? 500;
    const max = r.maxDelayMs ?? 30_000;
    const delay = Math.min(max, base * 2 ** Math.min(this.attempt, 16)) * (0.5 + Math.random() / 2);
    this.attempt++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.closed || this.transport !== undefined) return;
      this.open().catch((e: unknown) => {
        if (this.closed) return;
        // a session that opened and then failed has already scheduled the next attempt (sessionEnded)
        if (this.transport === undefined && this.reconnectTimer === undefined)
          this.scheduleReconnect(e instanceof TransportError && e.serverAnswered);
        if (this.listenerCount("error") > 0) this.emit("error", e instanceof Error ? e : new Error(String(e)));
      });
    }, delay);
  }

  /** Publishes to a topic; resolves with the message id once the server holds it durably. */
  async publish(
    topic: string,
    payload: string | Uint8Array,
    options: { contentType?: string; ttlSeconds?: number; priority?: number } = {},
  ): Promise<string> {
    const s = this.requireSession();
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    const limit = this.welcome?.limits.maxPayload ?? 0;
    if (limit > 0 && bytes.byteLength > limit) {
      throw new ClientError("payload_too_large", `the payload is ${bytes.byteLength} bytes; the server takes at most ${limit}`);
    }
    const room = (this.transport?.maxRecordPayload ?? Infinity) - 64 - topic.length - (options.contentType?.length ?? 0);
    if (bytes.byteLength > room) {
      throw new ClientError(
        "payload_too_large",
        `the payload is ${bytes.byteLength} bytes; one record of this session carries at most about ${Math.max(0, room)}`,
      );
    }
    const p = s.publish(topic, bytes, options, Date.now());
    this.saveState(); // the request id counter moved
    this.armTimer();
    return mapAnswer(p, "publish refused");
  }

  /** Subscribes to topics; resolves with all topics this device now receives. */
  async subscribe(topics: readonly string[]): Promise<string[]> {
    return this.changeTopics(topics, true);
  }

  async unsubscribe(topics: readonly string[]): Promise<string[]> {
    return this.changeTopics(topics, false);
  }

  private async changeTopics(topics: readonly string[], add: boolean): Promise<string[]> {
    const s = this.requireSession();
    const p = s.subscribe(topics, add, Date.now());
    this.saveState();
    this.armTimer();
    const result = await mapAnswer(p, add ? "subscribe refused" : "unsubscribe refused");
    if (this.welcome !== undefined) this.welcome = { ...this.welcome, topics: result };
    return result;
  }

  private requireSession(): DeviceSession {
    if (this.closed || this.session === undefined) throw new ClientError("closed", "the client is closed");
    return this.session;
  }

  /** Says Bye, closes the DTLS session and stops reconnecting. */
  async close(): Promise<void> {
    if (this.closed && this.transport === undefined) return;
    this.closed = true;
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    if (this.timer !== undefined) clearTimeout(this.timer);
    const s = this.session;
    const t = this.transport;
    this.transport = undefined;
    await this.saving;
    if (s !== undefined && t !== undefined) {
      s.bye(Date.now());
      try {
        t.send(s.takeRecords(Date.now()));
      } catch {
        // already closing
      }
      await t.close();
    }
    s?.abandonRequests(new ClientError("closed", "the client was closed before the server answered"));
  }
}

const serverKey = (s: ServerAddress): string => `${s.host}:${s.port}`;

/** The servers of the options, in order: `servers`, or the one `host`/`port`. */
function serverList(options: ConnectOptions): readonly ServerAddress[] {
  if (options.servers !== undefined) {
    if (options.host !== undefined || options.port !== undefined) throw new ClientError("bad_option", "give either host/port or servers, not both");
    if (!Array.isArray(options.servers) || options.servers.length === 0)
      throw new ClientError("bad_option", "servers: give at least one {host, port}");
    for (const s of options.servers) {
      if (typeof s?.host !== "string" || s.host === "" || !Number.isInteger(s.port) || s.port < 1 || s.port > 65535) {
        throw new ClientError("bad_option", `servers: ${JSON.stringify(s)} is not {host, port} with a port in 1..65535`);
      }
    }
    return [...options.servers];
  }
  return [{ host: options.host as string, port: options.port as number }];
}

/** A frame, or undefined when the bytes do not decode (still a sign of life when they came from the server). */
function decodeQuietly(record: Uint8Array): AnyFrame | undefined {
  try {
    return decodeFrame(record);
  } catch {
    return undefined;
  }
}

async function mapAnswer<T>(p: Promise<T>, what: string): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof MessagingError) throw new ClientError(e.code, `${what}: ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * Connects a device: opens the DTLS session with the chosen transport, says
 * Hello (resuming with the persisted token), and resolves once the server's
 * Welcome arrives. Rejects when the first session cannot be made (bad
 * options, the handshake refused, timeout); later losses reconnect by
 * themselves.
 */
export async function connect(options: ConnectOptions): Promise<DtlspushClient> {
  const store = options.stateStore ?? memoryStateStore();
  const loaded = await store.load();
  // without persisted state, request ids start from the clock so that a restarted device never reuses
  // one (the server treats a repeated request id as a repeat of that publish)
  const client = new DtlspushClient(options, store, loaded ?? { hwm: 0, sessionToken: "", nextRequestId: Date.now() * 1000 });
  try {
    await client.openFirst();
  } catch (e) {
    await client.close(); // the caller never gets this client: it must not reconnect in the background
    throw e;
  }
  return client;
}
