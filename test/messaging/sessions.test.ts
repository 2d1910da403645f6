import { describe, expect, it } from "vitest";
import { SignJWT } from "jose";
import { openMemoryStore } from "../../src/store/index.ts";
import { DeviceRegistry, issuePublisherToken, issueSessionToken, KeyRing } from "../../src/auth/index.ts";
import { DeliveryEngine } from "../../src/messaging/delivery-engine.ts";
import { ManualClock } from "../../src/util/clock.ts";
import { decodeFrame, encodeFrame, ErrorCode, type FrameBody } from "../../src/wire/index.ts";
import { captureServerReceives, captureServerSends, connected, publishTo, pushes, untilDelivered } from "./helpers.ts";
import { T0, World, type SimDevice, type SimLink } from "./world.ts";

async function drained(w: World, device: string): Promise<void> {
  await w.run(60_000, () => w.engine.deviceStatus(device).queueDepth === 0);
  expect(w.engine.deviceStatus(device).queueDepth).toBe(0);
}

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

describe("resuming a session by token", () => {
  it("after a disconnect: Welcome.resumed, and what was published meanwhile arrives once, in order", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    expect(d.welcomes[0]).toMatchObject({ deviceId: "dev", resumed: false, ackedSeq: 0, version: 1 });
    const token = d.token;
    expect(token).not.toBe("");
    await publishTo(w, "dev", "m1");
    await untilDelivered(w, d, 1);
    await drained(w, "dev");

    d.disconnect();
    expect(w.engine.deviceStatus("dev").online).toBe(false);
    for (let i = 2; i <= 4; i++) await publishTo(w, "dev", `m${i}`);
    await w.run(5000);
    expect(d.delivered).toHaveLength(1);

    const hellos = captureServerReceives(w);
    await connected(w, d);
    const hello = hellos.find((c) => c.frame.kind === "hello");
    expect(hello?.frame.kind === "hello" && hello.frame.hello).toMatchObject({ sessionToken: token, receivedSeq: 1, version: 1 });
    expect(d.welcomes[1]).toMatchObject({ deviceId: "dev", resumed: true, ackedSeq: 1 });
    // a fresh token for the new session
    expect(d.token).not.toBe(token);
    await untilDelivered(w, d, 4);
    await drained(w, "dev");
    expect(d.payloads()).toEqual(["m1", "m2", "m3", "m4"]);
    expect(d.delivered.map((x) => x.seq)).toEqual([1, 2, 3, 4]);
    expect(d.errors).toEqual([]);
  });

  for (const [name, net] of [
    ["a perfect network", undefined],
    ["a lossy network", { loss: 0.3, duplicate: 0.1, reorder: 0.2, latency: [2, 30] as [number, number] }],
  ] as const) {
    it(`with pushes in flight at the disconnect (${name}): each arrives once, in order`, async () => {
      const w = await World.create(net === undefined ? {} : { net, seed: 5 });
      const d = w.addDevice("dev");
      await connected(w, d);
      await publishTo(w, "dev", "m1");
      await untilDelivered(w, d, 1);
      // m2..m4 are sent but never arrive; m5, m6 are published while the device is away
      d.dropIncoming = (f) => f.kind === "push";
      for (let i = 2; i <= 4; i++) await publishTo(w, "dev", `m${i}`);
      await w.run(3000);
      expect(w.engine.deviceStatus("dev")).toMatchObject({ lastSeq: 4 });
      d.disconnect();
      d.dropIncoming = undefined;
      for (let i = 5; i <= 6; i++) await publishTo(w, "dev", `m${i}`);
      await connected(w, d);
      expect(d.welcomes.at(-1)?.resumed).toBe(true);
      await untilDelivered(w, d, 6);
      await w.run(120_000, () => w.engine.deviceStatus("dev").queueDepth === 0);
      expect(d.payloads()).toEqual(["m1", "m2", "m3", "m4", "m5", "m6"]);
      expect(d.delivered.map((x) => x.seq)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(w.engine.deviceStatus("dev")).toMatchObject({ queueDepth: 0, lastSeq: 6, ackedSeq: 6 });
    });
  }
});

describe("Hello.received_seq", () => {
  it("counts as an ack, and the Welcome says so (acked_seq)", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    // acks never arrive: only the next Hello tells the server what the device has
    d.mute = true;
    await publishTo(w, "dev", "m1");
    await publishTo(w, "dev", "m2");
    await untilDelivered(w, d, 2);
    expect(w.engine.deviceStatus("dev").ackedSeq).toBe(0);
    d.disconnect();
    d.mute = false;
    const sent = captureServerSends(w);
    await connected(w, d);
    expect(d.welcomes.at(-1)).toMatchObject({ resumed: true, ackedSeq: 2 });
    expect(w.engine.deviceStatus("dev")).toMatchObject({ ackedSeq: 2, queueDepth: 0 });
    // nothing is sent again
    expect(pushes(sent)).toEqual([]);
  });

  it("above what the server has assigned: refused with SEQ_AHEAD naming the server's last seq, nothing stored", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    d.resetOnSeqAhead = false; // the engine alone: the device does not reset
    // this device claims seq 5 from a store that is not this server's (or it lies)
    d.hwm = 5;
    d.connect();
    await w.run(5000);
    expect(d.welcomes).toEqual([]);
    expect(d.errors.at(-1)).toMatchObject({ code: ErrorCode.SEQ_AHEAD });
    expect(d.errors.at(-1)?.message).toContain("Hello.received_seq 5 is above the last seq this server sent device dev (0)");
    expect(w.engine.deviceStatus("dev")).toMatchObject({ online: false, lastSeq: 0, ackedSeq: 0 });
    expect((await w.store.loadDeliveryState()).counters).toEqual([]);
  });

  it("a device whose saved mark is ahead of the server (the server lost seqs) resets to 0 and gets what the server sends next", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    for (const p of ["m1", "m2"]) await publishTo(w, "dev", p);
    await untilDelivered(w, d, 2);
    await drained(w, "dev");
    // the device comes back with hwm 7: seqs 3..7 it saw are unknown to this server's store
    d.crash();
    d.hwm = 7;
    await connected(w, d);
    expect(d.seqResets).toEqual([7]);
    expect(d.errors.map((e) => e.code)).toEqual([ErrorCode.SEQ_AHEAD]);
    // the Welcome's acked_seq (2) brings the reset mark to the server's view
    expect(d.welcomes.at(-1)).toMatchObject({ ackedSeq: 2 });
    await publishTo(w, "dev", "after");
    await untilDelivered(w, d, 3);
    // seq 3: one the device had seen before its reset, a new message all the same
    expect(d.delivered.map((x) => [x.seq, x.payload])).toEqual([
      [1, "m1"],
      [2, "m2"],
      [3, "after"],
    ]);
    await drained(w, "dev");
    expect((await w.store.loadDeliveryState()).counters).toEqual([{ device: "dev", lastSeq: 3, ackedSeq: 3 }]);
  });
});

describe("a lost Welcome", () => {
  it("the pushes sent behind it go again behind the next Welcome (the device dropped them), not at their timers", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    for (let i = 1; i <= 3; i++) await publishTo(w, "dev", `m${i}`);
    // the first Welcome is lost; the pushes behind it arrive before any Welcome and are dropped
    let welcomes = 0;
    d.dropIncoming = (f) => f.kind === "welcome" && ++welcomes === 1;
    const sent = captureServerSends(w);
    d.connect();
    await untilDelivered(w, d, 3);
    const second = sent.filter((c) => c.frame.kind === "welcome")[1];
    expect(second).toBeDefined();
    // the pushes went twice: with the first Welcome, and in the same flush as the second
    const again = pushes(sent).filter((c) => c.order > (second?.order ?? 0));
    expect(again.slice(0, 3).map((c) => [c.frame.push.seq, c.at])).toEqual([1, 2, 3].map((seq) => [seq, second?.at]));
    expect(d.payloads()).toEqual(["m1", "m2", "m3"]);
  });

  it("a device that repeats Hello without acking gets its pushes again at most every 250 ms, however fast it says Hello", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    d.mute = true; // it never acks (the Hellos below go straight to the engine)
    for (let i = 1; i <= 3; i++) await publishTo(w, "dev", `m${i}`);
    await w.run(50);
    const sent = captureServerSends(w);
    const link = d.link as SimLink;
    const hello = encodeFrame({ kind: "hello", hello: { version: 1, sessionToken: "", receivedSeq: 0, client: "test" } });
    // 40 Hellos, 25 ms apart (each answered before the next): 1 s
    for (let i = 0; i < 40; i++) {
      w.engine.receive(link, hello);
      await w.run(25);
    }
    expect(sent.filter((c) => c.frame.kind === "welcome").length).toBe(40);
    // 1 s / 250 ms: at most 4 or 5 resends of the 3 pushes (retransmission timers may add one round)
    expect(pushes(sent).length).toBeLessThanOrEqual(6 * 3);
    expect(pushes(sent).length).toBeGreaterThanOrEqual(3 * 3);
  });

  it("a Hello again on a session that has acked since its Welcome (a token refresh) sends nothing again", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    await publishTo(w, "dev", "m1");
    await untilDelivered(w, d, 1);
    await w.run(1000);
    // m2 is in flight (its push lost) when the device says Hello on the same session
    d.dropIncoming = (f) => f.kind === "push";
    await publishTo(w, "dev", "m2");
    await w.run(20);
    d.dropIncoming = undefined;
    const sent = captureServerSends(w);
    const link = d.link as SimLink;
    w.engine.receive(link, encodeFrame({ kind: "hello", hello: { version: 1, sessionToken: "", receivedSeq: 1, client: "test" } }));
    await w.run(50);
    expect(sent.map((c) => c.frame.kind)).toEqual(["welcome"]);
  });
});

describe("refused session tokens", () => {
  interface Case {
    readonly name: string;
    readonly code: number;
    readonly options?: { sessionTokenTtlSeconds: number };
    /** the token the device presents */
    readonly token: (w: World, d: SimDevice) => Promise<string>;
  }
  const claims = (w: World): Record<string, unknown> => ({
    iss: "dtlspush",
    aud: "dtlspush:session",
    sub: "dev",
    sid: "s-1",
    identity: "psk:id-dev",
    iat: Math.floor(w.clock.now() / 1000),
    exp: Math.floor(w.clock.now() / 1000) + 3600,
  });
  const cases: Case[] = [
    {
      name: "forged (signed by another key ring)",
      code: ErrorCode.TOKEN_INVALID,
      token: async (w) => {
        const other = await KeyRing.open(openMemoryStore(), "session", { now: T0 });
        const t = await issueSessionToken(other, { deviceId: "dev", identity: "psk:id-dev", sessionId: "s-1", now: w.clock.now(), ttlSeconds: 3600 });
        return t.token;
      },
    },
    {
      name: "expired (the clock past its lifetime)",
      code: ErrorCode.TOKEN_EXPIRED,
      options: { sessionTokenTtlSeconds: 60 },
      token: async (w, d) => {
        await connected(w, d);
        const t = d.token;
        d.disconnect();
        // 60 s lifetime plus the 5 s leeway
        await w.run(66_000);
        return t;
      },
    },
    {
      name: "another device's token",
      code: ErrorCode.TOKEN_IDENTITY_MISMATCH,
      token: async (w) => {
        const other = w.addDevice("other");
        await connected(w, other);
        other.disconnect();
        return other.token;
      },
    },
    {
      name: "this device's id bound to another DTLS identity",
      code: ErrorCode.TOKEN_IDENTITY_MISMATCH,
      token: async (w) => {
        const t = await issueSessionToken(w.sessionKeys, {
          deviceId: "dev",
          identity: "psk:someone-else",
          sessionId: "s-1",
          now: w.clock.now(),
          ttlSeconds: 3600,
        });
        return t.token;
      },
    },
    {
      name: "alg none",
      code: ErrorCode.TOKEN_INVALID,
      token: async (w) => `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims(w))}.`,
    },
    {
      name: "HS256 under the kid of the real key (algorithm confusion)",
      code: ErrorCode.TOKEN_INVALID,
      token: async (w) =>
        new SignJWT(claims(w)).setProtectedHeader({ alg: "HS256", kid: w.sessionKeys.currentKid, typ: "JWT" }).sign(new Uint8Array(32)),
    },
    {
      name: "a publisher token (another audience) from the same ring",
      code: ErrorCode.TOKEN_INVALID,
      token: async (w) =>
        (await issuePublisherToken(w.sessionKeys, { subject: "dev", scopes: ["publish"], now: w.clock.now(), ttlSeconds: 3600 })).token,
    },
    {
      name: "garbage",
      code: ErrorCode.TOKEN_INVALID,
      token: async () => "garbage",
    },
  ];

  for (const c of cases) {
    it(`${c.name}: Error ${c.code}, then a fresh Welcome and the queued messages`, async () => {
      const w = await World.create(c.options === undefined ? {} : { options: c.options });
      const d = w.addDevice("dev");
      const token = await c.token(w, d);
      const welcomesBefore = d.welcomes.length;
      const delivered = d.delivered.length;
      await publishTo(w, "dev", "queued");
      const sent = captureServerSends(w);
      await connected(w, d, { token });
      // the Error answers the Hello with the token; the Welcome answers the Hello without one
      const frames = sent.map((s) => s.frame.kind);
      expect(frames.slice(0, 2)).toEqual(["error", "welcome"]);
      const error = sent[0]?.frame.kind === "error" ? sent[0].frame.error : undefined;
      expect(error?.code).toBe(c.code);
      expect(error?.message).toMatch(/^session token refused: /);
      expect(d.errors.map((e) => e.code)).toEqual([c.code]);
      expect(d.welcomes.length).toBe(welcomesBefore + 1);
      expect(d.welcomes.at(-1)).toMatchObject({ deviceId: "dev", resumed: false });
      expect(d.token).not.toBe(token);
      await untilDelivered(w, d, delivered + 1);
      expect(d.payloads().at(-1)).toBe("queued");
      expect(pushes(sent, "dev")).not.toHaveLength(0);
    });
  }
});

describe("heartbeats", () => {
  it("a device that keeps pinging stays online", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    await connected(w, d);
    const received = captureServerReceives(w);
    await w.run(600_000);
    expect(w.engine.deviceStatus("dev").online).toBe(true);
    expect(w.presence.filter((p) => !p.online)).toEqual([]);
    // one ping per 30 s interval
    const pings = received.filter((c) => c.frame.kind === "ping").length;
    expect(pings).toBeGreaterThanOrEqual(19);
    expect(pings).toBeLessThanOrEqual(21);
    expect(d.stales).toBe(0);
  });

  it("a silent device is marked offline after the missed heartbeats; its queue stays and arrives when it is back", async () => {
    const w = await World.create();
    const d = w.addDevice("dev");
    const received = captureServerReceives(w);
    await connected(w, d);
    await publishTo(w, "dev", "m1");
    await untilDelivered(w, d, 1);
    await drained(w, "dev");
    d.mute = true;
    // the device would give up on the silent server too and reconnect: not yet
    d.autoReconnect = false;
    const link = d.link;
    const lastHeard = Math.max(...received.map((c) => c.at));
    await w.run(300_000, () => !w.engine.deviceStatus("dev").online);
    // the server ended the session (close_notify)
    expect(link?.closedByServer).toBe(true);
    const offline = w.presence.filter((p) => p.device === "dev" && !p.online);
    expect(offline).toHaveLength(1);
    const interval = 30_000;
    // missedHeartbeats (3) intervals, and less than one more
    expect(offline[0]?.at).toBeGreaterThan(lastHeard + 3 * interval);
    expect(offline[0]?.at).toBeLessThanOrEqual(lastHeard + 4 * interval);
    expect(w.engine.deviceStatus("dev")).toMatchObject({ online: false, lastSeen: lastHeard });

    await publishTo(w, "dev", "m2");
    await publishTo(w, "dev", "m3");
    await w.run(60_000);
    expect(w.engine.deviceStatus("dev")).toMatchObject({ online: false, queueDepth: 2 });
    d.mute = false;
    d.autoReconnect = true;
    d.connect();
    await untilDelivered(w, d, 3);
    await drained(w, "dev");
    expect(d.payloads()).toEqual(["m1", "m2", "m3"]);
    expect(d.delivered.map((x) => x.seq)).toEqual([1, 2, 3]);
    expect(w.engine.deviceStatus("dev").online).toBe(true);
    expect(w.presence.filter((p) => p.device === "dev").map((p) => p.online)).toEqual([true, false, true]);
  });
});

describe("revocation", () => {
  it("ends the session with Bye DEVICE_REVOKED; direct publishes then throw device_revoked", async () => {
    const w = await World.create();
    const d = w.addDevice("dev", ["news"]);
    const other = w.addDevice("other", ["news"]);
    d.autoReconnect = false;
    await connected(w, d);
    await connected(w, other);
    const sent = captureServerSends(w);
    await w.registry.revoke("dev");
    await w.run(1000);
    const bye = sent.find((c) => c.device === "dev" && c.frame.kind === "bye");
    expect(bye?.frame.kind === "bye" && bye.frame.bye.reason?.code).toBe(ErrorCode.DEVICE_REVOKED);
    expect(d.byes.map((r) => r?.code)).toEqual([ErrorCode.DEVICE_REVOKED]);
    expect(d.link).toBeUndefined();
    expect(w.engine.deviceStatus("dev").online).toBe(false);
    expect(w.presence.filter((p) => p.device === "dev").map((p) => p.online)).toEqual([true, false]);

    const refused = publishTo(w, "dev", "x", { id: "to-revoked" });
    await expect(refused).rejects.toMatchObject({ name: "MessagingError", code: "device_revoked" });
    expect(await w.store.getMessage("to-revoked")).toBeUndefined();
    // topic publishes leave it out
    const r = await w.publish({ target: { topic: "news" }, payload: new TextEncoder().encode("n"), publisher: "test" });
    expect(r.recipients).toBe(1);
    expect([...new Set(w.receiptsOf(r.messageId).map((x) => x.device))]).toEqual(["other"]);

    // and it gets no new session
    d.connect();
    await w.run(5000);
    expect(d.welcomes).toHaveLength(1);
    expect(d.byes).toHaveLength(2);
    expect(w.engine.deviceStatus("dev").online).toBe(false);
  });
});

describe("a session told Bye", () => {
  /** A DTLS session as the engine sees it, recording what it is sent. */
  function fakeLink(identity: string, peer: string) {
    const frames: FrameBody[] = [];
    const link = {
      identity,
      viaCertificate: false,
      peer,
      closed: false,
      frames,
      send(records: readonly Uint8Array[]): void {
        for (const r of records) frames.push(decodeFrame(r) as FrameBody);
      },
      close(): void {
        link.closed = true;
      },
    };
    return link;
  }
  const hello = encodeFrame({ kind: "hello", hello: { version: 1, sessionToken: "", receivedSeq: 0, client: "test" } });

  /** Lets the engine's Hellos (asynchronous token signatures) finish, within 10 s of real time. */
  async function hellosDone(engine: DeliveryEngine): Promise<void> {
    const giveUp = Date.now() + 10_000;
    while (engine.pendingAsync > 0 && Date.now() < giveUp) await new Promise<void>((r) => setImmediate(r));
    expect(engine.pendingAsync).toBe(0);
  }

  it("is not bound again by a Hello it sends before it is closed: the session that replaced it stays", async () => {
    const store = openMemoryStore();
    const clock = new ManualClock(T0);
    const registry = await DeviceRegistry.open(store, clock);
    await registry.add({ id: "dev", psk: { identity: "id-dev", key: new TextEncoder().encode("key-dev") } });
    const engine = await DeliveryEngine.open({
      store,
      registry,
      contentKeys: await KeyRing.open(store, "content", { now: T0 }),
      sessionKeys: await KeyRing.open(store, "session", { now: T0 }),
      clock,
      requestFlush: () => undefined, // the test flushes: the turn ends where it says
    });
    const a = fakeLink("id-dev", "a");
    engine.attach(a);
    engine.receive(a, hello);
    await hellosDone(engine);
    engine.flush();
    await engine.drained();
    expect(a.frames.map((f) => f.kind)).toEqual(["welcome"]);

    // a second session of the device takes over: the first is told Bye, closed at the end of the turn
    const b = fakeLink("id-dev", "b");
    engine.attach(b);
    engine.receive(b, hello);
    await hellosDone(engine);
    // before that turn's flush, the first session repeats its Hello (it had not heard the Bye yet)
    engine.receive(a, hello);
    await hellosDone(engine);
    engine.flush();
    engine.flush();
    await engine.drained();

    expect(a.closed).toBe(true);
    const byeA = a.frames.find((f) => f.kind === "bye");
    expect(byeA?.kind === "bye" && byeA.bye.reason?.code).toBe(ErrorCode.SESSION_REPLACED);
    expect(a.frames.filter((f) => f.kind === "welcome")).toHaveLength(1);
    // the newer session was neither replaced nor closed
    expect(b.closed).toBe(false);
    expect(b.frames.map((f) => f.kind)).toEqual(["welcome"]);
    expect(engine.deviceStatus("dev").online).toBe(true);
  });
});
