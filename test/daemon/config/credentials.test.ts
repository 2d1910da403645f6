/** loadCredentials: development certificates on first run, own certificates checked with clear errors. */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig, loadCredentials, toDtlsOptions, type DaemonConfig } from "../../../src/daemon/config/index.ts";
import { serverCoreConfig } from "../../../src/dtls/endpoint-config.ts";
import { createCertificateAuthority, issueDeviceCertificate, issueServerCertificate, type IssuedCertificate } from "../../../src/pki/index.ts";

let work: string;
let n = 0;
/** Two server certificates of one CA, and the CA. */
let caPem: string;
let first: IssuedCertificate;
let second: IssuedCertificate;
let device: IssuedCertificate;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "dtlspush-creds-"));
  const { ca, issued } = await createCertificateAuthority();
  caPem = issued.certPem;
  first = await issueServerCertificate(ca, { kind: "p256" });
  second = await issueServerCertificate(ca, { kind: "p256" });
  device = await issueDeviceCertificate(ca, { id: "sensor-1" });
});
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

function freshDir(): string {
  n += 1;
  const dir = join(work, `d${n}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A config file in a fresh directory with these [dtls] lines and files; returns the loaded config. */
async function configWith(dtls: string, files: Record<string, string> = {}): Promise<{ config: DaemonConfig; dir: string; file: string }> {
  const dir = freshDir();
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const file = join(dir, "dtlspush.toml");
  writeFileSync(file, `[dtls]\n${dtls}\n`);
  return { config: await loadConfig({ file, env: {}, cwd: dir }), dir, file };
}

async function credentialsError(config: DaemonConfig): Promise<string> {
  try {
    await loadCredentials(config);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).message;
  }
  throw new Error("loadCredentials did not fail");
}

const OWN = 'certificate = "server.pem"\nkey = "server.key"\nclient_ca = "ca.pem"\nclient_auth = "require"';

describe("development certificates", () => {
  it("are generated on first run and reused on the second", async () => {
    const dir = freshDir();
    const config = await loadConfig({ env: { DTLSPUSH_DTLS_CERTS_DIR: "dev-certs" }, cwd: dir });
    const certs = join(dir, "dev-certs");

    const one = await loadCredentials(config);
    const names = ["ca", "server-p256", "server-p384", "server-rsa"];
    expect([...one.generated].sort()).toEqual(names.flatMap((b) => [join(certs, `${b}.pem`), join(certs, `${b}.key`)]).sort());
    expect(one.certificates).toEqual([
      { cert: readFileSync(join(certs, "server-p256.pem"), "utf8"), key: readFileSync(join(certs, "server-p256.key"), "utf8") },
    ]);
    expect(one.clientCa).toBe(readFileSync(join(certs, "ca.pem"), "utf8"));
    expect(statSync(join(certs, "server-p256.key")).mode & 0o777).toBe(0o600);

    const two = await loadCredentials(config);
    expect(two.generated).toEqual([]);
    expect(two.certificates).toEqual(one.certificates);
    expect(two.clientCa).toBe(one.clientCa);

    // What the DTLS endpoint takes: accepted as is.
    const options = toDtlsOptions(config, two);
    expect(options).toMatchObject({ host: "127.0.0.1", port: 5684, psk: true, clientAuth: "request", mtu: 1200, idleTimeoutMs: 300_000 });
    // sockets = 0: the endpoint's platform default; send and receive buffers have settings of their own
    expect(options).not.toHaveProperty("sockets");
    expect(options).toMatchObject({ recvBufferBytes: 1024 * 1024, sendBufferBytes: 4 * 1024 * 1024 });
    expect(options).toMatchObject({ helloVerifyRatePerSecond: 5000, helloVerifyRatePerPrefix: 500 });
    const tuned = await loadConfig({
      env: {
        DTLSPUSH_DTLS_SOCKETS: "2",
        DTLSPUSH_DTLS_SOCKET_BUFFER_BYTES: "1048576",
        DTLSPUSH_DTLS_RECEIVE_BUFFER_BYTES: "262144",
        DTLSPUSH_DTLS_HELLO_VERIFY_RATE_PER_SECOND: "0",
        DTLSPUSH_DTLS_HELLO_VERIFY_RATE_PER_PREFIX: "50",
      },
      cwd: dir,
    });
    expect(toDtlsOptions(tuned, two)).toMatchObject({
      sockets: 2,
      recvBufferBytes: 262_144,
      sendBufferBytes: 1_048_576,
      helloVerifyRatePerSecond: 0,
      helloVerifyRatePerPrefix: 50,
    });
    const core = serverCoreConfig({ ...options, psk: { keys: new Map() } });
    expect(core.certificates).toHaveLength(1);
    expect(core.clientAuth).toBe("request");
  });

  it("a replaced server certificate is regenerated", async () => {
    const dir = freshDir();
    const config = await loadConfig({ env: {}, cwd: dir });
    await loadCredentials(config);
    writeFileSync(join(dir, "certs", "server-p256.pem"), "garbage\n");
    const again = await loadCredentials(config);
    expect(again.generated).toEqual([join(dir, "certs", "server-p256.pem"), join(dir, "certs", "server-p256.key")]);
    expect(again.certificates[0]?.cert).toContain("BEGIN CERTIFICATE");
  });

  it("an explicit client_ca replaces the development CA", async () => {
    const dir = freshDir();
    writeFileSync(join(dir, "devices.pem"), caPem);
    const config = await loadConfig({ env: { DTLSPUSH_DTLS_CLIENT_CA: "devices.pem" }, cwd: dir });
    expect((await loadCredentials(config)).clientCa).toBe(caPem);
  });

  it("a certs_dir that cannot be created is an error naming it", async () => {
    const dir = freshDir();
    writeFileSync(join(dir, "file"), "x");
    const config = await loadConfig({ env: { DTLSPUSH_DTLS_CERTS_DIR: "file/certs" }, cwd: dir });
    expect(await credentialsError(config)).toMatch(
      /^dtls\.certs_dir \(from DTLSPUSH_DTLS_CERTS_DIR\): cannot make the development certificates: cannot create directory .*file\/certs: /,
    );
  });
});

describe("own certificate", () => {
  it("is read with its key and the device CA", async () => {
    const { config } = await configWith(OWN, { "server.pem": first.chainPem, "server.key": first.keyPem, "ca.pem": caPem });
    const creds = await loadCredentials(config);
    expect(creds).toEqual({ certificates: [{ cert: first.chainPem, key: first.keyPem }], clientCa: caPem, generated: [] });
    expect(toDtlsOptions(config, creds).clientAuth).toBe("require");
  });

  it("without a device CA: clientCa absent, client_auth none", async () => {
    const { config } = await configWith('certificate = "server.pem"\nkey = "server.key"\nclient_auth = "none"', {
      "server.pem": first.chainPem,
      "server.key": first.keyPem,
    });
    const creds = await loadCredentials(config);
    expect(creds.clientCa).toBeUndefined();
    expect("clientCa" in toDtlsOptions(config, creds)).toBe(false);
  });

  it("unreadable certificate", async () => {
    const { config, dir, file } = await configWith(OWN, { "server.key": first.keyPem, "ca.pem": caPem });
    expect(await credentialsError(config)).toBe(`dtls.certificate (in ${file}): cannot read ${join(dir, "server.pem")}: no such file or directory`);
  });

  it("certificate file without a PEM certificate", async () => {
    const { config, dir, file } = await configWith(OWN, { "server.pem": first.keyPem, "server.key": first.keyPem, "ca.pem": caPem });
    expect(await credentialsError(config)).toBe(`dtls.certificate (in ${file}): ${join(dir, "server.pem")} holds no PEM certificate`);
  });

  it("certificate that does not parse", async () => {
    const broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const { config, dir, file } = await configWith(OWN, { "server.pem": broken, "server.key": first.keyPem, "ca.pem": caPem });
    expect(await credentialsError(config)).toMatch(
      new RegExp(`^dtls\\.certificate \\(in ${file}\\): certificate 1 in ${join(dir, "server.pem")} cannot be parsed \\(.+\\)$`),
    );
  });

  it("key file without a private key", async () => {
    const { config, dir, file } = await configWith(OWN, { "server.pem": first.chainPem, "server.key": first.certPem, "ca.pem": caPem });
    expect(await credentialsError(config)).toBe(`dtls.key (in ${file}): ${join(dir, "server.key")} holds no PEM private key`);
  });

  it("key that does not match the certificate", async () => {
    const { config, dir, file } = await configWith(OWN, { "server.pem": first.chainPem, "server.key": second.keyPem, "ca.pem": caPem });
    expect(await credentialsError(config)).toBe(
      `dtls.key (in ${file}): the private key in ${join(dir, "server.key")} does not belong to the certificate in ${join(dir, "server.pem")} (CN=localhost, O=dtlspush)`,
    );
    // A device certificate's key against the server certificate: the same.
    const other = await configWith(OWN, { "server.pem": first.chainPem, "server.key": device.keyPem, "ca.pem": caPem });
    expect(await credentialsError(other.config)).toContain("does not belong to the certificate");
  });

  it("device CA file without a certificate", async () => {
    const { config, dir, file } = await configWith(OWN, { "server.pem": first.chainPem, "server.key": first.keyPem, "ca.pem": "not pem\n" });
    expect(await credentialsError(config)).toBe(`dtls.client_ca (in ${file}): ${join(dir, "ca.pem")} holds no PEM certificate`);
  });

  it("an error names the environment when the path came from there", async () => {
    const dir = freshDir();
    writeFileSync(join(dir, "server.pem"), first.chainPem);
    const env = { DTLSPUSH_DTLS_CERTIFICATE: "server.pem", DTLSPUSH_DTLS_KEY: "nope.key", DTLSPUSH_DTLS_CLIENT_AUTH: "none" };
    const config = await loadConfig({ env, cwd: dir });
    expect(await credentialsError(config)).toBe(`dtls.key (from DTLSPUSH_DTLS_KEY): cannot read ${join(dir, "nope.key")}: no such file or directory`);
  });
});
