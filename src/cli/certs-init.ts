/** `dtlspush certs init`: a development CA and server certificates for localhost. */
import { join, resolve } from "node:path";
import { booleanOption, expectPositionals, parseCommandLine, parseInteger, quote, stringOption } from "./args.ts";
import type { OptionSpecs } from "./args.ts";
import {
  DEFAULT_CERTS_DIR,
  SERVER_FILES,
  caPaths,
  ensureDir,
  formatDate,
  loadPki,
  readOptional,
  tightenKeyMode,
  writePair,
} from "./certs-files.ts";
import { PROGRAM, formatHelp } from "./command.ts";
import type { CliIo, LeafCommand } from "./command.ts";
import { UsageError, errorCode } from "./errors.ts";

const COMMAND = `${PROGRAM} certs init`;

/** Bounds of `--days` (same as the generator's). */
export const DAYS_RANGE = { min: 1, max: 36_500 } as const;
export const DEFAULT_DAYS = 365;

const OPTIONS: OptionSpecs = {
  dir: { type: "string", value: "DIR", description: `Certificate directory (default: ${DEFAULT_CERTS_DIR})` },
  days: { type: "string", value: "N", description: `Validity of new server certificates in days\n(${DAYS_RANGE.min}-${DAYS_RANGE.max}; default ${DEFAULT_DAYS})` },
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

export type Action = "created" | "kept" | "replaced";

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

/** Both files absent: "created"; otherwise "replaced" (with the reason). */
function actionFor(existed: boolean): Action {
  return existed ? "replaced" : "created";
}

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const config = parseInitArgs(argv);
  const pki = await loadPki();
  await ensureDir(config.dir);
  const entries: InitEntry[] = [];
  const notes: string[] = [];

  // The CA: keep a valid one unless --force.
  const ca = caPaths(config.dir);
  const caCertText = await readOptional(ca.cert);
  const caKeyText = await readOptional(ca.key);
  const caExisted = caCertText !== undefined || caKeyText !== undefined;
  let authority: Awaited<ReturnType<typeof pki.loadCertificateAuthority>> | undefined;
  let caReason: string | undefined;
  if (config.force) {
    caReason = caExisted ? "--force" : undefined;
  } else if (caCertText === undefined || caKeyText === undefined) {
    caReason = caExisted ? `${caCertText === undefined ? ca.cert : ca.key} is missing` : undefined;
  } else {
    try {
      authority = await pki.loadCertificateAuthority(caCertText, caKeyText);
    } catch (e) {
      if (errorCode(e) === undefined) throw e;
      caReason = e instanceof Error ? e.message : String(e);
    }
  }
  if (authority !== undefined) {
    if (await tightenKeyMode(ca.key)) notes.push(`note: restricted ${ca.key} to mode 0600`);
    entries.push(entry("ca", authority.kind, "kept", undefined, ca.cert, ca.key, authority.fingerprint, authority.notAfter));
  } else {
    const made = await pki.createCertificateAuthority();
    await writePair(ca.cert, made.issued.certPem, ca.key, made.issued.keyPem);
    authority = made.ca;
    entries.push(entry("ca", made.issued.kind, actionFor(caExisted), caReason, ca.cert, ca.key, made.issued.fingerprint, made.issued.notAfter));
  }

  // Server certificates: keep each one that is valid and signed by this CA.
  for (const { name, kind } of SERVER_FILES) {
    const certPath = join(config.dir, `${name}.pem`);
    const keyPath = join(config.dir, `${name}.key`);
    const certText = await readOptional(certPath);
    const keyText = await readOptional(keyPath);
    const existed = certText !== undefined || keyText !== undefined;
    let reason: string | undefined;
    if (config.force) {
      reason = existed ? "--force" : undefined;
    } else if (certText === undefined || keyText === undefined) {
      reason = existed ? `${certText === undefined ? certPath : keyPath} is missing` : undefined;
    } else {
      const check = await pki.checkIssuedCertificate(authority, certText, keyText, { kind, usage: "server" });
      if (check.ok) {
        if (await tightenKeyMode(keyPath)) notes.push(`note: restricted ${keyPath} to mode 0600`);
        entries.push(entry(name, kind, "kept", undefined, certPath, keyPath, check.fingerprint, check.notAfter));
        continue;
      }
      reason = check.reason;
    }
    const issued = await pki.issueServerCertificate(authority, { kind, days: config.days });
    await writePair(certPath, issued.chainPem, keyPath, issued.keyPem);
    entries.push(entry(name, kind, actionFor(existed), reason, certPath, keyPath, issued.fingerprint, issued.notAfter));
  }

  for (const note of notes) io.stderr.write(`${note}\n`);
  if (config.json) {
    const certificates: Record<string, unknown> = {};
    for (const { name, ...rest } of entries) certificates[name] = { ...rest, cert: resolve(rest.cert), key: resolve(rest.key) };
    io.stdout.write(`${JSON.stringify({ dir: resolve(config.dir), certificates }, null, 2)}\n`);
  } else {
    for (const e of entries) io.stdout.write(`${formatEntry(e)}\n`);
  }
  return 0;
}

function entry(
  name: string,
  kind: string,
  action: Action,
  reason: string | undefined,
  cert: string,
  key: string,
  fingerprint: { hex: string; colon: string },
  notAfter: Date,
): InitEntry {
  return {
    name,
    kind,
    action,
    ...(reason !== undefined ? { reason } : {}),
    cert,
    key,
    sha256: fingerprint.hex,
    sha256Colon: fingerprint.colon,
    notAfter: formatDate(notAfter),
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
