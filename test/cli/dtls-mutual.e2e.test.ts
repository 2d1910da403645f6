/**
 * End to end: mutual X.509 through bin/dtlspush.js (needs `npm run build`):
 * `dtls serve --client-auth request|require --ca --client-identity` and
 * `dtls connect --cert/--key`, with certificates made by `dtlspush certs init`
 * and `certs device` in a temporary directory; plus openssl s_client with a
 * device certificate when openssl is on PATH.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BIN, collect, HAVE_ENGINE, HAVE_OPENSSL, killChildren, ROOT, run, start, waitFor, type Result, type Server } from "./cli-process.ts";

afterEach(killChildren);

describe.skipIf(!HAVE_ENGINE)("dtlspush dtls serve/connect with client certificates", () => {
  let work: string;
  let dir: string;
  let otherDir: string;
  /** `certs device sensor-1 --json` output. */
  let device: { id: string; uri: string; cert: string; key: string; sha256: string };
  /** A device certificate issued by another CA (`certs init` in otherDir). */
  let foreign: { cert: string; key: string };

  beforeAll(async () => {
    if (!existsSync(join(ROOT, "dist", "cli", "main.js"))) {
      throw new Error("dist/cli/main.js is missing: run 'npm run build' before these tests");
    }
    work = mkdtempSync(join(tmpdir(), "dtlspush-dtls-mutual-"));
    dir = join(work, "certs");
    otherDir = join(work, "other");
    expect((await run(["certs", "init", "--dir", dir])).code).toBe(0);
    const issued = await run(["certs", "device", "sensor-1", "--dir", dir, "--json"]);
    expect(issued.stderr).toBe("");
    expect(issued.code).toBe(0);
    device = JSON.parse(issued.stdout) as typeof device;
    expect(device.cert).toBe(join(dir, "device-sensor-1.pem"));
    expect(device.key).toBe(join(dir, "device-sensor-1.key"));
    expect(device.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect((await run(["certs", "init", "--dir", otherDir])).code).toBe(0);
    const other = await run(["certs", "device", "x", "--dir", otherDir, "--out", join(work, "foreign"), "--json"]);
    expect(other.code).toBe(0);
    foreign = JSON.parse(other.stdout) as typeof foreign;
  }, 60_000);

  afterAll(() => {
    rmSync(work, { recursive: true, force: true });
  });

  async function startServer(extra: readonly string[] = ["--client-auth", "require", "--ca", join(dir, "ca.pem")]): Promise<Server> {
    const child = start(process.execPath, [
      BIN,
      "dtls",
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--cert",
      join(dir, "server-p256.pem"),
      "--key",
      join(dir, "server-p256.key"),
      "--echo",
      ...extra,
    ]);
    const out = collect(child);
    const m = await waitFor(out.stdout, child, /^listening on 127\.0\.0\.1:(\d+)$/m);
    return { child, out, port: Number(m[1]) };
  }

  async function stop(server: Server): Promise<Result> {
    server.child.kill("SIGTERM");
    return await server.out.done;
  }

  function connect(port: number, extra: readonly string[], input: string): Promise<Result> {
    return run(["dtls", "connect", `127.0.0.1:${port}`, "--ca", join(dir, "ca.pem"), "--timeout", "10000", ...extra], input);
  }

  const withDevice = (): string[] => ["--cert", device.cert, "--key", device.key];

  it("--client-auth require: the device certificate names the session (identity=CN) and the echo works", async () => {
    const server = await startServer();
    const r = await connect(server.port, withDevice(), "hello\nworld\n");
    expect(r.stderr).toMatch(
      /^server-cert subject="CN=localhost, O=dtlspush" sha256=[0-9a-f]{64}\nconnected suite=TLS_ECDHE_ECDSA_WITH_[A-Z0-9_]+ ems=yes peer=127\.0\.0\.1:\d+\n$/,
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("hello\nworld\n");

    await waitFor(server.out.stdout, server.child, /^closed peer=127\.0\.0\.1:\d+ identity=sensor-1 /m);
    const s = await stop(server);
    expect(s.stdout).toMatch(
      new RegExp(
        `^established peer=127\\.0\\.0\\.1:\\d+ identity=sensor-1 suite=TLS_ECDHE_ECDSA_WITH_[A-Z0-9_]+ ems=yes peer-subject="CN=sensor-1" peer-sha256=${device.sha256}$`,
        "m",
      ),
    );
    expect(s.stdout).not.toMatch(/handshake-failed/);
    expect(s.stderr).toBe("");
    expect(s.code).toBe(0);
  });

  it("--client-auth require: a client without --cert fails (exit 1) and the server logs handshake_failure", async () => {
    const server = await startServer();
    const r = await connect(server.port, [], "x\n");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^dtlspush: error: handshake with 127\.0\.0\.1:\d+ failed: .*handshake_failure \(40\) \(alert_received\)\n$/);
    await waitFor(
      server.out.stdout,
      server.child,
      /^handshake-failed peer=127\.0\.0\.1:\d+ code=handshake_failure alert=40 message="a client certificate is required[^"]*"$/m,
    );
    const s = await stop(server);
    expect(s.stdout).not.toMatch(/^established /m);
    expect(s.code).toBe(0);
  });

  it("--client-identity san-uri takes the identity from the certificate's SAN URI", async () => {
    const server = await startServer(["--client-auth", "require", "--ca", join(dir, "ca.pem"), "--client-identity", "san-uri"]);
    const r = await connect(server.port, withDevice(), "u\n");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("u\n");
    expect(device.uri).toBe("urn:dtlspush:device:sensor-1");
    const m = await waitFor(server.out.stdout, server.child, /^established .*$/m);
    expect(m[0]).toMatch(/ identity=urn:dtlspush:device:sensor-1 /);
    expect(m[0]).toContain(` peer-sha256=${device.sha256}`);
    expect((await stop(server)).code).toBe(0);
  });

  it("--client-identity fingerprint takes the identity from the certificate's SHA-256", async () => {
    const server = await startServer(["--client-auth", "require", "--ca", join(dir, "ca.pem"), "--client-identity", "fingerprint"]);
    const r = await connect(server.port, withDevice(), "f\n");
    expect(r.code).toBe(0);
    const m = await waitFor(server.out.stdout, server.child, /^established .*$/m);
    expect(m[0]).toContain(` identity=${device.sha256} `);
    expect((await stop(server)).code).toBe(0);
  });

  it("a device certificate from another CA is refused with unknown_ca", async () => {
    const server = await startServer();
    const r = await connect(server.port, ["--cert", foreign.cert, "--key", foreign.key], "x\n");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^dtlspush: error: handshake with 127\.0\.0\.1:\d+ failed: .*unknown_ca \(48\) \(alert_received\)\n$/);
    await waitFor(server.out.stdout, server.child, /^handshake-failed peer=127\.0\.0\.1:\d+ code=unknown_ca alert=48 /m);
    expect((await stop(server)).code).toBe(0);
  });

  it("a server certificate (serverAuth only) as a client certificate is refused with unsupported_certificate", async () => {
    const server = await startServer();
    const r = await connect(server.port, ["--cert", join(dir, "server-p384.pem"), "--key", join(dir, "server-p384.key")], "x\n");
    expect(r.code).toBe(1);
    await waitFor(server.out.stdout, server.child, /^handshake-failed peer=127\.0\.0\.1:\d+ code=unsupported_certificate alert=43 /m);
    expect((await stop(server)).code).toBe(0);
  });

  it("--client-auth request: clients with and without a certificate are both served", async () => {
    const server = await startServer(["--client-auth", "request", "--ca", join(dir, "ca.pem")]);
    const without = await connect(server.port, [], "a\n");
    expect(without.code).toBe(0);
    expect(without.stdout).toBe("a\n");
    const withCert = await connect(server.port, withDevice(), "b\n");
    expect(withCert.code).toBe(0);
    expect(withCert.stdout).toBe("b\n");
    await waitFor(server.out.stdout, server.child, /(^closed .*\n[^]*){2}/m);
    const s = await stop(server);
    expect(s.stdout).toMatch(/^established peer=127\.0\.0\.1:\d+ identity="" suite=TLS_ECDHE_ECDSA_WITH_[A-Z0-9_]+ ems=yes peer-cert=none$/m);
    expect(s.stdout).toMatch(new RegExp(`^established peer=127\\.0\\.0\\.1:\\d+ identity=sensor-1 .* peer-sha256=${device.sha256}$`, "m"));
  });

  it.each([
    [
      ["--cert", "s.pem", "--key", "s.key", "--client-auth", "request"],
      "dtlspush: error: --client-auth request: needs --ca FILE (the CAs client certificates must lead to)\n",
    ],
    [
      ["--cert", "s.pem", "--key", "s.key", "--client-auth", "require"],
      "dtlspush: error: --client-auth require: needs --ca FILE (the CAs client certificates must lead to)\n",
    ],
    [
      ["--cert", "s.pem", "--key", "s.key", "--client-auth", "maybe", "--ca", "ca.pem"],
      "dtlspush: error: --client-auth: 'maybe' is not one of none, request, require\n",
    ],
    [
      ["--cert", "s.pem", "--key", "s.key", "--client-auth", "require", "--ca", "ca.pem", "--client-identity", "email"],
      "dtlspush: error: --client-identity: 'email' is not one of cn, san-uri, fingerprint\n",
    ],
    [
      ["--psk", "a:01", "--client-auth", "require", "--ca", "ca.pem"],
      "dtlspush: error: --client-auth: only with --cert/--key (client certificates are asked for in the certificate suites)\n",
    ],
    [
      ["--psk", "a:01", "--ca", "ca.pem"],
      "dtlspush: error: --ca: only with --cert/--key (client certificates are asked for in the certificate suites)\n",
    ],
    [
      ["--cert", "s.pem", "--key", "s.key", "--ca", "ca.pem"],
      "dtlspush: error: --ca: only with --client-auth request or require (client certificates are not asked for)\n",
    ],
  ])("serve %j is a usage error: exit 2, one line", async (extra, expected) => {
    const r = await run(["dtls", "serve", "--listen", "127.0.0.1:0", ...extra]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(expected);
  });

  it.each([
    [["--ca", "ca.pem", "--cert", "d.pem"], "dtlspush: error: --cert d.pem has no --key (give --cert FILE --key FILE in pairs)\n"],
    [["--ca", "ca.pem", "--key", "d.key"], "dtlspush: error: --key d.key has no --cert (give --cert FILE --key FILE in pairs)\n"],
    [
      ["--psk", "a:01", "--cert", "d.pem", "--key", "d.key"],
      "dtlspush: error: --cert/--key: only with --ca or --fingerprint (a client certificate is sent in the certificate suites)\n",
    ],
  ])("connect %j is a usage error: exit 2, one line", async (extra, expected) => {
    const r = await run(["dtls", "connect", "127.0.0.1:9", ...extra]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(expected);
  });

  it("unreadable or wrong files name the flag and the file: exit 1, one line", async () => {
    const missing = join(work, "missing.pem");
    const ca = join(dir, "ca.pem");
    const serverCa = await run([
      "dtls",
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--cert",
      join(dir, "server-p256.pem"),
      "--key",
      join(dir, "server-p256.key"),
      "--client-auth",
      "require",
      "--ca",
      missing,
    ]);
    expect(serverCa.code).toBe(1);
    expect(serverCa.stderr).toBe(`dtlspush: error: --ca ${missing}: cannot read the file: no such file\n`);

    const serverBadCa = await run([
      "dtls",
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--cert",
      join(dir, "server-p256.pem"),
      "--key",
      join(dir, "server-p256.key"),
      "--client-auth",
      "require",
      "--ca",
      device.key,
    ]);
    expect(serverBadCa.code).toBe(1);
    expect(serverBadCa.stderr).toBe(`dtlspush: error: --ca ${device.key}: holds no PEM certificate (bad_option)\n`);

    const cert = await run(["dtls", "connect", "127.0.0.1:9", "--ca", ca, "--cert", missing, "--key", device.key]);
    expect(cert.code).toBe(1);
    expect(cert.stderr).toBe(`dtlspush: error: --cert ${missing}: cannot read the file: no such file\n`);
    const key = await run(["dtls", "connect", "127.0.0.1:9", "--ca", ca, "--cert", device.cert, "--key", missing]);
    expect(key.code).toBe(1);
    expect(key.stderr).toBe(`dtlspush: error: --key ${missing}: cannot read the file: no such file\n`);
    const notKey = await run(["dtls", "connect", "127.0.0.1:9", "--ca", ca, "--cert", device.cert, "--key", device.cert]);
    expect(notKey.code).toBe(1);
    expect(notKey.stderr).toBe(`dtlspush: error: --key ${device.cert}: holds no PEM private key\n`);
    const mismatch = await run(["dtls", "connect", "127.0.0.1:9", "--ca", ca, "--cert", device.cert, "--key", foreign.key]);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toBe(
      `dtlspush: error: --cert ${device.cert} --key ${foreign.key}: the private key does not belong to the certificate CN=sensor-1 (bad_option)\n`,
    );
  });

  it.each([
    [
      ["dtls", "serve", "--help"],
      [/--client-auth MODE/, /--ca FILE/, /--client-identity SOURCE/, /san-uri/],
    ],
    [
      ["dtls", "connect", "--help"],
      [/--cert FILE/, /--key FILE/],
    ],
  ])("%j documents the client-certificate options and the mutual-auth example", async (args, patterns) => {
    const r = await run(args);
    expect(r.code).toBe(0);
    for (const p of patterns) expect(r.stdout).toMatch(p);
    expect(r.stdout).toContain("dtlspush certs device sensor-1 --dir certs");
    expect(r.stdout).toMatch(/--ca certs\/ca\.pem --client-auth require --echo/);
    expect(r.stdout).toMatch(/--cert certs\/device-sensor-1\.pem --key certs\/device-sensor-1\.key/);
  });

  it.skipIf(!HAVE_OPENSSL)("openssl s_client with the device certificate is accepted and named sensor-1", async () => {
    const server = await startServer();
    const client = start("openssl", [
      "s_client",
      "-dtls1_2",
      "-connect",
      `127.0.0.1:${server.port}`,
      "-CAfile",
      join(dir, "ca.pem"),
      "-cert",
      device.cert,
      "-key",
      device.key,
    ]);
    const out = collect(client);
    client.stdin.end("");
    const r = await out.done;
    expect(r.stdout).toMatch(/Cipher is ECDHE-ECDSA-/);
    const m = await waitFor(server.out.stdout, server.child, /^established .*$/m);
    expect(m[0]).toMatch(new RegExp(` identity=sensor-1 .* peer-subject="CN=sensor-1" peer-sha256=${device.sha256}$`));
    expect((await stop(server)).code).toBe(0);
  });
});
