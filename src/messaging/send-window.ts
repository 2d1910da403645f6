import { encodeFrame, ErrorCode, type Ack, type SeqRange } from "../wire/index.ts";
import { assignSeq, toTombstone, type Entry, type PendingEntry, type SentEntry, type TombstoneEntry } from "./device-queue.ts";
import { deviceOf, MAX_SAFE, pushFrameOf, type Device, type EngineEnv, type EngineParts, type WindowPart } from "./engine-parts.ts";
import { MessagingError } from "./errors.ts";
import type { LinkState } from "./link-state.ts";
import type { FrameRefusal } from "./observer.ts";

/** Ack ranges and rejected seqs a device may send beyond one per push in its window. */
const ACK_LIST_SLACK = 64;

/**
 * The send window of every device: queued messages move into the window
 * (pump) and are sent (transmit); acks remove them (cumulative) or mark them
 * (ranges); timers retransmit them (retransmitDue) or expire them into
 * tombstones (expire). Owns the count of pushes in flight to online devices
 * (maxInflight) and the devices reported as out of seqs.
 */
export class SendWindow implements WindowPart {
  private readonly env: EngineEnv;
  private readonly parts: EngineParts;
  private inflight = 0;
  /** devices reported as out of seqs (once per process) */
  private readonly exhausted = new Set<string>();

  constructor(env: EngineEnv, parts: EngineParts) {
    this.env = env;
    this.parts = parts;
  }

  get inflightOnline(): number {
    return this.inflight;
  }

  online(dev: Device): void {
    this.inflight += dev.inflight.size;
  }

  offline(dev: Device): void {
    this.inflight -= dev.inflight.size;
    // room for others: devices waiting for it are pumped at the next flush
    if (this.parts.turn.othersWaiting) this.parts.turn.wake();
    this.env.timers.cancel(dev);
  }

  // ---------------------------------------------------------------- acks

  ack(ls: LinkState, dev: Device, ack: Ack, now: number): void {
    const problem = this.ackProblem(dev, ack);
    if (problem !== undefined) {
      // nothing of a bad ack is applied: the device gets the Error, its pushes stay in flight
      this.parts.sessions.refuse(ls, problem[0], ErrorCode.BAD_FRAME, problem[1]);
      return;
    }
    const rejected = ack.rejected.length > 0 ? new Set(ack.rejected) : undefined;
    this.cumulative(dev, ack.cumulative, now, rejected);
    if (ack.ranges.length > 0) {
      // one walk over the pushes in flight (in seq order) and the ranges sorted by first: at most
      // window + ranges steps (both bounded), however wide the ranges claim to be
      const ranges = [...ack.ranges].sort((a, b) => a.first - b.first);
      let i = 0;
      for (const e of dev.inflight.values()) {
        // a range ending below this seq ends below every later one too
        while (i < ranges.length && (ranges[i] as SeqRange).last < e.seq) i++;
        if (i === ranges.length) break;
        if (e.sacked || (ranges[i] as SeqRange).first > e.seq) continue;
        if (e.transmissions === 1 && e.state === "inflight" && e.sentAt > 0) this.rttSample(dev, now - e.sentAt);
        // not retransmitted while sacked, except as the head of the window (see retransmitDue)
        e.sacked = true;
      }
    }
    this.armRetransmit(dev);
    this.pump(dev, now);
  }

  /**
   * What is wrong with an Ack, judged against what the server sent this
   * device (every number in it is a claim): cumulative and every seq at most
   * lastSeq, ranges non-empty, and no more ranges or rejected seqs than a
   * device can have (one per push in the window, plus the 64 refusals the SDK
   * repeats). Seqs at or below ackedSeq are allowed (acks arrive reordered)
   * and change nothing; so are ranges in any order, overlapping or not.
   */
  private ackProblem(dev: Device, ack: Ack): [FrameRefusal, string] | undefined {
    const last = dev.lastSeq;
    if (ack.cumulative > last) return ["ack_seq_ahead", `Ack.cumulative ${ack.cumulative} is above the last seq sent (${last})`];
    const limit = this.env.options.window + ACK_LIST_SLACK;
    if (ack.ranges.length > limit || ack.rejected.length > limit) {
      return ["ack_too_long", `an Ack holds at most ${limit} ranges and ${limit} rejected seqs`];
    }
    for (const r of ack.ranges) {
      if (r.first < 1 || r.last < r.first || r.last > last) {
        return ["ack_bad_range", `Ack range ${r.first}..${r.last} is not a non-empty range of seqs sent (1..${last})`];
      }
    }
    for (const seq of ack.rejected) {
      if (seq < 1 || seq > last) return ["ack_bad_rejected", `Ack.rejected ${seq} is not a seq sent (1..${last})`];
    }
    return undefined;
  }

  private rttSample(dev: Device, ms: number): void {
    dev.rtt.sample(ms);
    this.env.observer.rttSample(ms);
  }

  cumulative(dev: Device, seq: number, now: number, rejected?: Set<number>): void {
    if (seq <= dev.ackedSeq) return;
    const { observer, timers } = this.env;
    const turn = this.parts.turn;
    const upto = Math.min(seq, dev.lastSeq);
    for (const e of dev.inflight.values()) {
      if (e.seq > upto) break;
      // sentAt 0: loaded with its seq (a restart, a device moved from another node), sent at a time this
      // process does not know: no sample (it would count from 1970 and set the RTO to its maximum)
      if (e.transmissions === 1 && !e.sacked && e.state === "inflight" && e.sentAt > 0) this.rttSample(dev, now - e.sentAt);
      dev.removeInflight(e);
      if (dev.link !== undefined) this.inflight--;
      timers.cancel(e);
      turn.batch.removeDelivery(dev.id, e.message.id);
      if (e.state === "inflight") {
        const refused = rejected?.has(e.seq) === true;
        if (refused) observer.pushRejected();
        else if (e.firstSentAt !== undefined) observer.pushAcked(now - e.firstSentAt);
        turn.receipt(e.message, dev.id, refused ? "rejected" : "delivered", now, refused ? "device_refused" : "", e.seq);
      }
    }
    if (upto > dev.ackedSeq) {
      dev.ackedSeq = upto;
      turn.touchCounters(dev);
      // the device makes progress, so the path works: what is still in flight backs off from scratch
      // (as TCP resets its backoff on a new ack); otherwise one unlucky push waits up to maxBackoff
      for (const e of dev.inflight.values()) {
        if (e.timeouts === 0) continue;
        e.timeouts = 0;
        const due = now + dev.rtt.timeout(1, this.env.options.jitter, this.env.random());
        if (e.dueAt > due) e.dueAt = due;
      }
    }
  }

  // ---------------------------------------------------------------- sending

  /**
   * Moves queued messages into the window and sends them. While other devices
   * wait for room (pumpDeferred), a device takes its turn behind them.
   */
  pump(dev: Device, now: number, waited = false): void {
    if (dev.link === undefined) return;
    const { options, observer } = this.env;
    const turn = this.parts.turn;
    if (!waited && turn.othersWaiting && dev.pending.length > 0) {
      turn.defer(dev);
      turn.wake();
      return;
    }
    let sent = false;
    while (dev.inflight.size < options.window) {
      if (this.inflight >= options.maxInflight) {
        // full: this device goes on when acks free room (pumpDeferred at a later flush)
        if (dev.pending.length > 0) turn.defer(dev);
        break;
      }
      if (dev.lastSeq >= MAX_SAFE) {
        // no seq left (counters left at 2^53-1 by an earlier version that trusted Hello.received_seq):
        // the messages wait and expire; the device and everyone else go on
        if (dev.pending.length > 0) this.sequenceExhausted(dev);
        break;
      }
      const p = dev.shiftPending();
      if (p === undefined) break;
      if (p.message.expiresAt <= now) {
        dev.forget(p);
        this.dropUnsent(p, now, "ttl");
        continue;
      }
      // everything that can fail is done before any state changes: the Push is encoded first
      const seq = dev.lastSeq + 1;
      let frame: Uint8Array;
      try {
        frame = pushFrameOf(p.message, seq);
      } catch (error) {
        dev.forget(p);
        this.unsendablePending(p, now, error);
        continue;
      }
      const row = { device: dev.id, messageId: p.message.id, order: p.order, seq, tombstone: false };
      turn.batch.addDelivery(row);
      const e = assignSeq(p, seq, frame);
      dev.lastSeq = seq;
      dev.addInflight(e);
      this.inflight++;
      // no counters row here: the delivery row holds the seq, which `load` reads back as
      // taken; the ack that removes the row writes the counters (and deleteDevice keeps it)
      turn.receipt(e.message, dev.id, "sent", now, "", e.seq);
      e.firstSentAt = now;
      observer.pushSent();
      this.transmit(e, now);
      sent = true;
    }
    if (sent) this.armRetransmit(dev);
  }

  private transmit(entry: SentEntry, now: number): void {
    const dev = deviceOf(entry);
    const ls = dev.link;
    if (ls === undefined) return;
    let e = entry;
    if (e.frame === undefined) {
      try {
        e.frame = frameOf(e);
      } catch (error) {
        // a message loaded from the store that cannot become a Push: its seq is resolved by a tombstone
        e = this.unsendableSent(e, now, error);
        e.frame = frameOf(e);
      }
    }
    e.transmissions++;
    e.sentAt = now;
    e.dueAt = now + dev.rtt.timeout(1 + e.timeouts, this.env.options.jitter, this.env.random());
    this.parts.turn.queueRecord(ls, e.frame);
  }

  resendAll(dev: Device, now: number): void {
    for (const e of dev.inflight.values()) {
      e.sacked = false;
      // what was sent on the old session is no RTT sample for this one, and its backoff starts over
      e.transmissions = 1;
      e.timeouts = 0;
      this.transmit(e, now);
    }
    this.armRetransmit(dev);
  }

  private armRetransmit(dev: Device): void {
    this.env.timers.schedule(dev, dev.link === undefined ? undefined : dev.nextDue());
    this.parts.turn.wake();
  }

  /**
   * Retransmits the pushes whose timer ran out. A selectively acked push is
   * not resent, unless it is the head of the window: if the cumulative ack
   * that should have covered it was lost, only a duplicate makes the device
   * repeat that ack (RFC 6675 likewise distrusts SACK state after a timeout).
   */
  retransmitDue(dev: Device, now: number): void {
    if (dev.link === undefined) return;
    let head = true;
    for (const e of dev.inflight.values()) {
      if (e.dueAt <= now) {
        e.timeouts++;
        if (!e.sacked || head) {
          this.env.observer.pushRetransmitted();
          this.transmit(e, now);
        } else e.dueAt = now + dev.rtt.timeout(1 + e.timeouts, this.env.options.jitter, this.env.random());
      }
      head = false;
    }
    this.armRetransmit(dev);
  }

  // ---------------------------------------------------------------- expiry

  expire(e: Entry, now: number): void {
    const dev = deviceOf(e);
    if (dev.byMessage.get(e.message.id) !== e) return;
    if (e.state === "pending") {
      dev.removePending(e);
      this.dropUnsent(e, now, "ttl");
      return;
    }
    // its seq is taken: the device gets a tombstone for it so its sequence has no hole
    const t = toTombstone(e);
    t.sacked = false;
    const turn = this.parts.turn;
    turn.batch.addDelivery({ device: dev.id, messageId: t.message.id, order: t.order, seq: t.seq, tombstone: true });
    turn.receipt(t.message, dev.id, "expired", now, "ttl", t.seq);
    this.env.observer.pushExpired();
    if (dev.link !== undefined) {
      t.transmissions = 0;
      t.timeouts = 0;
      t.sentAt = 0;
      this.transmit(t, now);
      this.armRetransmit(dev);
    }
  }

  /*
   * A message that cannot be encoded as a Push (only a store written by
   * another version can hold one): rejected for this device with reason
   * "unsendable". Without a seq it is removed; with one it becomes a
   * tombstone, so the device's sequence has no hole.
   */

  /** An unsendable message without a seq (already out of the queue): removed. */
  private unsendablePending(e: PendingEntry, now: number, error: unknown): void {
    const dev = deviceOf(e);
    this.env.reportFailure("device", dev.id, error);
    this.env.timers.cancel(e);
    this.parts.turn.batch.removeDelivery(dev.id, e.message.id);
    this.parts.turn.receipt(e.message, dev.id, "rejected", now, "unsendable", 0);
  }

  /** An unsendable message with a seq: a tombstone from now on. */
  private unsendableSent(e: SentEntry, now: number, error: unknown): TombstoneEntry {
    const dev = deviceOf(e);
    this.env.reportFailure("device", dev.id, error);
    const wasTombstone = e.state === "tombstone";
    const t = toTombstone(e);
    this.env.timers.cancel(t);
    this.parts.turn.batch.addDelivery({ device: dev.id, messageId: t.message.id, order: t.order, seq: t.seq, tombstone: true });
    if (!wasTombstone) this.parts.turn.receipt(t.message, dev.id, "rejected", now, "unsendable", t.seq);
    return t;
  }

  /** Counted and reported once per device and process: it has messages and no seq left. */
  private sequenceExhausted(dev: Device): void {
    if (this.exhausted.has(dev.id)) return;
    this.exhausted.add(dev.id);
    this.env.reportFailure(
      "sequence_exhausted",
      dev.id,
      new MessagingError("sequence_exhausted", `device ${dev.id} has used every sequence number (its stored lastSeq is ${dev.lastSeq})`),
    );
  }

  dropUnsent(e: PendingEntry, now: number, reason: string): void {
    this.env.timers.cancel(e);
    this.parts.turn.batch.removeDelivery(e.queue.id, e.message.id);
    this.parts.turn.receipt(e.message, e.queue.id, "expired", now, reason, 0);
    if (reason !== "collapsed") this.env.observer.pushExpired();
  }
}

function frameOf(e: SentEntry): Uint8Array {
  if (e.state === "tombstone") return encodeFrame({ kind: "push", push: { seq: e.seq, messageId: e.message.id, expired: true } });
  return pushFrameOf(e.message, e.seq);
}
