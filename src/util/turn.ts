/**
 * Event-loop timing: the one place that decides what runs when in a turn of
 * Node's event loop. The endpoint (src/dtls/endpoint.ts) and the push server
 * (src/daemon/push-server.ts) both schedule through it; the protocol cores
 * stay sans-I/O and only report their earliest deadline.
 *
 * A turn of the loop is: timers, then the poll phase (libuv reads the
 * sockets: at most 32 datagrams per UDP socket per turn), then the check phase
 * (setImmediate). The rules below, with the measurements that set them:
 *
 * - **One timer, armed for the earliest deadline** (DeadlineTimer), not one per
 *   connection or per push: a core or engine keeps its deadlines in one
 *   Scheduler and the timer is re-armed only when the earliest one moves
 *   earlier (a later one just fires early and re-arms).
 * - **Due deadlines run after the poll phase** (DeadlineTimer with
 *   `afterPoll`): the acks already waiting in the sockets are read before
 *   anything is retransmitted. A busy loop otherwise fires the timers of pushes
 *   whose acks it has not read yet: 1 000 devices at full load gave 30 000
 *   needless retransmissions in 10 s, against about 100.
 * - **Sends are paced per turn** (TurnPacer): at most 32 sessions per server
 *   socket are sent to per turn, the rest wait for the next turns. Sending more
 *   than the loop can read back (32 datagrams per socket per turn) overflows
 *   the receive buffer during a fan-out: a 40 000-device fan-out had all acks
 *   in 7 s with 32 per turn instead of 30 s without, at a third of the CPU.
 *   The first sends of a turn go out at once: a lone push is not delayed.
 * - **What a turn sends is flushed once, at its end** (TurnOutbox): datagrams
 *   to the same peer are concatenated up to the MTU (DTLS records are
 *   self-delimiting) and leave as one gathered send each, so a burst
 *   (pipelined replies, a fan-out, a flight followed by data, several pushes to
 *   one device) costs one system call per MTU's worth instead of one per record.
 * - **Work deferred to the end of the turn** (EndOfTurn) runs once per turn
 *   however often it was asked for: the engine's per-turn flush (one batch of
 *   store writes and sends per turn), the ClientHellos of peers without a
 *   session (answered after the turn's records of established peers), the
 *   per-turn HelloVerifyRequest bookkeeping.
 *
 * Callbacks run in the order they were first requested within a turn
 * (setImmediate is FIFO), as before this module owned them.
 */
import type { Clock } from "./clock.ts";

/** Runs `run` once at the end of the current turn (check phase), however many times it is requested. */
export class EndOfTurn {
  private scheduled = false;
  private readonly run: () => void;
  private readonly fire = (): void => {
    this.scheduled = false;
    this.run();
  };

  constructor(run: () => void) {
    this.run = run;
  }

  request(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.fire);
  }

  /** Whether a run is requested and has not happened yet. */
  get pending(): boolean {
    return this.scheduled;
  }
}

export interface DeadlineTimerOptions {
  readonly clock: Clock;
  /** the earliest deadline (on `clock`), or undefined: none */
  readonly next: () => number | undefined;
  /** called with the clock's time once the earliest deadline is due */
  readonly fire: (now: number) => void;
  /** run due deadlines after the poll phase (setImmediate), so what waits in the sockets is read first */
  readonly afterPoll?: boolean;
  /** the timer does not keep the process alive */
  readonly unref?: boolean;
}

/** One real timer for the earliest deadline of a sans-I/O core or engine. */
export class DeadlineTimer {
  private handle: NodeJS.Timeout | undefined;
  private at = Infinity;
  /** due, waiting for the check phase: arm() waits too, fire re-arms afterwards */
  private firing = false;
  private stopped = false;
  private readonly o: DeadlineTimerOptions;
  private readonly expired = (): void => {
    this.handle = undefined;
    this.at = Infinity;
    if (this.o.afterPoll === true) {
      this.firing = true;
      setImmediate(this.fireNow);
    } else {
      this.fireNow();
    }
  };
  private readonly fireNow = (): void => {
    this.firing = false;
    if (this.stopped) return;
    this.o.fire(this.o.clock.now());
    this.arm();
  };

  constructor(o: DeadlineTimerOptions) {
    this.o = o;
  }

  /** Re-arms when the earliest deadline moved earlier (later deadlines just fire early and re-arm). */
  arm(): void {
    if (this.firing || this.stopped) return;
    const next = this.o.next();
    if (next === undefined) {
      this.clear();
      return;
    }
    if (next >= this.at) return;
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.at = next;
    this.handle = setTimeout(this.expired, Math.max(0, Math.ceil(next - this.o.clock.now())));
    if (this.o.unref === true) this.handle.unref();
  }

  /** No more firing, ever (arm() does nothing afterwards). */
  stop(): void {
    this.stopped = true;
    this.clear();
  }

  private clear(): void {
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.handle = undefined;
    this.at = Infinity;
  }
}

export interface Destination {
  readonly address: string;
  readonly port: number;
}

/**
 * Coalesces what one turn sends to each peer: datagrams for the same peer
 * (by key) are concatenated up to the MTU and flushed once, at the end of the
 * turn, as one gathered send each.
 */
export class TurnOutbox {
  private readonly pending = new Map<string, { dest: Destination; parts: Uint8Array[]; size: number }>();
  private readonly mtu: number;
  private readonly transmit: (dest: Destination, parts: Uint8Array[]) => void;
  private readonly end = new EndOfTurn(() => this.flush());

  constructor(mtu: number, transmit: (dest: Destination, parts: Uint8Array[]) => void) {
    this.mtu = mtu;
    this.transmit = transmit;
  }

  push(key: string, dest: Destination, datagram: Uint8Array): void {
    let entry = this.pending.get(key);
    if (entry !== undefined && entry.size + datagram.length > this.mtu) {
      this.transmit(entry.dest, entry.parts);
      entry = undefined;
      this.pending.delete(key);
    }
    if (entry === undefined) {
      entry = { dest, parts: [], size: 0 };
      this.pending.set(key, entry);
    }
    entry.parts.push(datagram);
    entry.size += datagram.length;
    this.end.request();
  }

  /** Sends everything pending now. */
  flush(): void {
    if (this.pending.size === 0) return;
    for (const e of this.pending.values()) this.transmit(e.dest, e.parts);
    this.pending.clear();
  }
}

/** What a TurnPacer does with a session's sends. */
export interface PacedTarget<T> {
  /** sends `records` to `target` (the pacer has decided it is time) */
  send(target: T, records: readonly Uint8Array[]): void;
  /** ends `target` */
  close(target: T): void;
}

/**
 * Spreads a burst of sends over turns. The first `perTurn` sends of a turn go
 * out at once (a lone push is not delayed); further ones wait for the next
 * turns, `perTurn` each. Between turns the loop reads the sockets: without
 * this, a topic fan-out seals and sends every push in one turn while the
 * devices' acks pile up in the kernel's receive buffer until it overflows, and
 * each lost ack costs a retransmission.
 */
export class TurnPacer<T> {
  private readonly perTurn: number;
  private readonly target: PacedTarget<T>;
  private sentThisTurn = 0;
  /** records to send, or undefined: close the target (after what was queued before) */
  private queue: Paced<T>[] = [];
  private head = 0;
  private readonly end = new EndOfTurn(() => this.nextTurn());

  constructor(perTurn: number, target: PacedTarget<T>) {
    this.perTurn = perTurn;
    this.target = target;
  }

  send(to: T, records: readonly Uint8Array[]): void {
    this.end.request();
    if (this.head === this.queue.length && this.sentThisTurn < this.perTurn) {
      this.sentThisTurn++;
      this.target.send(to, records);
      return;
    }
    this.queue.push({ to, records });
  }

  /** Closes the target once the sends queued before have gone out. */
  close(to: T): void {
    if (this.head === this.queue.length) this.target.close(to);
    else this.queue.push({ to, records: undefined });
  }

  /** Sends everything still waiting, now (before a shutdown closes the connections). */
  drain(): void {
    const { queue, head } = this;
    this.queue = [];
    this.head = 0;
    for (let i = head; i < queue.length; i++) this.perform(queue[i] as Paced<T>);
  }

  /** Sends waiting to go out. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  private nextTurn(): void {
    this.sentThisTurn = 0;
    const end = Math.min(this.queue.length, this.head + this.perTurn);
    for (; this.head < end; this.head++) {
      this.sentThisTurn++;
      this.perform(this.queue[this.head] as Paced<T>);
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else {
      this.end.request();
    }
  }

  private perform(p: Paced<T>): void {
    if (p.records === undefined) this.target.close(p.to);
    else this.target.send(p.to, p.records);
  }
}

interface Paced<T> {
  readonly to: T;
  readonly records: readonly Uint8Array[] | undefined;
}
