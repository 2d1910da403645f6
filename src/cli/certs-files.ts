/**
 * File side of `dtlspush certs`: loading the certificate generator on first
 * use, and the file helpers of the certificate directory (src/daemon/dev-certs.ts)
 * with their failures as one-line CLI errors.
 */
import * as files from "../daemon/dev-certs.ts";
import type * as Pki from "../pki/index.ts";
import { CliError, describeError, errorCode } from "./errors.ts";

export type PkiModule = typeof Pki;

/** Loads src/pki (and @peculiar/x509) only when a certs command runs. */
export async function loadPki(): Promise<PkiModule> {
  try {
    return await files.loadPkiModule();
  } catch (e) {
    if (errorCode(e) === "ERR_MODULE_NOT_FOUND") {
      throw new CliError(`the certificate generator is missing: ${describeError(e)}; run 'npm ci' (or 'npm run build')`);
    }
    throw e;
  }
}

export { CA_CERT_FILE, CA_KEY_FILE, CERT_MODE, DEFAULT_CERTS_DIR, KEY_MODE, SERVER_FILES, caPaths, type CaPaths } from "../daemon/dev-certs.ts";

/** Runs a file operation; its DevCertsError becomes a CliError with the same message. */
export async function asCliError<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (e instanceof files.DevCertsError) throw new CliError(e.message);
    throw e;
  }
}

export function deviceFileBase(id: string): string {
  return `device-${id}`;
}

/** Reads a text file; undefined when it does not exist. Other failures are one-line errors. */
export async function readOptional(path: string): Promise<string | undefined> {
  return await asCliError(() => files.readOptional(path));
}

export async function ensureDir(dir: string): Promise<void> {
  await asCliError(() => files.ensureDir(dir));
}

/** Writes `data` to `path` through a temporary file and a rename; `mode` applies to the new file. */
export async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  await asCliError(() => files.writeAtomic(path, data, mode));
}

/** Writes a certificate (chain) file and its key file; the key first, with mode 0600. */
export async function writePair(certPath: string, certPem: string, keyPath: string, keyPem: string): Promise<void> {
  await asCliError(() => files.writePair(certPath, certPem, keyPath, keyPem));
}

/**
 * Makes sure an existing private key file is readable by its owner only.
 * Returns true when it had to tighten the mode.
 */
export async function tightenKeyMode(path: string): Promise<boolean> {
  return await asCliError(() => files.tightenKeyMode(path));
}

/** `2027-11-22T05:22:17Z`: ISO 8601 without milliseconds. */
export function formatDate(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}
