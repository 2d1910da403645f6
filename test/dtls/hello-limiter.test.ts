import { describe, expect, it } from "vitest";
import { HelloLimiter, sourcePrefix, TokenBucket } from "../../src/dtls/hello-limiter.ts";

/** n first ClientHellos from `address(i)` at `now`: how many got through, and the refusals by cause. */
function burst(l: HelloLimiter, n: number, address: (i: number) => string, now: number): { ok: number; global_limit: number; prefix_limit: number } {
  const out = { ok: 0, global_limit: 0, prefix_limit: 0 };
  for (let i = 0; i < n; i++) out[l.take(address(i), now) ?? "ok"]++;
  return out;
}

describe("token bucket (injected clock)", () => {
  it("holds a tenth of a second of its rate, full at creation, and refills with time", () => {
    const b = new TokenBucket(40, 1000);
    expect([1, 2, 3, 4, 5].map(() => b.take(1000))).toEqual([true, true, true, true, false]);
    expect(b.take(1020)).toBe(false); // 0.8 token
    expect(b.take(1025)).toBe(true); // 1 token after 25 ms
    expect(b.take(1025)).toBe(false);
    expect(b.full(5000)).toBe(true);
    // never more than the capacity after a long pause
    expect([1, 2, 3, 4, 5].map(() => b.take(60_000))).toEqual([true, true, true, true, false]);
  });

  it("a rate below ten per second still holds one token", () => {
    const b = new TokenBucket(0.5, 0);
    expect(b.take(0)).toBe(true);
    expect(b.take(1000)).toBe(false);
    expect(b.take(2000)).toBe(true);
  });
});

describe("HelloVerifyRequest limiter", () => {
  it("bounds the whole server: a burst from many prefixes gets the global budget, then its rate", () => {
    const l = new HelloLimiter({ perSecond: 50, perPrefixPerSecond: 0 }, 0);
    expect(burst(l, 40, (i) => `10.${i}.0.1`, 0)).toEqual({ ok: 5, global_limit: 35, prefix_limit: 0 });
    expect(burst(l, 40, (i) => `10.${i}.0.1`, 40)).toEqual({ ok: 2, global_limit: 38, prefix_limit: 0 });
    expect(l.prefixCount).toBe(0); // no per-prefix limit: nothing tracked
  });

  it("bounds each /24 (IPv4) and /64 (IPv6): one network cannot take the budget of others", () => {
    const l = new HelloLimiter({ perSecond: 0, perPrefixPerSecond: 30 }, 0);
    expect(burst(l, 10, (i) => `192.0.2.${i}`, 0)).toEqual({ ok: 3, global_limit: 0, prefix_limit: 7 });
    expect(burst(l, 10, (i) => `198.51.100.${i}`, 0)).toEqual({ ok: 3, global_limit: 0, prefix_limit: 7 });
    expect(burst(l, 10, (i) => `2001:db8:0:1::${i.toString(16)}`, 0)).toEqual({ ok: 3, global_limit: 0, prefix_limit: 7 });
    expect(burst(l, 10, (i) => `2001:db8:0:2:${i}::1`, 0)).toEqual({ ok: 3, global_limit: 0, prefix_limit: 7 });
    expect(burst(l, 1, () => "192.0.2.200", 34)).toEqual({ ok: 1, global_limit: 0, prefix_limit: 0 });
  });

  it("charges a flooding prefix for every ClientHello; a quiet prefix draws on the reserve when the global budget is spent", () => {
    // global 200/s (20 held), reserve 20/s (2 held), each prefix 1000/s (100 held)
    const l = new HelloLimiter({ perSecond: 200, perPrefixPerSecond: 1000 }, 0);
    // one network floods at 2000/s for a second: it empties its own bucket and spends the global budget
    let flood = { ok: 0, global_limit: 0, prefix_limit: 0 };
    for (let t = 0; t <= 1000; t += 10) {
      const b = burst(l, 20, (i) => `203.0.113.${i}`, t);
      flood = { ok: flood.ok + b.ok, global_limit: flood.global_limit + b.global_limit, prefix_limit: flood.prefix_limit + b.prefix_limit };
    }
    // the global budget (20 held + 200/s) and, while its bucket was still half full, a little of the reserve
    expect(flood.ok).toBeGreaterThanOrEqual(220);
    expect(flood.ok).toBeLessThanOrEqual(224);
    expect(flood.prefix_limit).toBeGreaterThan(900); // 2020 sent, 100 + 1000/s allowed to ask
    expect(l.take("203.0.113.1", 1000)).not.toBeUndefined();
    // devices from elsewhere still get their answer from the reserve (refilled meanwhile)...
    expect(l.take("198.51.100.7", 1000)).toBeUndefined();
    expect(l.take("192.0.2.9", 1000)).toBeUndefined();
    // ...which is bounded too
    expect(l.take("192.0.2.10", 1000)).toBe("global_limit");
  });

  it("keeps the prefix table bounded", () => {
    const l = new HelloLimiter({ perSecond: 0, perPrefixPerSecond: 2, maxPrefixes: 8 }, 0);
    for (let i = 0; i < 1000; i++) l.take(`10.${i >> 8}.${i & 255}.1`, i);
    expect(l.prefixCount).toBeLessThanOrEqual(8);
    // the last prefix seen (at 999) is still tracked: its bucket is still empty
    expect(burst(l, 3, () => "10.3.231.1", 999)).toEqual({ ok: 0, global_limit: 0, prefix_limit: 3 });
  });

  it("refuses a negative or non-finite rate", () => {
    expect(() => new HelloLimiter({ perSecond: -1, perPrefixPerSecond: 0 }, 0)).toThrow(RangeError);
    expect(() => new HelloLimiter({ perSecond: 1, perPrefixPerSecond: Number.NaN }, 0)).toThrow(RangeError);
  });
});

describe("source prefix", () => {
  it.each([
    ["192.0.2.77", "192.0.2."],
    ["192.0.2.1", "192.0.2."],
    ["::ffff:192.0.2.77", "192.0.2."],
    ["2001:db8:1:2:3:4:5:6", "8193:3512:1:2"],
    ["2001:DB8:1:2::1", "8193:3512:1:2"],
    ["2001:db8:0001:0002::", "8193:3512:1:2"],
    ["2001:db8::1", "8193:3512:0:0"],
    ["1:2::3:4:5:6:7", "1:2:0:3"],
    ["::1", "0:0:0:0"],
    ["::", "0:0:0:0"],
    ["fe80::1%eth0", "65152:0:0:0"],
  ])("%s -> %s", (address, prefix) => {
    expect(sourcePrefix(address)).toBe(prefix);
  });

  it("tells different /64s and /24s apart", () => {
    expect(sourcePrefix("2001:db8:0:1::1")).not.toBe(sourcePrefix("2001:db8:0:2::1"));
    expect(sourcePrefix("10.0.1.1")).not.toBe(sourcePrefix("10.0.2.1"));
    expect(sourcePrefix("10.0.1.1")).not.toBe(sourcePrefix("10.0.11.1"));
  });
});
