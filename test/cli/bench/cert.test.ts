/**
 * `dtlspush bench --cert`: devices with certificates issued by the daemon's
 * development CA, end to end over real UDP against a daemon started here (its
 * certs directory found through its configuration file, or --ca-dir), and
 * in process; and the CA checks that stop a run which cannot work with one line.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveBenchCa } from "../../../src/cli/bench/ca.ts";
import { CliError } from "../../../src/cli/errors.ts";
import { loadConfig, type DaemonConfig } from "../../../src/daemon/config/index.ts";
import { caPaths, ensureDevCertificates, writePair } from "../../../src/daemon/dev-certs.ts";
import { createCertificateAuthority } from "../../../src/pki/index.ts";
import { bench, benchDevices, runBench, startBenchDaemon, stopBenchDaemon, tempDir, testIo, type BenchTestDaemon } from "./harness.ts";

const ECDSA_SUITE = /^TLS_ECDHE_ECDSA_WITH_/;

function writeConfig(dir: string, extra = ""): string {
  const file = join(dir, "dtlspush.toml");
  writeFileSync(
    file,
    `data_dir = ${JSON.stringify(join(dir, "data"))}\n` +
      `[dtls]\ncerts_dir = ${JSON.stringify(join(dir, "certs"))}\n${extra}` +
      `[store]\nkind = "memory"\n[http]\nrate_limit_per_minute = 0\n`,
  );
  return file;
}

describe("dtlspush bench --cert against a running daemon", () => {
  let d: BenchTestDaemon;
  let config: string;
  beforeAll(async () => {
    const dir = tempDir();
    config = writeConfig(dir);
    d = await startBenchDaemon({ dir, file: config });
  });
  afterAll(async () => {
    await stopBenchDaemon(d);
  });

  it("handshake: the CA comes from the configuration's certs_dir; every handshake is a certificate (ECDSA) one", async () => {
    const { report, io } = await bench([
      "handshake",
      ...d.args,
      "--config",
      config,
      "--cert",
      "--devices",
      "3",
      "--duration",
      "1",
      "--concurrency",
      "2",
      "--json",
    ]);
    expect(report.credentials).toBe("certificate (p256)");
    expect(report.certificates).toMatchObject({ caDir: d.certsDir, curve: "p256", issued: 3 });
    expect(report.certificates?.msEach).toBeGreaterThan(0);
    const h = report.handshake;
    expect(h).toBeDefined();
    if (h === undefined) return;
    expect(h.handshakes).toBeGreaterThan(0);
    expect(h.failures).toBe(0);
    expect(h.daemonFailures).toBe(0);
    expect(h.daemonHandshakes).toBe(h.handshakes);
    const suites = Object.keys(h.daemonHandshakesBySuite);
    expect(suites.length).toBeGreaterThan(0);
    for (const s of suites) expect(s).toMatch(ECDSA_SUITE);
    expect(Object.values(h.daemonHandshakesBySuite).reduce((a, b) => a + b, 0)).toBe(h.daemonHandshakes);
    expect(io.err()).toMatch(/certificates: 3 of 3 issued in [\d.]+ s \([\d.]+ ms each, 1 worker\)/);
    expect(benchDevices(d)).toEqual([]);
  });

  it("push --curve p384 --ca-dir: devices registered by certificate identity receive every publish", async () => {
    const { report } = await bench([
      "push",
      ...d.args,
      "--cert",
      "--curve",
      "p384",
      "--ca-dir",
      d.certsDir,
      "--devices",
      "3",
      "--duration",
      "1",
      "--keep",
      "--json",
    ]);
    expect(report.credentials).toBe("certificate (p384)");
    const p = report.push;
    expect(p?.connect).toMatchObject({ ok: 3, failed: 0 });
    expect(p?.published).toBeGreaterThan(0);
    expect(p?.received).toBe(p?.published);
    expect(p?.acked).toBe(p?.received);
    expect(p?.sessionsLost).toBe(0);
    // --keep: the devices stay, with the certificate identity the DTLS server reports (the CN = the id) and no PSK
    const kept = d.daemon.push.registry.get("bench-2");
    expect(kept?.certIdentity).toBe("bench-2");
    expect(kept?.psk).toBeUndefined();
    for (const id of benchDevices(d)) await d.daemon.push.registry.remove(id);
  });

  it("a directory without the CA: one line saying what is missing and what to do, nothing registered", async () => {
    const empty = tempDir();
    try {
      const io = testIo();
      expect(await runBench(["handshake", ...d.args, "--cert", "--ca-dir", empty, "--devices", "2", "--duration", "1"], io)).toBe(1);
      const lines = io.err().trimEnd().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toBe(
        `dtlspush: error: --cert: no CA certificate and key (${join(empty, "ca.pem")} and ${join(empty, "ca.key")} missing); give --ca-dir the directory that holds the device CA's ca.pem and ca.key`,
      );
      expect(io.out()).toBe("");
      expect(benchDevices(d)).toEqual([]);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe("dtlspush bench --cert --in-process", () => {
  it("push: the in-process daemon's development CA issues the devices' certificates", async () => {
    const { report } = await bench(["push", "--in-process", "--store", "memory", "--cert", "--devices", "2", "--duration", "0.5", "--json"]);
    expect(report).toMatchObject({ target: "in-process", credentials: "certificate (p256)", certificates: { issued: 2 } });
    expect(report.push?.published).toBeGreaterThan(0);
    expect(report.push?.received).toBe(report.push?.published);
    expect(report.push?.acked).toBe(report.push?.published);
  });
});

describe("resolveBenchCa", () => {
  let dir: string;
  let certsDir: string;
  let otherDir: string;
  const daemon = "the daemon at http://127.0.0.1:8080";
  const config = (env: Record<string, string> = {}): Promise<DaemonConfig> =>
    loadConfig({ env: { DTLSPUSH_DTLS_CERTS_DIR: certsDir, ...env }, flags: { dataDir: join(dir, "data") }, cwd: dir });

  beforeAll(async () => {
    dir = tempDir();
    certsDir = join(dir, "certs");
    await ensureDevCertificates(certsDir);
    otherDir = join(dir, "other");
    mkdirSync(otherDir);
    const other = await createCertificateAuthority({ commonName: "another CA" });
    await writePair(caPaths(otherDir).cert, other.issued.certPem, caPaths(otherDir).key, other.issued.keyPem);
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("takes the development CA of the configuration's certs_dir and trusts it for the server", async () => {
    const ca = await resolveBenchCa({ caDir: undefined, config: await config(), daemon });
    expect(ca.dir).toBe(certsDir);
    expect(ca.keyPem).toMatch(/BEGIN PRIVATE KEY/);
    expect(ca.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(ca.trustPem).toContain(ca.certPem.trim());
  });

  it("refuses a daemon that takes no device certificates", async () => {
    await expect(resolveBenchCa({ caDir: undefined, config: await config({ DTLSPUSH_DTLS_CLIENT_AUTH: "none" }), daemon })).rejects.toThrow(
      `--cert: ${daemon} accepts no device certificates (dtls.client_auth = "none"); set dtls.client_auth = "request", or bench without --cert`,
    );
  });

  it("refuses a CA that is not the one the daemon's dtls.client_ca names", async () => {
    const clientCa = caPaths(otherDir).cert;
    const cfg = await config({ DTLSPUSH_DTLS_CLIENT_CA: clientCa });
    await expect(resolveBenchCa({ caDir: certsDir, config: cfg, daemon })).rejects.toThrow(
      `--cert: ${daemon} trusts device certificates issued by ${clientCa}, which does not hold the CA ${caPaths(certsDir).cert}; give --ca-dir the directory of the CA it names`,
    );
    // without --ca-dir it cannot know that CA's key
    await expect(resolveBenchCa({ caDir: undefined, config: cfg, daemon })).rejects.toThrow(
      /dtls\.client_ca\), not its development CA; give --ca-dir DIR/,
    );
    // with it: devices get certificates from that CA and still trust the development CA for the server
    const ca = await resolveBenchCa({ caDir: otherDir, config: cfg, daemon });
    expect(ca.dir).toBe(otherDir);
    const dev = await resolveBenchCa({ caDir: undefined, config: await config(), daemon });
    expect(ca.trustPem).toContain(dev.certPem.trim());
    expect(ca.trustPem).toContain(ca.certPem.trim());
  });

  it("needs --ca-dir for a daemon elsewhere, and names the files that are missing", async () => {
    await expect(resolveBenchCa({ caDir: undefined, config: undefined, daemon })).rejects.toThrow(`--cert: ${daemon} is not on this machine`);
    const fresh = join(dir, "fresh");
    const cfg = await loadConfig({ env: { DTLSPUSH_DTLS_CERTS_DIR: fresh }, flags: { dataDir: join(dir, "data") }, cwd: dir });
    const e = await resolveBenchCa({ caDir: undefined, config: cfg, daemon }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CliError);
    expect((e as Error).message).toBe(
      `--cert: no CA certificate and key (${join(fresh, "ca.pem")} and ${join(fresh, "ca.key")} missing); the daemon makes its development CA there on its first start (or run 'dtlspush certs init'), or give --ca-dir DIR with ca.pem and ca.key`,
    );
    mkdirSync(fresh);
    writeFileSync(join(fresh, "ca.pem"), (await resolveBenchCa({ caDir: certsDir, config: undefined, daemon })).certPem);
    await expect(resolveBenchCa({ caDir: fresh, config: undefined, daemon })).rejects.toThrow(`--cert: no CA key (${join(fresh, "ca.key")} missing)`);
  });
});
