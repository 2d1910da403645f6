/**
 * `dtlspush send --batch FILE`: the messages of an NDJSON file (one JSON
 * object a line: a batch entry of the API) sent through POST /v1/messages in
 * requests of at most BATCH_CHUNK_ENTRIES, one result line printed per message.
 */
import { apiRequest } from "./api-client.ts";
import type { CliIo } from "./command.ts";
import { PROGRAM } from "./command.ts";
import { withDaemonAccess } from "./daemon-access.ts";
import type { ApiOptions, DataDirOptions } from "./daemon-access.ts";
import { CliError } from "./errors.ts";
import { readInput } from "./read-input.ts";

const COMMAND = `${PROGRAM} send`;
/** Most entries of one request (the API's limit). */
export const BATCH_CHUNK_ENTRIES = 1000;
/** Most bytes of entries in one request: below the daemon's default http.batch_body_limit_bytes (4 MiB). */
export const BATCH_CHUNK_BYTES = 3 * 1024 * 1024;
/** Largest batch file read (it is read and checked whole before anything is sent). */
const MAX_BATCH_READ_BYTES = 256 * 1024 * 1024;

/** `send --batch FILE`: only the API options and --json go with it. */
export interface BatchSendConfig {
  readonly batch: string;
  readonly json: boolean;
  readonly access: DataDirOptions;
  readonly api: ApiOptions;
}

/** One message of a batch file: its line number (from 1) and its entry. */
export interface BatchLine {
  readonly line: number;
  readonly entry: Readonly<Record<string, unknown>>;
  /** length of its JSON text, bytes */
  readonly bytes: number;
}

/**
 * The messages of an NDJSON text; blank lines are skipped. Each line must be
 * a JSON object (its fields are the daemon's to check): a line that is not is
 * an error naming it, `source` the file.
 */
export function parseBatchLines(text: string, source: string): BatchLine[] {
  const out: BatchLine[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = (lines[i] ?? "").replace(/\r$/, "");
    if (raw.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (e) {
      throw new CliError(`--batch ${source}: line ${i + 1} is not valid JSON (${e instanceof Error ? e.message : String(e)})`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new CliError(`--batch ${source}: line ${i + 1} is not a JSON object (one message a line: {"device": …, "payload": …})`);
    }
    out.push({ line: i + 1, entry: value as Record<string, unknown>, bytes: Buffer.byteLength(raw) });
  }
  return out;
}

/** The requests to make: at most BATCH_CHUNK_ENTRIES entries and (unless one alone is larger) BATCH_CHUNK_BYTES each. */
export function batchChunks(lines: readonly BatchLine[], maxEntries = BATCH_CHUNK_ENTRIES, maxBytes = BATCH_CHUNK_BYTES): BatchLine[][] {
  const chunks: BatchLine[][] = [];
  let current: BatchLine[] = [];
  let bytes = 0;
  for (const l of lines) {
    if (current.length > 0 && (current.length >= maxEntries || bytes + l.bytes > maxBytes)) {
      chunks.push(current);
      current = [];
      bytes = 0;
    }
    current.push(l);
    bytes += l.bytes + 1;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}

interface EntryResult {
  id?: unknown;
  error?: { code?: unknown; message?: unknown };
}

/** The line printed for one message: '<line> <id>' or '<line> error <code>: <message>'; with json its result and line as JSON. */
export function formatBatchResult(line: number, result: EntryResult, json: boolean): string {
  if (json) return JSON.stringify({ line, ...result });
  if (result.error !== undefined) return `${line} error ${String(result.error.code)}: ${String(result.error.message)}`;
  return `${line} ${String(result.id)}`;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

export async function runBatch(config: BatchSendConfig, io: CliIo): Promise<number> {
  const bytes = await readInput("--batch", config.batch, io, MAX_BATCH_READ_BYTES);
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    throw new CliError(`--batch ${config.batch}: not UTF-8 text (send binary payloads as payloadBase64)`);
  }
  const lines = parseBatchLines(text, config.batch);
  if (lines.length === 0) throw new CliError(`--batch ${config.batch}: no messages (no line holds a JSON object)`);
  return await withDaemonAccess(COMMAND, io, config, async (daemon) => {
    const url = await daemon.apiUrl();
    const token = await daemon.tokenFor(url, ["publish"]);
    if (token === undefined) throw await daemon.noTokenError(url);
    let refused = 0;
    for (const chunk of batchChunks(lines)) {
      let answer: unknown;
      try {
        answer = (await apiRequest(url, { method: "POST", path: "/v1/messages", token, body: { messages: chunk.map((l) => l.entry) } })).body;
      } catch (e) {
        // what was printed before was sent; say what was not
        io.stderr.write(`${COMMAND}: the messages from line ${chunk[0]?.line} on were not sent\n`);
        throw await daemon.explainMintedTokenRefusal(e);
      }
      const results = (answer as { results?: unknown } | undefined)?.results;
      if (!Array.isArray(results) || results.length !== chunk.length) {
        throw new CliError(`the API did not answer one result per message (lines ${chunk[0]?.line} to ${chunk.at(-1)?.line})`);
      }
      chunk.forEach((l, i) => {
        const r = results[i] as EntryResult;
        if (r.error !== undefined) refused++;
        io.stdout.write(`${formatBatchResult(l.line, r, config.json)}\n`);
      });
    }
    if (refused > 0) {
      io.stderr.write(`${COMMAND}: ${refused} of ${lines.length} messages were refused\n`);
      return 1;
    }
    return 0;
  });
}
