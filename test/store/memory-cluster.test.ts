/**
 * The memory cluster (src/store/memory-cluster.ts): the cluster store
 * contract (cluster-contract.ts, also run on Redis) and what is its own.
 */
import { describe, expect, it } from "vitest";
import { clusterOf, createMemoryCluster } from "../../src/store/index.ts";
import { describeClusterContract } from "./cluster-contract.ts";
import { device } from "./contract.ts";

describeClusterContract("memory cluster", {
  nodes: (count) => {
    const c = createMemoryCluster();
    return Promise.resolve(Array.from({ length: count }, (_, i) => c.node(`n${i}`)));
  },
});

describe("memory cluster", () => {
  it("gives nodes one shared store with the cluster contract", async () => {
    const c = createMemoryCluster();
    const a = c.node("a");
    const b = c.node("b");
    expect(clusterOf(a)).toBe(a);
    expect(a.instance).not.toBe(b.instance);
    await a.putDevice(device("d1"));
    expect((await b.getDevice("d1"))?.id).toBe("d1");
  });

  it("a closed node refuses calls; the others go on", async () => {
    const c = createMemoryCluster();
    const a = c.node("a");
    const b = c.node("b");
    await a.close();
    await expect(a.getDevice("x")).rejects.toMatchObject({ code: "store_closed" });
    await expect(a.claimDevice("x")).rejects.toMatchObject({ code: "store_closed" });
    await expect(b.putDevice(device("x"))).resolves.toBeUndefined();
  });
});
