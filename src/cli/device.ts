/**
 * `dtlspush device add|list|revoke|remove`: the device registry, through the
 * daemon's HTTP API (admin token given, or minted from the local data
 * directory). When the daemon on this machine is not running, the commands
 * read and write its store directly.
 */
import { AuthError } from "../auth/errors.ts";
import { checkDeviceId, checkTopic } from "../auth/names.ts";
import type { Store } from "../store/types.ts";
import { apiRequest } from "./api-client.ts";
import { booleanOption, expectPositionals, parseCommandLine, quote, stringListOption, stringOption } from "./args.ts";
import type { OptionSpecs, ParsedCommandLine } from "./args.ts";
import type { CliIo, CommandGroup, LeafCommand } from "./command.ts";
import { PROGRAM, formatHelp } from "./command.ts";
import { API_OPTIONS, DATA_DIR_OPTIONS, parseApiOptions, parseDataDirOptions, withDaemonAccess } from "./daemon-access.ts";
import type { ApiOptions, DataDirOptions, Env } from "./daemon-access.ts";
import { deviceItemFromRecord, formatDeviceSummary, formatDeviceTable, parseDeviceItem } from "./device-format.ts";
import type { DeviceItem } from "./device-format.ts";
import { CliError, UsageError } from "./errors.ts";

const GROUP = `${PROGRAM} device`;
const HEX = /^[0-9a-fA-F]+$/;
/** The registry's limits: PSK keys 1-64 bytes, PSK identities 1-128 bytes of UTF-8. */
const MAX_PSK_KEY_BYTES = 64;
const MAX_PSK_IDENTITY_BYTES = 128;
const MAX_CERT_IDENTITY = 1024;

const COMMON: OptionSpecs = {
  ...API_OPTIONS,
  ...DATA_DIR_OPTIONS,
  json: { type: "boolean", description: "Print the API's JSON" },
  help: { type: "boolean", short: "h", description: "Show this help" },
};

const ADD_OPTIONS: OptionSpecs = {
  psk: { type: "string", value: "HEX", description: "Pre-shared key, 2-128 hex digits (1-64 bytes); never printed" },
  "psk-identity": {
    type: "string",
    value: "NAME",
    description: "PSK identity the device sends (default: ID for a new device,\nthe current identity for a registered one)",
  },
  "cert-identity": {
    type: "string",
    value: "CN",
    description: "Certificate identity as the server reads it from the device's\ncertificate (subject CN by default)",
  },
  topic: { type: "string", multiple: true, value: "TOPIC", description: "A topic the device receives; repeat for more" },
  ...COMMON,
};

interface Access {
  readonly access: DataDirOptions;
  readonly api: ApiOptions;
  readonly json: boolean;
}

export interface DeviceAddConfig extends Access {
  readonly id: string;
  /** identity undefined: the device id for a new device, the current identity for a registered one */
  readonly psk: { readonly identity: string | undefined; readonly keyHex: string } | undefined;
  readonly certIdentity: string | undefined;
  /** undefined: keep the topics of a registered device (none for a new one) */
  readonly topics: string[] | undefined;
}

export interface DeviceIdConfig extends Access {
  readonly id: string;
}

export type DeviceListConfig = Access;

function access(values: ParsedCommandLine["values"], env: Env): Access {
  return { access: parseDataDirOptions(values, env), api: parseApiOptions(values, env), json: booleanOption(values, "json") };
}

/** A device id by the registry's rule; a bad one is a usage error. */
export function parseDeviceId(text: string): string {
  try {
    return checkDeviceId(text);
  } catch (e) {
    if (e instanceof AuthError) throw new UsageError(e.message.replace(/\.$/, ""));
    throw e;
  }
}

function parseTopic(text: string): string {
  try {
    return checkTopic(text);
  } catch (e) {
    if (e instanceof AuthError) throw new UsageError(`--topic: ${e.message.replace(/\.$/, "")}`);
    throw e;
  }
}

/** Parses `device add` arguments (pure). */
export function parseDeviceAddArgs(argv: readonly string[], env: Env = {}): DeviceAddConfig {
  const command = `${GROUP} add`;
  const { values, positionals } = parseCommandLine(argv, ADD_OPTIONS, command);
  const [idText = ""] = expectPositionals(positionals, ["ID"], command);
  const id = parseDeviceId(idText);
  const keyHex = stringOption(values, "psk");
  const pskIdentity = stringOption(values, "psk-identity");
  const certIdentity = stringOption(values, "cert-identity");
  if (keyHex === undefined && certIdentity === undefined) {
    throw new UsageError(`missing --psk HEX or --cert-identity CN (see '${command} --help')`);
  }
  if (keyHex !== undefined && certIdentity !== undefined) throw new UsageError("--psk and --cert-identity: give one");
  if (pskIdentity !== undefined && keyHex === undefined) throw new UsageError("--psk-identity: only with --psk");
  let psk: DeviceAddConfig["psk"];
  if (keyHex !== undefined) {
    // never repeat the key in a message
    if (keyHex === "" || !HEX.test(keyHex)) throw new UsageError("--psk: the key must be hexadecimal digits (0-9, a-f)");
    if (keyHex.length % 2 !== 0) throw new UsageError(`--psk: the key must have an even number of hex digits (got ${keyHex.length})`);
    if (keyHex.length / 2 > MAX_PSK_KEY_BYTES) throw new UsageError(`--psk: the key is longer than ${MAX_PSK_KEY_BYTES} bytes`);
    if (pskIdentity !== undefined) {
      const bytes = Buffer.byteLength(pskIdentity, "utf8");
      if (bytes < 1 || bytes > MAX_PSK_IDENTITY_BYTES) throw new UsageError(`--psk-identity: give 1 to ${MAX_PSK_IDENTITY_BYTES} bytes of UTF-8`);
    }
    psk = { identity: pskIdentity, keyHex: keyHex.toLowerCase() };
  }
  if (certIdentity !== undefined && (certIdentity.length < 1 || certIdentity.length > MAX_CERT_IDENTITY)) {
    throw new UsageError(`--cert-identity: give 1 to ${MAX_CERT_IDENTITY} characters`);
  }
  const topicTexts = stringListOption(values, "topic");
  const topics = topicTexts.length === 0 ? undefined : [...new Set(topicTexts.map(parseTopic))];
  return { id, psk, certIdentity, topics, ...access(values, env) };
}

/** Parses `device revoke|remove ID` arguments (pure). */
export function parseDeviceIdArgs(argv: readonly string[], env: Env = {}, command = `${GROUP} revoke`): DeviceIdConfig {
  const { values, positionals } = parseCommandLine(argv, COMMON, command);
  const [idText = ""] = expectPositionals(positionals, ["ID"], command);
  return { id: parseDeviceId(idText), ...access(values, env) };
}

/** Parses `device list` arguments (pure). */
export function parseDeviceListArgs(argv: readonly string[], env: Env = {}): DeviceListConfig {
  const command = `${GROUP} list`;
  const { values, positionals } = parseCommandLine(argv, COMMON, command);
  expectPositionals(positionals, [], command);
  return access(values, env);
}

/** The body of `PUT /v1/devices/{id}` for `device add`. */
export function deviceAddBody(config: DeviceAddConfig): Record<string, unknown> {
  return {
    ...(config.psk !== undefined
      ? { psk: { ...(config.psk.identity !== undefined ? { identity: config.psk.identity } : {}), keyHex: config.psk.keyHex } }
      : {}),
    ...(config.certIdentity !== undefined ? { certificate: { identity: config.certIdentity } } : {}),
    ...(config.topics !== undefined ? { topics: config.topics } : {}),
  };
}

function devicePath(id: string): string {
  return `/v1/devices/${encodeURIComponent(id)}`;
}

function expectItem(body: unknown): DeviceItem {
  const item = parseDeviceItem(body);
  if (item === undefined) throw new CliError("the API answered with something that is not a device");
  return item;
}

/** Queue depth per device from the stored deliveries (what the daemon would report after a restart). */
async function storedQueueDepths(store: Store): Promise<Map<string, number>> {
  const depths = new Map<string, number>();
  for (const d of (await store.loadDeliveryState()).deliveries) {
    if (!d.tombstone) depths.set(d.device, (depths.get(d.device) ?? 0) + 1);
  }
  return depths;
}

function wroteLocally(io: CliIo, command: string, local: { url: string; dir: string } | undefined): void {
  if (local === undefined) return;
  io.stderr.write(`${command}: daemon not reachable at ${local.url}; wrote to ${local.dir} directly; a running daemon picks it up on SIGHUP\n`);
}

function printItem(io: CliIo, json: boolean, verb: string, item: DeviceItem): void {
  io.stdout.write(json ? `${JSON.stringify(item, null, 2)}\n` : `${verb} device ${formatDeviceSummary(item)}\n`);
}

// ---------------------------------------------------------------------------
// device add

async function runAdd(argv: readonly string[], io: CliIo): Promise<number> {
  const command = `${GROUP} add`;
  const config = parseDeviceAddArgs(argv, process.env);
  return await withDaemonAccess(command, io, config, async (daemon) => {
    const { value, local } = await daemon.apiOrLocal(
      ["admin"],
      async (url, token) => {
        const res = await apiRequest(url, { method: "PUT", path: devicePath(config.id), token, body: deviceAddBody(config) });
        return { created: res.status === 201, item: expectItem(res.body) };
      },
      async ({ registry }) => {
        const existing = registry.get(config.id);
        const psk =
          config.psk === undefined
            ? undefined
            : { identity: config.psk.identity ?? existing?.psk?.identity ?? config.id, key: Uint8Array.from(Buffer.from(config.psk.keyHex, "hex")) };
        const record =
          existing === undefined
            ? await registry.add({ id: config.id, psk, certIdentity: config.certIdentity, topics: config.topics })
            : await registry.update(config.id, {
                ...(psk !== undefined ? { psk } : {}),
                ...(config.certIdentity !== undefined ? { certIdentity: config.certIdentity } : {}),
                ...(config.topics !== undefined ? { topics: config.topics } : {}),
              });
        return { created: existing === undefined, item: deviceItemFromRecord(record, null) };
      },
      true,
    );
    wroteLocally(io, command, local);
    printItem(io, config.json, value.created ? "added" : "updated", value.item);
    return 0;
  });
}

export const deviceAddCommand: LeafCommand = {
  kind: "command",
  name: "add",
  summary: "Register a device (PSK or certificate identity), or change a registered one",
  help: () =>
    formatHelp({
      usage: [
        `${GROUP} add ID --psk HEX [--psk-identity NAME] [--topic TOPIC]… [options]`,
        `${GROUP} add ID --cert-identity CN [--topic TOPIC]… [options]`,
      ],
      description:
        "Registers device ID with a pre-shared key or the identity of its certificate\n" +
        "(PUT /v1/devices/ID). A registered device is updated instead: the credential\n" +
        "given replaces the one of its kind, --topic replaces its topics, the rest is\n" +
        "kept. Prints 'added device …' or 'updated device …' (never the key).\n" +
        "Without --token the command mints a 5-minute admin token from the local data\n" +
        "directory. When the daemon on this machine is not running (connection\n" +
        "refused), it writes the data directory's store directly and says so on\n" +
        "standard error; a running daemon picks the change up on SIGHUP.",
      positionals: [{ name: "ID", description: "Device id: 1-128 characters of A-Z a-z 0-9 . _ : @ -, starting\nwith a letter or digit" }],
      options: ADD_OPTIONS,
      examples: [
        `${GROUP} add sensor-1 --psk 00112233445566778899aabbccddeeff --topic alerts`,
        `${GROUP} add gw-2 --cert-identity gw-2 --api http://10.0.0.5:8080 --token "$DTLSPUSH_TOKEN"`,
      ],
    }),
  run: runAdd,
};

// ---------------------------------------------------------------------------
// device list

async function runList(argv: readonly string[], io: CliIo): Promise<number> {
  const command = `${GROUP} list`;
  const config = parseDeviceListArgs(argv, process.env);
  return await withDaemonAccess(command, io, config, async (daemon) => {
    const { value, local } = await daemon.apiOrLocal(
      ["admin"],
      async (url, token) => {
        const res = await apiRequest(url, { method: "GET", path: "/v1/devices", token });
        const devices = (res.body as { devices?: unknown } | undefined)?.devices;
        if (!Array.isArray(devices)) throw new CliError("the API answered without a device list");
        return devices.map(expectItem);
      },
      async ({ registry, store }) => {
        const depths = await storedQueueDepths(store);
        return registry.list().map((r) => deviceItemFromRecord(r, depths.get(r.id) ?? 0));
      },
      false,
    );
    if (local !== undefined) {
      io.stderr.write(`${command}: daemon not reachable at ${local.url}; read ${local.dir} directly (online and last seen unknown)\n`);
    }
    io.stdout.write(config.json ? `${JSON.stringify({ devices: value }, null, 2)}\n` : formatDeviceTable(value));
    return 0;
  });
}

export const deviceListCommand: LeafCommand = {
  kind: "command",
  name: "list",
  summary: "List registered devices: credentials, online, last seen, queue depth",
  help: () =>
    formatHelp({
      usage: [`${GROUP} list [--json] [options]`],
      description:
        "Prints one row per registered device (GET /v1/devices): its id, credentials\n" +
        "(psk, cert or psk+cert), whether it is revoked, whether it is online, when the\n" +
        "server last heard from it and how many messages wait for it. --json prints\n" +
        'the API\'s {"devices": […]}. When the daemon on this machine is not running,\n' +
        "reads its store directly (online and last seen are then unknown).",
      options: COMMON,
      examples: [`${GROUP} list`, `${GROUP} list --json --config dtlspush.toml`],
    }),
  run: runList,
};

// ---------------------------------------------------------------------------
// device revoke / remove

async function runRevoke(argv: readonly string[], io: CliIo): Promise<number> {
  const command = `${GROUP} revoke`;
  const config = parseDeviceIdArgs(argv, process.env, command);
  return await withDaemonAccess(command, io, config, async (daemon) => {
    const { value, local } = await daemon.apiOrLocal(
      ["admin"],
      async (url, token) => {
        // GET first: an unknown id is device_unknown rather than a refused creation
        await apiRequest(url, { method: "GET", path: devicePath(config.id), token });
        const res = await apiRequest(url, { method: "PUT", path: devicePath(config.id), token, body: { revoked: true } });
        return expectItem(res.body);
      },
      async ({ registry }) => deviceItemFromRecord(await registry.revoke(config.id), null),
      false,
    );
    wroteLocally(io, command, local);
    printItem(io, config.json, "revoked", value);
    return 0;
  });
}

export const deviceRevokeCommand: LeafCommand = {
  kind: "command",
  name: "revoke",
  summary: "Revoke a device: its sessions end and it cannot connect again",
  help: () =>
    formatHelp({
      usage: [`${GROUP} revoke ID [options]`],
      description:
        'Marks device ID revoked (PUT /v1/devices/ID {"revoked": true}): the server\n' +
        "ends its session, refuses its handshakes and rejects messages for it. The\n" +
        "device stays registered ('device add' with new credentials does not undo a\n" +
        "revocation; 'device remove' deletes it). Works on the local store when the\n" +
        "daemon on this machine is not running.",
      positionals: [{ name: "ID", description: "Device id" }],
      options: COMMON,
      examples: [`${GROUP} revoke sensor-1`],
    }),
  run: runRevoke,
};

async function runRemove(argv: readonly string[], io: CliIo): Promise<number> {
  const command = `${GROUP} remove`;
  const config = parseDeviceIdArgs(argv, process.env, command);
  return await withDaemonAccess(command, io, config, async (daemon) => {
    const { local } = await daemon.apiOrLocal(
      ["admin"],
      async (url, token) => {
        await apiRequest(url, { method: "DELETE", path: devicePath(config.id), token });
      },
      async ({ registry }) => {
        if (!(await registry.remove(config.id))) throw new AuthError("device_unknown", `No device ${JSON.stringify(config.id)} is registered.`);
      },
      false,
    );
    wroteLocally(io, command, local);
    io.stdout.write(config.json ? `${JSON.stringify({ id: config.id, removed: true })}\n` : `removed device ${quote(config.id)}\n`);
    return 0;
  });
}

export const deviceRemoveCommand: LeafCommand = {
  kind: "command",
  name: "remove",
  summary: "Delete a device, its queued messages and subscriptions",
  help: () =>
    formatHelp({
      usage: [`${GROUP} remove ID [options]`],
      description:
        "Revokes device ID and deletes it (DELETE /v1/devices/ID): its live session\n" +
        "ends, its queued messages and subscriptions are dropped. Works on the local\n" +
        "store when the daemon on this machine is not running.",
      positionals: [{ name: "ID", description: "Device id" }],
      options: COMMON,
      examples: [`${GROUP} remove sensor-1`],
    }),
  run: runRemove,
};

export const deviceGroup: CommandGroup = {
  kind: "group",
  name: "device",
  summary: "The device registry: add, list, revoke and remove devices",
  children: [deviceAddCommand, deviceListCommand, deviceRevokeCommand, deviceRemoveCommand],
};
