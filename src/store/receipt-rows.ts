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
 * - `entries`: one tuple a receipt, in id order,
 *   `[back, message, device, state, at - at_min, reason, seq]`, where the
 *   receipt id is `id - back`, `message` indexes `messages` and `state`
 *   indexes STATES.
 * Receipt ids are explicit (as `back`) because prune may delete some receipts
 * of a row and keep the others under their ids.
 */
import type { Receipt, ReceiptState } from "./types.ts";

/** At most this many receipts share one row (bounds a row's size: about 25 bytes a receipt plus its device id). */
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
  const entries = receipts.map((r) => {
    const key = `${r.messageId}\u0000${r.topic}`;
    let m = index.get(key);
    if (m === undefined) {
      m = messages.length;
      index.set(key, m);
      messages.push([r.messageId, r.topic]);
    }
    return [id - r.id, m, r.device, STATE_CODE.get(r.state) as number, r.at - atMin, r.reason, r.seq];
  });
  return { id, count: receipts.length, atMin, atMax, messages: JSON.stringify(messages), entries: JSON.stringify(entries) };
}

/** The receipts of a row, by id; undefined when the row is not well-formed. */
export function decodeRow(row: ReceiptRow): Receipt[] | undefined {
  let messages: unknown;
  let entries: unknown;
  try {
    messages = JSON.parse(row.messages);
    entries = JSON.parse(row.entries);
  } catch {
    return undefined;
  }
  if (!Array.isArray(messages) || !Array.isArray(entries) || entries.length !== row.count) return undefined;
  for (const m of messages) if (!Array.isArray(m) || typeof m[0] !== "string" || typeof m[1] !== "string") return undefined;
  const out: Receipt[] = [];
  for (const e of entries as unknown[]) {
    if (!Array.isArray(e) || e.length !== 7) return undefined;
    const [back, m, device, state, at, reason, seq] = e as unknown[];
    const message = Number.isInteger(m) ? (messages[m as number] as [string, string] | undefined) : undefined;
    const stateName = Number.isInteger(state) ? STATES[state as number] : undefined;
    if (
      !isCount(back) ||
      message === undefined ||
      typeof device !== "string" ||
      stateName === undefined ||
      !isCount(at) ||
      typeof reason !== "string" ||
      !isCount(seq) ||
      back >= row.id
    ) {
      return undefined;
    }
    out.push({ id: row.id - back, messageId: message[0], device, state: stateName, at: row.atMin + at, reason, seq, topic: message[1] });
  }
  return out;
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
