import { DeviceRegistry, issueSessionToken, verifySessionToken, type KeyRing } from "../auth/index.ts";
import { decodeFrame, ErrorCode, WireError, type Hello } from "../wire/index.ts";
import type { SessionLink } from "./delivery-types.ts";
import type { Device, EngineEnv, EngineParts, SessionsPart } from "./engine-parts.ts";
import { bindLink, isOpen, moveLink, newLink, type BoundLink, type LinkState } from "./link-state.ts";
import type { FrameRefusal } from "./observer.ts";
import { decodeLinkSnapshot, encodeLinkSnapshot, type LinkRestoreOutcome } from "./link-snapshot.ts";
import { wireErrorCode } from "./wire-errors.ts";

/** Pushes go again for a lost Welcome at most this often per session (an SDK repeats Hello after 1 s, doubling). */
const LOST_WELCOME_RESEND_MS = 250;

/**
 * The engine's DTLS sessions: attach and detach, each record read and
 * dispatched, Hello answered with Welcome (the session is then bound to its
 * device), heartbeat timeouts, Bye and close. Owns the sessions by link, the
 * Hellos being verified and the JWKS sent in Welcome.
 */
export class Sessions implements SessionsPart {
  private readonly env: EngineEnv;
  private readonly parts: EngineParts;
  private readonly sessionKeys: KeyRing;
  private readonly contentKeys: KeyRing;
  private readonly links = new Map<SessionLink, LinkState>();
  /** sessions with a Hello being verified (the device repeats Hello until Welcome; one at a time) */
  private readonly hellos = new Set<LinkState>();
  private jwksJson: string;

  constructor(env: EngineEnv, parts: EngineParts, keys: { readonly sessionKeys: KeyRing; readonly contentKeys: KeyRing }) {
    this.env = env;
    this.parts = parts;
    this.sessionKeys = keys.sessionKeys;
    this.contentKeys = keys.contentKeys;
    this.jwksJson = JSON.stringify(this.contentKeys.jwks());
  }

  /** Hellos waiting for a token (asynchronous crypto). */
  get pendingHellos(): number {
    return this.hellos.size;
  }

  /** Call after rotating the content-signing keys, so Welcome carries the new JWKS. */
  keysChanged(): void {
    this.jwksJson = JSON.stringify(this.contentKeys.jwks());
  }

  attach(link: SessionLink): void {
    const now = this.env.clock.now();
    const ls = newLink(link, this.env.newId(), now);
    this.links.set(link, ls);
    this.env.timers.schedule(ls, now + this.heartbeatTimeout());
    this.parts.turn.wake();
  }

  /**
   * What the session is to the engine, for a daemon restart (link-snapshot.ts):
   * its session id and bound device. Undefined for a session told Bye or
   * closed, or with a Hello being verified (it says Hello again after the
   * restart: its Welcome never left).
   */
  exportLink(link: SessionLink): Uint8Array | undefined {
    const ls = this.links.get(link);
    if (ls === undefined || !isOpen(ls) || this.hellos.has(ls)) return undefined;
    return encodeLinkSnapshot({ sessionId: ls.sessionId, deviceId: ls.phase === "bound" ? ls.device.id : "" });
  }

  /**
   * A session carried over a daemon restart: attached with its session id,
   * and bound again to its device without Hello/Welcome when that device is
   * still registered, enabled and the session's identity still names it
   * (else Bye, and the device reconnects). Whatever the device had in flight
   * is sent again (it de-duplicates by seq), then its queue goes on.
   */
  attachRestored(link: SessionLink, saved: Uint8Array): LinkRestoreOutcome {
    const snap = decodeLinkSnapshot(saved);
    const now = this.env.clock.now();
    const ls = newLink(link, snap?.sessionId ?? this.env.newId(), now);
    this.links.set(link, ls);
    this.env.timers.schedule(ls, now + this.heartbeatTimeout());
    this.parts.turn.wake();
    const outcome = this.rebind(ls, snap?.deviceId, now);
    this.env.observer.linkRestored(outcome);
    return outcome;
  }

  private rebind(ls: LinkState, deviceId: string | undefined, now: number): LinkRestoreOutcome {
    if (deviceId === undefined) {
      this.bye(ls, ErrorCode.INTERNAL, "this session could not be restored after the server's restart; reconnect");
      return "damaged";
    }
    if (deviceId === "") return "unbound";
    const { registry } = this.env;
    const current = registry.get(deviceId);
    if (current?.revoked === true) {
      this.bye(ls, ErrorCode.DEVICE_REVOKED, `device ${deviceId} is revoked`);
      return "device_revoked";
    }
    if (current === undefined || registry.deviceForSession(ls.link.identity, ls.link.viaCertificate)?.id !== deviceId) {
      this.bye(ls, ErrorCode.DEVICE_UNKNOWN, `no enabled device has the identity ${JSON.stringify(ls.link.identity)}`);
      return "device_unknown";
    }
    if (!this.parts.holds.held(deviceId)) {
      // a shared store: the device's queue is loaded first (its claim), then the session is bound as below
      this.held(ls, deviceId).then(
        (ok) => {
          if (ok) this.isolatedLink(ls, () => this.rebound(ls, deviceId, this.env.clock.now()));
        },
        (e: unknown) => this.failDevice(ls, deviceId, e),
      );
      return "bound";
    }
    this.rebound(ls, deviceId, now);
    return "bound";
  }

  private rebound(ls: LinkState, deviceId: string, now: number): void {
    const dev = this.env.devices.queue(deviceId);
    this.bind(ls, dev, now);
    this.parts.window.resendAll(dev, now);
    this.parts.window.pump(dev, now);
  }

  detach(link: SessionLink): void {
    const ls = this.links.get(link);
    if (ls === undefined) return;
    this.links.delete(link);
    this.env.timers.cancel(ls);
    this.parts.turn.dropRecords(ls);
    this.unbind(ls, "closed");
  }

  receive(link: SessionLink, record: Uint8Array): void {
    const ls = this.links.get(link);
    // a session told Bye is closed after this turn: nothing it says now is served
    if (ls === undefined || !isOpen(ls) || this.parts.turn.stopped) return;
    try {
      this.receiveFrame(ls, record);
    } catch (e) {
      this.failDevice(ls, ls.device?.id ?? "", e);
    }
  }

  private receiveFrame(ls: LinkState, record: Uint8Array): void {
    const now = this.env.clock.now();
    ls.lastHeard = now;
    if (ls.phase === "bound") ls.device.lastSeen = now;
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
    if (ls.phase !== "bound") {
      this.refuse(ls, "hello_required", ErrorCode.HELLO_REQUIRED, `${frame.kind} before Welcome: send Hello first`);
      return;
    }
    const dev = ls.device;
    const { window, topics, publishing } = this.parts;
    switch (frame.kind) {
      case "ack":
        ls.ackedSinceWelcome = true;
        window.ack(ls, dev, frame.ack, now);
        break;
      case "ping":
        this.parts.turn.send(ls, { kind: "pong", pong: { time: frame.ping.time, serverTime: now } });
        break;
      case "publish":
        publishing.uplinkPublish(ls, dev, frame.publish);
        break;
      case "subscribe":
        topics.subscribe(ls, dev, frame.subscribe.requestId, frame.subscribe.topics, true);
        break;
      case "unsubscribe":
        topics.subscribe(ls, dev, frame.unsubscribe.requestId, frame.unsubscribe.topics, false);
        break;
      default:
        // frames only the server sends
        this.refuse(ls, "server_frame", ErrorCode.BAD_FRAME, `a device does not send ${frame.kind}`);
    }
  }

  private async hello(ls: LinkState, hello: Hello): Promise<void> {
    if (this.hellos.has(ls)) return; // the device repeats Hello until Welcome; one at a time
    this.hellos.add(ls);
    try {
      await this.helloInner(ls, hello);
    } catch (e) {
      this.failDevice(ls, ls.device?.id ?? "", e);
    } finally {
      this.hellos.delete(ls);
    }
  }

  private async helloInner(ls: LinkState, hello: Hello): Promise<void> {
    const { link } = ls;
    const { registry, clock, options } = this.env;
    const { turn, window } = this.parts;
    if (turn.closing) {
      this.bye(ls, ErrorCode.SHUTTING_DOWN, "the server is shutting down");
      return;
    }
    if (hello.version === 0) {
      this.refuse(ls, "unsupported_version", ErrorCode.UNSUPPORTED_VERSION, "Hello.version 0: this server speaks version 1");
      return;
    }
    const record = registry.deviceForSession(link.identity, link.viaCertificate);
    if (record === undefined) {
      this.bye(ls, ErrorCode.DEVICE_UNKNOWN, `no enabled device has the identity ${JSON.stringify(link.identity)}`);
      return;
    }
    // on a shared store the device's queue is loaded here when no session of this node holds it
    if (!(await this.held(ls, record.id))) return;
    // received_seq is a claim: the store is durable, so a device cannot have seen a seq above the last
    // one this server assigned it. A higher one is a lie or state from another server (or from a store
    // restored from an older copy): refused, never stored (storing it would let one device push the
    // counter to 2^53-1 and make its next push impossible). SEQ_AHEAD (not BAD_FRAME) tells an honest
    // device apart: it resets its high-water mark to 0 and says Hello again. lastSeq only grows, so this
    // check, made before the awaits below, still holds after them.
    const known = this.env.devices.queue(record.id);
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
          now: clock.now(),
        });
        resumed = true;
      } catch (e) {
        if (!isOpen(ls)) return;
        // the device may send a Hello without a token: its DTLS identity is enough for a fresh session
        this.refuse(ls, "token_refused", wireErrorCode(e), `session token refused: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
    }
    const issued = await issueSessionToken(this.sessionKeys, {
      deviceId: record.id,
      identity,
      sessionId: ls.sessionId,
      now: clock.now(),
      ttlSeconds: options.sessionTokenTtlSeconds,
    });
    // a session told Bye meanwhile (replaced, revoked, shutdown) is not bound again
    if (!isOpen(ls) || turn.stopped) return;
    // the hold may have been given up meanwhile (the device's other session ended): taken again
    if (!(await this.held(ls, record.id))) return;
    const current = registry.get(record.id);
    if (current === undefined || current.revoked) {
      this.bye(ls, ErrorCode.DEVICE_REVOKED, `device ${record.id} is revoked`);
      return;
    }
    const now = clock.now();
    const dev = this.env.devices.queue(record.id);
    const fresh = ls.device !== dev;
    const bound = fresh ? this.bind(ls, dev, now) : (ls as BoundLink);
    // at most lastSeq (checked above): everything up to it was processed by the device
    window.cumulative(dev, hello.receivedSeq, now);
    turn.send(bound, {
      kind: "welcome",
      welcome: {
        version: 1,
        deviceId: record.id,
        sessionToken: issued.token,
        tokenExpiresAt: issued.expiresAt,
        heartbeatIntervalMs: options.heartbeatIntervalMs,
        serverTime: now,
        jwks: this.jwksJson,
        limits: {
          maxPayload: this.parts.publishing.uplinkPayloadLimit(record.id),
          window: options.window,
          maxTopics: options.maxTopics,
        },
        resumed,
        ackedSeq: dev.ackedSeq,
        topics: this.parts.topics.topicsOf(dev),
      },
    });
    // a new session: whatever was in flight may never have arrived. A Hello again on this session
    // with no Ack since the last Welcome: that Welcome was lost, and the pushes behind it were dropped
    // by the device (it takes none before its Welcome): sent again now, behind this one, rather than
    // at their backed-off timers (a lossy path would otherwise lose the whole first window to it)
    // (at most once per LOST_WELCOME_RESEND_MS: a Hello costs a device nothing, a window of pushes costs the server)
    const lostWelcome = !fresh && !bound.ackedSinceWelcome && now - bound.lostWelcomeResentAt >= LOST_WELCOME_RESEND_MS;
    if (lostWelcome) bound.lostWelcomeResentAt = now;
    bound.ackedSinceWelcome = false;
    if (fresh || lostWelcome) window.resendAll(dev, now);
    window.pump(dev, now);
  }

  /** Claims the device's hold when not held (shared stores); false when the session can no longer be served. */
  private async held(ls: LinkState, device: string): Promise<boolean> {
    const { holds, turn } = this.parts;
    if (holds.held(device)) return true;
    await holds.claim(device);
    if (isOpen(ls) && turn.stopped === undefined) return holds.held(device);
    // the session ended during the claim: the hold is given up again unless another session binds the device
    const dev = this.env.devices.get(device);
    if (dev !== undefined && dev.link === undefined) holds.offline(dev);
    return false;
  }

  /** The device's session moved to another node (its hold was taken): Bye, and nothing not yet sent goes to it. */
  moved(dev: Device): void {
    const ls = dev.link;
    if (ls === undefined) return;
    this.parts.turn.silence(ls);
    this.bye(ls, ErrorCode.SESSION_REPLACED, "the device's session moved to another node");
  }

  private bind(ls: LinkState, dev: Device, now: number): BoundLink {
    const old = dev.link;
    if (old !== undefined && old !== ls) {
      // the device's pushes stay online (on this session): the old one just leaves and is told Bye
      this.bye(moveLink(old, "hello"), ErrorCode.SESSION_REPLACED, `a newer session of device ${dev.id} took over`);
    }
    if (ls.phase === "bound" && ls.device !== dev) this.unbind(ls, "hello");
    if (dev.link === undefined) this.parts.window.online(dev);
    const bound = bindLink(ls, dev);
    dev.link = bound;
    dev.lastSeen = now;
    this.env.notify("presence", { device: dev.id, online: true, at: now, peer: ls.link.peer });
    return bound;
  }

  /** The session leaves its device (if bound) for `phase`; the device goes offline if this was its session. */
  private unbind(ls: LinkState, phase: "hello" | "closing" | "closed"): void {
    const dev = ls.device;
    moveLink(ls, phase);
    if (dev === undefined || dev.link !== ls) return;
    dev.link = undefined;
    this.parts.window.offline(dev);
    this.parts.holds.offline(dev);
    this.env.notify("presence", { device: dev.id, online: false, at: this.env.clock.now(), peer: ls.link.peer });
  }

  private heartbeatTimeout(): number {
    const o = this.env.options;
    return o.heartbeatIntervalMs * o.missedHeartbeats + Math.ceil(o.heartbeatIntervalMs / 2);
  }

  /** The session's heartbeat timer ran out: closed if nothing was heard for the timeout, else the timer moves. */
  heartbeatDue(ls: LinkState, now: number): void {
    if (ls.phase === "closed") return;
    const quietUntil = ls.lastHeard + this.heartbeatTimeout();
    if (quietUntil > now) {
      this.env.timers.schedule(ls, quietUntil);
      return;
    }
    // missed heartbeats: offline; its queue stays
    this.isolatedLink(ls, () => this.closeLink(ls));
  }

  /** Says Bye to every session (shutdown). */
  byeAll(code: number, message: string): void {
    for (const ls of this.links.values()) this.bye(ls, code, message);
  }

  refuse(ls: LinkState, cause: FrameRefusal, code: number, message: string): void {
    this.env.observer.frameRefused(cause);
    this.parts.turn.send(ls, { kind: "error", error: { code, message } });
  }

  isolated(dev: Device, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      const ls = dev.link;
      if (ls === undefined) this.env.reportFailure("device", dev.id, e);
      else this.failDevice(ls, dev.id, e);
    }
  }

  isolatedLink(ls: LinkState, fn: () => void): void {
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
  failDevice(ls: LinkState, device: string, error: unknown): void {
    this.env.reportFailure("device", device, error);
    if (ls.phase === "closed") return;
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

  bye(ls: LinkState, code: number, message: string): void {
    if (!isOpen(ls)) return;
    this.parts.turn.send(ls, { kind: "bye", bye: { reason: { code, message } } });
    this.unbind(ls, "closing");
    this.parts.turn.afterFlush(() => this.closeLink(ls));
  }

  private closeLink(ls: LinkState): void {
    if (ls.phase === "closed") return;
    this.unbind(ls, "closed");
    this.env.timers.cancel(ls);
    this.links.delete(ls.link);
    ls.link.close();
  }
}
