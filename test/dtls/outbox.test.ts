import { describe, expect, it } from "vitest";
import { Outbox, type Destination } from "../../src/dtls/outbox.ts";

const A: Destination = { address: "127.0.0.1", port: 1 };
const B: Destination = { address: "127.0.0.1", port: 2 };
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

function recorder(mtu: number) {
  const sent: { dest: Destination; sizes: number[] }[] = [];
  const box = new Outbox(mtu, (dest, parts) => sent.push({ dest, sizes: parts.map((p) => p.length) }));
  return { box, sent };
}

describe("Outbox", () => {
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
    expect(sent.map((s) => s.sizes)).toEqual([[300, 300, 300], [300, 300]]);
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
