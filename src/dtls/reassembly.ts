/**
 * Handshake reassembly (RFC 6347 4.2.2/4.2.3): fragments in any order and
 * overlap become whole messages, handed out in message_seq order; older
 * messages (the peer's retransmissions) are told apart; a window of messages
 * ahead and the bytes held are bounded (and counted in a memory budget).
 */
import type { HandshakeFragment } from "./handshake-codec.ts";
import { UNLIMITED, type MemoryBudget } from "./memory-budget.ts";

/** A complete handshake message. */
export interface HandshakeMessage {
  readonly msgType: number;
  readonly messageSeq: number;
  readonly body: Uint8Array;
  /** Epoch of the records that carried it (Finished must come protected). */
  readonly epoch: number;
}

/** Bytes received of one message, at their offset. */
interface Piece {
  readonly start: number;
  readonly bytes: Uint8Array;
}

interface Partial {
  readonly msgType: number;
  readonly epoch: number;
  /** the declared message length (nothing of that size is allocated before it all arrived) */
  readonly length: number;
  /** Disjoint pieces sorted by start. */
  pieces: Piece[];
  received: number;
}

export type AddResult = "buffered" | "old" | "ignored" | "inconsistent";

/**
 * Reassembles handshake messages from fragments arriving in any order and
 * hands them out strictly by message_seq. Memory follows what arrived, not
 * what a header declares: each fragment's new bytes are copied as they come
 * (overlaps are kept once) and the message is joined only when complete. At
 * most `maxAhead` messages beyond the next expected one and `maxBytes`
 * received bytes are kept, and every byte is taken from `budget` (shared by a
 * server's handshakes) or the fragment is dropped.
 */
export class Reassembler {
  private next: number;
  private readonly pending = new Map<number, Partial>();
  private bytesHeld = 0;
  private readonly maxAhead: number;
  private readonly maxBytes: number;
  private readonly budget: MemoryBudget;

  constructor(firstSeq: number, maxAhead = 8, maxBytes = 0x20000, budget: MemoryBudget = UNLIMITED()) {
    this.next = firstSeq;
    this.maxAhead = maxAhead;
    this.maxBytes = maxBytes;
    this.budget = budget;
  }

  /** The message_seq expected next. */
  get nextSeq(): number {
    return this.next;
  }

  /** Bytes of fragments held. */
  get bytes(): number {
    return this.bytesHeld;
  }

  add(f: HandshakeFragment, epoch: number): AddResult {
    if (f.messageSeq < this.next) return "old";
    if (f.messageSeq >= this.next + this.maxAhead) return "ignored";
    let p = this.pending.get(f.messageSeq);
    if (p !== undefined && (p.msgType !== f.msgType || p.length !== f.length || p.epoch !== epoch)) return "inconsistent";
    if (p === undefined && f.length > this.maxBytes) return "ignored";
    const gaps =
      p === undefined
        ? [[f.fragmentOffset, f.fragmentOffset + f.fragmentLength] as const]
        : uncovered(p.pieces, f.fragmentOffset, f.fragmentOffset + f.fragmentLength);
    let n = 0;
    for (const [s, e] of gaps) n += e - s;
    if (n > 0 && (this.bytesHeld + n > this.maxBytes || !this.budget.take(n))) return "ignored";
    if (p === undefined) {
      if (n === 0 && f.length > 0) return "buffered"; // an empty fragment of a longer message: nothing to keep
      p = { msgType: f.msgType, epoch, length: f.length, pieces: [], received: 0 };
      this.pending.set(f.messageSeq, p);
    }
    if (n > 0) {
      const added = gaps.map(([s, e]) => ({ start: s, bytes: f.body.slice(s - f.fragmentOffset, e - f.fragmentOffset) }));
      p.pieces = [...p.pieces, ...added].sort((a, b) => a.start - b.start);
      p.received += n;
      this.bytesHeld += n;
    }
    return "buffered";
  }

  /** The epoch of the next in-order message if it has arrived whole, else undefined. */
  readyEpoch(): number | undefined {
    const p = this.pending.get(this.next);
    return p !== undefined && p.received === p.length ? p.epoch : undefined;
  }

  /** The next in-order complete message, if it has arrived whole. */
  pop(): HandshakeMessage | undefined {
    const p = this.pending.get(this.next);
    if (p === undefined || p.received !== p.length) return undefined;
    this.pending.delete(this.next);
    this.bytesHeld -= p.received;
    this.budget.release(p.received);
    const msg = { msgType: p.msgType, messageSeq: this.next, body: join(p), epoch: p.epoch };
    this.next++;
    return msg;
  }

  /** Drops everything buffered (used once the handshake is over) and gives its bytes back to the budget. */
  clear(): void {
    this.pending.clear();
    this.budget.release(this.bytesHeld);
    this.bytesHeld = 0;
  }
}

function join(p: Partial): Uint8Array {
  const first = p.pieces[0];
  if (p.pieces.length === 1 && first !== undefined) return first.bytes;
  const body = new Uint8Array(p.length);
  for (const piece of p.pieces) body.set(piece.bytes, piece.start);
  return body;
}

/** The parts of [start, end) that no piece covers. */
function uncovered(pieces: readonly Piece[], start: number, end: number): (readonly [number, number])[] {
  const out: (readonly [number, number])[] = [];
  let s = start;
  for (const piece of pieces) {
    if (s >= end) break;
    const ps = piece.start;
    const pe = ps + piece.bytes.length;
    if (pe <= s) continue;
    if (ps >= end) break;
    if (ps > s) out.push([s, ps]);
    s = Math.max(s, pe);
  }
  if (s < end) out.push([s, end]);
  return out;
}
