/**
 * Rate limits for HelloVerifyRequests, sans-I/O (time is passed in, ms).
 *
 * A first ClientHello costs the server a cookie (an HMAC) and a datagram sent
 * back, and its source address is unproven: a flood of them from spoofed
 * addresses must not take the time established sessions need. Two token
 * buckets bound what the server spends on them: one for the whole server and
 * one per source prefix (/24 for IPv4, /64 for IPv6), so one network cannot
 * take the whole global budget. A ClientHello that finds either bucket empty
 * is dropped before any parsing or crypto; the client retransmits it later
 * (RFC 6347 4.2.4), as it would after a loss.
 *
 * A prefix's bucket is charged for every first ClientHello it sends, answered
 * or not, so a flooding prefix keeps its bucket empty. A quiet prefix (one
 * whose bucket is at least half full) that finds the
 * global budget spent draws on a reserve of a tenth of the global rate: a new
 * device from elsewhere still gets its HelloVerifyRequest while a flood from
 * a few networks holds the global budget.
 *
 * The per-prefix table is bounded: past `maxPrefixes` entries, prefixes whose
 * bucket has refilled are swept (they are the same as absent ones), and if
 * every entry is still active the oldest is evicted; a flood from more
 * prefixes than that is bounded by the global bucket.
 */

/** Why a ClientHello from a peer without a session was dropped before any crypto. */
export type ClientHelloDropCause =
  /** the server-wide HelloVerifyRequest budget was spent */
  | "global_limit"
  /** the source prefix's HelloVerifyRequest budget was spent */
  | "prefix_limit"
  /** the same peer (address and port) already had a ClientHello read in this event-loop turn */
  | "duplicate"
  /** more ClientHellos than one turn handles were waiting; the rest of the turn's were dropped */
  | "turn_limit";

export const CLIENT_HELLO_DROP_CAUSES: readonly ClientHelloDropCause[] = ["global_limit", "prefix_limit", "duplicate", "turn_limit"];

export function newClientHelloDropCounts(): Record<ClientHelloDropCause, number> {
  return { global_limit: 0, prefix_limit: 0, duplicate: 0, turn_limit: 0 };
}

export interface HelloLimits {
  /** HelloVerifyRequests per second, whole server; 0 turns the global limit off. */
  readonly perSecond: number;
  /** HelloVerifyRequests per second per source prefix; 0 turns the per-prefix limit off. */
  readonly perPrefixPerSecond: number;
  /** Prefixes tracked at most (default 65536). */
  readonly maxPrefixes?: number;
}

/** Defaults of the limits (settings dtls.hello_verify_rate_per_second / dtls.hello_verify_rate_per_prefix). */
export const DEFAULT_HELLO_VERIFY_RATE = 5000;
export const DEFAULT_HELLO_VERIFY_RATE_PER_PREFIX = 500;
export const DEFAULT_MAX_PREFIXES = 65_536;
/**
 * What a bucket holds, in seconds of its rate: a burst of HelloVerifyRequests
 * costs the loop 10-30 us each, so a full second's worth at once (5000) would
 * stall established sessions for about 100 ms.
 */
export const BURST_SECONDS = 0.1;
/** The quiet prefixes' reserve, as a share of the global rate. */
export const QUIET_PREFIX_RESERVE = 0.1;
/** How often at most the prefix table is swept for refilled buckets when it is full, ms. */
const SWEEP_INTERVAL_MS = 1000;

/**
 * A token bucket holding at most BURST_SECONDS of its rate (at least one
 * token), full when created.
 */
export class TokenBucket {
  private tokens: number;
  private at: number;
  readonly capacity: number;
  private readonly perMs: number;

  constructor(perSecond: number, now: number) {
    this.capacity = Math.max(1, perSecond * BURST_SECONDS);
    this.perMs = perSecond / 1000;
    this.tokens = this.capacity;
    this.at = now;
  }

  private refill(now: number): void {
    if (now > this.at) {
      this.tokens = Math.min(this.capacity, this.tokens + (now - this.at) * this.perMs);
      this.at = now;
    }
  }

  /** Whether at least half of the capacity is left (after a refill at `now`). */
  atLeastHalf(now: number): boolean {
    this.refill(now);
    return this.tokens * 2 >= this.capacity;
  }

  /** Takes a token if one is there. */
  take(now: number): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Whether the bucket would be full at `now` (then it is no different from a new one). */
  full(now: number): boolean {
    return this.tokens + (now - this.at) * this.perMs >= this.capacity;
  }
}

/**
 * The source prefix an address belongs to, as a compact key: the first three
 * octets of an IPv4 address (also when IPv4-mapped in IPv6), the first four
 * groups of an IPv6 address. Not an address's canonical text; only equal for
 * equal prefixes.
 */
export function sourcePrefix(address: string): string {
  if (address.indexOf(":") < 0) return address.slice(0, address.lastIndexOf(".") + 1);
  const zone = address.indexOf("%");
  const a = (zone < 0 ? address : address.slice(0, zone)).toLowerCase();
  if (a.indexOf(".") >= 0) return a.slice(a.lastIndexOf(":") + 1, a.lastIndexOf(".") + 1); // ::ffff:a.b.c.d
  const gap = a.indexOf("::");
  const head = gap < 0 ? a.split(":") : gap === 0 ? [] : a.slice(0, gap).split(":");
  const groups: string[] = [];
  for (let i = 0; i < 4; i++) groups.push(i < head.length ? String(parseInt(head[i] as string, 16) || 0) : "0");
  if (gap >= 0 && head.length < 4) {
    // groups after "::" may reach into the first four: count from the end (8 groups in all)
    const tail = a.slice(gap + 2) === "" ? [] : a.slice(gap + 2).split(":");
    for (let i = 0; i < tail.length; i++) {
      const at = 8 - tail.length + i;
      if (at < 4) groups[at] = String(parseInt(tail[i] as string, 16) || 0);
    }
  }
  return groups.join(":");
}

/** The global and per-prefix HelloVerifyRequest buckets. */
export class HelloLimiter {
  private readonly global: TokenBucket | undefined;
  /** for quiet prefixes when the global budget is spent (with both limits on) */
  private readonly reserve: TokenBucket | undefined;
  private readonly perPrefix: number;
  private readonly maxPrefixes: number;
  private readonly prefixes = new Map<string, TokenBucket>();
  private sweptAt = -Infinity;

  constructor(limits: HelloLimits, now: number) {
    for (const [name, v] of [
      ["perSecond", limits.perSecond],
      ["perPrefixPerSecond", limits.perPrefixPerSecond],
    ] as const) {
      if (!Number.isFinite(v) || v < 0) throw new RangeError(`${name} must be a number >= 0, got ${v}`);
    }
    this.global = limits.perSecond > 0 ? new TokenBucket(limits.perSecond, now) : undefined;
    this.perPrefix = limits.perPrefixPerSecond;
    this.reserve = this.global !== undefined && this.perPrefix > 0 ? new TokenBucket(limits.perSecond * QUIET_PREFIX_RESERVE, now) : undefined;
    this.maxPrefixes = Math.max(1, limits.maxPrefixes ?? DEFAULT_MAX_PREFIXES);
  }

  /** Prefixes tracked now. */
  get prefixCount(): number {
    return this.prefixes.size;
  }

  /**
   * A first ClientHello from `address`: charges its prefix, then takes a
   * HelloVerifyRequest from the global budget (or the quiet prefixes'
   * reserve). Undefined when one may be sent, otherwise the budget that was spent.
   */
  take(address: string, now: number): "global_limit" | "prefix_limit" | undefined {
    let prefix: TokenBucket | undefined;
    if (this.perPrefix > 0) {
      prefix = this.prefixBucket(sourcePrefix(address), now);
      if (!prefix.take(now)) return "prefix_limit";
    }
    const global = this.global;
    if (global === undefined || global.take(now)) return undefined;
    if (prefix !== undefined && prefix.atLeastHalf(now) && this.reserve?.take(now) === true) return undefined;
    return "global_limit";
  }

  private prefixBucket(prefix: string, now: number): TokenBucket {
    let b = this.prefixes.get(prefix);
    if (b !== undefined) return b;
    if (this.prefixes.size >= this.maxPrefixes) this.makeRoom(now);
    b = new TokenBucket(this.perPrefix, now);
    this.prefixes.set(prefix, b);
    return b;
  }

  private makeRoom(now: number): void {
    if (now - this.sweptAt >= SWEEP_INTERVAL_MS) {
      this.sweptAt = now;
      for (const [k, b] of this.prefixes) if (b.full(now)) this.prefixes.delete(k);
    }
    // every prefix still active: the oldest goes (insertion order)
    while (this.prefixes.size >= this.maxPrefixes) {
      const oldest = this.prefixes.keys().next().value as string;
      this.prefixes.delete(oldest);
    }
  }
}
