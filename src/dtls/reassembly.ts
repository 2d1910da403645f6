import type { HandshakeFragment } from "./handshake-codec.ts";

/** A complete handshake message. */
export interface HandshakeMessage {
  readonly msgType: number;
  readonly messageSeq: number;
  readonly body: Uint8Array;
  /** Epoch of the records that carried it (Finished must come protected). */
  readonly epoch: number;
}

interface Partial {
  readonly msgType: number;
  readonly epoch: number;
  readonly body: Uint8Array;
  /** Sorted, merged [start, end) ranges received. */
  ranges: [number, number][];
}

export type AddResult = "buffered" | "old" | "ignored" | "inconsistent";

/**
 * Reassembles handshake messages from fragments arriving in any order and
 * hands them out strictly by message_seq. Memory is bounded: at most
 * `maxAhead` messages beyond the next expected one and `maxBytes` in total.
 */
export class Reassembler {
  private next: number;
  private readonly pending = new Map<number, Partial>();
  private bytes = 0;
  private readonly maxAhead: number;
  private readonly maxBytes: number;

  constructor(firstSeq: number, maxAhead = 8, maxBytes = 0x20000) {
    this.next = firstSeq;
    this.maxAhead = maxAhead;
    this.maxBytes = maxBytes;
  }

  /** The message_seq expected next. */
  get nextSeq(): number {
    return this.next;
  }

  add(f: HandshakeFragment, epoch: number): AddResult {
    if (f.messageSeq < this.next) return "old";
    if (f.messageSeq >= this.next + this.maxAhead) return "ignored";
    let p = this.pending.get(f.messageSeq);
    if (p === undefined) {
      if (this.bytes + f.length > this.maxBytes) return "ignored";
      p = { msgType: f.msgType, epoch, body: new Uint8Array(f.length), ranges: [] };
      this.pending.set(f.messageSeq, p);
      this.bytes += f.length;
    } else if (p.msgType !== f.msgType || p.body.length !== f.length || p.epoch !== epoch) {
      return "inconsistent";
    }
    if (f.fragmentLength > 0 || f.length === 0) {
      p.body.set(f.body, f.fragmentOffset);
      p.ranges = mergeRange(p.ranges, f.fragmentOffset, f.fragmentOffset + f.fragmentLength);
    }
    return "buffered";
  }

  /** The next in-order complete message, if it has arrived whole. */
  pop(): HandshakeMessage | undefined {
    const p = this.pending.get(this.next);
    if (p === undefined || !complete(p)) return undefined;
    this.pending.delete(this.next);
    this.bytes -= p.body.length;
    const msg = { msgType: p.msgType, messageSeq: this.next, body: p.body, epoch: p.epoch };
    this.next++;
    return msg;
  }

  /** Drops everything buffered (used once the handshake is over). */
  clear(): void {
    this.pending.clear();
    this.bytes = 0;
  }
}

function complete(p: Partial): boolean {
  if (p.body.length === 0) return true;
  const r = p.ranges[0];
  return p.ranges.length === 1 && r !== undefined && r[0] === 0 && r[1] === p.body.length;
}

function mergeRange(ranges: [number, number][], start: number, end: number): [number, number][] {
  const out: [number, number][] = [];
  let s = start;
  let e = end;
  let placed = false;
  for (const r of ranges) {
    if (r[1] < s) {
      out.push(r);
    } else if (r[0] > e) {
      if (!placed) {
        out.push([s, e]);
        placed = true;
      }
      out.push(r);
    } else {
      s = Math.min(s, r[0]);
      e = Math.max(e, r[1]);
    }
  }
  if (!placed) out.push([s, e]);
  return out;
}
