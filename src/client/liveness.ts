/**
 * Dead-server detection for the device SDK, sans-I/O (the caller passes the
 * time). A server that lost our DTLS session (a restart, a crash, a failover)
 * drops our records without a word: DTLS cannot tell us. So the device asks:
 *
 * - Every frame that wants an answer (Hello -> Welcome, Publish -> PublishAck,
 *   Subscribe/Unsubscribe -> Subscribed, Ping -> Pong) starts a wait, unless
 *   one is already running. Any record from the server ends it: the server
 *   is alive.
 * - After `idleMs` without a record from the server and nothing waiting, the
 *   device sends a probe (a Ping), which starts a wait.
 * - A wait unanswered for one RTO sends a probe; every further RTO another,
 *   up to `probes`; one RTO after the last probe the server is dead: the
 *   client closes the session and reconnects (a new handshake).
 *
 * So a dead server is noticed (probes + 1) x RTO after the first unanswered
 * frame, and at most idleMs + (probes + 1) x RTO after the last record heard.
 * (The client consults it once a session has its Welcome; before that the
 * Hello has its own timeout.)
 *
 * The RTO comes from round trips (RFC 6298): Ping/Pong pairs (the Pong echoes
 * the Ping's time) and request/answer pairs (by request id; Hello/Welcome),
 * never from a retransmitted request (Karn), clamped to [minRtoMs, maxRtoMs].
 * The estimate outlives a session: a reconnect starts with what was learned.
 */
import { RttEstimator } from "../messaging/rtt-estimator.ts";
import type { FrameBody, UnknownFrameBody } from "../wire/index.ts";

/** A decoded frame (a body this version does not know included). */
export type AnyFrame = FrameBody | UnknownFrameBody;

export interface LivenessOptions {
  /** silence from the server (nothing waiting for an answer) after which the device probes with a Ping, ms (default 15 000) */
  readonly idleMs?: number;
  /** unanswered probes, one RTO apart, before the server counts as dead (default 3) */
  readonly probes?: number;
  /** the RTO's floor, ms (default 1000: a server busy for a moment is not dead) */
  readonly minRtoMs?: number;
  /** the RTO's ceiling, ms (default 4000) */
  readonly maxRtoMs?: number;
}

export interface CheckedLivenessOptions {
  readonly idleMs: number;
  readonly probes: number;
  readonly minRtoMs: number;
  readonly maxRtoMs: number;
}

export const LIVENESS_DEFAULTS: CheckedLivenessOptions = { idleMs: 15_000, probes: 3, minRtoMs: 1000, maxRtoMs: 4000 };

/** What the driver does after `onTimer`. */
export type LivenessAction = "probe" | "dead" | undefined;

/** RFC 6298 clock granularity term, ms. */
const GRANULARITY_MS = 10;
/** Round trips being timed at once (older ones are forgotten: a lost Pong must not pile up). */
const MAX_TIMED = 64;

/** Checks the options: whole numbers in range, floor <= ceiling. Returns the message of the first problem. */
export function checkLivenessOptions(o: LivenessOptions): CheckedLivenessOptions | string {
  const c: CheckedLivenessOptions = { ...LIVENESS_DEFAULTS, ...definedOnly(o) };
  const bad = (name: keyof CheckedLivenessOptions, min: number, max: number): string | undefined => {
    const v = c[name];
    return Number.isSafeInteger(v) && v >= min && v <= max
      ? undefined
      : `liveness.${name} must be a whole number from ${min} to ${max}, got ${String(v)}`;
  };
  const problem = bad("idleMs", 100, 86_400_000) ?? bad("probes", 0, 100) ?? bad("minRtoMs", 10, 600_000) ?? bad("maxRtoMs", 10, 600_000);
  if (problem !== undefined) return problem;
  if (c.minRtoMs > c.maxRtoMs) return `liveness.minRtoMs (${c.minRtoMs}) must not exceed liveness.maxRtoMs (${c.maxRtoMs})`;
  return c;
}

function definedOnly(o: LivenessOptions): Partial<CheckedLivenessOptions> {
  const out: { -readonly [K in keyof CheckedLivenessOptions]?: number } = {};
  for (const k of ["idleMs", "probes", "minRtoMs", "maxRtoMs"] as const) {
    const v = o[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

export class LivenessMonitor {
  readonly options: CheckedLivenessOptions;
  private readonly rtt: RttEstimator;
  private lastHeard = 0;
  /** when the oldest frame still waiting for a word from the server went out */
  private waitingSince: number | undefined;
  /** RTO in force for the current wait (fixed when it starts) */
  private waitRto = 0;
  private probesSent = 0;
  /** frames being timed: key -> send time, or -1 once sent twice (no sample: Karn) */
  private readonly timed = new Map<string, number>();

  constructor(options: CheckedLivenessOptions = LIVENESS_DEFAULTS) {
    this.options = options;
    this.rtt = new RttEstimator({
      initialRto: options.minRtoMs,
      minRto: options.minRtoMs,
      maxRto: options.maxRtoMs,
      granularity: GRANULARITY_MS,
      maxBackoff: options.maxRtoMs,
    });
  }

  /** The current retransmission timeout, ms. */
  get rto(): number {
    return Math.ceil(this.rtt.rto);
  }

  /** The smoothed round-trip time, ms (undefined before the first sample). */
  get smoothedRtt(): number | undefined {
    return this.rtt.smoothed;
  }

  /** A new session (the handshake just completed: the server was alive at `now`). The RTT estimate stays. */
  reset(now: number): void {
    this.lastHeard = now;
    this.waitingSince = undefined;
    this.probesSent = 0;
    this.timed.clear();
  }

  /** A frame went to the server. */
  sent(frame: AnyFrame, now: number): void {
    const key = timingKey(frame, "out");
    if (key === undefined) return; // acks, Bye: no answer expected
    const before = this.timed.get(key);
    if (before !== undefined) this.timed.set(key, -1);
    else {
      if (this.timed.size >= MAX_TIMED) this.timed.delete(this.timed.keys().next().value as string);
      this.timed.set(key, now);
    }
    if (this.waitingSince === undefined) this.startWait(now);
  }

  private startWait(now: number): void {
    this.waitingSince = now;
    this.waitRto = this.rto;
    this.probesSent = 0;
  }

  /** A record came from the server (`frame` undefined when it did not decode: still a sign of life). */
  heard(frame: AnyFrame | undefined, now: number): void {
    this.lastHeard = now;
    this.waitingSince = undefined;
    this.probesSent = 0;
    const key = frame === undefined ? undefined : timingKey(frame, "in");
    if (key === undefined) return;
    const sentAt = this.timed.get(key);
    if (sentAt === undefined) return; // an answer to nothing we timed (or a claim): no sample
    this.timed.delete(key);
    if (sentAt >= 0 && now >= sentAt) this.rtt.sample(now - sentAt); // RFC 6298 2.2-2.4, clamped
  }

  /** When `onTimer` must run next. */
  deadline(): number {
    if (this.waitingSince === undefined) return this.lastHeard + this.options.idleMs;
    return this.waitingSince + (this.probesSent + 1) * this.waitRto;
  }

  /**
   * "probe": send a Ping now (and report it with `sent`); "dead": nothing
   * heard for (probes + 1) RTOs while waiting: end the session.
   */
  onTimer(now: number): LivenessAction {
    if (now < this.deadline()) return undefined;
    if (this.waitingSince === undefined) {
      // idle: the probe starts a wait (even if the driver cannot send one yet)
      this.startWait(now);
      return "probe";
    }
    if (this.probesSent < this.options.probes) {
      this.probesSent++;
      return "probe";
    }
    return "dead";
  }

  /** How long the current wait has lasted (0 when nothing waits). */
  waitingFor(now: number): number {
    return this.waitingSince === undefined ? 0 : now - this.waitingSince;
  }
}

/** Pairs a frame with its answer: the same key for a request going out and its answer coming in. */
function timingKey(frame: AnyFrame, way: "out" | "in"): string | undefined {
  if (way === "out") {
    switch (frame.kind) {
      case "hello":
        return "hello";
      case "ping":
        return `ping ${frame.ping.time}`;
      case "publish":
        return `req ${frame.publish.requestId}`;
      case "subscribe":
        return `req ${frame.subscribe.requestId}`;
      case "unsubscribe":
        return `req ${frame.unsubscribe.requestId}`;
      default:
        return undefined;
    }
  }
  switch (frame.kind) {
    case "welcome":
      return "hello";
    case "pong":
      return `ping ${frame.pong.time}`;
    case "publishAck":
      return `req ${frame.publishAck.requestId}`;
    case "subscribed":
      return `req ${frame.subscribed.requestId}`;
    default:
      return undefined;
  }
}
