/**
 * Coalesces what one event-loop turn sends to each peer: datagrams for the
 * same peer are concatenated (DTLS records are self-delimiting) up to the MTU
 * and flushed once, at setImmediate, as one gathered send each. A burst of
 * records (pipelined replies, a fan-out, a flight followed by data) then costs
 * one system call per MTU's worth instead of one per record.
 */
export interface Destination {
  readonly address: string;
  readonly port: number;
}

export class Outbox {
  private readonly pending = new Map<string, { dest: Destination; parts: Uint8Array[]; size: number }>();
  private scheduled = false;
  private readonly mtu: number;
  private readonly transmit: (dest: Destination, parts: Uint8Array[]) => void;
  private readonly flushNow = (): void => this.flush();

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
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flushNow);
    }
  }

  /** Sends everything pending now. */
  flush(): void {
    this.scheduled = false;
    if (this.pending.size === 0) return;
    for (const e of this.pending.values()) this.transmit(e.dest, e.parts);
    this.pending.clear();
  }
}
