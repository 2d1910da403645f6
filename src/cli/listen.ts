/**
 * `dtlspush listen`: a device on the command line. Connects with the device
 * SDK, prints each verified message (one line of text, or one JSON object a
 * line), acknowledges it once printed, and reconnects by itself until
 * `--count` messages arrived, `--timeout` expired or a signal came.
 */
import { TRANSPORT_NAMES } from "../client/transports/base.ts";
import type { TransportName } from "../client/transports/base.ts";
import type { DtlspushClient, ReceivedMessage } from "../client/index.ts";
import {
  booleanOption,
  expectPositionals,
  formatHostPort,
  parseCertKeyPairs,
  parseCommandLine,
  parseHostPort,
  parseInteger,
  stringListOption,
  stringOption,
} from "./args.ts";
import type { CertKeyFiles, HostPort, IntegerRange, OptionSpecs } from "./args.ts";
import type { CliIo, LeafCommand } from "./command.ts";
import { PROGRAM, formatHelp } from "./command.ts";
import { parseDeviceId } from "./device.ts";
import { describeDtlsError, readCertKeyFiles, readOptionFile } from "./dtls-engine.ts";
import { CliError, UsageError, errorCode } from "./errors.ts";
import { formatMessageJson, formatMessageLine } from "./listen-format.ts";

const COMMAND = `${PROGRAM} listen`;
const HEX = /^[0-9a-fA-F]+$/;
const MAX_PSK_KEY_BYTES = 64;
const MAX_PSK_IDENTITY_BYTES = 128;
export const COUNT_RANGE: IntegerRange = { min: 1, max: 1_000_000_000 };
export const TIMEOUT_RANGE: IntegerRange = { min: 1, max: 31_536_000 };
export const PROBE_IDLE_RANGE: IntegerRange = { min: 1, max: 86_400 };
/** Longest wait for one DTLS handshake and Welcome. */
export const CONNECT_TIMEOUT_MS = 10_000;
/** Exit code when --timeout expires first. */
export const EXIT_TIMEOUT = 2;
/** Server answers after which the SDK stops reconnecting (so neither do we). */
const TERMINAL_CODES = new Set(["device_revoked", "device_unknown", "session_replaced"]);

const OPTIONS: OptionSpecs = {
  server: {
    type: "string",
    multiple: true,
    value: "HOST:PORT",
    description:
      "The daemon's DTLS address, e.g. 127.0.0.1:5684. Required. Repeat for the\n" +
      "nodes of a cluster: tried in order, a lost session fails over to the next",
  },
  device: { type: "string", value: "ID", description: "The device id the server knows this device by. Required" },
  psk: { type: "string", value: "HEX", description: "The device's pre-shared key, 2-128 hex digits" },
  "psk-identity": { type: "string", value: "NAME", description: "PSK identity to send (default: the device id)" },
  cert: { type: "string", value: "FILE", description: "PEM device certificate chain (leaf first); give --key FILE with it" },
  key: { type: "string", value: "FILE", description: "PEM private key of --cert" },
  ca: {
    type: "string",
    value: "FILE",
    description:
      "PEM CA certificate(s) the server's certificate must lead to (with --cert;\n" +
      "default: the last certificate of the --cert file, the CA that 'certs\n" +
      "device' appends)",
  },
  state: {
    type: "string",
    value: "FILE",
    description:
      "Keep the device state (last message processed, session token, DTLS\n" +
      "session) in this JSON file (mode 0600: it holds the session's master\n" +
      "secret), so a restart neither repeats nor skips messages and resumes\n" +
      "the DTLS session with an abbreviated handshake",
  },
  json: {
    type: "boolean",
    description: "One JSON object a line: {id, seq, topic, contentType, payload,\npayloadBase64?, createdAt}",
  },
  count: { type: "string", value: "N", description: "Exit 0 after N messages" },
  timeout: { type: "string", value: "SECONDS", description: `Exit ${EXIT_TIMEOUT} if not done (N messages) within this time` },
  "probe-idle": {
    type: "string",
    value: "SECONDS",
    description:
      "Ping a silent server after this many seconds (default 15); unanswered\n" + "probes mean it lost the session (e.g. restarted): re-handshake",
  },
  transport: {
    type: "string",
    value: "NAME",
    description: `DTLS client: ${TRANSPORT_NAMES.join(", ")} (default dtlspush;\nthe others are optional packages)`,
  },
  help: { type: "boolean", short: "h", description: "Show this help" },
};

export interface ListenConfig {
  /** the first of `servers` */
  readonly server: HostPort;
  /** every --server, in order */
  readonly servers: readonly HostPort[];
  readonly device: string;
  readonly psk: { readonly identity: string; readonly key: Uint8Array } | undefined;
  /** `--cert`/`--key` files (read by run). */
  readonly certificate: CertKeyFiles | undefined;
  readonly caFile: string | undefined;
  readonly stateFile: string | undefined;
  readonly json: boolean;
  readonly count: number | undefined;
  readonly timeoutSeconds: number | undefined;
  /** `--probe-idle`: the SDK's liveness.idleMs in seconds (undefined: the SDK's default) */
  readonly probeIdleSeconds: number | undefined;
  readonly transport: TransportName;
}

/** Parses `listen` arguments (pure). Error messages never repeat the key. */
export function parseListenArgs(argv: readonly string[]): ListenConfig {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, COMMAND);
  expectPositionals(positionals, [], COMMAND);
  const servers = stringListOption(values, "server").map((t) => parseHostPort(t, "--server"));
  const server = servers[0];
  if (server === undefined) throw new UsageError(`missing --server HOST:PORT (see '${COMMAND} --help')`);
  const deviceText = stringOption(values, "device");
  if (deviceText === undefined) throw new UsageError(`missing --device ID (see '${COMMAND} --help')`);
  const device = parseDeviceId(deviceText);

  const keyHex = stringOption(values, "psk");
  const pskIdentity = stringOption(values, "psk-identity");
  const [certificate] = parseCertKeyPairs(stringListOption(values, "cert"), stringListOption(values, "key"));
  if (stringListOption(values, "cert").length > 1) throw new UsageError("--cert: give it once (a device has one certificate)");
  const caFile = stringOption(values, "ca");
  if (keyHex === undefined && certificate === undefined) {
    throw new UsageError(`missing --psk HEX or --cert FILE --key FILE (see '${COMMAND} --help')`);
  }
  if (keyHex !== undefined && certificate !== undefined) throw new UsageError("--psk and --cert: give one");
  if (pskIdentity !== undefined && keyHex === undefined) throw new UsageError("--psk-identity: only with --psk");
  if (caFile !== undefined && certificate === undefined) throw new UsageError("--ca: only with --cert/--key");
  if (caFile === "") throw new UsageError("--ca: the file name is empty");
  let psk: ListenConfig["psk"];
  if (keyHex !== undefined) {
    if (keyHex === "" || !HEX.test(keyHex)) throw new UsageError("--psk: the key must be hexadecimal digits (0-9, a-f)");
    if (keyHex.length % 2 !== 0) throw new UsageError(`--psk: the key must have an even number of hex digits (got ${keyHex.length})`);
    if (keyHex.length / 2 > MAX_PSK_KEY_BYTES) throw new UsageError(`--psk: the key is longer than ${MAX_PSK_KEY_BYTES} bytes`);
    const identity = pskIdentity ?? device;
    const bytes = Buffer.byteLength(identity, "utf8");
    if (bytes < 1 || bytes > MAX_PSK_IDENTITY_BYTES) throw new UsageError(`--psk-identity: give 1 to ${MAX_PSK_IDENTITY_BYTES} bytes of UTF-8`);
    psk = { identity, key: Uint8Array.from(Buffer.from(keyHex, "hex")) };
  }

  const stateFile = stringOption(values, "state");
  if (stateFile === "") throw new UsageError("--state: the file name is empty");
  const countText = stringOption(values, "count");
  const timeoutText = stringOption(values, "timeout");
  const probeIdleText = stringOption(values, "probe-idle");
  const transportText = stringOption(values, "transport") ?? "dtlspush";
  const transport = TRANSPORT_NAMES.find((t) => t === transportText.toLowerCase());
  if (transport === undefined) throw new UsageError(`--transport: '${transportText}' is not one of ${TRANSPORT_NAMES.join(", ")}`);
  if (transport === "node-dtls-client" && certificate !== undefined) {
    throw new UsageError("--transport node-dtls-client: supports pre-shared keys only (use --psk, or another transport)");
  }
  return {
    server,
    servers,
    device,
    psk,
    certificate,
    caFile,
    stateFile,
    json: booleanOption(values, "json"),
    count: countText === undefined ? undefined : parseInteger(countText, "--count", COUNT_RANGE),
    timeoutSeconds: timeoutText === undefined ? undefined : parseInteger(timeoutText, "--timeout", TIMEOUT_RANGE),
    probeIdleSeconds: probeIdleText === undefined ? undefined : parseInteger(probeIdleText, "--probe-idle", PROBE_IDLE_RANGE),
    transport,
  };
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The last certificate of a PEM chain of two or more (the issuing CA, as `certs device` writes it); else undefined. */
export function caFromChain(chainPem: string): string | undefined {
  const blocks = chainPem.match(PEM_CERTIFICATE) ?? [];
  return blocks.length >= 2 ? `${blocks[blocks.length - 1]}\n` : undefined;
}

interface Credentials {
  readonly psk?: { identity: string; key: Uint8Array };
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly ca?: string | Buffer;
}

async function readCredentials(config: ListenConfig): Promise<Credentials> {
  if (config.psk !== undefined) return { psk: { identity: config.psk.identity, key: config.psk.key } };
  const pair = config.certificate;
  if (pair === undefined) return {};
  const { cert, key } = await readCertKeyFiles(pair);
  if (config.caFile !== undefined) return { cert, key, ca: await readOptionFile("--ca", config.caFile) };
  const ca = caFromChain(cert.toString("utf8"));
  if (ca === undefined) {
    throw new CliError(`--cert ${pair.cert}: holds no CA certificate after the device certificate; give --ca FILE to verify the server`);
  }
  return { cert, key, ca };
}

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const config = parseListenArgs(argv);
  const credentials = await readCredentials(config);
  const sdk = await import("../client/index.ts");
  const where = config.servers.map((s) => formatHostPort(s.host, s.port)).join(", ");
  const current = (c: DtlspushClient): string => formatHostPort(c.server.host, c.server.port);
  const stateStore = config.stateFile === undefined ? sdk.memoryStateStore() : sdk.fileStateStore(config.stateFile);
  const timeoutMs = config.timeoutSeconds === undefined ? undefined : config.timeoutSeconds * 1000;

  return await new Promise<number>((resolve) => {
    let client: DtlspushClient | undefined;
    let finished = false;
    /** Set once the last wanted message is printed: later ones are left for the next run. */
    let enough = false;
    let received = 0;

    const finish = (code: number, message?: string): void => {
      if (finished) return;
      finished = true;
      enough = true;
      if (timer !== undefined) clearTimeout(timer);
      removeSignalHandler();
      if (message !== undefined) io.stderr.write(`${PROGRAM}: error: ${message}\n`);
      const c = client;
      // close() sends the last ack before its Bye
      const closing = c === undefined ? Promise.resolve() : c.close();
      closing.then(
        () => resolve(code),
        () => resolve(code),
      );
    };

    const removeSignalHandler = io.onShutdownSignal(() => finish(0));
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            const progress = config.count === undefined ? `${received} received` : `${received} of ${config.count} received`;
            finish(EXIT_TIMEOUT, `timed out after ${config.timeoutSeconds} s (${progress})`);
          }, timeoutMs);

    const onMessage = (m: ReceivedMessage): void => {
      if (enough) return; // not acked: the server keeps it for the next run
      const line = config.json ? formatMessageJson(m) : formatMessageLine(m);
      io.stdout.write(`${line}\n`, (err) => {
        if (err !== null && err !== undefined) {
          finish(1, `cannot write to standard output: ${err.message}`);
          return;
        }
        if (enough) return;
        received += 1;
        const done = config.count !== undefined && received >= config.count;
        if (done) enough = true;
        m.ack();
        if (done) finish(0);
      });
    };

    sdk
      .connect({
        ...(config.servers.length === 1 ? { host: config.server.host, port: config.server.port } : { servers: config.servers }),
        ...credentials,
        transport: config.transport,
        stateStore,
        ackMode: "manual",
        timeoutMs: Math.min(CONNECT_TIMEOUT_MS, timeoutMs ?? CONNECT_TIMEOUT_MS),
        ...(config.probeIdleSeconds !== undefined ? { liveness: { idleMs: config.probeIdleSeconds * 1000 } } : {}),
      })
      .then(
        (c) => {
          if (finished) {
            void c.close().catch(() => undefined);
            return;
          }
          client = c;
          if (c.deviceId !== config.device) {
            finish(1, `the server at ${current(c)} knows this device as ${JSON.stringify(c.deviceId)}, not ${JSON.stringify(config.device)}`);
            return;
          }
          io.stderr.write(`${formatConnectedLine(c, current(c), config.transport)}\n`);
          c.on("message", onMessage);
          c.on("connected", () => {
            if (!finished) io.stderr.write(`${formatConnectedLine(c, current(c), config.transport)}\n`);
          });
          c.on("disconnected", (e) => {
            // a terminal refusal follows as "error" in the same turn; only a session that will come back is reported here
            setImmediate(() => {
              if (!finished) io.stderr.write(`${COMMAND}: disconnected${e !== undefined ? `: ${describeDtlsError(e)}` : ""}; reconnecting\n`);
            });
          });
          c.on("rejected", (r) => {
            io.stderr.write(`${COMMAND}: rejected message ${r.messageId} seq=${r.seq}: ${r.reason}\n`);
          });
          c.on("error", (e) => {
            if (finished) return;
            const code = errorCode(e);
            if (code !== undefined && TERMINAL_CODES.has(code)) finish(1, `${current(c)} ended the session: ${describeDtlsError(e)}`);
            else io.stderr.write(`${COMMAND}: ${describeDtlsError(e)}\n`);
          });
        },
        (e: unknown) => finish(1, `cannot connect to ${where} as ${config.device}: ${describeDtlsError(e)}${connectHint(e, config)}`),
      );
  });
}

/** What a handshake refusal usually means, for the PSK suites. */
export function connectHint(e: unknown, config: Pick<ListenConfig, "psk">): string {
  if (config.psk === undefined) return "";
  const text = `${e instanceof Error ? e.message : String(e)} ${e instanceof Error && e.cause instanceof Error ? e.cause.message : ""}`;
  if (text.includes("unknown_psk_identity")) {
    return ` (no enabled device has PSK identity ${JSON.stringify(config.psk.identity)}: is it registered, and not revoked?)`;
  }
  if (/bad_record_mac|decrypt_error/.test(text)) return " (is the pre-shared key right?)";
  return "";
}

function formatConnectedLine(c: DtlspushClient, where: string, transport: TransportName): string {
  const topics = c.topics.length === 0 ? "" : ` topics=${c.topics.join(",")}`;
  return `connected device=${c.deviceId} server=${where} transport=${transport}${c.resumed ? " resumed" : ""}${topics}`;
}

export const listenCommand: LeafCommand = {
  kind: "command",
  name: "listen",
  summary: "Connect as a device and print the messages it receives",
  help: () =>
    formatHelp({
      usage: [
        `${COMMAND} --server HOST:PORT --device ID --psk HEX [--psk-identity NAME] [options]`,
        `${COMMAND} --server HOST:PORT --device ID --cert FILE --key FILE [--ca FILE] [options]`,
      ],
      description:
        "Connects to the daemon as device ID (DTLS with a pre-shared key or a device\n" +
        "certificate), prints 'connected device=ID server=…' on standard error, then\n" +
        "prints each verified message on standard output, in order and once, and\n" +
        "acknowledges it after printing. A payload is printed as text when it is valid\n" +
        "UTF-8 without line breaks or other control characters, else as 'base64:'\n" +
        "followed by its base64; with --json as one object a line. Lost sessions are\n" +
        "resumed by themselves. With several --server, each is tried in order at the\n" +
        "start, and a lost session moves to the next one (wrapping around) after the\n" +
        "reconnect backoff; the connected line names the server in use.\n" +
        `Exits 0 after --count messages or on SIGINT/SIGTERM (closing the session), ${EXIT_TIMEOUT}\n` +
        "when --timeout expires first, and 1 when the server refuses the device\n" +
        "(unknown, revoked, wrong key: the handshake fails) or cannot be reached.",
      options: OPTIONS,
      examples: [
        `${COMMAND} --server 127.0.0.1:5684 --device sensor-1 --psk 00112233445566778899aabbccddeeff`,
        `${COMMAND} --server 127.0.0.1:5684 --device sensor-1 --psk 0011… --count 1 --timeout 30 --json`,
        `${COMMAND} --server 10.0.0.1:5684 --server 10.0.0.2:5684 --device sensor-1 --psk 0011…`,
        `${COMMAND} --server localhost:5684 --device sensor-2 --cert certs/device-sensor-2.pem --key certs/device-sensor-2.key`,
      ],
    }),
  run,
};
