/**
 * Catches a publisher's repeated message id although the store is asked
 * asynchronously. A publish naming its id asks the store (`existingMessageIds`,
 * one call per publishMany) while it is signed; by the time it queues, that
 * answer can be stale: a commit holding the same id may have become durable
 * in between. Store answers are FIFO with commits, so a check sees every
 * commit handed to the store before it was issued. The guard therefore
 * holds:
 * - the ids queued in a batch that is not durable yet, and
 * - the ids of a durable commit while a check issued before that commit was
 *   handed over is still open (its publishes not yet queued).
 * A duplicate is thus always refused at queue time and never reaches the
 * store (where it would fail the whole turn's commit).
 */
export class IdGuard {
  /** ids queued in this turn's batch or in a commit not yet durable */
  private readonly notDurable = new Set<string>();
  /** ids durable while a check issued before their commit was still open */
  private readonly recentlyDurable = new Set<string>();
  /** ids made durable by each commit, with the last check issued before that commit */
  private readonly durableLog: { readonly ids: readonly string[]; readonly lastCheck: number }[] = [];
  /** checks issued (numbered from 1) */
  private issued = 0;
  /** checks whose publishes have not finished queueing, in the order issued */
  private readonly open = new Set<number>();

  /** A check is issued: its number (pass it to `checkDone`). */
  checkIssued(): number {
    const seq = ++this.issued;
    this.open.add(seq);
    return seq;
  }

  /** The number of the last check issued (taken when a commit is handed to the store). */
  get lastCheck(): number {
    return this.issued;
  }

  /** A check's publishes are queued (or failed): durable ids no earlier open check could miss leave the guard. */
  checkDone(seq: number): void {
    this.open.delete(seq);
    const oldestOpen = this.oldestOpen();
    while (this.durableLog.length > 0 && (this.durableLog[0] as { lastCheck: number }).lastCheck < oldestOpen) {
      const { ids } = this.durableLog.shift() as { ids: readonly string[] };
      for (const id of ids) this.recentlyDurable.delete(id);
    }
  }

  /** The id is queued in a batch (not durable yet). */
  queued(id: string): void {
    this.notDurable.add(id);
  }

  /** An id the store's answer may not show yet. */
  has(id: string): boolean {
    return this.notDurable.has(id) || this.recentlyDurable.has(id);
  }

  /** A commit holding `ids`, handed over after check number `lastCheck`, is durable. */
  durable(ids: readonly string[], lastCheck: number): void {
    if (ids.length === 0) return;
    for (const id of ids) this.notDurable.delete(id);
    if (this.oldestOpen() > lastCheck) return;
    for (const id of ids) this.recentlyDurable.add(id);
    this.durableLog.push({ ids, lastCheck });
  }

  private oldestOpen(): number {
    return this.open.values().next().value ?? Infinity;
  }
}
