import { describe, expect, it } from "vitest";
import { openMemoryStore } from "../../src/store/index.ts";
import type { Store, WriteBatch } from "../../src/store/types.ts";
import { captureServerSends, connected, publishTo, pushes, receiptTrail, untilDelivered } from "./helpers.ts";
import { World } from "./world.ts";

/** A memory store whose commit fails once when `failWhen` matches the batch. */
function failingStore(): { store: Store; failWhen: ((b: WriteBatch) => boolean) | undefined; failures: number } {
  const inner = openMemoryStore();
  const control = { store: inner, failWhen: undefined as ((b: WriteBatch) => boolean) | undefined, failures: 0 };
  control.store = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === "commit") {
        return (batch: WriteBatch) => {
          if (control.failWhen?.(batch) === true) {
            control.failWhen = undefined;
            control.failures++;
            return Promise.reject(new Error("disk full"));
          }
          return target.commit(batch);
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return control;
}

describe("a commit that fails", () => {
  it("stops the engine before anything of that turn is sent; the restarted daemon reuses no seq", async () => {
    const control = failingStore();
    const w = await World.create({ store: control.store });
    const fatal: Error[] = [];
    w.engine.on("fatal", (e) => fatal.push(e));
    const d = w.addDevice("dev");
    await connected(w, d);
    await publishTo(w, "dev", "m1");
    await untilDelivered(w, d, 1);
    await w.run(1000);
    d.disconnect();
    const m2 = await publishTo(w, "dev", "m2");
    // the turn that gives m2 its seq (2) cannot be committed
    control.failWhen = (b) => (b.deliveries ?? []).some((x) => x.messageId === m2.messageId && x.seq > 0);
    const sent = captureServerSends(w);
    d.connect();
    await w.run(5000);
    expect(control.failures).toBe(1);
    expect(fatal.map((e) => e.message)).toEqual(["disk full"]);
    // neither the Welcome nor the push of that turn left
    expect(sent).toEqual([]);
    expect(d.delivered).toHaveLength(1);
    await expect(publishTo(w, "dev", "refused")).rejects.toMatchObject({ code: "internal" });

    await w.restartEngine();
    // a message of higher priority now comes first: it must get seq 2, and the device must take it
    const m3 = await publishTo(w, "dev", "m3", { priority: 9 });
    await untilDelivered(w, d, 3);
    await w.run(10_000, () => w.engine.deviceStatus("dev").queueDepth === 0);
    expect(d.delivered.map((x) => [x.seq, x.payload])).toEqual([
      [1, "m1"],
      [2, "m3"],
      [3, "m2"],
    ]);
    expect(receiptTrail(w, m3.messageId)).toEqual(["queued@0", "sent@2", "delivered@2"]);
    expect(receiptTrail(w, m2.messageId)).toEqual(["queued@0", "sent@3", "delivered@3"]);
    expect(pushes(sent).every((p) => p.at > 0)).toBe(true);
  });

  it("rejects the publishes of that turn, and stores none of them", async () => {
    const control = failingStore();
    const w = await World.create({ store: control.store });
    w.engine.on("fatal", () => undefined);
    w.addDevice("dev");
    control.failWhen = (b) => (b.messages ?? []).length > 0;
    await expect(publishTo(w, "dev", "lost", { id: "lost" })).rejects.toMatchObject({ name: "MessagingError", code: "internal" });
    expect(control.failures).toBe(1);
    await w.restartEngine();
    expect(await w.store.getMessage("lost")).toBeUndefined();
    expect(w.engine.deviceStatus("dev").queueDepth).toBe(0);
    expect(w.receiptsOf("lost")).toEqual([]);
  });
});
