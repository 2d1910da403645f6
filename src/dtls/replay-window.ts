/**
 * Anti-replay sliding window (RFC 6347 4.1.2.6) of WINDOW sequence numbers.
 * `check` is called before decrypting (cheap rejection), `accept` only after
 * the record authenticated, so forged records cannot move the window.
 *
 * The 128 bits are four int32 fields rather than a typed array: every session
 * has one window, and a Uint32Array costs a view, an ArrayBuffer and a backing
 * store (some 250 bytes) where four fields cost 32. A connection keeps the
 * fields itself (WindowState, no object of their own: 32 bytes less per
 * session) and calls replayCheck / replayAccept; ReplayWindow is the same
 * window as an object.
 */
export const REPLAY_WINDOW = 128;

/** The window: the highest sequence number accepted (-1 before the first) and 128 bits below and at it. */
export interface WindowState {
  replayMax: number;
  replay0: number;
  replay1: number;
  replay2: number;
  replay3: number;
}

/** True when seq is new: above the window or inside it and unseen. */
export function replayCheck(w: WindowState, seq: number): boolean {
  if (seq > w.replayMax) return true;
  if (seq <= w.replayMax - REPLAY_WINDOW) return false;
  const slot = seq % REPLAY_WINDOW;
  return (word(w, slot >>> 5) & (1 << (slot & 31))) === 0;
}

/** Marks seq as seen (after its record authenticated), moving the window up when seq is above it. */
export function replayAccept(w: WindowState, seq: number): void {
  if (seq > w.replayMax) {
    const advance = seq - w.replayMax;
    if (advance >= REPLAY_WINDOW) {
      w.replay0 = w.replay1 = w.replay2 = w.replay3 = 0;
    } else {
      for (let s = w.replayMax + 1; s < seq; s++) clear(w, s % REPLAY_WINDOW);
    }
    w.replayMax = seq;
  }
  const slot = seq % REPLAY_WINDOW;
  setWord(w, slot >>> 5, word(w, slot >>> 5) | (1 << (slot & 31)));
}

export class ReplayWindow implements WindowState {
  replayMax = -1;
  replay0 = 0;
  replay1 = 0;
  replay2 = 0;
  replay3 = 0;

  check(seq: number): boolean {
    return replayCheck(this, seq);
  }

  accept(seq: number): void {
    replayAccept(this, seq);
  }

  /** Highest sequence number accepted so far, -1 before the first. */
  get highest(): number {
    return this.replayMax;
  }
}

function clear(w: WindowState, slot: number): void {
  setWord(w, slot >>> 5, word(w, slot >>> 5) & ~(1 << (slot & 31)));
}

function word(w: WindowState, i: number): number {
  switch (i) {
    case 0:
      return w.replay0;
    case 1:
      return w.replay1;
    case 2:
      return w.replay2;
    default:
      return w.replay3;
  }
}

function setWord(w: WindowState, i: number, v: number): void {
  switch (i) {
    case 0:
      w.replay0 = v;
      break;
    case 1:
      w.replay1 = v;
      break;
    case 2:
      w.replay2 = v;
      break;
    default:
      w.replay3 = v;
  }
}
