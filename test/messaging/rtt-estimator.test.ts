import { describe, expect, it } from "vitest";
import { DEFAULT_RTT_OPTIONS, RttEstimator } from "../../src/messaging/rtt-estimator.ts";

describe("RttEstimator", () => {
  it("starts at the initial RTO (RFC 6298: 1 s) with no estimate", () => {
    const r = new RttEstimator();
    expect(DEFAULT_RTT_OPTIONS).toEqual({ initialRto: 1000, minRto: 200, maxRto: 60_000, granularity: 1, maxBackoff: 10_000 });
    expect(r.rto).toBe(1000);
    expect(r.smoothed).toBeUndefined();
    expect(r.variance).toBe(0);
  });

  it("first sample: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4*RTTVAR", () => {
    const r = new RttEstimator();
    r.sample(300);
    expect(r.smoothed).toBe(300);
    expect(r.variance).toBe(150);
    expect(r.rto).toBe(900);
  });

  it("later samples smooth with alpha 1/8 and beta 1/4 (RTTVAR updated with the old SRTT)", () => {
    const r = new RttEstimator();
    r.sample(300);
    r.sample(500);
    // RTTVAR = 3/4 * 150 + 1/4 * |300 - 500| = 162.5; SRTT = 7/8 * 300 + 1/8 * 500 = 325
    expect(r.variance).toBe(162.5);
    expect(r.smoothed).toBe(325);
    expect(r.rto).toBe(325 + 4 * 162.5);
    r.sample(100);
    // RTTVAR = 3/4 * 162.5 + 1/4 * 225; SRTT = 7/8 * 325 + 1/8 * 100
    expect(r.variance).toBeCloseTo(178.125, 9);
    expect(r.smoothed).toBeCloseTo(296.875, 9);
    expect(r.rto).toBeCloseTo(296.875 + 4 * 178.125, 9);
  });

  it("clamps the RTO to [minRto, maxRto]", () => {
    const low = new RttEstimator();
    low.sample(10); // 10 + 20 = 30
    expect(low.rto).toBe(200);
    const high = new RttEstimator();
    high.sample(30_000); // 30 s + 60 s
    expect(high.rto).toBe(60_000);
  });

  it("uses the clock granularity when RTTVAR is smaller", () => {
    const r = new RttEstimator({ initialRto: 1000, minRto: 0, maxRto: 60_000, granularity: 100, maxBackoff: 60_000 });
    for (let i = 0; i < 100; i++) r.sample(300);
    expect(r.smoothed).toBeCloseTo(300, 6);
    expect(r.variance).toBeLessThan(1);
    expect(r.rto).toBeCloseTo(400, 6);
  });

  it("a steady ~50 ms RTT settles on the 200 ms floor", () => {
    const r = new RttEstimator();
    for (let i = 0; i < 20; i++) r.sample(50);
    expect(r.smoothed).toBe(50);
    expect(r.rto).toBe(200);
  });

  it("treats a negative sample (clock step) as 0", () => {
    const r = new RttEstimator({ initialRto: 1000, minRto: 0, maxRto: 60_000, granularity: 1, maxBackoff: 60_000 });
    r.sample(-50);
    expect(r.smoothed).toBe(0);
    expect(r.variance).toBe(0);
    expect(r.rto).toBe(1);
  });

  describe("timeout (backoff and jitter)", () => {
    it("doubles per retransmission, from the RTO", () => {
      const r = new RttEstimator();
      // random 0.5 = no jitter
      expect([0, 1, 2, 3, 4, 5, 6].map((t) => r.timeout(t, 0.2, 0.5))).toEqual([1000, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    });

    it("caps the backed-off timeout at maxBackoff (or the RTO when larger), before jitter", () => {
      const r = new RttEstimator();
      expect(r.timeout(7, 0.2, 0.5)).toBe(10_000);
      expect(r.timeout(50, 0.2, 0.5)).toBe(10_000);
      expect(r.timeout(50, 0.2, 0)).toBe(8_000);
      expect(r.timeout(50, 0.2, 0.999_999_999)).toBe(12_000);
      const slow = new RttEstimator();
      slow.sample(20_000); // RTO 60 s (maxRto): above maxBackoff, so backoff stays at the RTO
      expect(slow.timeout(3, 0, 0.5)).toBe(60_000);
    });

    it("spreads by +- jitter", () => {
      const r = new RttEstimator();
      r.sample(300); // RTO 900
      expect(r.timeout(1, 0.2, 0)).toBe(720);
      expect(r.timeout(1, 0.2, 0.25)).toBe(810);
      expect(r.timeout(1, 0.2, 0.75)).toBe(990);
      expect(r.timeout(2, 0.1, 0)).toBe(1620);
      expect(r.timeout(1, 0, 0.9)).toBe(900);
    });

    it("limits the doubling to 2^16 when maxRto is large", () => {
      const r = new RttEstimator({ initialRto: 1, minRto: 1, maxRto: Number.MAX_SAFE_INTEGER, granularity: 1, maxBackoff: Number.MAX_SAFE_INTEGER });
      expect(r.timeout(17, 0, 0.5)).toBe(65_536);
      expect(r.timeout(1000, 0, 0.5)).toBe(65_536);
    });

    it("is never below 1 ms", () => {
      const r = new RttEstimator({ initialRto: 1, minRto: 0, maxRto: 10, granularity: 0, maxBackoff: 10 });
      expect(r.timeout(1, 1, 0)).toBe(1);
    });
  });
});
