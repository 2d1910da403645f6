/**
 * Three `dtlspush serve` nodes on one real redis-server (same key prefix):
 * a publish on A to a device held by B arrives once; a topic whose
 * subscribers are spread over A, B and C reaches each once; a publish on C
 * to an offline device is delivered when it comes online on A. The device
 * view on any node says which node holds a device and its stored queue; the
 * cluster metrics count the holds and the live nodes. A device whose new
 * session lands on C while B lives moves there (B counts it taken).
 */
import { afterEach, expect, it } from "vitest";

/** Publishes on two nodes a few ms apart: FIFO across nodes holds to the millisecond of their clocks (delivery.md section 18). */
const apart = (): Promise<void> => new Promise((r) => setTimeout(r, 5));
import { describeRedis } from "../support/redis-server.ts";
import { addDevice, at, call, cleanUpCluster, device, metric, publish, publishTopic, startCluster, until, type Node } from "./cluster-nodes.ts";

afterEach(cleanUpCluster);

describeRedis("three nodes on one Redis: routing", () => {
  it("publish on A to B's device, topic over A/B/C, offline device published on C comes online on A", { timeout: 50_000 }, async () => {
    const c = await startCluster(3);
    const [A, B, C] = c.nodes as [Node, Node, Node];
    await addDevice(c, "held-b");
    await addDevice(c, "sub-a", ["room"]);
    await addDevice(c, "sub-b", ["room"]);
    await addDevice(c, "sub-c", ["room"]);
    await addDevice(c, "later");

    const hb = await device("held-b", [at(B)]);
    const sa = await device("sub-a", [at(A)]);
    const sb = await device("sub-b", [at(B)]);
    const sc = await device("sub-c", [at(C)]);

    // the view on A: held-b is online, held by B's store instance
    const view = await call(c, A, "GET", "/v1/devices/held-b");
    expect(view.json).toMatchObject({ id: "held-b", online: true, node: B.instance, queueDepth: 0 });
    expect((await call(c, B, "GET", "/v1/devices/held-b")).json).toMatchObject({ online: true, node: B.instance });

    // direct publish on A, delivered by B; the second one is a fence after which a duplicate of the first would show
    await publish(c, A, "held-b", "a-to-b");
    await apart();
    await publish(c, C, "held-b", "c-to-b");
    await until(
      () => hb.got.length >= 2,
      10_000,
      () => `held-b got ${JSON.stringify(hb.texts())}`,
    );
    expect(hb.texts()).toEqual(["a-to-b", "c-to-b"]);

    // a topic published on A reaches its subscribers on A, B and C once each
    const t1 = await publishTopic(c, A, "room", "topic-1");
    await apart();
    const t2 = await publishTopic(c, B, "room", "topic-2");
    expect(t1.recipients).toBe(3);
    expect(t2.recipients).toBe(3);
    for (const [name, d] of [
      ["sub-a", sa],
      ["sub-b", sb],
      ["sub-c", sc],
    ] as const) {
      await until(
        () => d.got.length >= 2,
        10_000,
        () => `${name} got ${JSON.stringify(d.texts())}`,
      );
    }

    // an offline device: published on C, its queue depth visible from B, delivered when it says Hello on A
    await publish(c, C, "later", "while-offline");
    expect((await call(c, B, "GET", "/v1/devices/later")).json).toMatchObject({ online: false, node: null, queueDepth: 1 });
    const later = await device("later", [at(A)]);
    await until(
      () => later.got.length >= 1,
      10_000,
      () => `later got ${JSON.stringify(later.texts())}`,
    );
    expect((await call(c, C, "GET", "/v1/devices/later")).json).toMatchObject({ online: true, node: A.instance });

    // one more round everywhere: nothing arrived twice, nobody reconnected
    await apart();
    await publish(c, B, "held-b", "last");
    await publish(c, B, "later", "last");
    await publishTopic(c, C, "room", "topic-3");
    await until(
      () => hb.got.length >= 3 && later.got.length >= 2 && [sa, sb, sc].every((d) => d.got.length >= 3),
      10_000,
      () => "the last round",
    );
    expect(hb.texts()).toEqual(["a-to-b", "c-to-b", "last"]);
    expect(later.texts()).toEqual(["while-offline", "last"]);
    for (const d of [sa, sb, sc]) expect(d.texts()).toEqual(["topic-1", "topic-2", "topic-3"]);
    for (const d of [hb, sa, sb, sc, later]) expect(d.downs).toBe(0);

    // metrics: what each node holds, the holds it claimed, the live nodes
    expect(await metric(c, B, "dtlspush_cluster_devices_held")).toBe(2);
    expect(await metric(c, A, "dtlspush_cluster_devices_held")).toBe(2);
    expect(await metric(c, C, "dtlspush_cluster_devices_held")).toBe(1);
    expect(await metric(c, A, "dtlspush_cluster_holds_total", '{event="claimed"}')).toBe(2);
    expect(await metric(c, A, "dtlspush_cluster_nodes_alive")).toBe(3);
    // B was told of A's and C's publishes for its device
    expect(await metric(c, B, "dtlspush_cluster_events_total", '{kind="queued"}')).toBeGreaterThanOrEqual(2);

    // the device moves while B lives: its new session on C claims it, B ends the old one (Bye session_replaced)
    const moved = await device("held-b", [at(C)]);
    await until(
      () => hb.downs === 1,
      10_000,
      () => "the old session of held-b ended by B",
    );
    expect(await metric(c, B, "dtlspush_cluster_holds_total", '{event="taken"}')).toBe(1);
    expect((await call(c, A, "GET", "/v1/devices/held-b")).json).toMatchObject({ online: true, node: C.instance });
    await publish(c, A, "held-b", "after-move");
    await until(
      () => moved.got.length >= 1,
      10_000,
      () => `held-b on C got ${JSON.stringify(moved.texts())}`,
    );
    expect(moved.texts()).toEqual(["after-move"]);
    expect(hb.texts()).toEqual(["a-to-b", "c-to-b", "last"]);
  });
});
