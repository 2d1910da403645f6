import type { Ack, Push, SeqRange } from "../wire/index.ts";

/**
 * The device side of delivery, sans-I/O: de-duplication by seq, in-order
 * hand-off, and the acks to send.
 *
 * `hwm` (high-water mark) is the highest seq processed contiguously: handed to
 * the application and finished, refused (bad signature), or a tombstone. The
 * caller persists it before sending an ack that covers it, so a restarted
 * device never processes a seq twice. Pushes above hwm are held (and
 * selectively acked, which only stops retransmission: the server keeps them
 * until the cumulative ack passes them, so a device that crashes while holding
 * them gets them again).
 *
 * Flow: `accept(push)` -> "new" means verify it, then `settle(seq, ok)`;
 * `next()` returns the next push ready for the application, in seq order, one
 * at a time; `processed(seq)` when the application is done with it.
 */
export type AcceptResult = "new" | "duplicate" | "overflow";

interface Held {
  readonly push: Push;
  /** undefined while its signature is being checked */
  outcome: "ok" | "rejected" | undefined;
}

/** How many refused seqs below hwm are repeated in acks (in case an ack carrying them was lost). */
const REJECTED_MEMORY = 64;

export class DeviceReceiver {
  private hwmSeq: number;
  private readonly held = new Map<number, Held>();
  private readonly maxHeld: number;
  /** the seq handed to the application and not yet processed */
  private current: number | undefined;
  private readonly rejected: number[] = [];
  /** the highest seq accepted (held pushes are all in hwm+1..maxSeen) */
  private maxSeen = 0;

  constructor(hwm: number, options: { maxHeld?: number } = {}) {
    this.hwmSeq = hwm;
    this.maxHeld = options.maxHeld ?? 4096;
  }

  get hwm(): number {
    return this.hwmSeq;
  }

  /**
   * Whether the pushes held are exactly hwm+1..(the highest seq seen): false
   * while one is missing below a held one (it was lost or overtaken).
   */
  get contiguous(): boolean {
    return this.held.size === Math.max(0, this.maxSeen - this.hwmSeq);
  }

  /** Pushes held above hwm. */
  get heldCount(): number {
    return this.held.size;
  }

  /**
   * The server's view after a Welcome: seqs it says we acked were processed
   * before (we ack only what is processed), e.g. by a run that crashed
   * after acking and before persisting. Returns true when hwm moved.
   */
  serverAcked(ackedSeq: number): boolean {
    if (ackedSeq <= this.hwmSeq) return false;
    this.hwmSeq = ackedSeq;
    for (const seq of this.held.keys()) if (seq <= ackedSeq) this.held.delete(seq);
    if (this.current !== undefined && this.current <= ackedSeq) this.current = undefined;
    return true;
  }

  /**
   * Starts over at `hwm` (the server lost the seqs this device saw: its store was restored from an older
   * copy): pushes held, the one with the application and remembered refusals are forgotten; the server
   * sends again what it still has.
   */
  reset(hwm: number): void {
    this.hwmSeq = hwm;
    this.held.clear();
    this.current = undefined;
    this.rejected.length = 0;
    this.maxSeen = 0;
  }

  accept(push: Push): AcceptResult {
    const seq = push.seq;
    if (seq <= this.hwmSeq || this.held.has(seq)) return "duplicate";
    if (this.held.size >= this.maxHeld && seq > this.hwmSeq + this.maxHeld) return "overflow";
    // a tombstone needs no verification: pending(seq) is false for it
    this.held.set(seq, { push, outcome: push.expired ? "ok" : undefined });
    if (seq > this.maxSeen) this.maxSeen = seq;
    return "new";
  }

  /** Whether `seq` is held and waits for its verification outcome. */
  pending(seq: number): boolean {
    const h = this.held.get(seq);
    return h !== undefined && h.outcome === undefined;
  }

  settle(seq: number, ok: boolean): void {
    const h = this.held.get(seq);
    if (h === undefined || h.outcome !== undefined) return;
    h.outcome = ok ? "ok" : "rejected";
  }

  /**
   * The next push for the application, or undefined (none ready, or one is
   * still with the application). Tombstones and refused pushes at the head are
   * consumed on the way (hwm advances past them).
   */
  next(): Push | undefined {
    if (this.current !== undefined) return undefined;
    for (;;) {
      const seq = this.hwmSeq + 1;
      const h = this.held.get(seq);
      if (h === undefined || h.outcome === undefined) return undefined;
      if (h.outcome === "rejected") {
        this.held.delete(seq);
        this.hwmSeq = seq;
        this.rejected.push(seq);
        if (this.rejected.length > REJECTED_MEMORY) this.rejected.shift();
        continue;
      }
      if (h.push.expired) {
        this.held.delete(seq);
        this.hwmSeq = seq;
        continue;
      }
      this.current = seq;
      return h.push;
    }
  }

  /** The application finished the push `next()` returned. */
  processed(seq: number): void {
    if (this.current !== seq) return;
    this.current = undefined;
    this.held.delete(seq);
    this.hwmSeq = seq;
  }

  /** The ack to send now: cumulative hwm, held seqs as ranges, recent refusals. */
  ack(): Ack {
    const seqs = [...this.held.keys()].sort((a, b) => a - b);
    const ranges: SeqRange[] = [];
    for (const s of seqs) {
      const last = ranges[ranges.length - 1];
      if (last !== undefined && last.last + 1 === s) last.last = s;
      else ranges.push({ first: s, last: s });
    }
    return { cumulative: this.hwmSeq, ranges, rejected: [...this.rejected] };
  }
}
