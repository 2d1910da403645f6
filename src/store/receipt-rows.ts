/**
 * The SQLite store's receipts rows (schema 3): one row holds a run of receipts
 * of one commit, whatever messages, devices and states they concern, so a
 * commit writes its receipts as a handful of rows (one per RECEIPTS_PER_ROW).
 *
 * A row's columns: `id` (its highest receipt id, so AUTOINCREMENT keeps the
 * highest receipt id ever given), `count`, `at_min` / `at_max` (the times of
 * its receipts: prune walks rows in id order while `at_min` is old enough and
 * deletes a row whole when `at_max` is), and two JSON texts:
 * - `messages`: the distinct messages of its receipts, `[[messageId, topic], ...]`;
 * - `entries`: groups of receipts in id order, each
 *   `[back, message, state, at - at_min, reason, device1, seq1, device2, seq2, ...]`:
 *   receipts of consecutive ids from `id - back`, of one message (an index
 *   into `messages`), state (an index into STATES), time and reason; a
 *   unicast receipt is a group of one, a fan-out's recipients of one state
 *   one group.
 * Receipt ids are explicit (as `back`) because prune may delete some receipts
 * of a row and keep the others under their ids.
 */
import type { Receipt, ReceiptState } from "./types.ts";

/** At most this many receipts share one row (bounds a row's size: in a fan-out, about 5 bytes a receipt plus its device id). */
export const RECEIPTS_PER_ROW = 500;

/** A state's code in a row; never reorder (files hold the codes). */
const STATES: readonly ReceiptState[] = ["queued", "sent", "delivered", "expired", "rejected"];
const STATE_CODE: ReadonlyMap<string, number> = new Map(STATES.map((s, i) => [s, i]));

/** A receipts row as stored. */
export interface ReceiptRow {
  readonly id: number;
  readonly count: number;
  readonly atMin: number;
  readonly atMax: number;
  readonly messages: string;
  readonly entries: string;
}

/** The row `id` holding `receipts` (non-empty, ids increasing, none above `id`; by default the last one's). */
export function encodeRow(receipts: readonly Receipt[], id = (receipts.at(-1) as Receipt).id): ReceiptRow {
  const last = receipts.at(-1) as Receipt;
  let atMin = last.at;
  let atMax = last.at;
  for (const r of receipts) {
    if (r.at < atMin) atMin = r.at;
    if (r.at > atMax) atMax = r.at;
  }
  const messages: [string, string][] = [];
  const index = new Map<string, number>();
  let prev: Receipt | undefined;
  let m = 0;
  let entries = "";
  for (const r of receipts) {
    const sameMessage = prev !== undefined && r.messageId === prev.messageId && r.topic === prev.topic;
    if (!sameMessage) {
      const key = `${r.messageId}\u0000${r.topic}`;
      const known = index.get(key);
      if (known === undefined) {
        m = messages.length;
        index.set(key, m);
        messages.push([r.messageId, r.topic]);
      } else {
        m = known;
      }
    }
    // a fan-out's recipients (one message, state, time and reason, consecutive ids) share a group
    if (!sameMessage || prev === undefined || r.id !== prev.id + 1 || r.state !== prev.state || r.at !== prev.at || r.reason !== prev.reason) {
      const reason = r.reason === "" ? '""' : JSON.stringify(r.reason);
      entries += `${entries === "" ? "[" : "],"}[${id - r.id},${m},${STATE_CODE.get(r.state) as number},${r.at - atMin},${reason}`;
    }
    entries += `,${JSON.stringify(r.device)},${r.seq}`;
    prev = r;
  }
  return { id, count: receipts.length, atMin, atMax, messages: JSON.stringify(messages), entries: `${entries}]]` };
}

/** The receipts of a row, by id; undefined when the row is not well-formed. */
export function decodeRow(row: ReceiptRow): Receipt[] | undefined {
  let messages: unknown;
  let groups: unknown;
  try {
    messages = JSON.parse(row.messages);
    groups = JSON.parse(row.entries);
  } catch {
    return undefined;
  }
  if (!Array.isArray(messages) || !Array.isArray(groups)) return undefined;
  for (const m of messages) if (!Array.isArray(m) || typeof m[0] !== "string" || typeof m[1] !== "string") return undefined;
  const out: Receipt[] = [];
  for (const g of groups as unknown[]) {
    if (!Array.isArray(g) || g.length < 7 || g.length % 2 === 0) return undefined;
    const [back, m, state, at, reason] = g as unknown[];
    const message = Number.isInteger(m) ? (messages[m as number] as [string, string] | undefined) : undefined;
    const stateName = Number.isInteger(state) ? STATES[state as number] : undefined;
    if (!isCount(back) || message === undefined || stateName === undefined || !isCount(at) || typeof reason !== "string") return undefined;
    const first = row.id - back;
    const n = (g.length - 5) / 2;
    if (first < 1 || first + n - 1 > row.id || (out.length > 0 && first <= (out.at(-1) as Receipt).id)) return undefined;
    for (let k = 0; k < n; k++) {
      const device: unknown = g[5 + 2 * k];
      const seq: unknown = g[6 + 2 * k];
      if (typeof device !== "string" || !isCount(seq)) return undefined;
      out.push({ id: first + k, messageId: message[0], device, state: stateName, at: row.atMin + at, reason, seq, topic: message[1] });
    }
  }
  return out.length === row.count && out.length > 0 ? out : undefined;
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** The receipts of one commit as rows of at most RECEIPTS_PER_ROW, in id order. */
export function rowsOf(receipts: readonly Receipt[]): ReceiptRow[] {
  const rows: ReceiptRow[] = [];
  for (let i = 0; i < receipts.length; i += RECEIPTS_PER_ROW) rows.push(encodeRow(receipts.slice(i, i + RECEIPTS_PER_ROW)));
  return rows;
}

/**
 * The list of receipts-row ids a message (or an orphan entry) keeps: a text of
 * ids each preceded by a space, so a commit appends with `||` without reading it.
 */
export function rowList(ids: Iterable<number>): string {
  let s = "";
  for (const id of ids) s += ` ${id}`;
  return s;
}

/** The ids of a row list, or undefined when it is not one. */
export function parseRowList(text: string): number[] | undefined {
  const out: number[] = [];
  for (const part of text.split(" ")) {
    if (part === "") continue;
    const n = Number(part);
    if (!Number.isSafeInteger(n) || n <= 0) return undefined;
    out.push(n);
  }
  return out;
}
