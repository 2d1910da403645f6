/** `dtlspush bench` command line: options, defaults and checks (pure). */
import {
  booleanOption,
  expectPositionals,
  parseCommandLine,
  parseHostPort,
  parseInteger,
  stringOption,
  type HostPort,
  type IntegerRange,
  type OptionSpecs,
  type ParsedCommandLine,
} from "../args.ts";
import { PROGRAM } from "../command.ts";
import {
  API_OPTIONS,
  DATA_DIR_OPTIONS,
  parseApiOptions,
  parseDataDirOptions,
  type ApiOptions,
  type DataDirOptions,
  type Env,
} from "../daemon-access.ts";
import { UsageError } from "../errors.ts";
import { MAX_DEVICES_PER_WORKER, MAX_WORKERS } from "./fleet.ts";
import { MAX_SOURCE_ADDRESSES } from "./source-addresses.ts";
import { MIN_STAMPED_PAYLOAD } from "./stamp.ts";

export const COMMAND = `${PROGRAM} bench`;
/** The key curves of device certificates (`--curve`). */
export const CERT_CURVES = ["p256", "p384"] as const;
export type CertCurve = (typeof CERT_CURVES)[number];
export const DEFAULT_CERT_CURVE: CertCurve = "p256";
export const BENCH_MODES = ["handshake", "push", "sessions", "fanout"] as const;
export type BenchMode = (typeof BENCH_MODES)[number];

export const DEFAULT_DEVICES: Readonly<Record<BenchMode, number>> = { handshake: 100, push: 100, sessions: 1000, fanout: 1000 };
export const DEFAULT_DURATION_SECONDS = 10;
/** sessions: how long the idle sessions are held before memory is read */
export const DEFAULT_SETTLE_SECONDS = 3;
export const DEFAULT_PAYLOAD_BYTES = 100;
export const DEFAULT_CONCURRENCY = { api: 64, inProcess: 64, handshakes: 64 } as const;
/** push: publishes not yet received, at most: one delivery window (32) per device, and no more than this */
export const DEFAULT_WINDOW = 10_000;
export const DEFAULT_WINDOW_PER_DEVICE = 32;

export const DEVICES_RANGE: IntegerRange = { min: 1, max: 1_000_000 };
export const PAYLOAD_RANGE: IntegerRange = { min: MIN_STAMPED_PAYLOAD, max: 65_536 };
export const WORKERS_RANGE: IntegerRange = { min: 1, max: MAX_WORKERS };
export const CONCURRENCY_RANGE: IntegerRange = { min: 1, max: 100_000 };
export const COUNT_RANGE: IntegerRange = { min: 1, max: 1_000_000_000 };
export const WINDOW_RANGE: IntegerRange = { min: 1, max: 10_000_000 };
export const SOURCE_ADDRESSES_RANGE: IntegerRange = { min: 1, max: MAX_SOURCE_ADDRESSES };
/** push --batch: entries per request (the API takes at most 1000) */
export const BATCH_RANGE: IntegerRange = { min: 1, max: 1000 };
const MAX_DURATION_SECONDS = 3600;
const MAX_RATE = 10_000_000;

export const OPTIONS: OptionSpecs = {
  ...API_OPTIONS,
  token: {
    type: "string",
    value: "JWT",
    description: "Admin token (env DTLSPUSH_TOKEN). Without one, an admin token is\nminted from the local data directory (on the daemon's machine)",
  },
  ...DATA_DIR_OPTIONS,
  server: {
    type: "string",
    value: "HOST:PORT",
    description: "The daemon's DTLS address (default: dtls.listen of the\nconfiguration, else 127.0.0.1:5684)",
  },
  devices: { type: "string", value: "N", description: "Simulated devices (default: handshake/push 100, sessions/fanout 1000)" },
  duration: {
    type: "string",
    value: "S",
    description: `Seconds of load: handshake and push (default ${DEFAULT_DURATION_SECONDS}); sessions:\nhow long the idle sessions are held (default ${DEFAULT_SETTLE_SECONDS})`,
  },
  count: {
    type: "string",
    value: "N",
    description: "push: stop after N publishes; handshake: after N handshakes;\nfanout: topic publishes, one after the other (default 1)",
  },
  rate: { type: "string", value: "N", description: "push: publishes per second (default: as fast as the daemon\nacknowledges, within --window)" },
  payload: {
    type: "string",
    value: "BYTES",
    description: `Payload size (default ${DEFAULT_PAYLOAD_BYTES}; at least ${MIN_STAMPED_PAYLOAD}: it carries the send time)`,
  },
  workers: { type: "string", value: "N", description: `Device worker processes (default: one per ${MAX_DEVICES_PER_WORKER} devices)` },
  "source-addresses": {
    type: "string",
    value: "N",
    description: `Devices send from 127.0.0.1 .. 127.0.0.N (server on 127.0.0.0/8 only;
default: enough for the devices, one per ephemeral port range's worth)`,
  },
  concurrency: {
    type: "string",
    value: "N",
    description: `Requests in flight: publishes (default ${DEFAULT_CONCURRENCY.api}) and handshakes
(default ${DEFAULT_CONCURRENCY.handshakes}, all workers together)`,
  },
  window: {
    type: "string",
    value: "N",
    description: `push: most publishes not yet received by their device (default:
${DEFAULT_WINDOW_PER_DEVICE} per device, at most ${DEFAULT_WINDOW})`,
  },
  batch: {
    type: "string",
    value: "N",
    description: `push: publish through the batch API (POST /v1/messages), N messages
a request (${BATCH_RANGE.min}-${BATCH_RANGE.max}; --concurrency then counts requests)`,
  },
  verify: { type: "boolean", description: "Devices verify push signatures (default off: the device's cost)" },
  resume: {
    type: "boolean",
    description: `handshake: after the --duration of full handshakes, as long again of
resumed ones (each device offers the session of its last handshake);
prints the daemon's CPU per handshake of both`,
  },
  cert: {
    type: "boolean",
    description: `Devices authenticate with X.509 certificates instead of PSKs: each
gets a key and a certificate from the daemon's device CA, issued
in the workers at start (see --ca-dir)`,
  },
  curve: {
    type: "string",
    value: "CURVE",
    description: `--cert: the devices' key curve, ${CERT_CURVES.join(" or ")} (default ${DEFAULT_CERT_CURVE})`,
  },
  "ca-dir": {
    type: "string",
    value: "DIR",
    description: `--cert: directory with the CA's ca.pem and ca.key (default: the
daemon's development CA, dtls.certs_dir of the configuration)`,
  },
  "in-process": {
    type: "boolean",
    description: "Start the daemon inside the bench process (temporary data\ndirectory) and publish by calling it directly",
  },
  store: { type: "string", value: "KIND", description: "--in-process: sqlite (default) or memory" },
  keep: { type: "boolean", description: "Keep the bench-<i> devices registered afterwards" },
  timeout: { type: "string", value: "S", description: "Stop everything after this many seconds (default: from the\ndevices and the duration)" },
  json: { type: "boolean", description: "Print the results as JSON" },
  help: { type: "boolean", short: "h", description: "Show this help" },
};

export interface BenchConfig {
  readonly mode: BenchMode;
  readonly access: DataDirOptions;
  readonly api: ApiOptions;
  readonly server: HostPort | undefined;
  readonly devices: number;
  /** handshake/push: load time; sessions: hold time; fanout: unused */
  readonly durationSeconds: number;
  readonly count: number | undefined;
  readonly rate: number | undefined;
  readonly payloadBytes: number;
  /** undefined: from the device count */
  readonly workers: number | undefined;
  readonly concurrency: number | undefined;
  /** undefined: from the device count and the ephemeral port range */
  readonly sourceAddresses: number | undefined;
  /** undefined: from the device count */
  readonly window: number | undefined;
  /** push: messages per batch request (POST /v1/messages); undefined: one request per message */
  readonly batch: number | undefined;
  readonly verify: boolean;
  /** handshake: a second phase of resumed handshakes */
  readonly resume: boolean;
  /** --cert: devices use certificates (key curve, and --ca-dir if given); undefined: PSKs */
  readonly cert: BenchCertOptions | undefined;
  readonly inProcess: boolean;
  readonly store: "sqlite" | "memory";
  readonly keep: boolean;
  readonly timeoutSeconds: number | undefined;
  readonly json: boolean;
}

export interface BenchCertOptions {
  readonly curve: CertCurve;
  /** --ca-dir as given (relative to the working directory); undefined: the daemon's development CA */
  readonly caDir: string | undefined;
}

function parseCert(values: ParsedCommandLine["values"]): BenchCertOptions | undefined {
  const cert = booleanOption(values, "cert");
  const curveText = stringOption(values, "curve");
  const caDir = stringOption(values, "ca-dir");
  if (!cert) {
    if (curveText !== undefined) throw new UsageError("--curve: only with --cert");
    if (caDir !== undefined) throw new UsageError("--ca-dir: only with --cert");
    return undefined;
  }
  const curve = curveText === undefined ? DEFAULT_CERT_CURVE : CERT_CURVES.find((c) => c === curveText);
  if (curve === undefined) throw new UsageError(`--curve: '${curveText}' is not ${CERT_CURVES.join(" or ")}`);
  if (caDir === "") throw new UsageError("--ca-dir: the directory is empty");
  return { curve, caDir };
}

function parseSeconds(text: string, label: string, max: number): number {
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text)) throw new UsageError(`${label}: '${text}' is not a number of seconds`);
  const v = Number(text);
  if (v <= 0 || v > max) throw new UsageError(`${label}: ${text} is out of range (more than 0, at most ${max})`);
  return v;
}

function parseRate(text: string): number {
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text)) throw new UsageError(`--rate: '${text}' is not a number of publishes per second`);
  const v = Number(text);
  if (v <= 0 || v > MAX_RATE) throw new UsageError(`--rate: ${text} is out of range (more than 0, at most ${MAX_RATE})`);
  return v;
}

/** Workers for `devices` when none are asked for, and the least that can hold them. */
export function minimumWorkers(devices: number): number {
  return Math.max(1, Math.ceil(devices / MAX_DEVICES_PER_WORKER));
}

export function parseBenchArgs(argv: readonly string[], env: Env = {}): BenchConfig {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, COMMAND);
  const [modeText = ""] = expectPositionals(positionals, ["MODE (handshake, push, sessions or fanout)"], COMMAND);
  const mode = BENCH_MODES.find((m) => m === modeText);
  if (mode === undefined) throw new UsageError(`unknown mode '${modeText}': use one of ${BENCH_MODES.join(", ")}`);
  const int = (name: string, range: IntegerRange): number | undefined => {
    const text = stringOption(values, name);
    return text === undefined ? undefined : parseInteger(text, `--${name}`, range);
  };
  const devices = int("devices", DEVICES_RANGE) ?? DEFAULT_DEVICES[mode];
  const durationText = stringOption(values, "duration");
  const durationSeconds =
    durationText !== undefined
      ? parseSeconds(durationText, "--duration", MAX_DURATION_SECONDS)
      : mode === "sessions"
        ? DEFAULT_SETTLE_SECONDS
        : DEFAULT_DURATION_SECONDS;
  const count = int("count", COUNT_RANGE);
  if (count !== undefined && mode === "sessions") throw new UsageError("--count: only for push, handshake and fanout");
  const rateText = stringOption(values, "rate");
  if (rateText !== undefined && mode !== "push") throw new UsageError("--rate: only for push");
  const windowValue = int("window", WINDOW_RANGE);
  if (windowValue !== undefined && mode !== "push") throw new UsageError("--window: only for push");
  const resume = booleanOption(values, "resume");
  if (resume && mode !== "handshake") throw new UsageError("--resume: only for handshake");
  const batch = int("batch", BATCH_RANGE);
  if (batch !== undefined && mode !== "push") throw new UsageError("--batch: only for push");
  const workers = int("workers", WORKERS_RANGE);
  const least = minimumWorkers(devices);
  if (workers !== undefined && workers < least) {
    throw new UsageError(`--workers: ${devices} devices need at least ${least} workers (at most ${MAX_DEVICES_PER_WORKER} devices each)`);
  }
  if (least > MAX_WORKERS)
    throw new UsageError(`--devices: at most ${MAX_WORKERS * MAX_DEVICES_PER_WORKER} devices (${MAX_WORKERS} workers of ${MAX_DEVICES_PER_WORKER})`);
  const inProcess = booleanOption(values, "in-process");
  const api = parseApiOptions(values, env);
  const serverText = stringOption(values, "server");
  if (inProcess) {
    for (const name of ["api", "token", "server"]) {
      if (stringOption(values, name) !== undefined) throw new UsageError(`--${name}: --in-process starts its own daemon, so it does not apply`);
    }
  }
  const storeText = stringOption(values, "store");
  if (storeText !== undefined && !inProcess) throw new UsageError("--store: only with --in-process (the daemon under test has its own store)");
  if (storeText !== undefined && storeText !== "sqlite" && storeText !== "memory")
    throw new UsageError(`--store: '${storeText}' is not sqlite or memory`);
  const timeoutText = stringOption(values, "timeout");
  return {
    mode,
    access: parseDataDirOptions(values, env),
    // DTLSPUSH_API/DTLSPUSH_TOKEN do not apply to a daemon the bench starts itself
    api: inProcess ? { api: undefined, token: undefined } : api,
    server: serverText === undefined || inProcess ? undefined : parseHostPort(serverText, "--server"),
    devices,
    durationSeconds,
    count,
    rate: rateText === undefined ? undefined : parseRate(rateText),
    payloadBytes: int("payload", PAYLOAD_RANGE) ?? DEFAULT_PAYLOAD_BYTES,
    workers,
    concurrency: int("concurrency", CONCURRENCY_RANGE),
    sourceAddresses: int("source-addresses", SOURCE_ADDRESSES_RANGE),
    window: windowValue,
    batch,
    verify: booleanOption(values, "verify"),
    resume,
    cert: parseCert(values),
    inProcess,
    store: storeText === "memory" ? "memory" : "sqlite",
    keep: booleanOption(values, "keep"),
    timeoutSeconds: timeoutText === undefined ? undefined : parseSeconds(timeoutText, "--timeout", 24 * 3600),
    json: booleanOption(values, "json"),
  };
}

/**
 * Time allowed per device, ms, for each of: registering it through the API,
 * connecting it (DTLS handshake + Hello/Welcome), removing it again. 2 ms is
 * 500 a second: a daemon on a 2-core machine does ~1 300 handshakes a second,
 * so 100 000 devices connect in ~80 s of the 200 s allowed.
 */
const MS_PER_DEVICE_STEP = 2;

/**
 * --cert: time allowed per device, ms, to issue its certificate (a worker
 * issues ~150 a second on one core, ~7 ms each) and for the certificate
 * handshake costing more than a PSK one. The bound assumes one core for all
 * workers together.
 */
const CERT_MS_PER_DEVICE = 12;

/** fanout: how long one round may take until every device received it, and again until the daemon counted every ack, ms. */
export function fanoutRoundMs(devices: number): number {
  return 30_000 + devices * 0.2;
}

/** The bound on the whole run: provisioning and connecting every device, the load, and the clean-up. */
export function globalTimeoutSeconds(c: BenchConfig): number {
  if (c.timeoutSeconds !== undefined) return c.timeoutSeconds;
  const perDevice = c.devices * (3 * MS_PER_DEVICE_STEP + (c.cert !== undefined ? CERT_MS_PER_DEVICE : 0));
  const fanout = c.mode === "fanout" ? (c.count ?? 1) * 2 * fanoutRoundMs(c.devices) : 0;
  return Math.ceil(60 + c.durationSeconds * (c.resume ? 4 : 2) + (perDevice + fanout) / 1000);
}
