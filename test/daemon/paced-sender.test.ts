import { describe, expect, it } from "vitest";
import type { DtlsConnection } from "../../src/dtls/index.ts";
import { PacedSender } from "../../src/daemon/paced-sender.ts";

const log: string[] = [];
function fakeConn(name: string): DtlsConnection {
  const c = {
    closed: false,
    sendBatch: (records: readonly Uint8Array[]) => log.push(`${name}:${records.length}`),
    close: () => {
      c.closed = true;
      log.push(`${name}:close`);
    },
  };
  return c as unknown as DtlsConnection;
}
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const rec = [new Uint8Array(1)];

describe("PacedSender", () => {
  it("sends perTurn at once and the rest over the next turns, in order", async () => {
    log.length = 0;
    const p = new PacedSender(4);
    const conns = Array.from({ length: 10 }, (_, i) => fakeConn(`c${i}`));
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
    p.send(conns[0] as DtlsConnection, rec);
    expect(log.at(-1)).toBe("c0:1");
  });

  it("closes a connection only after the sends queued before it (the Bye goes first)", async () => {
    log.length = 0;
    const p = new PacedSender(1);
    const a = fakeConn("a");
    const b = fakeConn("b");
    p.send(a, rec);
    p.send(b, rec); // waits
    p.close(b);
    p.close(a); // queued behind b's close, though a has nothing waiting: order is kept
    expect(log).toEqual(["a:1"]);
    await turn();
    await turn();
    await turn();
    expect(log).toEqual(["a:1", "b:1", "b:close", "a:close"]);
    const c = fakeConn("c");
    p.close(c);
    expect(log.at(-1)).toBe("c:close"); // nothing waiting: at once
  });

  it("drain sends and closes everything now; a closed connection gets nothing", async () => {
    log.length = 0;
    const p = new PacedSender(1);
    const a = fakeConn("a");
    const b = fakeConn("b");
    const gone = fakeConn("gone");
    p.send(a, rec);
    p.send(gone, rec);
    p.send(b, rec);
    p.close(b);
    gone.close();
    p.drain();
    expect(log).toEqual(["a:1", "gone:close", "b:1", "b:close"]);
    expect(p.waiting).toBe(0);
    await turn();
    expect(log).toHaveLength(4);
  });
});
