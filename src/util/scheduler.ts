/**
 * One deadline per key, many keys, one timer: an indexed binary min-heap.
 * Scheduling, moving and cancelling a key are O(log n) and take effect at
 * once: a cancelled key (a closed session, a finished handshake) is removed
 * from the heap, so the scheduler never keeps what its owner let go of.
 * The owner arms a single real timer for `next()` and calls `due(now)`.
 */
/** Where a scheduler keeps each scheduled key's position in its heap: a Map by default. */
export interface HeapIndex<K> {
  get(key: K): number | undefined;
  set(key: K, position: number): unknown;
  delete(key: K): unknown;
}

/** A key that keeps its own heap position (-1 when not scheduled), for SLOT_INDEX. */
export interface HeapSlotted {
  heapSlot: number;
}

/**
 * A HeapIndex in the keys themselves (their `heapSlot` field): no Map entry
 * (some 40-50 bytes) per scheduled key, for schedulers of many long-lived keys.
 * A key belongs to one such scheduler at a time.
 */
export const SLOT_INDEX: HeapIndex<HeapSlotted> = {
  get: (key) => (key.heapSlot < 0 ? undefined : key.heapSlot),
  set: (key, position) => (key.heapSlot = position),
  delete: (key) => (key.heapSlot = -1),
};

export class Scheduler<K> {
  private readonly heapAt: number[] = [];
  private readonly heapKey: K[] = [];
  /** Each scheduled key's position in the heap. */
  private readonly index: HeapIndex<K>;

  constructor(index: HeapIndex<K> = new Map<K, number>()) {
    this.index = index;
  }

  /** Number of keys with a deadline. */
  get size(): number {
    return this.heapKey.length;
  }

  /** Sets (or moves, or with undefined clears) the deadline of key. */
  schedule(key: K, at: number | undefined): void {
    if (at === undefined) {
      this.cancel(key);
      return;
    }
    const i = this.index.get(key);
    if (i === undefined) {
      const n = this.heapAt.length;
      this.heapAt.push(at);
      this.heapKey.push(key);
      this.index.set(key, n);
      this.up(n);
      return;
    }
    const old = this.heapAt[i] as number;
    if (old === at) return;
    this.heapAt[i] = at;
    if (at < old) this.up(i);
    else this.down(i);
  }

  /** Removes key's deadline (and the scheduler's reference to key). */
  cancel(key: K): void {
    const i = this.index.get(key);
    if (i === undefined) return;
    this.removeAt(i);
  }

  /** The earliest deadline, or undefined when nothing is scheduled. */
  next(): number | undefined {
    return this.heapAt[0];
  }

  /** Removes and returns every key whose deadline is <= now, earliest first. */
  due(now: number): K[] {
    const out: K[] = [];
    while (this.heapAt.length > 0 && (this.heapAt[0] as number) <= now) {
      out.push(this.heapKey[0] as K);
      this.removeAt(0);
    }
    return out;
  }

  private removeAt(i: number): void {
    const A = this.heapAt;
    const K_ = this.heapKey;
    this.index.delete(K_[i] as K);
    const lastAt = A.pop() as number;
    const lastKey = K_.pop() as K;
    if (i === A.length) return;
    const removedAt = A[i] as number;
    A[i] = lastAt;
    K_[i] = lastKey;
    this.index.set(lastKey, i);
    if (lastAt < removedAt) this.up(i);
    else this.down(i);
  }

  private up(i: number): void {
    const A = this.heapAt;
    const K_ = this.heapKey;
    const at = A[i] as number;
    const key = K_[i] as K;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pa = A[p] as number;
      if (pa <= at) break;
      A[i] = pa;
      K_[i] = K_[p] as K;
      this.index.set(K_[i] as K, i);
      i = p;
    }
    A[i] = at;
    K_[i] = key;
    this.index.set(key, i);
  }

  private down(i: number): void {
    const A = this.heapAt;
    const K_ = this.heapKey;
    const n = A.length;
    const at = A[i] as number;
    const key = K_[i] as K;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && (A[r] as number) < (A[l] as number) ? r : l;
      if ((A[c] as number) >= at) break;
      A[i] = A[c] as number;
      K_[i] = K_[c] as K;
      this.index.set(K_[i] as K, i);
      i = c;
    }
    A[i] = at;
    K_[i] = key;
    this.index.set(key, i);
  }
}
