/**
 * Loads the DTLS engine on first use, so help and argument errors work (and
 * stay fast) without it, maps its suite-list errors to usage errors, puts its
 * errors on one line, and reads the files that certificate options name.
 */
import type * as Dtls from "../dtls/index.ts";
import { readFile } from "node:fs/promises";
import type { CertKeyFiles } from "./args.ts";
import { PROGRAM } from "./command.ts";
import { CliError, UsageError, describeError, errorCode } from "./errors.ts";

export type DtlsModule = typeof Dtls;

export async function loadDtls(): Promise<DtlsModule> {
  try {
    return await import("../dtls/index.ts");
  } catch (e) {
    if (errorCode(e) === "ERR_MODULE_NOT_FOUND") {
      throw new CliError("the DTLS engine is missing from this build; run 'npm run build'");
    }
    throw e;
  }
}

/** `--suites NAME,NAME` through the engine's parser; a bad name is a usage error. */
export function resolveSuites(dtls: DtlsModule, csv: string | undefined, label = "--suites"): Dtls.SuiteName[] | undefined {
  if (csv === undefined) return undefined;
  try {
    return dtls.parseSuiteList(csv);
  } catch (e) {
    if (errorCode(e) === "bad_suite") {
      const message = e instanceof Error ? e.message : String(e);
      throw new UsageError(`${label}: ${message}`);
    }
    throw e;
  }
}

/**
 * describeError for the engine's errors, whose messages may span lines (they
 * quote certificate subjects such as "CN=localhost\nO=dtlspush"): the lines
 * are joined with ", " so the whole message stays on one line.
 */
export function describeDtlsError(e: unknown): string {
  const code = errorCode(e);
  if (code === undefined || !(e instanceof Error) || !e.message.includes("\n")) return describeError(e);
  const joined = e.message
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .join(", ");
  return describeError(Object.assign(new Error(joined), { code }));
}

const FILE_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "is a directory",
  ENOTDIR: "a parent is not a directory",
};

/** Reads a file named by an option; failure is one line naming the option and the file (exit 1). */
export async function readOptionFile(flag: string, file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    const code = errorCode(e);
    const why = (code !== undefined ? FILE_ERRORS[code] : undefined) ?? describeError(e);
    throw new CliError(`${flag} ${file}: cannot read the file: ${why}`);
  }
}

/**
 * Reads a `--cert FILE --key FILE` pair (the key first, checked to hold a PEM
 * private key); failure is one line naming the flag and the file (exit 1).
 */
export async function readCertKeyFiles(pair: CertKeyFiles): Promise<{ cert: Buffer; key: Buffer }> {
  const key = await readOptionFile("--key", pair.key);
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key.toString("latin1"))) {
    throw new CliError(`--key ${pair.key}: holds no PEM private key`);
  }
  return { cert: await readOptionFile("--cert", pair.cert), key };
}

/**
 * The engine names certificate pairs by index ("certificates[1]: the private key
 * does not belong to …"); say which --cert/--key files instead.
 */
export function certificateOptionMessage(message: string, files: readonly CertKeyFiles[]): string {
  const m = /^certificates\[(\d+)\](\.cert)?:?\s*/.exec(message);
  const pair = m === null ? undefined : files[Number(m[1])];
  if (m === null || pair === undefined) return message;
  const rest = message.slice(m[0].length);
  return m[2] !== undefined ? `--cert ${pair.cert}: ${rest}` : `--cert ${pair.cert} --key ${pair.key}: ${rest}`;
}

/** The mutual-authentication recipe shown by `dtls serve --help` and `dtls connect --help`. */
export const MUTUAL_AUTH_EXAMPLE =
  "Mutual authentication (the server asks for a device certificate issued by the CA):\n" +
  `  ${PROGRAM} certs init --dir certs\n` +
  `  ${PROGRAM} certs device sensor-1 --dir certs     # writes certs/device-sensor-1.pem and .key\n` +
  `  ${PROGRAM} dtls serve --listen 127.0.0.1:5684 --cert certs/server-p256.pem --key certs/server-p256.key \\\n` +
  "      --ca certs/ca.pem --client-auth require --echo\n" +
  `  echo hello | ${PROGRAM} dtls connect 127.0.0.1:5684 --ca certs/ca.pem \\\n` +
  "      --cert certs/device-sensor-1.pem --key certs/device-sensor-1.key\n" +
  "The server logs 'established … identity=sensor-1 … peer-subject=\"CN=sensor-1\" peer-sha256=…'.";
