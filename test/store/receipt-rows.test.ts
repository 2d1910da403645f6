/**
 * The receipts row codec of the SQLite store (schema 3): any receipts of one
 * commit, of any messages, states, devices, times and reasons, read back
 * exactly, also after some are dropped (prune keeps the others under their
 * ids); a damaged row is refused rather than read as other receipts.
 */
import { describe, expect, it } from "vitest";
import { decodeRow, encodeRow, parseRowList, RECEIPTS_PER_ROW, rowList, rowsOf } from "../../src/store/receipt-rows.ts";
import type { Receipt, ReceiptState } from "../../src/store/index.ts";

const STATES: ReceiptState[] = ["queued", "sent", "delivered", "expired", "rejected"];

/** A deterministic generator (xorshift32), so a failure repeats. */
function random(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function receipts(n: number, seed: number, firstId = 1): Receipt[] {
  const rnd = random(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const messages = ["m-1", "m-2", 'quote"d', "ünï\u0000code", ""];
  const out: Receipt[] = [];
  let at = 1_700_000_000_000;
  for (let i = 0; i < n; i++) {
    // runs of one message, state and time (a fan-out) and mixed ones
    const prev = out.at(-1);
    const same = prev !== undefined && rnd() < 0.6;
    if (rnd() < 0.3) at += Math.floor(rnd() * 5);
    out.push({
      id: firstId + i,
      messageId: same ? prev.messageId : pick(messages.slice(0, 4)),
      device: pick(["", "dev-1", "d\\2", 'd"3', `dev-${i}`]),
      state: same ? prev.state : pick(STATES),
      at: same ? prev.at : at,
      reason: same ? prev.reason : pick(["", "ttl", 'queue "full"']),
      seq: Math.floor(rnd() * 1_000_000),
      topic: same ? prev.topic : pick(["", "news", "a/b"]),
    });
  }
  return out;
}

describe("receipts rows", () => {
  it("read back exactly what a commit wrote, in rows of at most RECEIPTS_PER_ROW", () => {
    for (const [n, seed] of [
      [1, 1],
      [2, 7],
      [37, 11],
      [RECEIPTS_PER_ROW, 3],
      [RECEIPTS_PER_ROW * 2 + 3, 5],
    ] as const) {
      const all = receipts(n, seed, 41);
      const rows = rowsOf(all);
      expect(rows.map((r) => r.count)).toEqual(
        Array.from({ length: Math.ceil(n / RECEIPTS_PER_ROW) }, (_, i) => Math.min(RECEIPTS_PER_ROW, n - i * RECEIPTS_PER_ROW)),
      );
      expect(rows.flatMap((r) => decodeRow(r) ?? [])).toEqual(all);
      for (const r of rows) expect(r.id).toBe((decodeRow(r)?.at(-1) as Receipt).id);
    }
  });

  it("keep the ids of the receipts left when some of a row are dropped", () => {
    const all = receipts(200, 9, 1_000);
    const kept = all.filter((_, i) => i % 3 !== 0 && i !== 199);
    const row = encodeRow(kept, 1_199);
    expect(row.id).toBe(1_199);
    expect(decodeRow(row)).toEqual(kept);
  });

  it("refuse a damaged row", () => {
    const row = encodeRow(receipts(5, 2, 10));
    expect(decodeRow({ ...row, count: 4 })).toBeUndefined();
    expect(decodeRow({ ...row, entries: row.entries.slice(0, -1) })).toBeUndefined();
    expect(decodeRow({ ...row, messages: "[]" })).toBeUndefined();
    // receipt ids below 1 or above the row's id
    expect(decodeRow({ ...row, id: 3 })).toBeUndefined();
    expect(decodeRow({ ...row, entries: `[[-1,0,0,0,"","d",1]]`, count: 1 })).toBeUndefined();
    expect(decodeRow({ ...row, entries: `[[0,0,9,0,"","d",1]]`, count: 1 })).toBeUndefined();
    expect(decodeRow({ ...row, entries: `[[0,0,0,0,"","d"]]`, count: 1 })).toBeUndefined();
  });

  it("list row ids as a text appended to without reading it", () => {
    expect(rowList([3, 17])).toBe(" 3 17");
    expect(parseRowList(`${rowList([3, 17])}${rowList([40])}`)).toEqual([3, 17, 40]);
    expect(parseRowList("")).toEqual([]);
    expect(parseRowList(" 3 x")).toBeUndefined();
    expect(parseRowList(" 0")).toBeUndefined();
  });
});
