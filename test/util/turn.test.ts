import { createSocket } from "node:dgram";
import { describe, expect, it } from "vitest";
import { monotonicClock } from "../../src/util/clock.ts";
import { DeadlineTimer, EndOfTurn, TurnOutbox, TurnPacer, type Destination } from "../../src/util/turn.ts";

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const rec = [new Uint8Array(1)];

describe("EndOfTurn", () => {
  it("runs once per turn however often it is requested, and again in a later turn", async () => {
    let runs = 0;
    const e = new EndOfTurn(() => runs++);
    e.request();
    e.request();
    expect(runs).toBe(0);
    expect(e.pending).toBe(true);
    await turn();
    expect(runs).toBe(1);
    expect(e.pending).toBe(false);
    e.request();
    await turn();
    expect(runs).toBe(2);
  });
});

describe("DeadlineTimer", () => {
  /** A datagram already in the socket and a due deadline in the same turn: which is handled first. */
  async function order(afterPoll: boolean): Promise<string[]> {
    const events: string[] = [];
    const socket = createSocket("udp4");
    await new Promise<void>((r) => socket.bind(0, "127.0.0.1", r));
    const got = new Promise<void>((r) =>
      socket.on("message", () => {
        events.push("datagram");
        r();
      }),
    );
    let deadline: number | undefined = monotonicClock.now();
    const fired = new Promise<void>((r) => {
      const timer = new DeadlineTimer({
        clock: monotonicClock,
        next: () => deadline,
        fire: () => {
          events.push("deadline");
          deadline = undefined;
          r();
        },
        afterPoll,
      });
      timer.arm();
    });
    await new Promise<void>((r) => socket.send(new Uint8Array(1), socket.address().port, "127.0.0.1", () => r()));
    // both are due before the loop goes on: the timer has expired, the datagram waits in the kernel
    const until = performance.now() + 20;
    while (performance.now() < until);
    await Promise.all([got, fired]);
    socket.close();
    return events;
  }

  it("afterPoll: what waits in the socket is read before the due deadline fires", async () => {
    expect(await order(true)).toEqual(["datagram", "deadline"]);
  });

  it("without afterPoll the deadline fires in the timers phase, before the poll", async () => {
    expect(await order(false)).toEqual(["deadline", "datagram"]);
  });

  it("re-arms for an earlier deadline, fires once per due deadline, stops for good", async () => {
    let t = 1_000;
    const clock = { now: () => t };
    const deadlines: number[] = [t + 60_000];
    const fired: number[] = [];
    const timer = new DeadlineTimer({
      clock,
      next: () => deadlines[0],
      fire: (now) => {
        fired.push(now);
        while (deadlines.length > 0 && (deadlines[0] as number) <= now) deadlines.shift();
      },
      unref: true,
    });
    timer.arm(); // a minute away
    deadlines.unshift(t); // now due: arm() must replace the minute-long timer
    timer.arm();
    t += 1;
    await new Promise((r) => setTimeout(r, 5));
    expect(fired).toEqual([1_001]);
    timer.stop();
    deadlines.unshift(t);
    timer.arm();
    await new Promise((r) => setTimeout(r, 5));
    expect(fired).toEqual([1_001]);
  });
});

describe("TurnOutbox", () => {
  const A: Destination = { address: "127.0.0.1", port: 1 };
  const B: Destination = { address: "127.0.0.1", port: 2 };
  function recorder(mtu: number) {
    const sent: { dest: Destination; sizes: number[] }[] = [];
    const box = new TurnOutbox(mtu, (dest, parts) => sent.push({ dest, sizes: parts.map((p) => p.length) }));
    return { box, sent };
  }

  it("coalesces one turn's datagrams per peer into one send each, in order", async () => {
    const { box, sent } = recorder(1200);
    box.push("a", A, new Uint8Array(100));
    box.push("b", B, new Uint8Array(50));
    box.push("a", A, new Uint8Array(200));
    expect(sent).toEqual([]);
    await turn();
    expect(sent).toEqual([
      { dest: A, sizes: [100, 200] },
      { dest: B, sizes: [50] },
    ]);
  });

  it("never exceeds the MTU: a datagram that would overflow starts a new send", async () => {
    const { box, sent } = recorder(1000);
    for (let i = 0; i < 5; i++) box.push("a", A, new Uint8Array(300));
    await turn();
    expect(sent.map((s) => s.sizes)).toEqual([
      [300, 300, 300],
      [300, 300],
    ]);
    for (const s of sent) expect(s.sizes.reduce((x, y) => x + y, 0)).toBeLessThanOrEqual(1000);
  });

  it("flush() sends at once and leaves nothing for the next turn", async () => {
    const { box, sent } = recorder(1200);
    box.push("a", A, new Uint8Array(10));
    box.flush();
    expect(sent).toHaveLength(1);
    await turn();
    expect(sent).toHaveLength(1);
  });
});

describe("TurnPacer", () => {
  interface Fake {
    name: string;
    closed: boolean;
  }
  const log: string[] = [];
  const target = {
    send: (c: Fake, records: readonly Uint8Array[]) => {
      if (!c.closed) log.push(`${c.name}:${records.length}`);
    },
    close: (c: Fake) => {
      c.closed = true;
      log.push(`${c.name}:close`);
    },
  };
  const fake = (name: string): Fake => ({ name, closed: false });

  it("sends perTurn at once and the rest over the next turns, in order", async () => {
    log.length = 0;
    const p = new TurnPacer<Fake>(4, target);
    const conns = Array.from({ length: 10 }, (_, i) => fake(`c${i}`));
    for (const c of conns) p.send(c, rec);
    expect(log).toEqual(["c0:1", "c1:1", "c2:1", "c3:1"]);
    expect(p.waiting).toBe(6);
    await turn();
    expect(log).toHaveLength(8);
    await turn();
    expect(log).toEqual(conns.map((_, i) => `c${i}:1`));
    expect(p.waiting).toBe(0);
    // a new turn has its own budget: a lone send goes out at once
    await turn();
    p.send(conns[0] as Fake, rec);
    expect(log.at(-1)).toBe("c0:1");
  });

  it("closes only after the sends queued before it (the Bye goes first)", async () => {
    log.length = 0;
    const p = new TurnPacer<Fake>(1, target);
    const a = fake("a");
    const b = fake("b");
    p.send(a, rec);
    p.send(b, rec); // waits
    p.close(b);
    p.close(a); // queued behind b's close, though a has nothing waiting: order is kept
    expect(log).toEqual(["a:1"]);
    await turn();
    await turn();
    await turn();
    expect(log).toEqual(["a:1", "b:1", "b:close", "a:close"]);
    const c = fake("c");
    p.close(c);
    expect(log.at(-1)).toBe("c:close"); // nothing waiting: at once
  });

  it("drain sends and closes everything now", async () => {
    log.length = 0;
    const p = new TurnPacer<Fake>(1, target);
    const a = fake("a");
    const b = fake("b");
    const gone = fake("gone");
    p.send(a, rec);
    p.send(gone, rec);
    p.send(b, rec);
    p.close(b);
    target.close(gone);
    p.drain();
    expect(log).toEqual(["a:1", "gone:close", "b:1", "b:close"]);
    expect(p.waiting).toBe(0);
    await turn();
    expect(log).toHaveLength(4);
  });
});
