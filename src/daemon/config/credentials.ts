/**
 * The DTLS server's certificate, key and device CA, read from the configured
 * files (or the development ones, generated on first run) and checked before
 * any socket exists: each problem is a ConfigError naming the setting and the file.
 */
import { readFile } from "node:fs/promises";
import { loadPrivateKey, parseCertificate, pemCertificates, type Certificate } from "../../crypto/index.ts";
import type { PushServerOptions } from "../push-server.ts";
import { caPaths, DevCertsError, ensureDevCertificates, serverPaths, type PkiModule } from "../dev-certs.ts";
import { ConfigError, shortReason } from "./errors.ts";
import { settingLabel, type DaemonConfig } from "./load.ts";

/** The development server certificate the daemon uses (of those `certs init` makes). */
export const DEV_SERVER_CERT = "server-p256";

export interface DtlsCredentials {
  /** PEM chain (leaf first) and key: ListenOptions.certificates */
  readonly certificates: readonly { readonly cert: string; readonly key: string }[];
  /** PEM CA certificate(s) of device certificates: ListenOptions.clientCa; undefined: none */
  readonly clientCa?: string;
  /** Files created (or replaced) by this call: the development certificates on first run. */
  readonly generated: readonly string[];
}

/**
 * Reads and checks the server credentials. With dtls.certificate "" the
 * development CA and server certificates in dtls.certs_dir are kept if valid
 * and generated otherwise (as `dtlspush certs init` does); the daemon serves
 * server-p256 and trusts ca.pem for device certificates (unless dtls.client_ca is set).
 */
export async function loadCredentials(c: DaemonConfig, options: { pki?: PkiModule } = {}): Promise<DtlsCredentials> {
  const generated: string[] = [];
  let certFile: string;
  let keyFile: string;
  let certSetting: string;
  let keySetting: string;
  let clientCaFile = c.dtls.clientCa;
  let clientCaSetting = "dtls.client_ca";
  if (c.dtls.certificate === undefined || c.dtls.key === undefined) {
    const dir = c.dtls.certsDir;
    try {
      const { entries } = await ensureDevCertificates(dir, options.pki === undefined ? {} : { pki: options.pki });
      for (const e of entries) if (e.action !== "kept") generated.push(e.cert, e.key);
    } catch (e) {
      if (e instanceof DevCertsError || (e as { code?: unknown }).code !== undefined) {
        throw new ConfigError(`${settingLabel(c, "dtls.certs_dir")}: cannot make the development certificates: ${(e as Error).message}`, {
          cause: e,
        });
      }
      throw e;
    }
    const paths = serverPaths(dir, DEV_SERVER_CERT);
    certFile = paths.cert;
    keyFile = paths.key;
    certSetting = keySetting = "dtls.certs_dir";
    if (clientCaFile === undefined) {
      clientCaFile = caPaths(dir).cert;
      clientCaSetting = "dtls.certs_dir";
    }
  } else {
    certFile = c.dtls.certificate;
    keyFile = c.dtls.key;
    certSetting = "dtls.certificate";
    keySetting = "dtls.key";
  }

  const certLabel = settingLabel(c, certSetting);
  const keyLabel = settingLabel(c, keySetting);
  const cert = await readPem(certLabel, certFile);
  const chain = certificates(certLabel, certFile, cert);
  const key = await readPem(keyLabel, keyFile);
  checkPrivateKey(keyLabel, keyFile, key);
  const leaf = chain[0] as Certificate;
  if (!leaf.matchesPrivateKey(key)) {
    throw new ConfigError(`${keyLabel}: the private key in ${keyFile} does not belong to the certificate in ${certFile} (${leaf.subject})`);
  }

  let clientCa: string | undefined;
  if (clientCaFile !== undefined) {
    const label = settingLabel(c, clientCaSetting);
    clientCa = await readPem(label, clientCaFile);
    certificates(label, clientCaFile, clientCa);
  }
  return { certificates: [{ cert, key }], ...(clientCa === undefined ? {} : { clientCa }), generated };
}

/** PushServerOptions.dtls from the configuration and the loaded credentials. */
export function toDtlsOptions(c: DaemonConfig, creds: DtlsCredentials): PushServerOptions["dtls"] {
  return {
    host: c.dtls.listen.host,
    port: c.dtls.listen.port,
    psk: c.dtls.psk,
    certificates: creds.certificates,
    // Without a device CA there is nothing to verify device certificates against.
    clientAuth: creds.clientCa === undefined ? "none" : c.dtls.clientAuth,
    ...(creds.clientCa === undefined ? {} : { clientCa: creds.clientCa }),
    mtu: c.dtls.mtu,
    maxSessions: c.dtls.maxSessions,
    maxHandshakes: c.dtls.maxHandshakes,
    maxHandshakesPerHost: c.dtls.maxHandshakesPerHost,
    maxSessionsPerHost: c.dtls.maxSessionsPerHost,
    handshakeTimeoutMs: c.dtls.handshakeTimeoutSeconds * 1000,
    handshakeMemoryBytes: c.dtls.handshakeMemoryBytes,
    idleTimeoutMs: c.dtls.idleTimeoutSeconds * 1000,
    ...(c.dtls.sockets === undefined ? {} : { sockets: c.dtls.sockets }),
    recvBufferBytes: c.dtls.receiveBufferBytes,
    sendBufferBytes: c.dtls.socketBufferBytes,
    helloVerifyRatePerSecond: c.dtls.helloVerifyRatePerSecond,
    helloVerifyRatePerPrefix: c.dtls.helloVerifyRatePerPrefix,
    connectionIdLength: c.dtls.connectionIdLength,
    resumption: {
      enabled: c.dtls.resumption,
      ticketLifetimeMs: c.dtls.ticketLifetimeSeconds * 1000,
      maxSessionAgeMs: c.dtls.maxSessionAgeSeconds * 1000,
      sessionCacheSize: c.dtls.sessionCacheSize,
      ticketKeyRotationMs: c.dtls.ticketKeyRotationSeconds * 1000,
    },
  };
}

async function readPem(label: string, file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (e) {
    throw new ConfigError(`${label}: cannot read ${file}: ${shortReason(e)}`, { cause: e });
  }
}

/** The PEM certificates of a file, parsed; at least one. */
function certificates(label: string, file: string, text: string): Certificate[] {
  const ders = pemCertificates(text);
  if (ders.length === 0) throw new ConfigError(`${label}: ${file} holds no PEM certificate`);
  return ders.map((der, i) => {
    try {
      return parseCertificate(der);
    } catch (e) {
      throw new ConfigError(`${label}: certificate ${i + 1} in ${file} cannot be parsed (${shortReason(e)})`, { cause: e });
    }
  });
}

function checkPrivateKey(label: string, file: string, text: string): void {
  try {
    loadPrivateKey(text);
  } catch (e) {
    const reason = shortReason(e);
    throw new ConfigError(`${label}: ${file} ${reason.startsWith("holds") ? reason : `holds no usable private key (${reason})`}`, { cause: e });
  }
}
