/**
 * End to end: `dtls serve --cert/--key` and `dtls connect --ca/--fingerprint`
 * through bin/dtlspush.js (needs `npm run build`), with certificates made by
 * `dtlspush certs init` in a temporary directory; plus openssl s_client
 * against the server when openssl is on PATH.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BIN, collect, HAVE_ENGINE, HAVE_OPENSSL, killChildren, ROOT, run, start, waitFor, type Result, type Server } from "./cli-process.ts";

afterEach(killChildren);

describe.skipIf(!HAVE_ENGINE)("dtlspush dtls serve/connect with certificates", () => {
  let work: string;
  let dir: string;
  let otherDir: string;
  /** SHA-256 fingerprints (lowercase hex) by name, from `certs init --json`. */
  let fingerprints: Record<string, { sha256: string; sha256Colon: string }>;

  beforeAll(async () => {
    if (!existsSync(join(ROOT, "dist", "cli", "main.js"))) {
      throw new Error("dist/cli/main.js is missing: run 'npm run build' before these tests");
    }
    work = mkdtempSync(join(tmpdir(), "dtlspush-dtls-certs-"));
    dir = join(work, "certs");
    otherDir = join(work, "other");
    const init = await run(["certs", "init", "--dir", dir, "--json"]);
    expect(init.stderr).toBe("");
    expect(init.code).toBe(0);
    fingerprints = (JSON.parse(init.stdout) as { certificates: typeof fingerprints }).certificates;
    expect((await run(["certs", "init", "--dir", otherDir])).code).toBe(0);
  }, 60_000);

  afterAll(() => {
    rmSync(work, { recursive: true, force: true });
  });

  async function startServer(extra: readonly string[] = []): Promise<Server> {
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

  const serverCertLine = (): RegExp =>
    new RegExp(`^server-cert subject="CN=localhost, O=dtlspush" sha256=${fingerprints["server-p256"]?.sha256 ?? "?"}\\n`);

  it("connect --ca verifies the server, prints its certificate and gets the echo", async () => {
    const server = await startServer();
    const r = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--ca", join(dir, "ca.pem"), "--timeout", "10000"], "hello\nworld\n");
    expect(r.stderr).toMatch(serverCertLine());
    expect(r.stderr).toMatch(/\nconnected suite=TLS_ECDHE_ECDSA_WITH_[A-Z0-9_]+ ems=yes peer=127\.0\.0\.1:\d+\n$/);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("hello\nworld\n");

    await waitFor(server.out.stdout, server.child, /^closed peer=127\.0\.0\.1:\d+ /m);
    const s = await stop(server);
    expect(s.stdout).toMatch(/^established peer=127\.0\.0\.1:\d+ identity="" suite=TLS_ECDHE_ECDSA_WITH_[A-Z0-9_]+ ems=yes peer-cert=none$/m);
    expect(s.stderr).toBe("");
    expect(s.code).toBe(0);
  });

  it("connect --fingerprint (with colons, as openssl prints it) pins the server certificate", async () => {
    const server = await startServer();
    const pin = fingerprints["server-p256"]?.sha256Colon ?? "";
    expect(pin).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    if (HAVE_OPENSSL) {
      const x = spawnSync("openssl", ["x509", "-in", join(dir, "server-p256.pem"), "-noout", "-fingerprint", "-sha256"], { encoding: "utf8" });
      expect(x.stdout.trim()).toMatch(new RegExp(`=${pin}$`));
    }
    const r = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--fingerprint", pin], "pinned\n");
    expect(r.stderr).toMatch(serverCertLine());
    expect(r.stderr).toMatch(/\nconnected suite=TLS_ECDHE_ECDSA_/);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("pinned\n");
    expect((await stop(server)).code).toBe(0);
  });

  it("connect --fingerprint of another certificate fails with bad_certificate", async () => {
    const server = await startServer();
    const r = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--fingerprint", fingerprints["server-p384"]?.sha256 ?? ""], "x\n");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^dtlspush: error: handshake with 127\.0\.0\.1:\d+ failed: .*not the pinned one.* \(bad_certificate\)\n$/);
    await stop(server);
  });

  it("connect --servername wrong.example fails with bad_certificate, exit 1, one line", async () => {
    const server = await startServer();
    const r = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--ca", join(dir, "ca.pem"), "--servername", "wrong.example"], "x\n");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      /^dtlspush: error: handshake with 127\.0\.0\.1:\d+ failed: server certificate CN=localhost, O=dtlspush is not issued for wrong\.example .*\(bad_certificate\)\n$/,
    );
    await waitFor(server.out.stdout, server.child, /^handshake-failed peer=127\.0\.0\.1:\d+ code=alert_received alert=42 /m);
    expect((await stop(server)).code).toBe(0);
  });

  it("connect --servername localhost matches", async () => {
    const server = await startServer();
    const r = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--ca", join(dir, "ca.pem"), "--servername", "localhost"], "ok\n");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("ok\n");
    await stop(server);
  });

  it("connect --ca with a CA that did not sign the server certificate fails with unknown_ca", async () => {
    const server = await startServer();
    const r = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--ca", join(otherDir, "ca.pem")], "x\n");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      /^dtlspush: error: handshake with 127\.0\.0\.1:\d+ failed: .*(?:does not lead to a trusted CA|was not signed by the configured CA).* \(unknown_ca\)\n$/,
    );
    await waitFor(server.out.stdout, server.child, /^handshake-failed peer=127\.0\.0\.1:\d+ code=alert_received alert=48 /m);
    expect((await stop(server)).code).toBe(0);
  });

  it("serves PSK and certificate clients at once", async () => {
    const server = await startServer(["--psk", "dev1:0102"]);
    const psk = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--psk", "dev1:0102"], "p\n");
    expect(psk.stderr).toMatch(/^connected suite=TLS_(ECDHE_)?PSK_WITH_[A-Z0-9_]+ ems=yes peer=127\.0\.0\.1:\d+\n$/);
    expect(psk.stdout).toBe("p\n");
    const cert = await run(["dtls", "connect", `127.0.0.1:${server.port}`, "--ca", join(dir, "ca.pem")], "c\n");
    expect(cert.stdout).toBe("c\n");
    await waitFor(server.out.stdout, server.child, /(^closed .*\n[^]*){2}/m);
    const s = await stop(server);
    // PSK sessions keep the established line as it was; certificate sessions add peer-cert=none.
    expect(s.stdout).toMatch(/^established peer=127\.0\.0\.1:\d+ identity=dev1 suite=TLS_(ECDHE_)?PSK_WITH_[A-Z0-9_]+ ems=yes$/m);
    expect(s.stdout).toMatch(/^established peer=127\.0\.0\.1:\d+ identity="" suite=TLS_ECDHE_ECDSA_WITH_[A-Z0-9_]+ ems=yes peer-cert=none$/m);
  });

  it.each([
    [["--cert", "a.pem"], "dtlspush: error: --cert a.pem has no --key (give --cert FILE --key FILE in pairs)\n"],
    [[], "dtlspush: error: missing --psk ID:HEXKEY or --cert FILE --key FILE (see 'dtlspush dtls serve --help')\n"],
  ])("serve %j is a usage error: exit 2, one line", async (extra, expected) => {
    const r = await run(["dtls", "serve", "--listen", "127.0.0.1:0", ...extra]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(expected);
  });

  it("serve with a key that does not match its certificate fails at start: exit 1, one line", async () => {
    const cert = join(dir, "server-p256.pem");
    const key = join(dir, "server-p384.key");
    const r = await run(["dtls", "serve", "--listen", "127.0.0.1:0", "--cert", cert, "--key", key]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(
      `dtlspush: error: --cert ${cert} --key ${key}: the private key does not belong to the certificate CN=localhost, O=dtlspush (bad_option)\n`,
    );
  });

  it("serve with an unreadable file names the flag and the file: exit 1", async () => {
    const missing = join(work, "missing.pem");
    const r = await run(["dtls", "serve", "--listen", "127.0.0.1:0", "--cert", missing, "--key", join(dir, "server-p256.key")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`dtlspush: error: --cert ${missing}: cannot read the file: no such file\n`);
    const c = await run(["dtls", "connect", "127.0.0.1:9", "--ca", missing]);
    expect(c.code).toBe(1);
    expect(c.stderr).toBe(`dtlspush: error: --ca ${missing}: cannot read the file: no such file\n`);
  });

  it.each([
    [["--fingerprint", "abcd"], "dtlspush: error: --fingerprint: a SHA-256 fingerprint has 64 hex digits, got 4\n"],
    [[], "dtlspush: error: missing --psk ID:HEXKEY, --ca FILE or --fingerprint SHA256HEX (see 'dtlspush dtls connect --help')\n"],
  ])("connect %j is a usage error: exit 2, one line", async (extra, expected) => {
    const r = await run(["dtls", "connect", "127.0.0.1:9", ...extra]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(expected);
  });

  it.each([
    [
      ["dtls", "serve", "--help"],
      [
        /^ {7}dtlspush dtls serve --listen HOST:PORT --cert FILE --key FILE/m,
        /--legacy-sha1-signatures/,
        /@nodertc\/dtls/,
        /--cert certs\/server-p256\.pem/,
      ],
    ],
    [
      ["dtls", "connect", "--help"],
      [/--ca FILE/, /--fingerprint SHA256HEX/, /--servername NAME/, /--ca certs\/ca\.pem/],
    ],
  ])("%j documents the certificate options", async (args, patterns) => {
    const r = await run(args);
    expect(r.code).toBe(0);
    for (const p of patterns) expect(r.stdout).toMatch(p);
  });

  it.skipIf(!HAVE_OPENSSL)("openssl s_client verifies the server's chain against the CA", async () => {
    const server = await startServer();
    const client = start("openssl", [
      "s_client",
      "-dtls1_2",
      "-connect",
      `127.0.0.1:${server.port}`,
      "-CAfile",
      join(dir, "ca.pem"),
      "-verify_return_error",
      "-servername",
      "localhost",
    ]);
    const out = collect(client);
    client.stdin.end("");
    const r = await out.done;
    expect(r.stdout).toMatch(/Verify return code: 0 \(ok\)/);
    expect(r.stdout).toMatch(/Cipher is ECDHE-ECDSA-/);
    await waitFor(server.out.stdout, server.child, /^established peer=127\.0\.0\.1:\d+ identity="" suite=TLS_ECDHE_ECDSA_/m);
    expect((await stop(server)).code).toBe(0);
  });
});
