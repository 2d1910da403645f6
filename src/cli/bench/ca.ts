/**
 * `--cert`, in the bench process: the CA that issues the devices'
 * certificates (the daemon's development CA, ca.pem + ca.key in its
 * dtls.certs_dir, or `--ca-dir`), and the CA certificate(s) the devices trust
 * for the daemon's own certificate. What can be known up front is checked, so
 * that a run whose handshakes would all fail stops with one line instead:
 * the CA files missing, a daemon that takes no device certificates
 * (dtls.client_auth = "none"), or one whose device CA (dtls.client_ca) is
 * another CA.
 */
import { readFile } from "node:fs/promises";
import type { DaemonConfig } from "../../daemon/config/index.ts";
import { caPaths } from "../../daemon/dev-certs.ts";
import { PROGRAM } from "../command.ts";
import { CliError, describeError, errorCode } from "../errors.ts";

export interface BenchCa {
  /** the directory ca.pem and ca.key were read from */
  readonly dir: string;
  readonly certPem: string;
  readonly keyPem: string;
  /** PEM CA certificate(s) the devices verify the server's certificate against */
  readonly trustPem: string;
  /** SHA-256 of the CA certificate, hex */
  readonly fingerprint: string;
}

export interface CaSource {
  /** `--ca-dir`, absolute; undefined: from the daemon's configuration */
  readonly caDir: string | undefined;
  /** the daemon's configuration when it is known (on this machine, or started by the bench) */
  readonly config: DaemonConfig | undefined;
  /** the daemon, for messages ("the daemon at http://127.0.0.1:8080") */
  readonly daemon: string;
}

/** A file's text; undefined when it does not exist. */
async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    if (errorCode(e) === "ENOENT") return undefined;
    throw new CliError(`--cert: cannot read ${path}: ${describeError(e)}`);
  }
}

/** A file's text; undefined when it cannot be read (only used for checks and extra trust). */
async function readIfPossible(path: string | undefined): Promise<string | undefined> {
  if (path === undefined) return undefined;
  try {
    return await readFile(path, "utf8");
  } catch {
    return undefined;
  }
}

function withNewline(pem: string): string {
  return pem.endsWith("\n") ? pem : `${pem}\n`;
}

/** The CA to issue device certificates with, checked against what the daemon trusts. */
export async function resolveBenchCa(o: CaSource): Promise<BenchCa> {
  const cfg = o.config;
  if (cfg !== undefined && cfg.dtls.clientAuth === "none") {
    throw new CliError(
      `--cert: ${o.daemon} accepts no device certificates (dtls.client_auth = "none"); set dtls.client_auth = "request", or bench without --cert`,
    );
  }
  let dir: string;
  if (o.caDir !== undefined) dir = o.caDir;
  else if (cfg === undefined) {
    throw new CliError(
      `--cert: ${o.daemon} is not on this machine, so its device CA is unknown; give --ca-dir DIR holding the CA's ca.pem and ca.key`,
    );
  } else if (cfg.dtls.clientCa !== undefined) {
    throw new CliError(
      `--cert: ${o.daemon} trusts device certificates issued by ${cfg.dtls.clientCa} (dtls.client_ca), not its development CA; give --ca-dir DIR holding that CA's ca.pem and ca.key`,
    );
  } else dir = cfg.dtls.certsDir;

  const paths = caPaths(dir);
  const certPem = await readOptional(paths.cert);
  const keyPem = await readOptional(paths.key);
  if (certPem === undefined || keyPem === undefined) {
    const missing = [certPem === undefined ? paths.cert : undefined, keyPem === undefined ? paths.key : undefined]
      .filter((p) => p !== undefined)
      .join(" and ");
    const what = keyPem === undefined ? (certPem === undefined ? "CA certificate and key" : "CA key") : "CA certificate";
    const todo =
      o.caDir !== undefined
        ? "give --ca-dir the directory that holds the device CA's ca.pem and ca.key"
        : `the daemon makes its development CA there on its first start (or run '${PROGRAM} certs init'), or give --ca-dir DIR with ca.pem and ca.key`;
    throw new CliError(`--cert: no ${what} (${missing} missing); ${todo}`);
  }

  const pki = await import("../../pki/index.ts");
  let fingerprint: string;
  try {
    fingerprint = (await pki.loadCertificateAuthority(certPem, keyPem)).fingerprint.hex;
  } catch (e) {
    if (errorCode(e) === undefined) throw e;
    throw new CliError(`--cert: ${dir}: ${describeError(e).replace(/\.$/, "")}`);
  }
  const caDer = pki.pemBlocks(certPem, "CERTIFICATE")[0] as Uint8Array;

  const trust = [withNewline(certPem)];
  if (cfg !== undefined) {
    // the CA file device chains must lead to, as the daemon reads it
    const clientCaFile = cfg.dtls.clientCa ?? (cfg.dtls.certificate === undefined ? caPaths(cfg.dtls.certsDir).cert : undefined);
    const clientCa = await readIfPossible(clientCaFile);
    if (clientCa !== undefined && clientCaFile !== undefined) {
      let ders: Uint8Array[] = [];
      try {
        ders = pki.pemBlocks(clientCa, "CERTIFICATE");
      } catch {
        // not PEM: the daemon refuses to start with it; nothing to compare
      }
      if (ders.length > 0 && !ders.some((d) => Buffer.from(d).equals(caDer))) {
        throw new CliError(
          `--cert: ${o.daemon} trusts device certificates issued by ${clientCaFile}, which does not hold the CA ${paths.cert}; give --ca-dir the directory of the CA it names`,
        );
      }
    }
    // the server's certificate: the development one is issued by the development CA; an own one, trusted as it is
    const serverTrust = await readIfPossible(cfg.dtls.certificate ?? caPaths(cfg.dtls.certsDir).cert);
    if (serverTrust !== undefined && serverTrust !== certPem) trust.push(withNewline(serverTrust));
  }
  return { dir, certPem, keyPem, trustPem: trust.join(""), fingerprint };
}
