import { describe, expect, it } from "vitest";
import { DeviceSession } from "../../src/messaging/device-session.ts";
import {
  decodeFrame,
  encodeFrame,
  ErrorCode,
  type FrameBody,
  type FrameInit,
  type Push,
  type PushInit,
  type WelcomeInit,
} from "../../src/wire/index.ts";

const T = 1_000_000;

function welcome(extra: WelcomeInit = {}): Uint8Array {
  return encodeFrame({
    kind: "welcome",
    welcome: {
      version: 1,
      deviceId: "dev",
      sessionToken: "tok-2",
      tokenExpiresAt: T + 3_600_000,
      heartbeatIntervalMs: 30_000,
      serverTime: T,
      jwks: '{"keys":[]}',
      limits: { maxPayload: 1024, window: 32, maxTopics: 100 },
      ...extra,
    },
  });
}

function push(seq: number, extra: PushInit = {}): Uint8Array {
  return encodeFrame({
    kind: "push",
    push: { seq, messageId: `m${seq}`, device: "dev", payload: new TextEncoder().encode(`p${seq}`), signature: "s", ...extra },
  });
}

const frame = (init: FrameInit): Uint8Array => encodeFrame(init);

/** Decoded frames the session has to send. */
function take(s: DeviceSession, now: number): FrameBody[] {
  return s.takeRecords(now).map((r) => decodeFrame(r) as FrameBody);
}

/** Runs the session's timers from T until `end` (taking what it sends); the times of its Pings, from T. */
function pingTimes(s: DeviceSession, end: number): number[] {
  let now = T;
  const pings: number[] = [];
  while (now < end) {
    now = s.nextDeadline() as number;
    s.onTimer(now);
    for (const f of take(s, now)) if (f.kind === "ping") pings.push(now - T);
  }
  return pings;
}

const tick = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

interface Harness {
  readonly s: DeviceSession;
  readonly messages: Push[];
  readonly rejected: number[];
  readonly verified: { seq: number; jwks: string }[];
  /** verification outcome per seq (default true) */
  readonly verdict: Map<number, boolean | "unknown_key">;
  /** process each message at once and persist */
  auto: boolean;
}

function harness(options: { hwm?: number; sessionToken?: string; ackDelayMs?: number; ackEvery?: number } = {}): Harness {
  const verdict = new Map<number, boolean | "unknown_key">();
  const verified: { seq: number; jwks: string }[] = [];
  const s = new DeviceSession({
    hwm: options.hwm ?? 0,
    sessionToken: options.sessionToken ?? "tok-1",
    verify: async (p, jwks) => {
      verified.push({ seq: p.seq, jwks });
      return verdict.get(p.seq) ?? true;
    },
    ...(options.ackDelayMs !== undefined ? { ackDelayMs: options.ackDelayMs } : {}),
    ...(options.ackEvery !== undefined ? { ackEvery: options.ackEvery } : {}),
  });
  const h: Harness = { s, messages: [], rejected: [], verified, verdict, auto: true };
  s.on("message", (p) => {
    h.messages.push(p);
    if (h.auto) {
      s.processed(p.seq);
      s.persisted(p.seq);
    }
  });
  s.on("rejected", (p) => h.rejected.push(p.seq));
  return h;
}

describe("DeviceSession", () => {
  it("repeats the same Hello (1 s, doubling, at most 8 s) until a Welcome, and sends nothing else before", () => {
    const { s } = harness({ hwm: 7 });
    s.start(T);
    const first = s.takeRecords(T);
    expect(first).toHaveLength(1);
    expect(decodeFrame(first[0] as Uint8Array)).toEqual({
      kind: "hello",
      hello: { version: 1, sessionToken: "tok-1", receivedSeq: 7, maxPayload: 0, client: "dtlspush-sdk" },
    });
    void s.publish("t", new Uint8Array([1]), {}, T);
    expect(s.takeRecords(T)).toEqual([]);
    const times: number[] = [];
    let now = T;
    for (let i = 0; i < 6; i++) {
      now = s.nextDeadline() as number;
      s.onTimer(now);
      times.push(now - T);
      const out = s.takeRecords(now);
      expect(out).toEqual(first);
    }
    expect(times).toEqual([1000, 3000, 7000, 15_000, 23_000, 31_000]);
  });

  it("gives up on a Hello nothing answers (stale after helloTimeoutMs) and repeats it no more", () => {
    const { s } = harness();
    let stale = 0;
    s.on("stale", () => stale++);
    s.start(T);
    s.takeRecords(T);
    let now = T;
    let hellos = 0;
    while (s.nextDeadline() !== undefined && now < T + 600_000) {
      now = s.nextDeadline() as number;
      s.onTimer(now);
      hellos += s.takeRecords(now).length;
    }
    // 1, 3, 7, 15, 23, ... 55 s; at 63 s (past 60 s) it gives up
    expect(hellos).toBe(9);
    expect(now).toBe(T + 63_000);
    expect(stale).toBe(1);
    expect(s.nextDeadline()).toBeUndefined();
  });

  it("drops pushes before the Welcome, without an ack", async () => {
    const h = harness();
    h.s.start(T);
    h.s.takeRecords(T);
    h.s.receive(push(1), T);
    await tick();
    expect(h.verified).toEqual([]);
    expect(h.s.takeRecords(T)).toEqual([]);
  });

  it("after the Welcome: verifies with its JWKS, hands over in order, acks only what is persisted", async () => {
    const h = harness();
    h.auto = false;
    h.s.start(T);
    h.s.takeRecords(T);
    h.s.receive(welcome({ jwks: '{"keys":["k"]}' }), T + 10);
    expect(take(h.s, T + 10)).toEqual([{ kind: "ack", ack: { cumulative: 0, ranges: [], rejected: [] } }]);
    h.s.receive(push(2), T + 20);
    h.s.receive(push(1), T + 21);
    await tick();
    expect(h.verified).toEqual([
      { seq: 2, jwks: '{"keys":["k"]}' },
      { seq: 1, jwks: '{"keys":["k"]}' },
    ]);
    // one at a time: 2 waits until the application is done with 1
    expect(h.messages.map((m) => m.seq)).toEqual([1]);
    h.s.processed(1);
    expect(h.messages.map((m) => m.seq)).toEqual([1, 2]);
    h.s.processed(2);
    // processed but not persisted: the ack claims nothing
    expect(take(h.s, T + 30).at(-1)).toEqual({ kind: "ack", ack: { cumulative: 0, ranges: [], rejected: [] } });
    h.s.persisted(1);
    expect(take(h.s, T + 31)).toEqual([{ kind: "ack", ack: { cumulative: 1, ranges: [], rejected: [] } }]);
    h.s.persisted(2);
    expect(take(h.s, T + 32)).toEqual([{ kind: "ack", ack: { cumulative: 2, ranges: [], rejected: [] } }]);
    // a duplicate is acked again, not handed over again
    h.s.receive(push(1), T + 40);
    await tick();
    expect(take(h.s, T + 40)).toEqual([{ kind: "ack", ack: { cumulative: 2, ranges: [], rejected: [] } }]);
    expect(h.messages).toHaveLength(2);
    expect(h.verified).toHaveLength(2);
  });

  it("refuses a push whose verification fails and lists it in Ack.rejected", async () => {
    const h = harness();
    h.verdict.set(1, false);
    h.s.start(T);
    h.s.receive(welcome(), T);
    h.s.takeRecords(T);
    h.s.receive(push(1), T);
    h.s.receive(push(2), T);
    await tick();
    expect(h.rejected).toEqual([1]);
    expect(h.messages.map((m) => m.seq)).toEqual([2]);
    // (the delayed ack: 5 ms after the pushes came)
    expect(take(h.s, T + 5).at(-1)).toEqual({ kind: "ack", ack: { cumulative: 2, ranges: [], rejected: [1] } });
  });

  it("refuses a push that expired more than the grace (60 s) ago by its clock, and hands over one within it", async () => {
    const h = harness();
    h.s.start(T);
    h.s.receive(welcome(), T);
    h.s.takeRecords(T);
    h.s.receive(push(1, { expiresAt: T - 61_000 }), T);
    h.s.receive(push(2, { expiresAt: T - 59_000 }), T);
    h.s.receive(push(3, { expiresAt: T + 1000 }), T);
    await tick();
    expect(h.rejected).toEqual([1]);
    expect(h.messages.map((m) => m.seq)).toEqual([2, 3]);
    expect(take(h.s, T + 5).at(-1)).toEqual({ kind: "ack", ack: { cumulative: 3, ranges: [], rejected: [1] } });
  });

  it("on a push by an unknown key, refreshes its Welcome once and checks it again against the new JWKS", async () => {
    const h = harness();
    h.verdict.set(1, "unknown_key");
    h.s.start(T);
    h.s.receive(welcome({ jwks: '{"keys":["old"]}' }), T);
    h.s.takeRecords(T);
    h.s.receive(push(1), T + 10);
    await tick();
    // held, not refused: a refresh Hello with the current token goes out
    expect(h.rejected).toEqual([]);
    const out = take(h.s, T + 10);
    expect(out.filter((f) => f.kind === "hello")).toEqual([
      { kind: "hello", hello: { version: 1, sessionToken: "tok-2", receivedSeq: 0, maxPayload: 0, client: "dtlspush-sdk" } },
    ]);
    expect(out.some((f) => f.kind === "ack" && f.ack.cumulative === 1)).toBe(false);
    h.verdict.set(1, true);
    h.s.receive(welcome({ jwks: '{"keys":["old","new"]}', sessionToken: "tok-3" }), T + 20);
    await tick();
    expect(h.verified.map((v) => v.jwks)).toEqual(['{"keys":["old"]}', '{"keys":["old","new"]}']);
    expect(h.messages.map((m) => m.seq)).toEqual([1]);
    expect(h.s.sessionToken).toBe("tok-3");
  });

  it("refuses a push whose key the refreshed JWKS does not hold either", async () => {
    const h = harness();
    h.verdict.set(1, "unknown_key");
    h.s.start(T);
    h.s.receive(welcome(), T);
    h.s.takeRecords(T);
    h.s.receive(push(1), T);
    await tick();
    h.s.receive(welcome(), T + 20);
    await tick();
    expect(h.rejected).toEqual([1]);
    expect(h.verified).toHaveLength(2);
  });

  it("a refresh whose token is refused falls back to a Hello without a token", async () => {
    const h = harness();
    h.verdict.set(1, "unknown_key");
    h.s.start(T);
    h.s.receive(welcome(), T);
    h.s.takeRecords(T);
    h.s.receive(push(1), T);
    await tick();
    h.s.takeRecords(T);
    h.s.receive(frame({ kind: "error", error: { code: ErrorCode.TOKEN_EXPIRED, message: "old" } }), T + 5);
    expect(take(h.s, T + 5).filter((f) => f.kind === "hello")).toEqual([
      { kind: "hello", hello: { version: 1, sessionToken: "", receivedSeq: 0, maxPayload: 0, client: "dtlspush-sdk" } },
    ]);
  });

  it("abandonRequests fails every pending request with the error given", async () => {
    const h = harness();
    h.s.start(T);
    h.s.receive(welcome(), T);
    const p = h.s.publish("chat", new TextEncoder().encode("x"), {}, T);
    const q = h.s.subscribe(["a"], true, T);
    h.s.abandonRequests(new Error("closed"));
    await expect(p).rejects.toThrow("closed");
    await expect(q).rejects.toThrow("closed");
    expect(h.s.pendingRequests).toBe(0);
  });

  it("moves its mark up to Welcome.acked_seq", () => {
    const h = harness({ hwm: 3 });
    h.s.start(T);
    h.s.takeRecords(T);
    h.s.receive(welcome({ ackedSeq: 9 }), T);
    expect(h.s.receiver.hwm).toBe(9);
    expect(take(h.s, T)).toEqual([{ kind: "ack", ack: { cumulative: 9, ranges: [], rejected: [] } }]);
  });

  it("repeats a request until its answer arrives, then resolves with it", async () => {
    const h = harness();
    h.s.start(T);
    h.s.receive(welcome(), T);
    h.s.takeRecords(T);
    let result: string | undefined;
    void h.s.publish("chat", new TextEncoder().encode("x"), {}, T).then((id) => (result = id));
    const sent = h.s.takeRecords(T);
    expect(sent).toHaveLength(1);
    expect(decodeFrame(sent[0] as Uint8Array)).toMatchObject({ kind: "publish", publish: { requestId: 1, topic: "chat" } });
    h.s.onTimer(T + 1000);
    expect(h.s.takeRecords(T + 1000)).toEqual(sent);
    h.s.onTimer(T + 3000);
    expect(h.s.takeRecords(T + 3000)).toEqual(sent);
    h.s.receive(frame({ kind: "publishAck", publishAck: { requestId: 1, messageId: "up:dev:1" } }), T + 3010);
    await tick();
    expect(result).toBe("up:dev:1");
    expect(h.s.pendingRequests).toBe(0);
    h.s.onTimer(T + 20_000);
    expect(take(h.s, T + 20_000).filter((f) => f.kind === "publish")).toEqual([]);
  });

  it("pings when idle and goes stale after missed heartbeats of server silence", () => {
    const h = harness();
    let stale = 0;
    h.s.on("stale", () => stale++);
    h.s.start(T);
    h.s.receive(welcome({ heartbeatIntervalMs: 1000 }), T);
    h.s.takeRecords(T);
    expect(pingTimes(h.s, T + 5000).slice(0, 3)).toEqual([1000, 2000, 3000]);
    // 3 intervals + half of one
    expect(stale).toBe(1);
  });

  it("a Welcome's heartbeat interval and token lifetime are claims: 0 does not make the device ping or refresh in a loop", () => {
    const h = harness();
    h.s.start(T);
    h.s.receive(welcome({ heartbeatIntervalMs: 0, tokenExpiresAt: T, serverTime: T }), T);
    h.s.takeRecords(T);
    const frames: string[] = [];
    for (let now = T; now <= T + 5000; now += 10) {
      h.s.onTimer(now);
      for (const f of take(h.s, now)) frames.push(f.kind);
    }
    // at most one Ping a second (MIN_HEARTBEAT_MS), no token refresh within 10 s (MIN_REFRESH_MS)
    expect(frames.filter((k) => k === "ping").length).toBeLessThanOrEqual(5);
    expect(frames.filter((k) => k === "hello")).toEqual([]);
  });

  it("after a refused token, says Hello again without one", () => {
    const h = harness({ sessionToken: "bad" });
    const errors: number[] = [];
    h.s.on("serverError", (e) => errors.push(e.code));
    h.s.start(T);
    h.s.takeRecords(T);
    h.s.receive(frame({ kind: "error", error: { code: ErrorCode.TOKEN_EXPIRED, message: "old" } }), T + 5);
    expect(take(h.s, T + 5)).toEqual([
      { kind: "hello", hello: { version: 1, sessionToken: "", receivedSeq: 0, maxPayload: 0, client: "dtlspush-sdk" } },
    ]);
    expect(errors).toEqual([ErrorCode.TOKEN_EXPIRED]);
  });

  it("once ended by a Bye it has no deadline and ignores what arrives", async () => {
    const h = harness();
    const byes: (number | undefined)[] = [];
    h.s.on("bye", (r) => byes.push(r?.code));
    h.s.start(T);
    h.s.takeRecords(T);
    h.s.receive(frame({ kind: "bye", bye: { reason: { code: ErrorCode.DEVICE_REVOKED, message: "revoked" } } }), T + 5);
    expect(byes).toEqual([ErrorCode.DEVICE_REVOKED]);
    expect(h.s.nextDeadline()).toBeUndefined();
    h.s.receive(welcome(), T + 6);
    h.s.receive(push(1), T + 6);
    await tick();
    expect(h.s.welcomed).toBeUndefined();
    expect(h.messages).toEqual([]);
  });

  it("ended by itself: a Bye goes out and no deadline remains", () => {
    const h = harness();
    h.s.start(T);
    h.s.receive(welcome(), T);
    h.s.takeRecords(T);
    h.s.bye(T + 1);
    expect(take(h.s, T + 1)).toEqual([{ kind: "bye", bye: {} }]);
    expect(h.s.nextDeadline()).toBeUndefined();
  });

  it("a Bye carries the ack still pending before it (the last message processed is not sent again)", async () => {
    const h = harness();
    h.s.start(T);
    h.s.receive(welcome(), T);
    h.s.takeRecords(T);
    h.s.receive(push(1), T);
    await tick();
    expect(h.messages.map((m) => m.seq)).toEqual([1]);
    h.s.bye(T + 1);
    expect(take(h.s, T + 1)).toEqual([
      { kind: "ack", ack: { cumulative: 1, ranges: [], rejected: [] } },
      { kind: "bye", bye: {} },
    ]);
  });
});

describe("DeviceSession after SEQ_AHEAD (the server's store lost the seqs this device saw)", () => {
  const seqAhead = (claim: number, last: number): Uint8Array =>
    frame({
      kind: "error",
      error: { code: ErrorCode.SEQ_AHEAD, message: `Hello.received_seq ${claim} is above the last seq this server sent device dev (${last})` },
    });
  const hellos = (frames: FrameBody[]): number[] => frames.flatMap((f) => (f.kind === "hello" ? [f.hello.receivedSeq] : []));
  /** The session's reset, refusal and server-error events. */
  const watch = (s: DeviceSession): { resets: unknown[]; refused: unknown[]; errors: unknown[] } => {
    const w = { resets: [] as unknown[], refused: [] as unknown[], errors: [] as unknown[] };
    s.on("seqReset", (r) => w.resets.push(r));
    s.on("refused", (e) => w.refused.push(e));
    s.on("serverError", (e) => w.errors.push(e));
    return w;
  };

  it("resets hwm to 0 once, says Hello again only after the driver persisted it, and takes seqs it had seen as new", async () => {
    const h = harness({ hwm: 5 });
    const { s } = h;
    const { resets, refused, errors } = watch(s);
    s.start(T);
    expect(hellos(take(s, T))).toEqual([5]);
    s.receive(seqAhead(5, 0), T + 10);
    expect(resets).toEqual([{ previousHwm: 5, hwm: 0, error: expect.objectContaining({ code: ErrorCode.SEQ_AHEAD }) }]);
    expect(s.receiver.hwm).toBe(0);
    // nothing goes out (no Hello with the old mark, no Hello with 0 yet) until the reset is persisted
    expect(s.nextDeadline()).toBeUndefined();
    s.onTimer(T + 20_000);
    expect(take(s, T + 20_000)).toEqual([]);
    s.persisted(5); // a save of the old mark finishing late changes nothing
    s.resetPersisted(T + 20_001);
    expect(hellos(take(s, T + 20_001))).toEqual([0]);
    s.receive(welcome({ ackedSeq: 0 }), T + 20_010);
    s.receive(push(1), T + 20_020);
    await tick();
    expect(h.messages.map((m) => m.seq)).toEqual([1]);
    expect(refused).toEqual([]);
    expect(errors).toEqual([]); // the refusal it recovered from is a reset, not an error
  });

  it("answers to repeats of the refused Hello are not a second refusal; a refusal of the Hello with 0 ends the session", () => {
    const { s } = harness({ hwm: 5 });
    const { resets, refused, errors } = watch(s);
    s.start(T);
    s.onTimer(T + 1000); // the Hello with 5 went out twice
    expect(hellos(take(s, T + 1000))).toEqual([5, 5]);
    s.receive(seqAhead(5, 0), T + 1010);
    s.resetPersisted(T + 1020);
    expect(hellos(take(s, T + 1020))).toEqual([0]);
    s.receive(seqAhead(5, 0), T + 1030); // the answer to the repeat
    expect(refused).toEqual([]);
    s.receive(seqAhead(0, 0), T + 1040); // a server that refuses 0 too: a different failure, no loop
    expect(refused).toEqual([expect.objectContaining({ code: ErrorCode.SEQ_AHEAD })]);
    expect(s.nextDeadline()).toBeUndefined();
    s.onTimer(T + 60_000);
    expect(take(s, T + 60_000)).toEqual([]);
    expect(resets).toHaveLength(1);
    expect(errors).toEqual([]);
  });

  it("a device with hwm 0 refused with SEQ_AHEAD does not reset: refused", () => {
    const { s } = harness({ hwm: 0 });
    const { resets, refused, errors } = watch(s);
    s.start(T);
    s.receive(seqAhead(0, 0), T + 10);
    expect(resets).toEqual([]);
    expect(refused).toHaveLength(1);
    expect(errors).toEqual([]);
  });
});

describe("DeviceSession: delayed acks and heartbeats (fake clock)", () => {
  const acks = (frames: FrameBody[]) => frames.flatMap((f) => (f.kind === "ack" ? [f.ack] : []));

  /** A welcomed session (the Welcome's own ack taken); `auto`: each message processed and persisted at once. */
  function welcomed(o: { ackDelayMs?: number; ackEvery?: number; heartbeatIntervalMs?: number } = {}): Harness {
    const h = harness(o);
    h.s.start(T);
    h.s.receive(welcome(o.heartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: o.heartbeatIntervalMs } : {}), T);
    expect(acks(take(h.s, T))).toEqual([{ cumulative: 0, ranges: [], rejected: [] }]);
    return h;
  }

  /** A welcomed session that received push 1 at T+1 and acked it when the delay ran out (T+6). */
  async function firstAcked(): Promise<Harness> {
    const h = welcomed();
    h.s.receive(push(1), T + 1);
    await tick();
    h.s.onTimer(T + 6);
    expect(acks(take(h.s, T + 6))).toEqual([{ cumulative: 1, ranges: [], rejected: [] }]);
    return h;
  }

  it("in-order pushes: one ack once it covers 4 more (the default), none before", async () => {
    const h = welcomed();
    for (const seq of [1, 2, 3]) h.s.receive(push(seq), T + 1);
    await tick();
    expect(h.messages.map((m) => m.seq)).toEqual([1, 2, 3]);
    expect(take(h.s, T + 1)).toEqual([]);
    expect(h.s.nextDeadline()).toBe(T + 6); // the delay runs from the first of them
    h.s.receive(push(4), T + 2);
    await tick();
    expect(take(h.s, T + 2)).toEqual([{ kind: "ack", ack: { cumulative: 4, ranges: [], rejected: [] } }]);
    // nothing left to say: no ack at the old deadline
    h.s.onTimer(T + 6);
    expect(acks(take(h.s, T + 6))).toEqual([]);
  });

  it("a small server window (Welcome.limits.window 2): an ack per push, so the window never waits for the delay", async () => {
    const h = harness();
    h.s.start(T);
    h.s.receive(welcome({ limits: { maxPayload: 1024, window: 2, maxTopics: 100 } }), T);
    take(h.s, T);
    h.s.receive(push(1), T + 1);
    await tick();
    expect(acks(take(h.s, T + 1))).toEqual([{ cumulative: 1, ranges: [], rejected: [] }]);
  });

  it("fewer pushes than ackEvery: the ack goes when the delay runs out, not before", async () => {
    const h = welcomed({ ackDelayMs: 20, ackEvery: 8 });
    h.s.receive(push(1), T + 100);
    await tick();
    h.s.receive(push(2), T + 110);
    await tick();
    expect(acks(take(h.s, T + 119))).toEqual([]);
    expect(h.s.nextDeadline()).toBe(T + 120);
    h.s.onTimer(T + 120);
    // due now: no deadline stays in the past while the driver has not taken the records yet (no busy timer)
    expect(h.s.nextDeadline()).toBeGreaterThan(T + 120);
    expect(acks(take(h.s, T + 121))).toEqual([{ cumulative: 2, ranges: [], rejected: [] }]);
  });

  it("ackDelayMs 0: every flush carries an ack (one per turn, as before delayed acks)", async () => {
    const h = welcomed({ ackDelayMs: 0 });
    h.s.receive(push(1), T + 1);
    await tick();
    expect(acks(take(h.s, T + 1))).toEqual([{ cumulative: 1, ranges: [], rejected: [] }]);
  });

  it("an out-of-order push is acked at once with its range, and so is the one that fills the gap", async () => {
    const h = welcomed();
    h.s.receive(push(2), T + 1);
    await tick();
    expect(acks(take(h.s, T + 1))).toEqual([{ cumulative: 0, ranges: [{ first: 2, last: 2 }], rejected: [] }]);
    h.s.receive(push(1), T + 2);
    await tick();
    expect(h.messages.map((m) => m.seq)).toEqual([1, 2]);
    expect(acks(take(h.s, T + 2))).toEqual([{ cumulative: 2, ranges: [], rejected: [] }]);
  });

  it("a delayed ack that would repeat the last one exactly is not sent", async () => {
    const h = await firstAcked();
    h.s.persisted(1, T + 7); // a second save of the same mark: nothing new
    h.s.processed(1); // an application acking twice: nothing new either
    expect(h.s.nextDeadline()).toBe(T + 11); // (the delay runs from the session's latest time)
    h.s.onTimer(T + 11);
    expect(acks(take(h.s, T + 11))).toEqual([]);
    expect(h.s.nextDeadline()).toBeGreaterThan(T + 11);
  });

  it("a duplicate is acked at once, even when that ack repeats the last one", async () => {
    const h = await firstAcked();
    h.s.receive(push(1), T + 300); // the server did not get that ack: it retransmitted
    await tick();
    expect(acks(take(h.s, T + 300))).toEqual([{ cumulative: 1, ranges: [], rejected: [] }]);
    expect(h.messages).toHaveLength(1);
  });

  it("manual ack: nothing claims a message before the application is done and it is persisted; then the delayed ack covers it", async () => {
    const h = welcomed();
    h.auto = false;
    h.s.receive(push(1), T + 1);
    await tick();
    expect(h.messages.map((m) => m.seq)).toEqual([1]);
    // after the delay the server learns the push arrived (a range), not that it was processed
    h.s.onTimer(T + 6);
    expect(acks(take(h.s, T + 6))).toEqual([{ cumulative: 0, ranges: [{ first: 1, last: 1 }], rejected: [] }]);
    // held by the application for a long time: no ack claims it, whatever the timers
    for (const t of [T + 1000, T + 60_000]) {
      h.s.onTimer(t);
      expect(acks(take(h.s, t)).some((a) => a.cumulative > 0)).toBe(false);
    }
    h.s.processed(1);
    expect(acks(take(h.s, T + 60_001)).some((a) => a.cumulative > 0)).toBe(false);
    h.s.persisted(1, T + 60_002);
    expect(acks(take(h.s, T + 60_002))).toEqual([]);
    expect(h.s.nextDeadline()).toBeLessThanOrEqual(T + 60_007);
    h.s.onTimer(T + 60_007);
    expect(acks(take(h.s, T + 60_007))).toEqual([{ cumulative: 1, ranges: [], rejected: [] }]);
  });

  it("refuses ack options out of range", () => {
    const make = (o: { ackDelayMs?: number; ackEvery?: number }) => () => new DeviceSession({ hwm: 0, verify: async () => true, ...o });
    expect(make({ ackDelayMs: -1 })).toThrow(/ackDelayMs/);
    expect(make({ ackDelayMs: 1.5 })).toThrow(/ackDelayMs/);
    expect(make({ ackDelayMs: 1001 })).toThrow(/ackDelayMs/);
    expect(make({ ackEvery: 0 })).toThrow(/ackEvery/);
    expect(make({ ackDelayMs: 0, ackEvery: 1 })).not.toThrow();
  });

  it("no Ping while other traffic flows (a frame every 0.9 interval); a Ping one interval after the last frame sent", async () => {
    const h = welcomed({ heartbeatIntervalMs: 1000 });
    let now = T;
    let pings = 0;
    let seq = 0;
    // traffic: a push every 900 ms (the server hears its ack), for 20 intervals
    for (let i = 1; i <= 22; i++) {
      const at = T + i * 900;
      while ((h.s.nextDeadline() as number) < at) {
        now = h.s.nextDeadline() as number;
        h.s.onTimer(now);
        pings += take(h.s, now).filter((f) => f.kind === "ping").length;
      }
      now = at;
      h.s.receive(push(++seq), now);
      await tick();
      h.s.onTimer(now + 5);
      const out = take(h.s, now + 5);
      expect(acks(out)).toEqual([{ cumulative: seq, ranges: [], rejected: [] }]);
      pings += out.filter((f) => f.kind === "ping").length;
    }
    expect(pings).toBe(0);
    // silence from then on: the Ping goes one interval after the last ack
    const lastSent = now + 5;
    const times: number[] = [];
    while (now < lastSent + 2500) {
      now = h.s.nextDeadline() as number;
      h.s.onTimer(now);
      for (const f of take(h.s, now)) if (f.kind === "ping") times.push(now - lastSent);
      h.s.receive(frame({ kind: "pong", pong: { time: now, serverTime: now } }), now);
    }
    expect(times.slice(0, 2)).toEqual([1000, 2000]);
  });

  it("the last Ack goes once more with the next Ping (nothing acknowledges it), and only once", async () => {
    const h = welcomed({ heartbeatIntervalMs: 1000 });
    h.s.receive(push(1), T + 10);
    await tick();
    h.s.onTimer(T + 15);
    const first = take(h.s, T + 15);
    expect(acks(first)).toEqual([{ cumulative: 1, ranges: [], rejected: [] }]);
    // silence: the heartbeat Ping one interval later carries that Ack again, the next one does not
    const kinds: string[][] = [];
    let now = T + 15;
    while (kinds.length < 2) {
      now = h.s.nextDeadline() as number;
      h.s.onTimer(now);
      const out = take(h.s, now);
      if (out.some((f) => f.kind === "ping")) kinds.push(out.map((f) => f.kind));
      h.s.receive(frame({ kind: "pong", pong: { time: now, serverTime: now } }), now);
    }
    expect(kinds).toEqual([["ack", "ping"], ["ping"]]);
    // a driver's probe takes it the same way: once, after a new Ack
    h.s.receive(push(2), now + 10);
    await tick();
    h.s.onTimer(now + 15);
    expect(acks(take(h.s, now + 15))).toEqual([{ cumulative: 2, ranges: [], rejected: [] }]);
    expect(decodeFrame(h.s.takeAckRepeat() as Uint8Array)).toMatchObject({ kind: "ack", ack: { cumulative: 2 } });
    expect(h.s.takeAckRepeat()).toBeUndefined();
  });

  it("a record the driver sent itself (a dead-server probe) counts as traffic: the Ping waits an interval after it", () => {
    const h = welcomed({ heartbeatIntervalMs: 1000 });
    h.s.sentElsewhere(T + 600);
    expect(pingTimes(h.s, T + 2000)[0]).toBe(1600);
  });
});
