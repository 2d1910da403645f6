import { createSocket, type Socket } from "node:dgram";
import { afterEach, describe, expect, it } from "vitest";
import { seededRandom, startLossyProxy, type LossyProxy } from "./lossy-udp-proxy.ts";

const sockets: Socket[] = [];
const proxies: LossyProxy[] = [];

afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  await Promise.all(sockets.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

async function udp(): Promise<Socket> {
  const s = createSocket("udp4");
  sockets.push(s);
  await new Promise<void>((resolve) => s.bind(0, "127.0.0.1", () => resolve()));
  return s;
}

/** A UDP server that records what it gets (and from which port) and optionally echoes it. */
async function server(echo: boolean): Promise<{ port: number; got: { data: string; port: number }[] }> {
  const s = await udp();
  const got: { data: string; port: number }[] = [];
  s.on("message", (msg, rinfo) => {
    got.push({ data: msg.toString(), port: rinfo.port });
    if (echo) s.send(Buffer.concat([Buffer.from("echo:"), msg]), rinfo.port, rinfo.address);
  });
  return { port: s.address().port, got };
}

async function proxy(o: Parameters<typeof startLossyProxy>[0]): Promise<LossyProxy> {
  const p = await startLossyProxy(o);
  proxies.push(p);
  return p;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`condition not met within ${ms} ms`);
    await sleep(5);
  }
}

/** Sends n numbered datagrams, paced so loopback socket buffers never overflow. */
async function sendNumbered(from: Socket, port: number, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    from.send(String(i), port, "127.0.0.1");
    if (i % 50 === 49) await sleep(3);
  }
}

describe("lossy UDP proxy", () => {
  it("forwards both ways, one upstream socket (one server-side peer) per client", async () => {
    const srv = await server(true);
    const p = await proxy({ target: { host: "127.0.0.1", port: srv.port }, drop: 0, duplicate: 0, reorder: 0 });
    const a = await udp();
    const b = await udp();
    const replies: Record<string, string[]> = { a: [], b: [] };
    a.on("message", (m) => replies.a!.push(m.toString()));
    b.on("message", (m) => replies.b!.push(m.toString()));
    a.send("a1", p.port, "127.0.0.1");
    b.send("b1", p.port, "127.0.0.1");
    a.send("a2", p.port, "127.0.0.1");
    await waitFor(() => replies.a!.length === 2 && replies.b!.length === 1);
    expect(replies.a).toEqual(["echo:a1", "echo:a2"]);
    expect(replies.b).toEqual(["echo:b1"]);
    // the server saw two peers, neither of them a client's own port
    const portsOf = (prefix: string) => new Set(srv.got.filter((g) => g.data.startsWith(prefix)).map((g) => g.port));
    expect(portsOf("a").size).toBe(1);
    expect(portsOf("b").size).toBe(1);
    expect([...portsOf("a")][0]).not.toBe([...portsOf("b")][0]);
    expect(portsOf("a").has(a.address().port)).toBe(false);
    expect(p.clients).toBe(2);
    expect(p.stats).toEqual({ forwarded: 6, dropped: 0, duplicated: 0, reordered: 0 });
  });

  it("drops, duplicates and reorders about as often as asked; the same seed gives the same impairments", async () => {
    const N = 2000;
    const runs = [];
    for (let run = 0; run < 2; run++) {
      const sink = await server(false);
      const p = await proxy({
        target: { host: "127.0.0.1", port: sink.port },
        drop: 0.3,
        duplicate: 0.1,
        reorder: 0.2,
        reorderDelayMs: [1, 10],
        seed: 42,
      });
      const c = await udp();
      await sendNumbered(c, p.port, N);
      await waitFor(() => p.stats.forwarded + p.stats.dropped === N);
      const expectedArrivals = p.stats.forwarded + p.stats.duplicated;
      await waitFor(() => sink.got.length === expectedArrivals);
      await sleep(30); // nothing more arrives than the stats say
      expect(sink.got.length).toBe(expectedArrivals);
      runs.push({ stats: { ...p.stats }, order: sink.got.map((g) => Number(g.data)) });
    }
    const [first, second] = runs as [(typeof runs)[0], (typeof runs)[0]];
    const s = first.stats;
    expect(s.dropped / N).toBeGreaterThan(0.25);
    expect(s.dropped / N).toBeLessThan(0.35);
    expect(s.duplicated / s.forwarded).toBeGreaterThan(0.06);
    expect(s.duplicated / s.forwarded).toBeLessThan(0.14);
    expect(s.reordered / (s.forwarded + s.duplicated)).toBeGreaterThan(0.15);
    expect(s.reordered / (s.forwarded + s.duplicated)).toBeLessThan(0.25);
    // delayed copies really were overtaken
    const inversions = first.order.filter((v, i) => i > 0 && v < (first.order[i - 1] as number)).length;
    expect(inversions).toBeGreaterThan(0);
    // same seed, same arrivals: the same datagrams dropped and duplicated
    expect(second.stats.dropped).toBe(s.dropped);
    expect(second.stats.duplicated).toBe(s.duplicated);
    expect(second.stats.reordered).toBe(s.reordered);
    expect([...second.order].sort((x, y) => x - y)).toEqual([...first.order].sort((x, y) => x - y));
  });

  it("impairs the server-to-client direction too; setDrop cuts and restores the link", async () => {
    const srv = await server(true);
    const p = await proxy({ target: { host: "127.0.0.1", port: srv.port }, duplicate: 1, seed: 7 });
    const c = await udp();
    const replies: string[] = [];
    c.on("message", (m) => replies.push(m.toString()));
    c.send("hello", p.port, "127.0.0.1");
    // doubled on the way up (2 at the server), each echo doubled on the way back (4 at the client)
    await waitFor(() => replies.length === 4);
    expect(srv.got.map((g) => g.data)).toEqual(["hello", "hello"]);
    expect(p.stats).toEqual({ forwarded: 3, dropped: 0, duplicated: 3, reordered: 0 });
    p.setDrop(1);
    c.send("lost", p.port, "127.0.0.1");
    await sleep(50);
    expect(srv.got).toHaveLength(2);
    expect(p.stats.dropped).toBe(1);
    p.setDrop(0);
    c.send("back", p.port, "127.0.0.1");
    await waitFor(() => replies.length === 8);
    expect(() => p.setDrop(1.5)).toThrow(RangeError);
  });

  it("close() clears pending delays: nothing held back is sent afterwards", async () => {
    const sink = await server(false);
    const p = await proxy({ target: { host: "127.0.0.1", port: sink.port }, reorder: 1, reorderDelayMs: [200, 200], seed: 3 });
    const c = await udp();
    for (let i = 0; i < 5; i++) c.send(String(i), p.port, "127.0.0.1");
    await waitFor(() => p.stats.reordered === 5);
    const t0 = Date.now();
    await p.close();
    expect(Date.now() - t0).toBeLessThan(150);
    await sleep(300);
    expect(sink.got).toEqual([]);
    await p.close(); // idempotent
  });

  it("bounds the datagrams held back: beyond maxDelayed, copies go out at once", async () => {
    const sink = await server(false);
    const p = await proxy({ target: { host: "127.0.0.1", port: sink.port }, reorder: 1, reorderDelayMs: [1000, 1000], maxDelayed: 10 });
    const c = await udp();
    await sendNumbered(c, p.port, 50);
    await waitFor(() => sink.got.length === 40);
    expect(p.stats.reordered).toBe(10);
    expect(sink.got.map((g) => Number(g.data))).toEqual(Array.from({ length: 40 }, (_, i) => i + 10));
  });

  it("bounds the clients: the least recently active upstream socket is dropped", async () => {
    const srv = await server(true);
    const p = await proxy({ target: { host: "127.0.0.1", port: srv.port }, maxClients: 2 });
    const cs = [await udp(), await udp(), await udp()];
    for (const [i, c] of cs.entries()) {
      c.send(`c${i}`, p.port, "127.0.0.1");
      await waitFor(() => srv.got.length === i + 1);
    }
    expect(p.clients).toBe(2);
  });

  it("the PRNG is deterministic and uniform enough", () => {
    const a = seededRandom(5);
    const b = seededRandom(5);
    const xs = Array.from({ length: 10_000 }, () => a());
    expect(xs.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => b()));
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(mean).toBeGreaterThan(0.48);
    expect(mean).toBeLessThan(0.52);
    expect(seededRandom(6)()).not.toBe(seededRandom(5)());
  });
});
