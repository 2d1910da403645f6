/**
 * inlineStore: a SyncStore as the asynchronous Store the daemon uses. Calls
 * take effect in call order, and after a failed commit every later commit is
 * refused (store_failed) so what is stored stays a prefix of the batches.
 */
import { describe, expect, it } from "vitest";
import { createMemoryStore, inlineStore, StoreError } from "../../src/store/index.ts";
import type { WriteBatch } from "../../src/store/index.ts";
import { message } from "./contract.ts";

describe("inlineStore", () => {
  it("settles in call order; a read sees the commits called before it", async () => {
    const s = inlineStore(createMemoryStore());
    const order: string[] = [];
    const c1 = s.commit({ messages: [message("m1")] }).then(() => order.push("c1"));
    const r1 = s.existingMessageIds(["m1", "m2"]).then((ids) => order.push(`r1:${[...ids].join(",")}`));
    const c2 = s.commit({ messages: [message("m2")] }).then(() => order.push("c2"));
    const r2 = s.existingMessageIds(["m1", "m2"]).then((ids) => order.push(`r2:${[...ids].join(",")}`));
    await Promise.all([c1, r1, c2, r2]);
    expect(order).toEqual(["c1", "r1:m1", "c2", "r2:m1,m2"]);
  });

  it("after a failed commit refuses every later one (store_failed) and applies nothing of them", async () => {
    const sync = createMemoryStore();
    const s = inlineStore(sync);
    await s.commit({ messages: [message("a")] });
    const bad: WriteBatch = { messages: [message("b")], deliveries: [{ device: "d", messageId: "nowhere", order: 1, seq: 0, tombstone: false }] };
    await expect(s.commit(bad)).rejects.toBeInstanceOf(StoreError);
    const refused = await s.commit({ messages: [message("c")] }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ name: "StoreError", code: "store_failed" });
    expect(await s.existingMessageIds(["a", "b", "c"])).toEqual(new Set(["a"]));
    // reads go on
    expect((await s.getMessage("a"))?.id).toBe("a");
  });
});
