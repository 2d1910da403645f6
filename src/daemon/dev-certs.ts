/**
 * Development certificates: a CA and localhost server certificates in one
 * directory, kept while valid and regenerated when missing, expired or not
 * signed by the current CA. Behind `dtlspush certs init` and the daemon's
 * first run without a configured certificate.
 *
 * Files are written through a temporary name and a rename (a crash never
 * leaves half a file); keys with mode 0600.
 */
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type * as Pki from "../pki/index.ts";
import { DtlspushError } from "../util/errors.ts";
import { shortReason } from "./config/errors.ts";

export type PkiModule = typeof Pki;

/** A file of the certificate directory could not be read or written. */
export class DevCertsError extends DtlspushError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("dev_certs_failed", message, options);
    this.name = "DevCertsError";
  }
}

export const DEFAULT_CERTS_DIR = "certs";
export const CA_CERT_FILE = "ca.pem";
export const CA_KEY_FILE = "ca.key";

/** The server certificates made: base file name and key kind. */
export const SERVER_FILES = [
  { name: "server-p256", kind: "p256" },
  { name: "server-p384", kind: "p384" },
  { name: "server-rsa", kind: "rsa2048" },
] as const;

export const KEY_MODE = 0o600;
export const CERT_MODE = 0o644;

export interface CaPaths {
  readonly cert: string;
  readonly key: string;
}

export function caPaths(dir: string): CaPaths {
  return { cert: join(dir, CA_CERT_FILE), key: join(dir, CA_KEY_FILE) };
}

/** The certificate and key files of a server certificate `name` ("server-p256") in `dir`. */
export function serverPaths(dir: string, name: string): CaPaths {
  return { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
}

/** Loads src/pki (and @peculiar/x509) on first use only. */
export async function loadPkiModule(): Promise<PkiModule> {
  return await import("../pki/index.ts");
}

/** Reads a text file; undefined when it does not exist. */
export async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    if ((e as { code?: unknown }).code === "ENOENT") return undefined;
    throw new DevCertsError(`cannot read ${path}: ${shortReason(e)}`, { cause: e });
  }
}

export async function ensureDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    throw new DevCertsError(`cannot create directory ${dir}: ${shortReason(e)}`, { cause: e });
  }
  const st = await stat(dir).catch(() => undefined);
  if (st === undefined || !st.isDirectory()) throw new DevCertsError(`${dir} is not a directory`);
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
    throw new DevCertsError(`cannot write ${path}: ${shortReason(e)}`, { cause: e });
  }
}

/** Writes a certificate (chain) file and its key file; the key first, with mode 0600. */
export async function writePair(certPath: string, certPem: string, keyPath: string, keyPem: string): Promise<void> {
  await writeAtomic(keyPath, keyPem, KEY_MODE);
  await writeAtomic(certPath, certPem, CERT_MODE);
}

/** Makes an existing private key file readable by its owner only; true when it had to. */
export async function tightenKeyMode(path: string): Promise<boolean> {
  if (process.platform === "win32") return false;
  const st = await stat(path).catch(() => undefined);
  if (st === undefined || (st.mode & 0o077) === 0) return false;
  try {
    await chmod(path, KEY_MODE);
  } catch (e) {
    throw new DevCertsError(`cannot restrict permissions of ${path}: ${shortReason(e)}`, { cause: e });
  }
  return true;
}

export type DevCertAction = "created" | "kept" | "replaced";

/** One certificate of the directory and what was done to it. */
export interface DevCertEntry {
  /** "ca", "server-p256", "server-p384", "server-rsa" */
  readonly name: string;
  readonly kind: string;
  readonly action: DevCertAction;
  /** Why an existing file was replaced. */
  readonly reason?: string;
  readonly cert: string;
  readonly key: string;
  readonly fingerprint: { readonly hex: string; readonly colon: string };
  readonly notAfter: Date;
}

export interface DevCertsOptions {
  /** Validity of new server certificates, days (default 365). */
  readonly days?: number;
  /** Regenerate everything, even valid files. */
  readonly force?: boolean;
  /** The generator; loaded on demand when not given. */
  readonly pki?: PkiModule;
}

export interface DevCertsResult {
  /** The CA first, then the server certificates (SERVER_FILES order). */
  readonly entries: readonly DevCertEntry[];
  /** Things worth telling ("restricted certs/ca.key to mode 0600"). */
  readonly notes: readonly string[];
}

/**
 * Makes sure `dir` holds a valid development CA (ca.pem, ca.key) and server
 * certificates signed by it (SERVER_FILES); keeps valid files, (re)creates the
 * rest. File failures are DevCertsError; generator failures are PkiError.
 */
export async function ensureDevCertificates(dir: string, options: DevCertsOptions = {}): Promise<DevCertsResult> {
  const pki = options.pki ?? (await loadPkiModule());
  const force = options.force ?? false;
  await ensureDir(dir);
  const entries: DevCertEntry[] = [];
  const notes: string[] = [];

  // The CA: keep a valid one unless forced.
  const ca = caPaths(dir);
  const caCertText = await readOptional(ca.cert);
  const caKeyText = await readOptional(ca.key);
  const caExisted = caCertText !== undefined || caKeyText !== undefined;
  let authority: Pki.CertificateAuthority | undefined;
  let caReason: string | undefined;
  if (force) {
    caReason = caExisted ? "--force" : undefined;
  } else if (caCertText === undefined || caKeyText === undefined) {
    caReason = caExisted ? `${caCertText === undefined ? ca.cert : ca.key} is missing` : undefined;
  } else {
    try {
      authority = await pki.loadCertificateAuthority(caCertText, caKeyText);
    } catch (e) {
      // Expected failures (a bad or expired CA) carry a code; anything else is a bug.
      if (typeof (e as { code?: unknown }).code !== "string") throw e;
      caReason = (e as Error).message;
    }
  }
  if (authority !== undefined) {
    if (await tightenKeyMode(ca.key)) notes.push(`restricted ${ca.key} to mode 0600`);
    entries.push(entry("ca", authority.kind, "kept", undefined, ca, authority.fingerprint, authority.notAfter));
  } else {
    const made = await pki.createCertificateAuthority();
    await writePair(ca.cert, made.issued.certPem, ca.key, made.issued.keyPem);
    authority = made.ca;
    entries.push(entry("ca", made.issued.kind, actionFor(caExisted), caReason, ca, made.issued.fingerprint, made.issued.notAfter));
  }

  // Server certificates: keep each one that is valid and signed by this CA.
  for (const { name, kind } of SERVER_FILES) {
    const paths = serverPaths(dir, name);
    const certText = await readOptional(paths.cert);
    const keyText = await readOptional(paths.key);
    const existed = certText !== undefined || keyText !== undefined;
    let reason: string | undefined;
    if (force) {
      reason = existed ? "--force" : undefined;
    } else if (certText === undefined || keyText === undefined) {
      reason = existed ? `${certText === undefined ? paths.cert : paths.key} is missing` : undefined;
    } else {
      const check = await pki.checkIssuedCertificate(authority, certText, keyText, { kind, usage: "server" });
      if (check.ok) {
        if (await tightenKeyMode(paths.key)) notes.push(`restricted ${paths.key} to mode 0600`);
        entries.push(entry(name, kind, "kept", undefined, paths, check.fingerprint, check.notAfter));
        continue;
      }
      reason = check.reason;
    }
    const issued = await pki.issueServerCertificate(authority, { kind, days: options.days ?? pki.DEFAULT_LEAF_DAYS });
    await writePair(paths.cert, issued.chainPem, paths.key, issued.keyPem);
    entries.push(entry(name, kind, actionFor(existed), reason, paths, issued.fingerprint, issued.notAfter));
  }
  return { entries, notes };
}

/** Both files absent: "created"; otherwise "replaced". */
function actionFor(existed: boolean): DevCertAction {
  return existed ? "replaced" : "created";
}

function entry(
  name: string,
  kind: string,
  action: DevCertAction,
  reason: string | undefined,
  paths: CaPaths,
  fingerprint: { hex: string; colon: string },
  notAfter: Date,
): DevCertEntry {
  return { name, kind, action, ...(reason !== undefined ? { reason } : {}), cert: paths.cert, key: paths.key, fingerprint, notAfter };
}
