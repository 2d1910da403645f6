/**
 * Anti-replay sliding window (RFC 6347 4.1.2.6) of WINDOW sequence numbers.
 * `check` is called before decrypting (cheap rejection), `accept` only after
 * the record authenticated, so forged records cannot move the window.
 */
export const REPLAY_WINDOW = 128;
const WORDS = REPLAY_WINDOW / 32;

export class ReplayWindow {
  private max = -1;
  private readonly bits = new Uint32Array(WORDS);

  /** True when seq is new: above the window or inside it and unseen. */
  check(seq: number): boolean {
    if (seq > this.max) return true;
    if (seq <= this.max - REPLAY_WINDOW) return false;
    const slot = seq % REPLAY_WINDOW;
    return ((this.bits[slot >>> 5] as number) & (1 << (slot & 31))) === 0;
  }

  accept(seq: number): void {
    if (seq > this.max) {
      const advance = seq - this.max;
      if (advance >= REPLAY_WINDOW) {
        this.bits.fill(0);
      } else {
        for (let s = this.max + 1; s < seq; s++) this.clear(s % REPLAY_WINDOW);
      }
      this.max = seq;
    }
    const slot = seq % REPLAY_WINDOW;
    this.bits[slot >>> 5] = (this.bits[slot >>> 5] as number) | (1 << (slot & 31));
  }

  /** Highest sequence number accepted so far, -1 before the first. */
  get highest(): number {
    return this.max;
  }

  private clear(slot: number): void {
    this.bits[slot >>> 5] = (this.bits[slot >>> 5] as number) & ~(1 << (slot & 31));
  }
}
