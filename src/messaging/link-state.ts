import type { DeviceQueue } from "./device-queue.ts";
import type { SessionLink } from "./delivery-types.ts";

/**
 * One DTLS session as the engine tracks it, in one of four phases:
 * - `hello`: attached, no Hello accepted yet (or its device was taken over by
 *   a newer session just before it is told Bye);
 * - `bound`: a Welcome was sent; the session carries its device's traffic
 *   (`device.link` is this session);
 * - `closing`: told Bye; closed once this turn's records are sent; nothing it
 *   says any more is served;
 * - `closed`: ended (close_notify sent or received); nothing is sent to it.
 * Only a bound session has a device. Every session is one object whose phase
 * moves through the functions below (no object per phase: a daemon holds many
 * idle sessions).
 */
export type LinkState = AwaitingHello | BoundLink | ClosingLink | ClosedLink;

interface LinkBase {
  readonly kind: "link";
  readonly link: SessionLink;
  readonly sessionId: string;
  /** the last time a record arrived on the session, ms */
  lastHeard: number;
}

export interface AwaitingHello extends LinkBase {
  readonly phase: "hello";
  readonly device: undefined;
}

export interface BoundLink extends LinkBase {
  readonly phase: "bound";
  readonly device: DeviceQueue<BoundLink>;
  /**
   * An Ack came since the last Welcome: the device has a Welcome (it drops
   * pushes until it does). A Hello again without one means that Welcome was
   * lost, and with it every push sent behind it.
   */
  ackedSinceWelcome: boolean;
  /** when pushes were last sent again for a lost Welcome, ms (a device repeating Hello faster gets only Welcomes) */
  lostWelcomeResentAt: number;
}

export interface ClosingLink extends LinkBase {
  readonly phase: "closing";
  readonly device: undefined;
}

export interface ClosedLink extends LinkBase {
  readonly phase: "closed";
  readonly device: undefined;
}

/** The one runtime shape of every LinkState. */
class LinkRecord {
  readonly kind = "link";
  phase: LinkState["phase"] = "hello";
  device: DeviceQueue<BoundLink> | undefined = undefined;
  readonly link: SessionLink;
  readonly sessionId: string;
  lastHeard: number;
  ackedSinceWelcome = false;
  lostWelcomeResentAt = -Infinity;

  constructor(link: SessionLink, sessionId: string, now: number) {
    this.link = link;
    this.sessionId = sessionId;
    this.lastHeard = now;
  }
}

export function newLink(link: SessionLink, sessionId: string, now: number): AwaitingHello {
  return new LinkRecord(link, sessionId, now) as AwaitingHello;
}

/** The session now carries `device`'s traffic (the caller sets `device.link`). */
export function bindLink(ls: LinkState, device: DeviceQueue<BoundLink>): BoundLink {
  const r = ls as unknown as LinkRecord;
  r.phase = "bound";
  r.device = device;
  return r as unknown as BoundLink;
}

/** The session leaves its device (if any) for `phase` (the caller clears `device.link`). */
export function moveLink<P extends "hello" | "closing" | "closed">(ls: LinkState, phase: P): Extract<LinkState, { phase: P }> {
  const r = ls as unknown as LinkRecord;
  r.phase = phase;
  r.device = undefined;
  return r as unknown as Extract<LinkState, { phase: P }>;
}

/** Open: frames from the session are served and records go to it. */
export function isOpen(ls: LinkState): ls is AwaitingHello | BoundLink {
  return ls.phase === "hello" || ls.phase === "bound";
}
