import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Scheduler } from "../../src/util/scheduler.ts";
import { collectGarbage } from "./gc.ts";

describe("Scheduler basics", () => {
  it("is empty at first", () => {
    const s = new Scheduler<string>();
    expect(s.size).toBe(0);
    expect(s.next()).toBeUndefined();
    expect(s.due(Number.MAX_SAFE_INTEGER)).toEqual([]);
  });

  it("schedule sets a deadline; next() is the earliest; due() is inclusive of now", () => {
    const s = new Scheduler<string>();
    s.schedule("a", 30);
    s.schedule("b", 10);
    s.schedule("c", 20);
    expect(s.size).toBe(3);
    expect(s.next()).toBe(10);
    expect(s.due(9)).toEqual([]);
    expect(s.size).toBe(3);
    expect(s.due(10)).toEqual(["b"]);
    expect(s.size).toBe(2);
    expect(s.next()).toBe(20);
    expect(s.due(100)).toEqual(["c", "a"]);
    expect(s.size).toBe(0);
    expect(s.next()).toBeUndefined();
    expect(s.due(100)).toEqual([]);
  });

  it("due() returns keys earliest first, each once", () => {
    const s = new Scheduler<number>();
    const at = [50, 5, 40, 5, 90, 1, 70, 20, 20, 60];
    at.forEach((t, k) => s.schedule(k, t));
    const out = s.due(60);
    expect(out.map((k) => at[k])).toEqual([1, 5, 5, 20, 20, 40, 50, 60]);
    expect(new Set(out).size).toBe(out.length);
    expect(s.next()).toBe(70);
    expect(s.due(1000)).toEqual([6, 4]);
  });

  it("moving a key later or earlier replaces its deadline (no duplicate firing)", () => {
    const s = new Scheduler<string>();
    s.schedule("a", 10);
    s.schedule("b", 20);
    s.schedule("a", 30); // later
    expect(s.size).toBe(2);
    expect(s.next()).toBe(20);
    expect(s.due(25)).toEqual(["b"]);
    s.schedule("a", 5); // earlier
    expect(s.next()).toBe(5);
    expect(s.due(100)).toEqual(["a"]);
    expect(s.next()).toBeUndefined();
  });

  it("moving a key back to an older deadline does not make it fire twice", () => {
    const s = new Scheduler<string>();
    s.schedule("a", 10);
    s.schedule("a", 20);
    s.schedule("a", 10);
    s.schedule("a", 10); // same again: no-op
    expect(s.size).toBe(1);
    expect(s.due(100)).toEqual(["a"]);
    expect(s.due(100)).toEqual([]);
    // and after firing it can be scheduled again at the same time as a stale entry
    s.schedule("a", 20);
    expect(s.next()).toBe(20);
    expect(s.due(20)).toEqual(["a"]);
    expect(s.size).toBe(0);
  });

  it("cancel and schedule(key, undefined) clear a deadline", () => {
    const s = new Scheduler<string>();
    s.schedule("a", 10);
    s.schedule("b", 20);
    s.schedule("c", 30);
    s.cancel("a");
    expect(s.size).toBe(2);
    expect(s.next()).toBe(20);
    s.schedule("b", undefined);
    expect(s.size).toBe(1);
    expect(s.next()).toBe(30);
    s.cancel("zzz"); // unknown key: no-op
    s.schedule("zzz", undefined);
    expect(s.size).toBe(1);
    expect(s.due(1000)).toEqual(["c"]);
  });

  it("a cancelled key can be rescheduled", () => {
    const s = new Scheduler<string>();
    s.schedule("a", 10);
    s.cancel("a");
    expect(s.next()).toBeUndefined();
    s.schedule("a", 10);
    expect(s.next()).toBe(10);
    expect(s.due(10)).toEqual(["a"]);
  });

  it("works with object keys by identity", () => {
    const s = new Scheduler<{ id: number }>();
    const k1 = { id: 1 };
    const k2 = { id: 1 };
    s.schedule(k1, 2);
    s.schedule(k2, 1);
    expect(s.size).toBe(2);
    const out = s.due(2);
    expect(out[0]).toBe(k2);
    expect(out[1]).toBe(k1);
  });

  it("handles many keys: due(t) in time order, next() exact after each step", () => {
    const s = new Scheduler<number>();
    const N = 2000;
    // deterministic permutation of deadlines
    const deadline = (k: number): number => (k * 7919) % N;
    for (let k = 0; k < N; k++) s.schedule(k, deadline(k));
    expect(s.size).toBe(N);
    for (let t = 0; t < N; t += 100) {
      expect(s.next()).toBe(t);
      const out = s.due(t + 99);
      expect(out.length).toBe(100);
      expect(out.map(deadline)).toEqual(Array.from({ length: 100 }, (_, i) => t + i));
    }
    expect(s.size).toBe(0);
  });

  it("keeps every key when stale entries force a heap rebuild", () => {
    const s = new Scheduler<string>();
    for (let k = 0; k < 20; k++) s.schedule(`k${k}`, 1000 + k);
    // one key moved back and forth piles up stale entries until the heap is rebuilt
    for (let i = 0; i < 500; i++) s.schedule("mover", i % 2 === 0 ? 5000 : 5001);
    expect(s.size).toBe(21);
    expect(s.next()).toBe(1000);
    expect(s.due(Number.MAX_SAFE_INTEGER)).toEqual([...Array.from({ length: 20 }, (_, k) => `k${k}`), "mover"]);
    expect(s.next()).toBeUndefined();
  });

  it("stays correct across heavy rescheduling of few keys (stale entries, rebuilds)", () => {
    const s = new Scheduler<number>();
    for (let round = 0; round < 5000; round++) {
      const k = round % 7;
      s.schedule(k, 1000 + ((round * 31) % 97));
    }
    expect(s.size).toBe(7);
    const expected = new Map<number, number>();
    for (let round = 4993; round < 5000; round++) expected.set(round % 7, 1000 + ((round * 31) % 97));
    const min = Math.min(...expected.values());
    expect(s.next()).toBe(min);
    const out = s.due(Number.MAX_SAFE_INTEGER);
    expect(out.length).toBe(7);
    const times = out.map((k) => expected.get(k) as number);
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(new Set(out)).toEqual(new Set(expected.keys()));
  });
});

type Op =
  | { op: "schedule"; key: number; at: number }
  | { op: "clear"; key: number }
  | { op: "cancel"; key: number }
  | { op: "due"; t: number }
  | { op: "next" };

describe("Scheduler against a naive model (property)", () => {
  const key = fc.integer({ min: 0, max: 11 });
  const time = fc.integer({ min: 0, max: 60 });
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ op: fc.constant("schedule" as const), key, at: time }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("clear" as const), key }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("cancel" as const), key }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("due" as const), t: time }) },
    { weight: 1, arbitrary: fc.constant({ op: "next" as const }) },
  );

  it("next() is the model's min and due(t) returns exactly the keys with deadline <= t, nondecreasing", () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 400 }), (ops) => {
        const s = new Scheduler<number>();
        const model = new Map<number, number>();
        const modelMin = (): number | undefined => (model.size === 0 ? undefined : Math.min(...model.values()));
        for (const o of ops) {
          switch (o.op) {
            case "schedule":
              s.schedule(o.key, o.at);
              model.set(o.key, o.at);
              break;
            case "clear":
              s.schedule(o.key, undefined);
              model.delete(o.key);
              break;
            case "cancel":
              s.cancel(o.key);
              model.delete(o.key);
              break;
            case "due": {
              const out = s.due(o.t);
              const expected = [...model].filter(([, at]) => at <= o.t).map(([k]) => k);
              expect(new Set(out)).toEqual(new Set(expected));
              expect(out.length).toBe(expected.length); // each key once
              const times = out.map((k) => model.get(k) as number);
              for (let i = 1; i < times.length; i++) expect(times[i] as number).toBeGreaterThanOrEqual(times[i - 1] as number);
              for (const k of out) model.delete(k);
              break;
            }
            case "next":
              break;
          }
          expect(s.next()).toBe(modelMin());
          expect(s.size).toBe(model.size);
        }
      }),
      { seed: 42, numRuns: 200 },
    );
  });
});

describe("Scheduler memory", () => {
  it("keeps no reference to a cancelled or fired key (a closed session is collectable at once)", async () => {
    const s = new Scheduler<object>();
    const refs: WeakRef<object>[] = [];
    const kept: object[] = [];
    // in functions of their own, so that no stack slot of the test holds a key
    const populate = (): void => {
      for (let i = 0; i < 2000; i++) {
        const key = { i };
        refs.push(new WeakRef(key));
        s.schedule(key, 1000 + i);
        s.schedule(key, 5000 + i); // moved once
        if (i % 10 === 0) kept.push(key);
      }
    };
    // cancel most, fire some: only the kept ones stay scheduled
    const release = (): number => {
      for (let i = 100; i < 2000; i++) if (i % 10 !== 0) s.cancel(refs[i]!.deref()!);
      return s.due(5099).filter((k) => !kept.includes(k)).length;
    };
    populate();
    expect(release()).toBe(90);
    expect(s.size).toBe(kept.length - 10);
    await collectGarbage();
    const alive = refs.filter((r) => r.deref() !== undefined).length;
    expect(alive).toBe(kept.length);
    expect(s.next()).toBe(5100);
  });
});
