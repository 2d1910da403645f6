/** `dtlspush send`: publishes a message to a device or a topic through the HTTP API. */
import { AuthError } from "../auth/errors.ts";
import { checkTopic } from "../auth/names.ts";
import { apiRequest } from "./api-client.ts";
import { booleanOption, expectPositionals, parseCommandLine, parseInteger, stringOption } from "./args.ts";
import type { IntegerRange, OptionSpecs } from "./args.ts";
import type { CliIo, LeafCommand } from "./command.ts";
import { PROGRAM, formatHelp } from "./command.ts";
import { API_OPTIONS, DATA_DIR_OPTIONS, parseApiOptions, parseDataDirOptions, withDaemonAccess } from "./daemon-access.ts";
import type { ApiOptions, DataDirOptions, Env } from "./daemon-access.ts";
import { parseDeviceId } from "./device.ts";
import { CliError, UsageError } from "./errors.ts";
import { readInput } from "./read-input.ts";
import { BATCH_CHUNK_ENTRIES, runBatch, type BatchSendConfig } from "./send-batch.ts";

const COMMAND = `${PROGRAM} send`;
/** Local sanity bounds; the daemon applies its own (delivery.max_ttl_seconds). */
export const SEND_TTL_RANGE: IntegerRange = { min: 1, max: 10 * 365 * 24 * 3600 };
export const PRIORITY_RANGE: IntegerRange = { min: 0, max: 9 };
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** Largest payload read from a file or standard input (far above any sane delivery.max_payload_bytes). */
const MAX_READ_BYTES = 16 * 1024 * 1024;

const OPTIONS: OptionSpecs = {
  batch: {
    type: "string",
    value: "FILE",
    description:
      "Send the messages of this NDJSON file ('-': standard input),\none JSON object a line: device or topic, and the fields of\nthe API's publish body (payload or payloadBase64, contentType,\nttlSeconds, priority, collapseKey, id)",
  },
  device: { type: "string", value: "ID", description: "Send to this device" },
  topic: { type: "string", value: "TOPIC", description: "Send to every device that receives this topic" },
  data: { type: "string", value: "TEXT", description: "The payload: this text (UTF-8)" },
  file: { type: "string", value: "PATH", description: "The payload: the bytes of this file ('-': standard input)" },
  "data-base64": { type: "string", value: "B64", description: "The payload: these base64-encoded bytes" },
  ttl: {
    type: "string",
    value: "SECONDS",
    description: "Drop the message if not delivered within this time\n(default: the daemon's delivery.default_ttl_seconds)",
  },
  priority: { type: "string", value: "N", description: "0-9, higher first (default 0)" },
  "collapse-key": { type: "string", value: "KEY", description: "A newer message with the same key replaces a queued one" },
  "content-type": { type: "string", value: "TYPE", description: "Media type of the payload, e.g. application/json" },
  id: { type: "string", value: "ID", description: "Message id for idempotency: the same id again is refused\n(duplicate_message)" },
  ...API_OPTIONS,
  ...DATA_DIR_OPTIONS,
  json: { type: "boolean", description: "Print the API's whole answer (id, createdAt, expiresAt,\nrecipients, rejected) as JSON" },
  help: { type: "boolean", short: "h", description: "Show this help" },
};

export type SendTarget = { readonly device: string } | { readonly topic: string };

export type SendData =
  | { readonly kind: "text"; readonly text: string }
  | { readonly kind: "base64"; readonly base64: string }
  | { readonly kind: "file"; readonly path: string };

export interface SendConfig {
  readonly target: SendTarget;
  readonly data: SendData;
  readonly ttlSeconds: number | undefined;
  readonly priority: number | undefined;
  readonly collapseKey: string | undefined;
  readonly contentType: string | undefined;
  readonly id: string | undefined;
  readonly json: boolean;
  readonly access: DataDirOptions;
  readonly api: ApiOptions;
}

/** The options that describe one message (none of them goes with --batch). */
const MESSAGE_OPTIONS = ["device", "topic", "data", "file", "data-base64", "ttl", "priority", "collapse-key", "content-type", "id"] as const;

/** Parses `send` arguments (pure): one message, or --batch. */
export function parseSendCommand(argv: readonly string[], env: Env = {}): SendConfig | BatchSendConfig {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, COMMAND);
  expectPositionals(positionals, [], COMMAND);
  const batch = stringOption(values, "batch");
  if (batch === undefined) return parseSendArgs(argv, env);
  if (batch === "") throw new UsageError("--batch: the file name is empty");
  const other = MESSAGE_OPTIONS.find((o) => values[o] !== undefined);
  if (other !== undefined) throw new UsageError(`--batch and --${other}: the file gives each message's fields`);
  return { batch, json: booleanOption(values, "json"), access: parseDataDirOptions(values, env), api: parseApiOptions(values, env) };
}

/** Parses the arguments of a one-message `send` (pure). */
export function parseSendArgs(argv: readonly string[], env: Env = {}): SendConfig {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, COMMAND);
  expectPositionals(positionals, [], COMMAND);
  if (values["batch"] !== undefined) throw new UsageError("--batch: give the messages in the file, not as options");
  const device = stringOption(values, "device");
  const topic = stringOption(values, "topic");
  if (device === undefined && topic === undefined) throw new UsageError(`missing --device ID or --topic TOPIC (see '${COMMAND} --help')`);
  if (device !== undefined && topic !== undefined) throw new UsageError("--device and --topic: give one");
  let target: SendTarget;
  if (device !== undefined) {
    target = { device: parseDeviceId(device) };
  } else {
    try {
      target = { topic: checkTopic(topic ?? "") };
    } catch (e) {
      if (e instanceof AuthError) throw new UsageError(`--topic: ${e.message.replace(/\.$/, "")}`);
      throw e;
    }
  }

  const text = stringOption(values, "data");
  const file = stringOption(values, "file");
  const base64 = stringOption(values, "data-base64");
  const given = [text, file, base64].filter((v) => v !== undefined).length;
  if (given === 0) throw new UsageError(`missing --data TEXT, --file PATH or --data-base64 B64 (see '${COMMAND} --help')`);
  if (given > 1) throw new UsageError("--data, --file and --data-base64: give one");
  let data: SendData;
  if (text !== undefined) data = { kind: "text", text };
  else if (file !== undefined) {
    if (file === "") throw new UsageError("--file: the file name is empty");
    data = { kind: "file", path: file };
  } else {
    const clean = (base64 ?? "").replace(/\s+/g, "");
    if (!BASE64.test(clean)) throw new UsageError("--data-base64: not valid base64 (A-Z a-z 0-9 + /, padded with = to a multiple of 4)");
    data = { kind: "base64", base64: clean };
  }

  const ttlText = stringOption(values, "ttl");
  const priorityText = stringOption(values, "priority");
  const collapseKey = stringOption(values, "collapse-key");
  if (collapseKey === "") throw new UsageError("--collapse-key: the key is empty");
  const contentType = stringOption(values, "content-type");
  if (contentType === "") throw new UsageError("--content-type: the type is empty");
  const id = stringOption(values, "id");
  if (id === "") throw new UsageError("--id: the id is empty");
  return {
    target,
    data,
    ttlSeconds: ttlText === undefined ? undefined : parseInteger(ttlText, "--ttl", SEND_TTL_RANGE),
    priority: priorityText === undefined ? undefined : parseInteger(priorityText, "--priority", PRIORITY_RANGE),
    collapseKey,
    contentType,
    id,
    json: booleanOption(values, "json"),
    access: parseDataDirOptions(values, env),
    api: parseApiOptions(values, env),
  };
}

/** The API path of the target. */
export function sendPath(target: SendTarget): string {
  return "device" in target ? `/v1/devices/${encodeURIComponent(target.device)}/messages` : `/v1/topics/${encodeURIComponent(target.topic)}/messages`;
}

/** The JSON body of the publish request; `payload` is the file's bytes for --file. */
export function sendBody(config: SendConfig, fileBytes?: Uint8Array): Record<string, unknown> {
  let payload: Record<string, string>;
  switch (config.data.kind) {
    case "text":
      payload = { payload: config.data.text };
      break;
    case "base64":
      payload = { payloadBase64: config.data.base64 };
      break;
    case "file":
      payload = { payloadBase64: Buffer.from(fileBytes ?? new Uint8Array()).toString("base64") };
      break;
  }
  return {
    ...payload,
    ...(config.contentType !== undefined ? { contentType: config.contentType } : {}),
    ...(config.ttlSeconds !== undefined ? { ttlSeconds: config.ttlSeconds } : {}),
    ...(config.priority !== undefined ? { priority: config.priority } : {}),
    ...(config.collapseKey !== undefined ? { collapseKey: config.collapseKey } : {}),
    ...(config.id !== undefined ? { id: config.id } : {}),
  };
}

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseSendCommand(argv, process.env);
  if ("batch" in parsed) return await runBatch(parsed, io);
  const config = parsed;
  const fileBytes = config.data.kind === "file" ? await readInput("--file", config.data.path, io, MAX_READ_BYTES) : undefined;
  const body = sendBody(config, fileBytes);
  return await withDaemonAccess(COMMAND, io, config, async (daemon) => {
    const url = await daemon.apiUrl();
    const token = await daemon.tokenFor(url, ["publish"]);
    if (token === undefined) throw await daemon.noTokenError(url);
    let answer: unknown;
    try {
      answer = (await apiRequest(url, { method: "POST", path: sendPath(config.target), token, body })).body;
    } catch (e) {
      throw await daemon.explainMintedTokenRefusal(e);
    }
    const id = (answer as { id?: unknown } | undefined)?.id;
    if (typeof id !== "string") throw new CliError("the API accepted the message but did not say its id");
    io.stdout.write(config.json ? `${JSON.stringify(answer, null, 2)}\n` : `${id}\n`);
    return 0;
  });
}

export const sendCommand: LeafCommand = {
  kind: "command",
  name: "send",
  summary: "Send a message to a device or a topic through the HTTP API",
  help: () =>
    formatHelp({
      usage: [
        `${COMMAND} (--device ID | --topic TOPIC) (--data TEXT | --file PATH | --data-base64 B64) [options]`,
        `${COMMAND} --batch FILE [--json] [--api URL] [--token TOKEN]`,
      ],
      description:
        "Publishes one message (POST /v1/devices/ID/messages or /v1/topics/TOPIC/messages)\n" +
        "and prints its id once the daemon has stored it durably. With --json prints the\n" +
        "whole answer, including the recipients and the devices that were refused.\n" +
        "A refusal is one line, 'dtlspush send: <message> (<code>)', and exit 1; e.g.\n" +
        "device_unknown, device_revoked, payload_too_large, queue_full, duplicate_message.\n" +
        "With --batch sends the messages of an NDJSON file through POST /v1/messages,\n" +
        `up to ${BATCH_CHUNK_ENTRIES} a request, and prints one line per message: '<line> <id>', or\n` +
        "'<line> error <code>: <message>' (with --json one JSON object a line); exit 1\n" +
        "when any message was refused. An invalid line stops it before anything is sent.\n" +
        "Without --token the command mints a 5-minute publish token from the local data\n" +
        "directory (on the daemon's machine).",
      options: OPTIONS,
      examples: [
        `${COMMAND} --device sensor-1 --data 'reboot at 03:00'`,
        `${COMMAND} --topic alerts --data '{"level":"high"}' --content-type application/json --ttl 600 --priority 9`,
        `cat firmware.bin | ${COMMAND} --device sensor-1 --file - --collapse-key firmware`,
        `${COMMAND} --batch messages.ndjson   # {"device":"sensor-1","payload":"on","id":"o-1"} a line`,
      ],
    }),
  run,
};
