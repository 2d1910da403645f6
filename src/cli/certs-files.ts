/**
 * File side of `dtlspush certs`: loading the certificate generator on first
 * use, reading and writing PEM files (keys with mode 0600, written to a
 * temporary name and renamed so a crash never leaves half a file), and the
 * file names of the certificate directory.
 */
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type * as Pki from "../pki/index.ts";
import { CliError, describeError, errorCode } from "./errors.ts";

export type PkiModule = typeof Pki;

/** Loads src/pki (and @peculiar/x509) only when a certs command runs. */
export async function loadPki(): Promise<PkiModule> {
  try {
    return await import("../pki/index.ts");
  } catch (e) {
    if (errorCode(e) === "ERR_MODULE_NOT_FOUND") {
      throw new CliError(`the certificate generator is missing: ${describeError(e)}; run 'npm ci' (or 'npm run build')`);
    }
    throw e;
  }
}

export const DEFAULT_CERTS_DIR = "certs";
export const CA_CERT_FILE = "ca.pem";
export const CA_KEY_FILE = "ca.key";

/** The server certificates `certs init` makes: base file name and key kind. */
export const SERVER_FILES = [
  { name: "server-p256", kind: "p256" },
  { name: "server-p384", kind: "p384" },
  { name: "server-rsa", kind: "rsa2048" },
] as const;

export function deviceFileBase(id: string): string {
  return `device-${id}`;
}

/** Reads a text file; undefined when it does not exist. Other failures are one-line errors. */
export async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    if (errorCode(e) === "ENOENT") return undefined;
    throw new CliError(`cannot read ${path}: ${describeError(e)}`);
  }
}

export async function ensureDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    throw new CliError(`cannot create directory ${dir}: ${describeError(e)}`);
  }
  const st = await stat(dir).catch(() => undefined);
  if (st === undefined || !st.isDirectory()) throw new CliError(`${dir} is not a directory`);
}

let tmpCounter = 0;

/** Writes `data` to `path` through a temporary file and a rename; `mode` applies to the new file. */
export async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  tmpCounter += 1;
  const tmp = `${path}.tmp-${process.pid}-${tmpCounter}`;
  try {
    await writeFile(tmp, data, { mode, flag: "wx" });
    await chmod(tmp, mode);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw new CliError(`cannot write ${path}: ${describeError(e)}`);
  }
}

export const KEY_MODE = 0o600;
export const CERT_MODE = 0o644;

/** Writes a certificate (chain) file and its key file; the key first, with mode 0600. */
export async function writePair(certPath: string, certPem: string, keyPath: string, keyPem: string): Promise<void> {
  await writeAtomic(keyPath, keyPem, KEY_MODE);
  await writeAtomic(certPath, certPem, CERT_MODE);
}

/**
 * Makes sure an existing private key file is readable by its owner only.
 * Returns true when it had to tighten the mode.
 */
export async function tightenKeyMode(path: string): Promise<boolean> {
  if (process.platform === "win32") return false;
  const st = await stat(path).catch(() => undefined);
  if (st === undefined || (st.mode & 0o077) === 0) return false;
  try {
    await chmod(path, KEY_MODE);
  } catch (e) {
    throw new CliError(`cannot restrict permissions of ${path}: ${describeError(e)}`);
  }
  return true;
}

export interface CaPaths {
  readonly cert: string;
  readonly key: string;
}

export function caPaths(dir: string): CaPaths {
  return { cert: join(dir, CA_CERT_FILE), key: join(dir, CA_KEY_FILE) };
}

/** `2027-11-22T05:22:17Z`: ISO 8601 without milliseconds. */
export function formatDate(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}
