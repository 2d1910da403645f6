/**
 * The SDK's dead-server detection, sans-I/O with a fake clock: probes after
 * silence and after an unanswered request, death after (probes + 1) RTOs,
 * RTT samples (RFC 6298) from Ping/Pong and request/answer pairs, Karn's rule,
 * answers to nothing we sent, the floor and ceiling, option checks.
 */
import { describe, expect, it } from "vitest";
import { checkLivenessOptions, LIVENESS_DEFAULTS, LivenessMonitor, type AnyFrame, type CheckedLivenessOptions } from "../../src/client/liveness.ts";

const ping = (time: number): AnyFrame => ({ kind: "ping", ping: { time } });
const pong = (time: number): AnyFrame => ({ kind: "pong", pong: { time, serverTime: 0 } });
const publish = (requestId: number): AnyFrame => ({
  kind: "publish",
  publish: { requestId, topic: "t", payload: new Uint8Array(), contentType: "", ttlSeconds: 0, priority: 0 },
});
const publishAck = (requestId: number): AnyFrame => ({ kind: "publishAck", publishAck: { requestId, messageId: "m", error: undefined } });
const ack: AnyFrame = { kind: "ack", ack: { cumulative: 1, ranges: [], rejected: [] } };

function monitor(o: Partial<CheckedLivenessOptions> = {}): LivenessMonitor {
  const m = new LivenessMonitor({ ...LIVENESS_DEFAULTS, ...o });
  m.reset(0);
  return m;
}

/** Runs the monitor's timer at each deadline up to `until`, sending a Ping for each probe; returns the actions with their times. */
function run(m: LivenessMonitor, until: number): string[] {
  const seen: string[] = [];
  for (let i = 0; i < 100; i++) {
    const at = m.deadline();
    if (at > until) break;
    const action = m.onTimer(at);
    if (action === undefined) throw new Error(`no action at its own deadline ${at}`);
    seen.push(`${action}@${at}`);
    if (action === "dead") break;
    m.sent(ping(at), at);
  }
  return seen;
}

describe("LivenessMonitor", () => {
  it("an idle device probes after idleMs of silence and declares the server dead (probes + 1) RTOs later", () => {
    const m = monitor({ idleMs: 15_000, probes: 3, minRtoMs: 1000 });
    expect(m.deadline()).toBe(15_000);
    expect(m.onTimer(14_999)).toBeUndefined();
    expect(run(m, 100_000)).toEqual(["probe@15000", "probe@16000", "probe@17000", "probe@18000", "dead@19000"]);
  });

  it("any record from the server ends the wait and restarts the idle period", () => {
    const m = monitor({ idleMs: 5000 });
    expect(m.onTimer(5000)).toBe("probe");
    m.sent(ping(5000), 5000);
    expect(m.onTimer(6000)).toBe("probe");
    m.sent(ping(6000), 6000);
    m.heard(undefined, 6500); // even an undecodable record: the server is there
    expect(m.waitingFor(6500)).toBe(0);
    expect(m.deadline()).toBe(11_500);
    expect(run(m, 100_000)[0]).toBe("probe@11500");
  });

  it("a Publish unanswered starts a wait at once: dead (probes + 1) RTOs after it went out, however long the idle period", () => {
    const m = monitor({ idleMs: 600_000, probes: 2, minRtoMs: 1000 });
    m.heard(undefined, 1000);
    m.sent(ack, 1500); // acks expect no answer
    expect(m.deadline()).toBe(601_000);
    m.sent(publish(7), 2000);
    m.sent(publish(7), 2500); // the session's own repeat does not move the wait
    expect(run(m, 100_000)).toEqual(["probe@3000", "probe@4000", "dead@5000"]);
  });

  it("RTO from Ping/Pong samples (RFC 6298), clamped to the floor and the ceiling", () => {
    const m = monitor({ minRtoMs: 200, maxRtoMs: 3000 });
    expect(m.rto).toBe(200); // no sample yet: the floor
    m.sent(ping(1000), 1000);
    m.heard(pong(1000), 1100); // R = 100: SRTT 100, RTTVAR 50, RTO 100 + 200
    expect(m.smoothedRtt).toBe(100);
    expect(m.rto).toBe(300);
    m.sent(ping(2000), 2000);
    m.heard(pong(2000), 2300); // R = 300: RTTVAR 0.75*50 + 0.25*200 = 87.5, SRTT 125; RTO 125 + 350
    expect(m.smoothedRtt).toBe(125);
    expect(m.rto).toBe(475);
    m.sent(publish(1), 3000);
    m.heard(publishAck(1), 13_000); // a 10 s answer: RTO hits the ceiling
    expect(m.rto).toBe(3000);
    const low = monitor({ minRtoMs: 1000 });
    low.sent(ping(10), 10);
    low.heard(pong(10), 12);
    expect(low.rto).toBe(1000); // a 2 ms loopback round trip: the floor
  });

  it("no sample from a repeated request (Karn) nor from an answer to nothing we sent", () => {
    const m = monitor();
    m.sent(publish(1), 0);
    m.sent(publish(1), 1000);
    m.heard(publishAck(1), 1050);
    expect(m.smoothedRtt).toBeUndefined();
    m.heard(pong(123), 2000); // a Pong for a Ping never sent: a claim
    m.heard(publishAck(99), 2000);
    expect(m.smoothedRtt).toBeUndefined();
    m.sent({ kind: "hello", hello: { version: 1, sessionToken: "", receivedSeq: 0, maxPayload: 0, client: "" } }, 3000);
    m.heard({ kind: "welcome", welcome: {} as never }, 3040);
    expect(m.smoothedRtt).toBe(40);
  });

  it("the RTO of a wait is the one in force when it began; a reconnect keeps the estimate", () => {
    const m = monitor({ minRtoMs: 100, maxRtoMs: 4000, probes: 1 });
    m.sent(ping(0), 0);
    m.heard(pong(0), 2000); // RTO 2000 + 4000 -> 4000 (ceiling)
    expect(m.rto).toBe(4000);
    m.reset(10_000);
    expect(m.rto).toBe(4000);
    m.sent(publish(5), 10_000);
    expect(run(m, 100_000)).toEqual(["probe@14000", "dead@18000"]);
  });

  it("remembers a bounded number of unanswered round trips", () => {
    const m = monitor({ idleMs: 1_000_000 });
    for (let t = 1; t <= 10_000; t++) m.sent(ping(t), t);
    m.heard(pong(1), 10_001); // forgotten long ago: no sample
    expect(m.smoothedRtt).toBeUndefined();
    m.heard(pong(10_000), 10_010);
    expect(m.smoothedRtt).toBe(10);
  });

  it("options: defaults, and a clear message for each bad value", () => {
    expect(checkLivenessOptions({})).toEqual(LIVENESS_DEFAULTS);
    expect(checkLivenessOptions({ idleMs: 2000 })).toEqual({ ...LIVENESS_DEFAULTS, idleMs: 2000 });
    expect(checkLivenessOptions({ probes: -1 })).toMatch(/liveness\.probes must be a whole number from 0 to 100, got -1/);
    expect(checkLivenessOptions({ idleMs: 1.5 })).toMatch(/liveness\.idleMs/);
    expect(checkLivenessOptions({ minRtoMs: Number.NaN })).toMatch(/liveness\.minRtoMs/);
    expect(checkLivenessOptions({ minRtoMs: 5000, maxRtoMs: 4000 })).toMatch(/must not exceed liveness\.maxRtoMs/);
  });
});
