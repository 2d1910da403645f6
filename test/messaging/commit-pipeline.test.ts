/**
 * The engine on an asynchronous store: a turn's records and answers leave only
 * once its commit is durable, turns are released in the order they were
 * flushed, turns flushed while a commit is in flight gather into the next
 * commit (one in flight at a time), a failed commit fails exactly its turns
 * and stops the engine, and a duplicate message id is
 * caught even when the store's "absent" answer is overtaken by a commit.
 *
 * The store is a memory store behind a gate this test controls: operations
 * take effect in call order (as the Store contract says); while the gate is
 * held, a commit and everything called after it wait until released.
 */
import { describe, expect, it } from "vitest";
import { mainThreadSigner, type ContentSigner, type KeyRing, type SignedFields } from "../../src/auth/index.ts";
import type { PublishResult } from "../../src/messaging/delivery-engine.ts";
import { MessagingError } from "../../src/messaging/errors.ts";
import { openMemoryStore, StoreError } from "../../src/store/index.ts";
import type { Store, WriteBatch } from "../../src/store/types.ts";
import { encodeFrame } from "../../src/wire/index.ts";
import { captureServerSends, connected, enc, pushes, type Captured } from "./helpers.ts";
import { World, type SimDevice } from "./world.ts";

interface Op {
  readonly commit: boolean;
  readonly run: () => Promise<unknown>;
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: unknown) => void;
}

/** A memory store whose commits can be held and released (or failed) one by one, in order. */
class GatedStore {
  readonly inner = openMemoryStore();
  readonly store: Store;
  /** batches handed to commit, in call order */
  readonly committed: WriteBatch[] = [];
  private readonly queue: Op[] = [];
  private holding = false;
  /** commits allowed through while holding */
  private passes = 0;
  private failNext: Error | undefined;
  private failed: Error | undefined;
  private running = false;

  constructor() {
    const inner = this.inner as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    this.store = new Proxy(this.inner, {
      get: (target, prop) => {
        const value = Reflect.get(target, prop) as unknown;
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          const commit = prop === "commit";
          if (commit) this.committed.push(args[0] as WriteBatch);
          return this.enqueue(commit, () => (inner[prop as string] as (...a: unknown[]) => Promise<unknown>).apply(target, args));
        };
      },
    });
  }

  hold(): void {
    this.holding = true;
  }

  /** Lets the next `n` held commits through (the one after them fails instead when failNextCommit was called). */
  async release(n = 1): Promise<void> {
    this.passes += n;
    await this.pump();
    await turns();
  }

  /** The next commit to go through fails (a store failure); every later one is refused, as the Store contract says. */
  failNextCommit(): void {
    this.failNext = new StoreError("commit_failed", "disk I/O error (injected)");
  }

  /** commits waiting at the gate */
  get held(): number {
    return this.queue.filter((o) => o.commit).length;
  }

  private enqueue(commit: boolean, run: () => Promise<unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.queue.push({ commit, run, resolve, reject });
      void this.pump();
    });
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const op = this.queue[0] as Op;
        if (op.commit && this.holding) {
          if (this.passes === 0) break;
          this.passes--;
        }
        this.queue.shift();
        try {
          if (op.commit && this.failed !== undefined) throw new StoreError("store_failed", "an earlier commit failed", { cause: this.failed });
          if (op.commit && this.failNext !== undefined) {
            this.failed = this.failNext;
            this.failNext = undefined;
            throw this.failed;
          }
          op.resolve(await op.run());
        } catch (e) {
          op.reject(e);
        }
      }
    } finally {
      this.running = false;
    }
  }
}

/** A few event-loop turns (promise callbacks, signatures on the main thread), no clock movement. */
async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
}

/** A promise and whether it has settled yet. */
function watch<T>(p: Promise<T>): { readonly p: Promise<T>; settled: boolean; error?: unknown; value?: T } {
  const w: { p: Promise<T>; settled: boolean; error?: unknown; value?: T } = { p, settled: false };
  p.then(
    (v) => {
      w.settled = true;
      w.value = v;
    },
    (e: unknown) => {
      w.settled = true;
      w.error = e;
    },
  );
  return w;
}

async function setup(
  o: { contentSigner?: (keys: KeyRing) => ContentSigner } = {},
): Promise<{ w: World; g: GatedStore; d: SimDevice; sent: Captured[]; fatal: Error[] }> {
  const g = new GatedStore();
  const w = await World.create({ store: g.store, ...(o.contentSigner === undefined ? {} : { contentSigner: o.contentSigner }) });
  const fatal: Error[] = [];
  w.engine.on("fatal", (e) => fatal.push(e));
  const d = w.addDevice("dev");
  await connected(w, d);
  await w.run(1000);
  const sent = captureServerSends(w);
  return { w, g, d, sent, fatal };
}

/** Publishes to "dev" and flushes the turn the publish joined (the test is the driver). */
async function publishTurn(w: World, text: string, id?: string): Promise<ReturnType<typeof watch<PublishResult>>> {
  const p = watch(w.engine.publish({ target: { device: "dev" }, payload: enc(text), publisher: "test", ...(id === undefined ? {} : { id }) }));
  await turns();
  w.engine.flush();
  return p;
}

function payloads(sent: readonly Captured[]): string[] {
  return pushes(sent).map((c) => new TextDecoder().decode(c.frame.push.payload));
}

describe("the engine on an asynchronous store", () => {
  it("sends a turn's records and answers its publishers only when its commit is durable; turns flushed meanwhile gather into the next commit, released in order", async () => {
    const { w, g, d, sent } = await setup();
    g.hold();
    const a = await publishTurn(w, "a");
    expect(g.held).toBe(1);
    expect(w.engine.pendingAsync).toBeGreaterThan(0);
    // the engine goes on while a's commit is in flight: two more turns, each with a publish, gather
    const b = await publishTurn(w, "b");
    const c = await publishTurn(w, "c");
    expect(g.held).toBe(1); // one commit in flight at a time
    // a turn with nothing to store (a Pong) gathers behind them too
    const link = d.link;
    if (link === undefined) throw new Error("the device is not connected");
    w.engine.receive(link, encodeFrame({ kind: "ping", ping: { time: 7 } }));
    w.engine.flush();
    await turns();
    expect(sent).toEqual([]);
    expect([a.settled, b.settled, c.settled]).toEqual([false, false, false]);
    expect(await g.inner.getMessage(a.value?.messageId ?? "")).toBeUndefined();

    await g.release(1);
    expect(a.settled && a.error === undefined).toBe(true);
    expect([b.settled, c.settled]).toEqual([false, false]);
    expect(payloads(sent)).toEqual(["a"]);
    expect(sent.map((c) => c.frame.kind)).toEqual(["push"]);
    expect(await g.inner.getMessage(a.value?.messageId ?? "")).toBeDefined();
    // what gathered went to the store as soon as a's commit was durable: one commit for b and c
    expect(g.held).toBe(1);
    expect(g.committed.at(-1)?.messages?.map((m) => new TextDecoder().decode(m.payload))).toEqual(["b", "c"]);

    await g.release(1);
    expect(b.settled && b.error === undefined && c.settled && c.error === undefined).toBe(true);
    // b's and c's pushes, then the Pong flushed after them
    expect(sent.map((c) => c.frame.kind)).toEqual(["push", "push", "push", "pong"]);
    expect(payloads(sent)).toEqual(["a", "b", "c"]);
    expect(w.engine.pendingAsync).toBe(0);
  });

  it("a failed commit fails exactly its turns: earlier publishes answered and stored, nothing of it stored or sent, later ones refused; fatal once", async () => {
    const { w, g, sent, fatal } = await setup();
    g.hold();
    const a = await publishTurn(w, "a");
    const b = await publishTurn(w, "b");
    expect(g.held).toBe(1);
    await g.release(1); // a is durable; b goes to the store
    expect(g.held).toBe(1);
    const c = await publishTurn(w, "c"); // gathers behind b's commit
    const [idA, idB] = g.committed.slice(-2).map((x) => x.messages?.[0]?.id ?? "");
    g.failNextCommit();
    await g.release(1);
    expect(a.value?.messageId).toBe(idA);
    expect(b.error).toBeInstanceOf(MessagingError);
    expect(b.error).toMatchObject({ code: "internal", cause: { code: "commit_failed" } });
    expect(c.error).toMatchObject({ code: "internal" });
    expect(fatal.map((e) => (e as StoreError).code)).toEqual(["commit_failed"]);
    expect(payloads(sent)).toEqual(["a"]);
    expect(await g.inner.getMessage(idA ?? "")).toBeDefined();
    expect(await g.inner.getMessage(idB ?? "")).toBeUndefined();
    // c never reached the store: the engine stopped when b's commit failed
    expect(g.committed.some((x) => (x.messages ?? []).some((m) => new TextDecoder().decode(m.payload) === "c"))).toBe(false);
    // the engine has stopped: a new publish is refused at once
    await expect(w.engine.publish({ target: { device: "dev" }, payload: enc("d"), publisher: "test" })).rejects.toMatchObject({ code: "internal" });
  });

  it("catches a duplicate id whose store check said 'absent' before the commit holding it became durable", async () => {
    // the second publish's signature is held, so its check is answered before the first publish's commit
    // is even called, and it queues only after that commit is durable
    let gate: (() => void) | undefined;
    const slowSecond = (keys: KeyRing): ContentSigner => {
      const signer = mainThreadSigner(keys);
      return {
        sign: async (fields: SignedFields) => {
          const signature = await signer.sign(fields);
          if (new TextDecoder().decode(fields.payload) === "second") await new Promise<void>((r) => (gate = r));
          return signature;
        },
      };
    };
    const { w, g, sent, fatal } = await setup({ contentSigner: slowSecond });
    const first = watch(w.engine.publish({ target: { device: "dev" }, payload: enc("first"), publisher: "test", id: "dup" }));
    const second = watch(w.engine.publish({ target: { device: "dev" }, payload: enc("second"), publisher: "test", id: "dup" }));
    await turns();
    expect(gate).toBeDefined(); // both checks answered "absent"; the second waits for its signature
    w.engine.flush();
    await turns();
    expect(first.value?.messageId).toBe("dup");
    expect(await g.inner.getMessage("dup")).toBeDefined();
    gate?.();
    await turns();
    expect(second.error).toMatchObject({ name: "MessagingError", code: "duplicate_message" });
    w.engine.flush();
    await turns();
    // the duplicate never reached the store: no failed commit, the engine goes on
    expect(fatal).toEqual([]);
    expect(g.committed.filter((b) => (b.messages ?? []).some((m) => m.id === "dup"))).toHaveLength(1);
    expect(payloads(sent)).toEqual(["first"]);
    const later = watch(w.engine.publish({ target: { device: "dev" }, payload: enc("later"), publisher: "test", id: "dup" }));
    const fresh = watch(w.engine.publish({ target: { device: "dev" }, payload: enc("fresh"), publisher: "test", id: "fresh" }));
    await turns();
    w.engine.flush();
    await turns();
    expect(later.error).toMatchObject({ code: "duplicate_message" });
    expect(fresh.value?.messageId).toBe("fresh");
  });

  it("a duplicate id queued in a commit still in flight is refused without waiting for it", async () => {
    const { w, g, fatal } = await setup();
    g.hold();
    const first = await publishTurn(w, "first", "dup2");
    // the check of the second is called after the first's commit: it waits for it (calls take effect in order)
    const second = await publishTurn(w, "second", "dup2");
    await g.release(2);
    await turns();
    expect(first.value?.messageId).toBe("dup2");
    expect(second.error).toMatchObject({ code: "duplicate_message" });
    expect(fatal).toEqual([]);
  });
});
