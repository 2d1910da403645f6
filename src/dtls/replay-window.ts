/**
 * Anti-replay sliding window (RFC 6347 4.1.2.6) of WINDOW sequence numbers.
 * `check` is called before decrypting (cheap rejection), `accept` only after
 * the record authenticated, so forged records cannot move the window.
 *
 * The 128 bits are four int32 fields rather than a typed array: every session
 * has one window, and a Uint32Array costs a view, an ArrayBuffer and a backing
 * store (some 250 bytes) where four fields cost 32.
 */
export const REPLAY_WINDOW = 128;

export class ReplayWindow {
  private max = -1;
  private w0 = 0;
  private w1 = 0;
  private w2 = 0;
  private w3 = 0;

  /** True when seq is new: above the window or inside it and unseen. */
  check(seq: number): boolean {
    if (seq > this.max) return true;
    if (seq <= this.max - REPLAY_WINDOW) return false;
    const slot = seq % REPLAY_WINDOW;
    return (this.word(slot >>> 5) & (1 << (slot & 31))) === 0;
  }

  accept(seq: number): void {
    if (seq > this.max) {
      const advance = seq - this.max;
      if (advance >= REPLAY_WINDOW) {
        this.w0 = this.w1 = this.w2 = this.w3 = 0;
      } else {
        for (let s = this.max + 1; s < seq; s++) this.clear(s % REPLAY_WINDOW);
      }
      this.max = seq;
    }
    const slot = seq % REPLAY_WINDOW;
    this.setWord(slot >>> 5, this.word(slot >>> 5) | (1 << (slot & 31)));
  }

  /** Highest sequence number accepted so far, -1 before the first. */
  get highest(): number {
    return this.max;
  }

  private clear(slot: number): void {
    this.setWord(slot >>> 5, this.word(slot >>> 5) & ~(1 << (slot & 31)));
  }

  private word(i: number): number {
    switch (i) {
      case 0:
        return this.w0;
      case 1:
        return this.w1;
      case 2:
        return this.w2;
      default:
        return this.w3;
    }
  }

  private setWord(i: number, v: number): void {
    switch (i) {
      case 0:
        this.w0 = v;
        break;
      case 1:
        this.w1 = v;
        break;
      case 2:
        this.w2 = v;
        break;
      default:
        this.w3 = v;
    }
  }
}
