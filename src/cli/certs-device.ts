/** `dtlspush certs device ID`: a device (client) certificate signed by the development CA. */
import { join, resolve } from "node:path";
import { booleanOption, expectPositionals, parseCommandLine, parseInteger, quote, stringOption } from "./args.ts";
import type { OptionSpecs } from "./args.ts";
import { DAYS_RANGE, DEFAULT_DAYS } from "./certs-init.ts";
import { DEFAULT_CERTS_DIR, caPaths, deviceFileBase, ensureDir, formatDate, loadPki, readOptional, writePair } from "./certs-files.ts";
import { PROGRAM, formatHelp } from "./command.ts";
import type { CliIo, LeafCommand } from "./command.ts";
import { CliError, UsageError, errorCode } from "./errors.ts";

const COMMAND = `${PROGRAM} certs device`;

/** Same rule as the generator's DEVICE_ID_PATTERN (kept here so parsing needs no crypto). */
export const DEVICE_ID_SYNTAX = /^[A-Za-z0-9._-]{1,64}$/;
const CURVES = ["p256", "p384"] as const;
export type DeviceCurve = (typeof CURVES)[number];

const OPTIONS: OptionSpecs = {
  dir: { type: "string", value: "DIR", description: `Directory holding ca.pem and ca.key (default: ${DEFAULT_CERTS_DIR})` },
  curve: { type: "string", value: "CURVE", description: "Key type: p256 (default) or p384" },
  days: { type: "string", value: "N", description: `Validity in days (${DAYS_RANGE.min}-${DAYS_RANGE.max}; default ${DEFAULT_DAYS})` },
  out: { type: "string", value: "DIR", description: "Where to write device-ID.pem and device-ID.key\n(default: the --dir directory)" },
  force: { type: "boolean", description: "Replace an existing certificate for this device" },
  json: { type: "boolean", description: "Print the files and fingerprint as JSON" },
  help: { type: "boolean", short: "h", description: "Show this help" },
};

export interface DeviceConfig {
  readonly id: string;
  readonly dir: string;
  readonly out: string;
  readonly curve: DeviceCurve;
  readonly days: number;
  readonly force: boolean;
  readonly json: boolean;
}

/** Parses `certs device` arguments (pure). */
export function parseDeviceArgs(argv: readonly string[]): DeviceConfig {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, COMMAND);
  const [id = ""] = expectPositionals(positionals, ["ID"], COMMAND);
  if (!DEVICE_ID_SYNTAX.test(id)) {
    throw new UsageError(`invalid device id ${JSON.stringify(id)}: use 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'`);
  }
  const dir = stringOption(values, "dir") ?? DEFAULT_CERTS_DIR;
  if (dir === "") throw new UsageError("--dir: the directory is empty");
  const out = stringOption(values, "out") ?? dir;
  if (out === "") throw new UsageError("--out: the directory is empty");
  const curveText = stringOption(values, "curve") ?? "p256";
  const curve = CURVES.find((c) => c === curveText.toLowerCase());
  if (curve === undefined) throw new UsageError(`--curve: '${curveText}' is not one of ${CURVES.join(", ")}`);
  const daysText = stringOption(values, "days");
  return {
    id,
    dir,
    out,
    curve,
    days: daysText === undefined ? DEFAULT_DAYS : parseInteger(daysText, "--days", DAYS_RANGE),
    force: booleanOption(values, "force"),
    json: booleanOption(values, "json"),
  };
}

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const config = parseDeviceArgs(argv);
  const ca = caPaths(config.dir);
  const caCert = await readOptional(ca.cert);
  const caKey = await readOptional(ca.key);
  if (caCert === undefined || caKey === undefined) {
    throw new CliError(`no CA in ${config.dir} (${caCert === undefined ? ca.cert : ca.key} is missing); run '${PROGRAM} certs init' first`);
  }
  const pki = await loadPki();
  let authority: Awaited<ReturnType<typeof pki.loadCertificateAuthority>>;
  try {
    authority = await pki.loadCertificateAuthority(caCert, caKey);
  } catch (e) {
    if (errorCode(e) === undefined) throw e;
    const message = e instanceof Error ? e.message : String(e);
    throw new CliError(`cannot use the CA in ${config.dir}: ${message}; run '${PROGRAM} certs init' to replace it`);
  }

  const base = deviceFileBase(config.id);
  const certPath = join(config.out, `${base}.pem`);
  const keyPath = join(config.out, `${base}.key`);
  if (!config.force) {
    const existing = (await readOptional(certPath)) !== undefined ? certPath : (await readOptional(keyPath)) !== undefined ? keyPath : undefined;
    if (existing !== undefined) throw new CliError(`${existing} already exists; use --force to issue a new certificate for ${quote(config.id)}`);
  }
  const issued = await pki.issueDeviceCertificate(authority, { id: config.id, curve: config.curve, days: config.days });
  await ensureDir(config.out);
  await writePair(certPath, issued.chainPem, keyPath, issued.keyPem);

  if (config.json) {
    const out = {
      id: config.id,
      uri: pki.deviceUri(config.id),
      kind: issued.kind,
      cert: resolve(certPath),
      key: resolve(keyPath),
      ca: resolve(ca.cert),
      serialNumber: issued.serialNumber,
      notAfter: formatDate(issued.notAfter),
      sha256: issued.fingerprint.hex,
      sha256Colon: issued.fingerprint.colon,
    };
    io.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } else {
    io.stdout.write(
      `created device ${quote(config.id)} cert=${quote(certPath)} key=${quote(keyPath)} kind=${issued.kind} expires=${formatDate(issued.notAfter)}\n` +
        `uri=${pki.deviceUri(config.id)}\n` +
        `sha256=${issued.fingerprint.hex}\n` +
        `sha256-colon=${issued.fingerprint.colon}\n`,
    );
  }
  return 0;
}

export const certsDeviceCommand: LeafCommand = {
  kind: "command",
  name: "device",
  summary: "Issue a device (client) certificate signed by the development CA",
  help: () =>
    formatHelp({
      usage: [`${COMMAND} ID [--dir DIR] [--curve p256|p384] [--days N] [--out DIR] [--force] [--json]`],
      description:
        "Issues a client certificate for device ID, signed by the CA in DIR (made by\n" +
        `'${PROGRAM} certs init'): subject CN=ID, SAN URI urn:dtlspush:device:ID,\n` +
        "extended key usage clientAuth. Writes device-ID.pem (the certificate, then the\n" +
        "CA certificate) and device-ID.key (PKCS#8, mode 0600), and prints the SHA-256\n" +
        "fingerprint of the certificate, lower-case hex and in colon form.",
      positionals: [{ name: "ID", description: "Device id: 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'" }],
      options: OPTIONS,
      examples: [`${COMMAND} sensor-17`, `${COMMAND} gw.02 --curve p384 --days 30 --out /tmp/devices --json`],
    }),
  run,
};
