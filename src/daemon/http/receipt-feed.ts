/**
 * The live receipts of a node on a shared store (cluster mode): every
 * receipt committed by any node, read from the store in id order, once.
 *
 * On one node the engine's "receipt" events are the whole story. On a
 * shared store the other nodes commit receipts too; a node hears of them
 * only as a hint (event "receipts" with the last id of their commit, over
 * pub/sub: at most once, possibly late). So the feed never takes a receipt
 * from an event: an event (another node's, or this node's own commit) only
 * says "there is something after your position", and the feed then reads
 * `receiptsAfter(position)` page by page and hands each receipt on in id
 * order, moving its position.
 *
 * Why a read after an event sees a gap-free continuation: a receipt's id is
 * given by an INCRBY inside the same commit script that stores the receipt,
 * and Redis runs scripts one at a time, so at any moment the stored ids are
 * every id up to the largest given (less what prune removed from the old
 * end). A later commit can only add ids above every stored one. A read from
 * `position` therefore returns the next ids without a hole, and no receipt
 * can appear later below the position the read moved to: nothing is skipped
 * and nothing is handed on twice. (The in-process shared store gives ids the
 * same way, one commit at a time.)
 *
 * A lost event delays receipts, never loses them: the next event, a resync,
 * or the poll (`poll`, from the streams' heartbeat) reads on from the
 * position. With no stream open the feed reads nothing and only moves its
 * position to the newest id it was told of (a stream opened later starts
 * there: live from about now).
 */
import type { ClusterEvent } from "../../store/cluster-types.ts";
import type { Receipt, Store } from "../../store/types.ts";

export interface ReceiptFeedOptions {
  readonly store: Pick<Store, "receiptsAfter">;
  /** the other nodes' events (the store's onClusterEvent); returns the unsubscribe */
  readonly onClusterEvent: (listener: (event: ClusterEvent) => void) => () => void;
  /** each receipt, in id order, once */
  readonly deliver: (r: Receipt) => void;
  /** whether any stream wants receipts now (none: nothing is read) */
  readonly wanted: () => boolean;
  /** receipts read per step; default 500 */
  readonly pageSize?: number;
  /** after a failed read, the next try; default 1000 ms */
  readonly retryMs?: number;
}

/** Probes of the largest stored receipt id at start: a galloping then binary search, about 2 log2(id) reads. */
const MAX_SEARCH_STEPS = 256;

export class ReceiptFeed {
  private readonly o: ReceiptFeedOptions;
  private readonly pageSize: number;
  private readonly retryMs: number;
  /** receipts up to this id were handed on (or are before the feed's start) */
  private at = 0;
  /** the newest id the feed was told of (reads go at least this far) */
  private told = 0;
  private reading = false;
  private again = false;
  private closed = false;
  private retry: NodeJS.Timeout | undefined;
  private unsubscribe: () => void = () => undefined;
  /** reads of the store that failed (retried) */
  failures = 0;

  constructor(o: ReceiptFeedOptions) {
    this.o = o;
    this.pageSize = o.pageSize ?? 500;
    this.retryMs = o.retryMs ?? 1000;
  }

  /** The id of the last receipt handed on: a live-only stream opened now wants those after it. */
  get position(): number {
    return this.at;
  }

  /** Listens to the events, then finds the newest stored receipt: the feed starts after it. */
  async start(): Promise<void> {
    this.unsubscribe = this.o.onClusterEvent((e) => {
      if (e.kind === "receipts") this.signal(e.lastId);
      else if (e.kind === "resync") this.poll();
    });
    // events that arrive meanwhile only raise `told`: the first read after the search goes on from it
    this.at = await lastReceiptId(this.o.store);
    if (this.told > this.at) this.poll();
  }

  /** Receipts up to `lastId` are stored (this node's commit, or another node's event). */
  signal(lastId: number): void {
    if (lastId > this.told) this.told = lastId;
    if (lastId <= this.at) return;
    this.poll();
  }

  /** Reads on from the position (events may have been missed); nothing when no stream wants receipts. */
  poll(): void {
    if (this.closed) return;
    if (!this.o.wanted()) {
      // nobody to hand them to: skip what is known to be stored
      if (!this.reading && this.told > this.at) this.at = this.told;
      return;
    }
    if (this.reading) {
      this.again = true;
      return;
    }
    void this.read();
  }

  close(): void {
    this.closed = true;
    this.unsubscribe();
    clearTimeout(this.retry);
  }

  private async read(): Promise<void> {
    this.reading = true;
    try {
      do {
        this.again = false;
        for (;;) {
          if (this.closed) return;
          const page = await this.o.store.receiptsAfter(this.at, this.pageSize);
          for (const r of page) {
            if (r.id <= this.at) continue; // never backwards (a store answering out of order)
            this.at = r.id;
            this.o.deliver(r);
          }
          if (page.length < this.pageSize) break;
          await new Promise((resolve) => setImmediate(resolve));
        }
      } while (this.again);
    } catch {
      this.failures++;
      // the store failed: try again later from the same position (nothing was skipped)
      clearTimeout(this.retry);
      this.retry = setTimeout(() => this.poll(), this.retryMs);
      this.retry.unref();
    } finally {
      this.reading = false;
    }
  }
}

/**
 * The largest receipt id stored (0 when none), with `receiptsAfter(x, 1)`
 * only: "a receipt after x exists" holds exactly for x below the largest id,
 * so a galloping search then a bisection finds it in about 2 log2(id) reads.
 */
export async function lastReceiptId(store: Pick<Store, "receiptsAfter">): Promise<number> {
  const after = async (x: number): Promise<number | undefined> => (await store.receiptsAfter(x, 1))[0]?.id;
  let lo = await after(0);
  if (lo === undefined) return 0;
  let hi = 2 * lo;
  let steps = 0;
  // grow: lo is a stored id, hi doubles until nothing lies after it
  for (let next = await after(hi); next !== undefined && steps < MAX_SEARCH_STEPS; next = await after(hi), steps++) {
    lo = next;
    hi = 2 * next;
  }
  // lo <= largest <= hi
  while (lo < hi && steps++ < MAX_SEARCH_STEPS) {
    const mid = Math.floor((lo + hi) / 2);
    const next = await after(mid);
    if (next === undefined) hi = mid;
    else lo = next;
  }
  return lo;
}
