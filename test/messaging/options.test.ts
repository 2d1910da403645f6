import { describe, expect, it } from "vitest";
import { DEFAULT_DELIVERY_OPTIONS, resolveDeliveryOptions } from "../../src/messaging/options.ts";

describe("resolveDeliveryOptions", () => {
  it("gives the defaults, and applies what is given (rtt merged field by field)", () => {
    expect(resolveDeliveryOptions()).toEqual(DEFAULT_DELIVERY_OPTIONS);
    const o = resolveDeliveryOptions({ window: 8, rtt: { ...DEFAULT_DELIVERY_OPTIONS.rtt, minRto: 50 } });
    expect(o.window).toBe(8);
    expect(o.rtt.minRto).toBe(50);
    expect(o.rtt.maxRto).toBe(DEFAULT_DELIVERY_OPTIONS.rtt.maxRto);
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ["window 0", { window: 0 }, /window must be an integer from 1 to 1024, got 0/],
    ["fractional queue", { maxQueue: 1.5 }, /maxQueue must be an integer/],
    ["NaN payload", { maxPayload: Number.NaN }, /maxPayload/],
    ["string heartbeat", { heartbeatIntervalMs: "30000" }, /heartbeatIntervalMs must be an integer from 1000/],
    ["policy", { queueFullPolicy: "drop-newest" }, /queueFullPolicy must be "reject" or "drop-oldest", got drop-newest/],
    ["ttl order", { defaultTtlSeconds: 100, maxTtlSeconds: 10 }, /defaultTtlSeconds \(100\) is above maxTtlSeconds \(10\)/],
    ["rtt order", { rtt: { minRto: 5000, maxRto: 1000 } }, /rtt.minRto \(5000\) is above rtt.maxRto \(1000\)/],
    ["jitter", { jitter: 2 }, /jitter must be a number from 0 to 0.5/],
  ];
  for (const [name, partial, message] of bad) {
    it(`refuses ${name} with bad_option naming it`, () => {
      expect(() => resolveDeliveryOptions(partial as never)).toThrow(message);
      try {
        resolveDeliveryOptions(partial as never);
      } catch (e) {
        expect((e as { code: string }).code).toBe("bad_option");
      }
    });
  }
});
