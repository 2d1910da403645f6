/**
 * Bytes that handshakes in progress hold on behalf of their peers (fragments
 * being reassembled, records that came early, a fixed share for the state
 * itself), counted against one limit shared by every handshake of a server.
 * What a peer sends is kept only if the budget takes it.
 */
export class MemoryBudget {
  private usedBytes = 0;
  readonly limit: number;

  constructor(limit: number) {
    this.limit = limit;
  }

  get used(): number {
    return this.usedBytes;
  }

  /** Takes n bytes if they fit, else nothing (false). */
  take(n: number): boolean {
    if (this.usedBytes + n > this.limit) return false;
    this.usedBytes += n;
    return true;
  }

  /** Counts n bytes whatever the limit (admitted by a check made before). */
  charge(n: number): void {
    this.usedBytes += n;
  }

  release(n: number): void {
    this.usedBytes -= n;
  }
}

/** No limit (clients, tests): counts, never refuses. */
export const UNLIMITED = (): MemoryBudget => new MemoryBudget(Number.POSITIVE_INFINITY);
