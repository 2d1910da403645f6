/**
 * `dtlspush certs`: argument parsing (pure) and end to end through
 * bin/dtlspush.js in a temporary directory (needs `npm run build` first).
 */
import { spawn, spawnSync } from "node:child_process";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEVICE_ID_SYNTAX, parseDeviceArgs } from "../../src/cli/certs-device.ts";
import { DEVICE_ID_PATTERN } from "../../src/pki/index.ts";
import { formatEntry, parseInitArgs } from "../../src/cli/certs-init.ts";
import { UsageError } from "../../src/cli/errors.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(ROOT, "bin", "dtlspush.js");
const HAVE_OPENSSL = spawnSync("openssl", ["version"], { encoding: "utf8" }).status === 0;
const SERVER_NAMES = ["server-p256", "server-p384", "server-rsa"] as const;

describe("parseInitArgs", () => {
  it("has defaults", () => {
    expect(parseInitArgs([])).toEqual({ dir: "certs", days: 365, force: false, json: false });
  });

  it("takes every option", () => {
    expect(parseInitArgs(["--dir", "/x", "--days", "30", "--force", "--json"])).toEqual({ dir: "/x", days: 30, force: true, json: true });
  });

  it.each([
    [["--days", "0"], "--days: 0 is out of range (1-36500)"],
    [["--days", "x"], "--days: 'x' is not a whole number"],
    [["--dir", ""], "--dir: the directory is empty"],
    [["extra"], "unexpected argument 'extra' (see 'dtlspush certs init --help')"],
    [["--curve", "p256"], "unknown option '--curve' (see 'dtlspush certs init --help')"],
  ])("%j is a usage error", (argv, message) => {
    expect(() => parseInitArgs(argv)).toThrow(UsageError);
    expect(() => parseInitArgs(argv)).toThrow(message);
  });
});

describe("parseDeviceArgs", () => {
  it("validates ids with the generator's rule", () => {
    expect(DEVICE_ID_SYNTAX.source).toBe(DEVICE_ID_PATTERN.source);
  });

  it("has defaults", () => {
    expect(parseDeviceArgs(["dev-1"])).toEqual({ id: "dev-1", dir: "certs", out: "certs", curve: "p256", days: 365, force: false, json: false });
  });

  it("takes every option", () => {
    expect(parseDeviceArgs(["a.b_c", "--dir", "d", "--out", "o", "--curve", "P384", "--days", "7", "--force", "--json"])).toEqual({
      id: "a.b_c",
      dir: "d",
      out: "o",
      curve: "p384",
      days: 7,
      force: true,
      json: true,
    });
  });

  it.each([
    [[], "missing ID (see 'dtlspush certs device --help')"],
    [["a", "b"], "unexpected argument 'b' (see 'dtlspush certs device --help')"],
    [["a b"], `invalid device id "a b": use 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'`],
    [[""], `invalid device id "": use 1-64`],
    [["x".repeat(65)], "invalid device id"],
    [["a/b"], "invalid device id"],
    [["a", "--curve", "p521"], "--curve: 'p521' is not one of p256, p384"],
    [["a", "--days", "36501"], "--days: 36501 is out of range (1-36500)"],
  ])("%j is a usage error", (argv, message) => {
    expect(() => parseDeviceArgs(argv)).toThrow(UsageError);
    expect(() => parseDeviceArgs(argv)).toThrow(message);
  });
});

describe("formatEntry", () => {
  it("prints one key=value line", () => {
    const line = formatEntry({
      name: "server-rsa",
      kind: "rsa2048",
      action: "replaced",
      reason: "expired on 2020-01-01T00:00:00.000Z",
      cert: "certs/server-rsa.pem",
      key: "certs/server-rsa.key",
      sha256: "ab",
      sha256Colon: "AB",
      notAfter: "2030-01-01T00:00:00Z",
    });
    expect(line).toBe(
      'replaced server-rsa cert=certs/server-rsa.pem key=certs/server-rsa.key expires=2030-01-01T00:00:00Z sha256=ab reason="expired on 2020-01-01T00:00:00.000Z"',
    );
  });
});

// ---------------------------------------------------------------------------
// End to end

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: readonly string[], cwd: string): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd, env: { ...process.env, DTLSPUSH_DEBUG: "" } });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`'dtlspush ${args.join(" ")}' did not exit\n${stdout}\n${stderr}`));
    }, 20_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end();
  });
}

/** `name -> sha256` from `certs init` output lines. */
function fingerprints(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of stdout.matchAll(/^\w+ (\S+) .* sha256=([0-9a-f]{64})/gm)) out[m[1] ?? ""] = m[2] ?? "";
  return out;
}

function actions(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of stdout.matchAll(/^(\w+) (\S+) /gm)) out[m[2] ?? ""] = m[1] ?? "";
  return out;
}

function leafOf(path: string): X509Certificate {
  return new X509Certificate(readFileSync(path));
}

describe("dtlspush certs (end to end)", () => {
  let work: string;

  beforeAll(() => {
    if (!existsSync(join(ROOT, "dist", "cli", "main.js"))) {
      throw new Error("dist/cli/main.js is missing: run 'npm run build' before these tests");
    }
    work = mkdtempSync(join(tmpdir(), "dtlspush-certs-"));
  });

  afterAll(() => {
    rmSync(work, { recursive: true, force: true });
  });

  it.each([
    [["certs", "--help"], /^Usage: dtlspush certs <command>/],
    [["certs", "init", "--help"], /^Usage: dtlspush certs init \[--dir DIR\]/],
    [["certs", "device", "-h"], /^Usage: dtlspush certs device ID /],
    [["--help"], /certs init +Create a development CA/],
  ])("%j prints help", async (args, pattern) => {
    const r = await run(args, work);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(pattern);
  });

  it("init creates the CA and three server certificates, then keeps them; --force replaces them", async () => {
    const dir = join(work, "init");
    const first = await run(["certs", "init", "--dir", dir], work);
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    expect(actions(first.stdout)).toEqual({ ca: "created", "server-p256": "created", "server-p384": "created", "server-rsa": "created" });
    expect(readdirSync(dir).sort()).toEqual([
      "ca.key",
      "ca.pem",
      "server-p256.key",
      "server-p256.pem",
      "server-p384.key",
      "server-p384.pem",
      "server-rsa.key",
      "server-rsa.pem",
    ]);

    const ca = leafOf(join(dir, "ca.pem"));
    expect(ca.ca).toBe(true);
    expect(ca.checkPrivateKey(createPrivateKey(readFileSync(join(dir, "ca.key"))))).toBe(true);
    expect(fingerprints(first.stdout)["ca"]).toBe(ca.fingerprint256.replaceAll(":", "").toLowerCase());
    for (const name of SERVER_NAMES) {
      const leaf = leafOf(join(dir, `${name}.pem`));
      expect(leaf.verify(ca.publicKey)).toBe(true);
      expect(leaf.checkPrivateKey(createPrivateKey(readFileSync(join(dir, `${name}.key`))))).toBe(true);
      expect(leaf.subjectAltName).toBe("DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1");
      expect(readFileSync(join(dir, `${name}.pem`), "utf8").match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
      expect(fingerprints(first.stdout)[name]).toBe(leaf.fingerprint256.replaceAll(":", "").toLowerCase());
      if (HAVE_OPENSSL) {
        const v = spawnSync("openssl", ["verify", "-purpose", "sslserver", "-CAfile", join(dir, "ca.pem"), join(dir, `${name}.pem`)], {
          encoding: "utf8",
        });
        expect(v.stdout + v.stderr).toMatch(/: OK\n/);
      }
    }
    if (process.platform !== "win32") {
      for (const f of readdirSync(dir)) expect(statSync(join(dir, f)).mode & 0o777, f).toBe(f.endsWith(".key") ? 0o600 : 0o644);
    }

    const second = await run(["certs", "init", "--dir", dir], work);
    expect(second.code).toBe(0);
    expect(actions(second.stdout)).toEqual({ ca: "kept", "server-p256": "kept", "server-p384": "kept", "server-rsa": "kept" });
    expect(fingerprints(second.stdout)).toEqual(fingerprints(first.stdout));

    const forced = await run(["certs", "init", "--dir", dir, "--force"], work);
    expect(forced.code).toBe(0);
    expect(actions(forced.stdout)).toEqual({ ca: "replaced", "server-p256": "replaced", "server-p384": "replaced", "server-rsa": "replaced" });
    const before = fingerprints(first.stdout);
    const after = fingerprints(forced.stdout);
    for (const name of ["ca", ...SERVER_NAMES]) expect(after[name]).not.toBe(before[name]);
  });

  it("init replaces only what is broken, and a new CA re-issues every server certificate", async () => {
    const dir = join(work, "repair");
    const first = await run(["certs", "init", "--dir", dir, "--days", "10"], work);
    expect(first.code).toBe(0);
    const days = (Date.parse(leafOf(join(dir, "server-p256.pem")).validTo) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(9.99);
    expect(days).toBeLessThanOrEqual(10);

    writeFileSync(join(dir, "server-rsa.pem"), "garbage\n");
    rmSync(join(dir, "server-p384.key"));
    chmodSync(join(dir, "server-p256.key"), 0o644);
    const repaired = await run(["certs", "init", "--dir", dir], work);
    expect(repaired.code).toBe(0);
    expect(actions(repaired.stdout)).toEqual({ ca: "kept", "server-p256": "kept", "server-p384": "replaced", "server-rsa": "replaced" });
    expect(repaired.stdout).toMatch(/^replaced server-p384 .* reason=".*server-p384\.key is missing"$/m);
    expect(repaired.stderr).toMatch(/^note: restricted .*server-p256\.key to mode 0600\n$/);
    expect(statSync(join(dir, "server-p256.key")).mode & 0o777).toBe(0o600);

    rmSync(join(dir, "ca.key"));
    const newCa = await run(["certs", "init", "--dir", dir], work);
    expect(newCa.code).toBe(0);
    expect(actions(newCa.stdout)).toEqual({ ca: "replaced", "server-p256": "replaced", "server-p384": "replaced", "server-rsa": "replaced" });
    expect(newCa.stdout).toMatch(/^replaced server-p256 .* reason="the file is not the certificate followed by the current CA"$/m);
  });

  it("init --json prints paths and fingerprints", async () => {
    const dir = join(work, "json");
    const r = await run(["certs", "init", "--dir", dir, "--json"], work);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as {
      dir: string;
      certificates: Record<
        string,
        { cert: string; key: string; sha256: string; sha256Colon: string; action: string; kind: string; notAfter: string }
      >;
    };
    expect(out.dir).toBe(dir);
    expect(Object.keys(out.certificates)).toEqual(["ca", ...SERVER_NAMES]);
    for (const [name, c] of Object.entries(out.certificates)) {
      expect(c.cert).toBe(join(dir, `${name}.pem`));
      expect(c.key).toBe(join(dir, `${name}.key`));
      expect(c.action).toBe("created");
      expect(c.sha256Colon).toBe(leafOf(c.cert).fingerprint256);
      expect(c.sha256).toBe(c.sha256Colon.replaceAll(":", "").toLowerCase());
      expect(c.notAfter).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    }
    expect(out.certificates["server-rsa"]?.kind).toBe("rsa2048");
  });

  it("device issues a client certificate that chains to the CA", async () => {
    const dir = join(work, "device");
    expect((await run(["certs", "init", "--dir", dir], work)).code).toBe(0);
    const r = await run(["certs", "device", "sensor-17", "--dir", dir, "--curve", "p384", "--days", "30"], work);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const certPath = join(dir, "device-sensor-17.pem");
    const keyPath = join(dir, "device-sensor-17.key");
    const leaf = leafOf(certPath);
    const ca = leafOf(join(dir, "ca.pem"));
    expect(leaf.subject).toBe("CN=sensor-17");
    expect(leaf.subjectAltName).toBe("URI:urn:dtlspush:device:sensor-17");
    expect(leaf.keyUsage).toEqual(["1.3.6.1.5.5.7.3.2"]);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe("secp384r1");
    expect(leaf.verify(ca.publicKey)).toBe(true);
    expect(leaf.checkPrivateKey(createPrivateKey(readFileSync(keyPath)))).toBe(true);
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    const hex = leaf.fingerprint256.replaceAll(":", "").toLowerCase();
    expect(r.stdout).toBe(
      `created device sensor-17 cert=${certPath} key=${keyPath} kind=p384 expires=${r.stdout.match(/expires=(\S+)/)?.[1] ?? "?"}\n` +
        "uri=urn:dtlspush:device:sensor-17\n" +
        `sha256=${hex}\n` +
        `sha256-colon=${leaf.fingerprint256}\n`,
    );
    if (HAVE_OPENSSL) {
      const v = spawnSync("openssl", ["verify", "-purpose", "sslclient", "-CAfile", join(dir, "ca.pem"), certPath], { encoding: "utf8" });
      expect(v.stdout).toBe(`${certPath}: OK\n`);
      expect(v.status).toBe(0);
    }

    // Again: refused without --force, replaced with it.
    const again = await run(["certs", "device", "sensor-17", "--dir", dir], work);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(`dtlspush: error: ${certPath} already exists; use --force to issue a new certificate for sensor-17\n`);
    const forced = await run(["certs", "device", "sensor-17", "--dir", dir, "--force", "--json"], work);
    expect(forced.code).toBe(0);
    const json = JSON.parse(forced.stdout) as { sha256: string; sha256Colon: string; cert: string; key: string; uri: string; kind: string };
    expect(json.sha256).not.toBe(hex);
    expect(json.sha256Colon).toBe(leafOf(certPath).fingerprint256);
    expect(json).toMatchObject({ cert: certPath, key: keyPath, uri: "urn:dtlspush:device:sensor-17", kind: "p256" });
  });

  it("device --out writes elsewhere, relative to the working directory", async () => {
    const dir = join(work, "out-ca");
    expect((await run(["certs", "init", "--dir", dir], work)).code).toBe(0);
    const r = await run(["certs", "device", "d1", "--dir", dir, "--out", "issued/devices"], work);
    expect(r.code).toBe(0);
    expect(readdirSync(join(work, "issued", "devices")).sort()).toEqual(["device-d1.key", "device-d1.pem"]);
    expect(r.stdout).toMatch(/^created device d1 cert=issued\/devices\/device-d1\.pem key=issued\/devices\/device-d1\.key /);
  });

  it("device without a CA fails with one line and exit 1", async () => {
    const r = await run(["certs", "device", "dev-1", "--dir", join(work, "empty")], work);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(
      `dtlspush: error: no CA in ${join(work, "empty")} (${join(work, "empty", "ca.pem")} is missing); run 'dtlspush certs init' first\n`,
    );
    expect(existsSync(join(work, "empty"))).toBe(false);
  });

  it("device with a broken CA fails with one line and exit 1", async () => {
    const dir = join(work, "broken");
    expect((await run(["certs", "init", "--dir", dir], work)).code).toBe(0);
    writeFileSync(join(dir, "ca.key"), readFileSync(join(dir, "server-p256.key")));
    const r = await run(["certs", "device", "dev-1", "--dir", dir], work);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `dtlspush: error: cannot use the CA in ${dir}: the CA private key does not belong to the CA certificate; run 'dtlspush certs init' to replace it\n`,
    );
  });

  it.each([
    [["certs", "device", "bad id"], `dtlspush: error: invalid device id "bad id": use 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'\n`],
    [["certs", "device"], "dtlspush: error: missing ID (see 'dtlspush certs device --help')\n"],
    [["certs", "device", "a", "--curve", "rsa"], "dtlspush: error: --curve: 'rsa' is not one of p256, p384\n"],
    [["certs", "init", "--days", "0"], "dtlspush: error: --days: 0 is out of range (1-36500)\n"],
    [["certs"], "dtlspush: error: missing subcommand for 'dtlspush certs' (one of: init, device)\n"],
  ])("%j is a usage error: exit 2, one line", async (args, expected) => {
    const r = await run(args, work);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(expected);
    expect(r.stdout).toBe("");
  });
});
