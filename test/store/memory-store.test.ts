import { describe, expect, it } from "vitest";
import { createMemoryStore, openStore } from "../../src/store/index.ts";
import { describeStoreContract, message } from "./contract.ts";

describeStoreContract("memory", { open: () => createMemoryStore() });

describe("memory store", () => {
  it("is of kind memory, also through openStore", async () => {
    expect(createMemoryStore().kind).toBe("memory");
    expect((await openStore({ kind: "memory" })).kind).toBe("memory");
  });

  it("keeps separate stores separate", () => {
    const a = createMemoryStore();
    const b = createMemoryStore();
    a.commit({ messages: [message("m1")] });
    expect(b.getMessage("m1")).toBeUndefined();
  });
});
