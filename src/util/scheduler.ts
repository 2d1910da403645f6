/**
 * One deadline per key, many keys, one timer: a binary min-heap with lazy
 * deletion. Re-scheduling a key is O(log n) and leaves the old entry behind to
 * be skipped when it surfaces; the heap is rebuilt when stale entries dominate.
 * The owner arms a single real timer for `next()` and calls `due(now)`.
 */
export class Scheduler<K> {
  private heapAt: number[] = [];
  private heapKey: K[] = [];
  private readonly deadline = new Map<K, number>();

  /** Number of keys with a deadline. */
  get size(): number {
    return this.deadline.size;
  }

  /** Sets (or moves, or with undefined clears) the deadline of key. */
  schedule(key: K, at: number | undefined): void {
    if (at === undefined) {
      this.deadline.delete(key);
      return;
    }
    if (this.deadline.get(key) === at) return;
    this.deadline.set(key, at);
    this.push(at, key);
    if (this.heapAt.length > 64 && this.heapAt.length > 4 * this.deadline.size) this.rebuild();
  }

  cancel(key: K): void {
    this.deadline.delete(key);
  }

  /** The earliest live deadline, or undefined when nothing is scheduled. */
  next(): number | undefined {
    this.dropStale();
    return this.heapAt[0];
  }

  /** Removes and returns every key whose deadline is <= now, earliest first. */
  due(now: number): K[] {
    const out: K[] = [];
    for (;;) {
      this.dropStale();
      const at = this.heapAt[0];
      if (at === undefined || at > now) return out;
      const key = this.heapKey[0] as K;
      this.pop();
      this.deadline.delete(key);
      out.push(key);
    }
  }

  private dropStale(): void {
    while (this.heapAt.length > 0) {
      const key = this.heapKey[0] as K;
      if (this.deadline.get(key) === this.heapAt[0]) return;
      this.pop();
    }
  }

  private rebuild(): void {
    this.heapAt = [];
    this.heapKey = [];
    for (const [key, at] of this.deadline) this.push(at, key);
  }

  private push(at: number, key: K): void {
    const A = this.heapAt;
    const K_ = this.heapKey;
    let i = A.length;
    A.push(at);
    K_.push(key);
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pa = A[p] as number;
      if (pa <= at) break;
      A[i] = pa;
      K_[i] = K_[p] as K;
      i = p;
    }
    A[i] = at;
    K_[i] = key;
  }

  private pop(): void {
    const A = this.heapAt;
    const K_ = this.heapKey;
    const lastAt = A.pop() as number;
    const lastKey = K_.pop() as K;
    const n = A.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && (A[r] as number) < (A[l] as number) ? r : l;
      if ((A[c] as number) >= lastAt) break;
      A[i] = A[c] as number;
      K_[i] = K_[c] as K;
      i = c;
    }
    A[i] = lastAt;
    K_[i] = lastKey;
  }
}
