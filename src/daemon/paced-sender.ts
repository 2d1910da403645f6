import type { DtlsConnection } from "../dtls/index.ts";

/**
 * Spreads a burst of sends over event-loop turns. The first `perTurn` sends of
 * a turn go out at once (a lone push is not delayed); further ones wait for the
 * next turns, `perTurn` each. Between turns the loop reads the socket: without
 * this, a topic fan-out seals and sends every push in one turn while the
 * devices' acks pile up in the kernel's receive buffer until it overflows, and
 * each lost ack costs a retransmission.
 */
export class PacedSender {
  private readonly perTurn: number;
  private sentThisTurn = 0;
  /** records to send, or undefined: close the connection (after what was queued before) */
  private queue: Pending[] = [];
  private head = 0;
  private turnScheduled = false;

  constructor(perTurn: number) {
    this.perTurn = perTurn;
  }

  send(conn: DtlsConnection, records: readonly Uint8Array[]): void {
    this.endTurnLater();
    if (this.head === this.queue.length && this.sentThisTurn < this.perTurn) {
      this.sentThisTurn++;
      write(conn, records);
      return;
    }
    this.queue.push({ conn, records });
  }

  /** Closes the connection once the sends queued before have gone out. */
  close(conn: DtlsConnection): void {
    if (this.head === this.queue.length) conn.close();
    else this.queue.push({ conn, records: undefined });
  }

  /** Sends everything still waiting, now (before a shutdown closes the connections). */
  drain(): void {
    const { queue, head } = this;
    this.queue = [];
    this.head = 0;
    for (let i = head; i < queue.length; i++) {
      perform(queue[i] as Pending);
    }
  }

  /** Sends waiting to go out. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  private endTurnLater(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    setImmediate(() => this.nextTurn());
  }

  private nextTurn(): void {
    this.turnScheduled = false;
    this.sentThisTurn = 0;
    const end = Math.min(this.queue.length, this.head + this.perTurn);
    for (; this.head < end; this.head++) {
      this.sentThisTurn++;
      perform(this.queue[this.head] as Pending);
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else {
      this.endTurnLater();
    }
  }
}

interface Pending {
  readonly conn: DtlsConnection;
  readonly records: readonly Uint8Array[] | undefined;
}

function write(conn: DtlsConnection, records: readonly Uint8Array[]): void {
  if (!conn.closed) conn.sendBatch(records);
}

function perform(p: Pending): void {
  if (p.records === undefined) p.conn.close();
  else write(p.conn, p.records);
}
