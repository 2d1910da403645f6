/** `dtlspush certs init`: a development CA and server certificates for localhost. */
import { resolve } from "node:path";
import { ensureDevCertificates, type DevCertAction, type DevCertEntry } from "../daemon/dev-certs.ts";
import { booleanOption, expectPositionals, parseCommandLine, parseInteger, quote, stringOption } from "./args.ts";
import type { OptionSpecs } from "./args.ts";
import { DEFAULT_CERTS_DIR, asCliError, formatDate, loadPki } from "./certs-files.ts";
import { PROGRAM, formatHelp } from "./command.ts";
import type { CliIo, LeafCommand } from "./command.ts";
import { UsageError } from "./errors.ts";

const COMMAND = `${PROGRAM} certs init`;

/** Bounds of `--days` (same as the generator's). */
export const DAYS_RANGE = { min: 1, max: 36_500 } as const;
export const DEFAULT_DAYS = 365;

const OPTIONS: OptionSpecs = {
  dir: { type: "string", value: "DIR", description: `Certificate directory (default: ${DEFAULT_CERTS_DIR})` },
  days: {
    type: "string",
    value: "N",
    description: `Validity of new server certificates in days\n(${DAYS_RANGE.min}-${DAYS_RANGE.max}; default ${DEFAULT_DAYS})`,
  },
  force: { type: "boolean", description: "Regenerate everything, even files that are still valid" },
  json: { type: "boolean", description: "Print the files and fingerprints as JSON" },
  help: { type: "boolean", short: "h", description: "Show this help" },
};

export interface InitConfig {
  readonly dir: string;
  readonly days: number;
  readonly force: boolean;
  readonly json: boolean;
}

/** Parses `certs init` arguments (pure). */
export function parseInitArgs(argv: readonly string[]): InitConfig {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, COMMAND);
  expectPositionals(positionals, [], COMMAND);
  const dir = stringOption(values, "dir") ?? DEFAULT_CERTS_DIR;
  if (dir === "") throw new UsageError("--dir: the directory is empty");
  const daysText = stringOption(values, "days");
  return {
    dir,
    days: daysText === undefined ? DEFAULT_DAYS : parseInteger(daysText, "--days", DAYS_RANGE),
    force: booleanOption(values, "force"),
    json: booleanOption(values, "json"),
  };
}

export type Action = DevCertAction;

export interface InitEntry {
  readonly name: string;
  readonly kind: string;
  readonly action: Action;
  /** Why an existing file was replaced. */
  readonly reason?: string;
  readonly cert: string;
  readonly key: string;
  readonly sha256: string;
  readonly sha256Colon: string;
  readonly notAfter: string;
}

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const config = parseInitArgs(argv);
  const pki = await loadPki();
  const { entries: made, notes } = await asCliError(() => ensureDevCertificates(config.dir, { days: config.days, force: config.force, pki }));
  const entries = made.map(toInitEntry);
  for (const note of notes) io.stderr.write(`note: ${note}\n`);
  if (config.json) {
    const certificates: Record<string, unknown> = {};
    for (const { name, ...rest } of entries) certificates[name] = { ...rest, cert: resolve(rest.cert), key: resolve(rest.key) };
    io.stdout.write(`${JSON.stringify({ dir: resolve(config.dir), certificates }, null, 2)}\n`);
  } else {
    for (const e of entries) io.stdout.write(`${formatEntry(e)}\n`);
  }
  return 0;
}

function toInitEntry(e: DevCertEntry): InitEntry {
  return {
    name: e.name,
    kind: e.kind,
    action: e.action,
    ...(e.reason !== undefined ? { reason: e.reason } : {}),
    cert: e.cert,
    key: e.key,
    sha256: e.fingerprint.hex,
    sha256Colon: e.fingerprint.colon,
    notAfter: formatDate(e.notAfter),
  };
}

/** `created server-p256 cert=certs/server-p256.pem key=certs/server-p256.key expires=… sha256=…` */
export function formatEntry(e: InitEntry): string {
  const reason = e.reason !== undefined ? ` reason=${JSON.stringify(e.reason)}` : "";
  return `${e.action} ${e.name} cert=${quote(e.cert)} key=${quote(e.key)} expires=${e.notAfter} sha256=${e.sha256}${reason}`;
}

export const certsInitCommand: LeafCommand = {
  kind: "command",
  name: "init",
  summary: "Create a development CA and localhost server certificates (kept if valid)",
  help: () =>
    formatHelp({
      usage: [`${COMMAND} [--dir DIR] [--days N] [--force] [--json]`],
      description:
        "Creates a development CA (ECDSA P-256, 10 years) and server certificates\n" +
        "signed by it for localhost, 127.0.0.1 and ::1 in three kinds: ECDSA P-256,\n" +
        "ECDSA P-384 and RSA-2048. Files that exist and are still valid (and, for\n" +
        "server certificates, signed by the current CA) are kept; missing or invalid\n" +
        "ones are created. Prints one line per certificate: created, kept or replaced.",
      options: OPTIONS,
      notes:
        "Files (in DIR):\n" +
        "  ca.pem, ca.key                   the CA certificate and its private key\n" +
        "  server-p256.pem, server-p256.key ECDSA P-256 server certificate (+ CA) and key\n" +
        "  server-p384.pem, server-p384.key ECDSA P-384 (needed by @nodertc/dtls clients)\n" +
        "  server-rsa.pem, server-rsa.key   RSA-2048\n" +
        "Certificate files hold the certificate followed by the CA certificate.\n" +
        "Keys are PKCS#8 PEM with mode 0600. Never commit them.",
      examples: [`${COMMAND}`, `${COMMAND} --dir /etc/dtlspush/dev-certs --days 30 --json`, `${COMMAND} --force`],
    }),
  run,
};
