/**
 * Interop of the certificate suites (ECDHE_ECDSA, ECDHE_RSA) in both roles,
 * with certificates made by the project's own pki layer: our server against
 * openssl s_client (verifying our chain against the CA), gnutls-cli (x509) and
 * @nodertc/dtls (P-384 chain, SHA-1 signature behind the legacy option); our
 * client against openssl s_server and gnutls-serv. Each case asserts the suite
 * and data both ways.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connect, listen, type DtlsConnection, type DtlsServer, type SuiteName } from "../../src/dtls/index.ts";
import { createCertificateAuthority, issueDeviceCertificate, issueServerCertificate, type IssuedCertificate } from "../../src/pki/index.ts";
import { closeAllClients, connectNodertc, connectWerift } from "./clients.ts";
import { freeUdpPort, killAllPeers, peerAvailable, spawnPeer, startGnutlsServer } from "./peers.ts";

const OPENSSL = peerAvailable("openssl");
const GNUTLS = peerAvailable("gnutls");
const T = 20_000;
const WAIT = 8_000;

let dir: string;
let caFile: string;
let caPem: string;
const files: Record<string, { cert: string; key: string; issued: IssuedCertificate }> = {};
let servers: DtlsServer[] = [];
let conns: DtlsConnection[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dtlspush-interop-certs-"));
  const { ca } = await createCertificateAuthority();
  caPem = ca.certPem;
  caFile = join(dir, "ca.pem");
  writeFileSync(caFile, ca.certPem);
  const { ca: other } = await createCertificateAuthority({ commonName: "another CA" });
  const devices: [string, Promise<IssuedCertificate>][] = [
    ["device-p256", issueDeviceCertificate(ca, { id: "device-1" })],
    ["device-p384", issueDeviceCertificate(ca, { id: "device-2", curve: "p384" })],
    ["device-foreign", issueDeviceCertificate(other, { id: "intruder" })],
    ["device-expired", issueDeviceCertificate(ca, { id: "old-device", days: 1, now: new Date(Date.now() - 10 * 86_400_000) })],
  ];
  for (const [name, pending] of devices) {
    const issued = await pending;
    const cert = join(dir, `${name}.pem`);
    const key = join(dir, `${name}.key`);
    writeFileSync(cert, issued.chainPem);
    writeFileSync(key, issued.keyPem, { mode: 0o600 });
    files[name] = { cert, key, issued };
  }
  for (const kind of ["p256", "p384", "rsa2048"] as const) {
    const issued = await issueServerCertificate(ca, { kind });
    const cert = join(dir, `${kind}.pem`);
    const key = join(dir, `${kind}.key`);
    writeFileSync(cert, issued.chainPem);
    writeFileSync(key, issued.keyPem, { mode: 0o600 });
    files[kind] = { cert, key, issued };
  }
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

afterEach(async () => {
  for (const c of conns) c.close();
  conns = [];
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  closeAllClients();
  await killAllPeers();
});

const pair = (kind: string) => ({ cert: files[kind]!.issued.chainPem, key: files[kind]!.issued.keyPem });

async function certServer(
  suites: SuiteName[],
  kinds: string[],
  extra: { legacySha1Signatures?: boolean; clientAuth?: "request" | "require"; clientCa?: string } = {},
  failures?: string[],
): Promise<{ port: number; session: Promise<DtlsConnection> }> {
  const s = await listen({ host: "127.0.0.1", port: 0, certificates: kinds.map(pair), suites, ...extra });
  servers.push(s);
  s.on("handshakeError", (e) => failures?.push(e.error.code));
  const session = new Promise<DtlsConnection>((resolve) =>
    s.once("session", (c) => {
      c.on("data", (d) => c.send(Buffer.concat([Buffer.from("dtlspush:"), d])));
      resolve(c);
    }),
  );
  return { port: s.address().port, session };
}

function nextData(c: DtlsConnection): Promise<string> {
  return new Promise((resolve) => c.once("data", (d) => resolve(d.toString())));
}

describe.skipIf(!OPENSSL)("certificates: our server <- openssl s_client (verifying against the CA)", () => {
  it.each([
    ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256", "p256"],
    ["TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", "ECDHE-ECDSA-AES128-CCM8", "p256"],
    ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305", "p256"],
    ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384", "p384"],
    ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "rsa2048"],
    ["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305", "rsa2048"],
    ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "rsa2048"],
  ] as [SuiteName, string, string][])(
    "%s: chain verified by s_client, data both ways",
    async (suite, opensslName, kind) => {
      const srv = await certServer([suite], [kind]);
      const cli = spawnPeer("openssl", [
        "s_client",
        "-dtls1_2",
        "-connect",
        `127.0.0.1:${srv.port}`,
        "-CAfile",
        caFile,
        "-verify_return_error",
        "-verify_ip",
        "127.0.0.1",
        "-nocommands",
        "-noservername",
        "-cipher",
        opensslName,
      ]);
      const session = await srv.session;
      expect(session.info.suite).toBe(suite);
      await cli.waitFor(`Cipher is ${opensslName}`, WAIT);
      await cli.waitFor("Verify return code: 0 (ok)", WAIT);
      const got = nextData(session);
      cli.write("hello-cert\n");
      expect(await got).toBe("hello-cert\n");
      await cli.waitFor("dtlspush:hello-cert", WAIT);
      cli.endInput();
      expect((await cli.waitExit(WAIT)).code).toBe(0);
    },
    T,
  );

  it(
    "with all three chains loaded, the server picks P-384 for a client limited to P-384",
    async () => {
      const srv = await certServer(["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"], ["p256", "p384", "rsa2048"]);
      const cli = spawnPeer("openssl", [
        "s_client",
        "-dtls1_2",
        "-connect",
        `127.0.0.1:${srv.port}`,
        "-CAfile",
        caFile,
        "-verify_return_error",
        "-nocommands",
        "-noservername",
        "-curves",
        "P-384",
        "-sigalgs",
        "ECDSA+SHA384",
      ]);
      await srv.session;
      await cli.waitFor("Peer signing digest: SHA384", WAIT);
      await cli.waitFor("Verify return code: 0 (ok)", WAIT);
      cli.endInput();
      await cli.waitExit(WAIT);
    },
    T,
  );
});

describe.skipIf(!GNUTLS)("certificates: our server <- gnutls-cli (x509)", () => {
  it.each([
    ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "p256"],
    ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "rsa2048"],
  ] as [SuiteName, string][])(
    "%s: gnutls-cli verifies our chain, data both ways",
    async (suite, kind) => {
      const srv = await certServer([suite], [kind]);
      const cli = spawnPeer("gnutls-cli", [
        "--udp",
        "--x509cafile",
        caFile,
        "-p",
        String(srv.port),
        "--priority",
        "NORMAL:-VERS-ALL:+VERS-DTLS1.2",
        "127.0.0.1",
      ]);
      const session = await srv.session;
      expect(session.info.suite).toBe(suite);
      await cli.waitFor("Handshake was completed", WAIT);
      const got = nextData(session);
      cli.write("hello-gnutls\n");
      expect(await got).toBe("hello-gnutls\n");
      await cli.waitFor("dtlspush:hello-gnutls", WAIT);
    },
    T,
  );
});

describe("certificates: our server <- @nodertc/dtls (P-384 chain, legacy SHA-1 signature)", () => {
  it(
    "refuses without the legacy option and connects with it",
    async () => {
      const strict = await certServer(["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], ["p256", "p384"]);
      await expect(
        connectNodertc({
          port: strict.port,
          psk: { identity: "x", key: Buffer.alloc(16) },
          cipherSuites: ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
          timeoutMs: 3000,
        }),
      ).rejects.toThrow();
      const srv = await certServer(["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], ["p256", "p384"], { legacySha1Signatures: true });
      const c = await connectNodertc({
        port: srv.port,
        psk: { identity: "x", key: Buffer.alloc(16) },
        cipherSuites: ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
      });
      const session = await srv.session;
      expect(session.info.suite).toBe("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
      c.send("hello-nodertc");
      expect((await c.messages.next(WAIT)).toString()).toBe("dtlspush:hello-nodertc");
    },
    T,
  );
});

describe("certificates: our server <- werift-dtls", () => {
  it(
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 over x25519, data both ways",
    async () => {
      const srv = await certServer(["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], ["p256", "rsa2048"]);
      const c = await connectWerift(srv.port);
      try {
        const session = await srv.session;
        expect(session.info.suite).toBe("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
        expect(session.info.group).toBe("x25519");
        expect(c.suite).toBe(0xc02b);
        c.send("hello-werift");
        expect((await c.messages.next(WAIT)).toString()).toBe("dtlspush:hello-werift");
      } finally {
        await c.close();
      }
    },
    T,
  );
});

describe.skipIf(!OPENSSL)("certificates: our client -> openssl s_server", () => {
  it.each([
    ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "p256"],
    ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "rsa2048"],
  ] as [SuiteName, string][])(
    "%s: we verify its chain against the CA, data both ways",
    async (suite, kind) => {
      const port = await freeUdpPort();
      const srv = spawnPeer("openssl", [
        "s_server",
        "-dtls1_2",
        "-accept",
        `127.0.0.1:${port}`,
        "-cert",
        files[kind]!.cert,
        "-key",
        files[kind]!.key,
      ]);
      await srv.waitFor(/^ACCEPT$/m, WAIT);
      const c = await connect({ host: "127.0.0.1", port, ca: caPem, suites: [suite] });
      conns.push(c);
      expect(c.info.suite).toBe(suite);
      expect(c.info.peerCertificate?.fingerprint256).toBe(files[kind]!.issued.fingerprint.hex);
      c.send(Buffer.from("from-ours\n"));
      await srv.waitFor("from-ours", WAIT);
      const got = nextData(c);
      srv.write("from-openssl\n");
      expect(await got).toBe("from-openssl\n");
    },
    T,
  );

  it(
    "refuses a server whose chain is not from the configured CA (unknown_ca), and accepts it by pinned fingerprint",
    async () => {
      const port = await freeUdpPort();
      const srv = spawnPeer("openssl", ["s_server", "-dtls1_2", "-accept", `127.0.0.1:${port}`, "-cert", files.p256!.cert, "-key", files.p256!.key]);
      await srv.waitFor(/^ACCEPT$/m, WAIT);
      const { ca: other } = await createCertificateAuthority({ commonName: "another CA" });
      await expect(connect({ host: "127.0.0.1", port, ca: other.certPem, timeoutMs: 5000 })).rejects.toMatchObject({ code: "unknown_ca" });
      await srv.waitFor("ACCEPT", WAIT);
      const c = await connect({ host: "127.0.0.1", port, fingerprint: files.p256!.issued.fingerprint.colon });
      conns.push(c);
      expect(c.info.peerCertificate?.subject).toContain("localhost");
    },
    T,
  );
});

describe.skipIf(!GNUTLS)("certificates: our client -> gnutls-serv (x509)", () => {
  it(
    "ECDHE_ECDSA with its P-256 chain, echoed",
    async () => {
      const srv = await startGnutlsServer({
        psk: { identity: "unused", key: Buffer.alloc(16, 1) },
        priority: "NORMAL:-VERS-ALL:+VERS-DTLS1.2",
        extraArgs: ["--x509certfile", files.p256!.cert, "--x509keyfile", files.p256!.key],
      });
      const c = await connect({ host: "127.0.0.1", port: srv.port, ca: caPem, suites: ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"] });
      conns.push(c);
      expect(c.info.suite).toBe("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
      const got = nextData(c);
      c.send(Buffer.from("echo-me"));
      expect(await got).toBe("echo-me");
    },
    T,
  );
});

const ECDSA: SuiteName = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256";

describe.skipIf(!OPENSSL)("mutual X.509: our server (clientAuth require) <- openssl s_client with a device certificate", () => {
  it.each(["device-p256", "device-p384"])(
    "%s: the device is named by its CN, data both ways",
    async (name) => {
      const srv = await certServer([ECDSA], ["p256"], { clientAuth: "require", clientCa: caPem });
      const cli = spawnPeer("openssl", [
        "s_client",
        "-dtls1_2",
        "-connect",
        `127.0.0.1:${srv.port}`,
        "-CAfile",
        caFile,
        "-verify_return_error",
        "-cert",
        files[name]!.cert,
        "-key",
        files[name]!.key,
        "-nocommands",
        "-noservername",
      ]);
      const session = await srv.session;
      expect(session.info.identity).toBe(name === "device-p256" ? "device-1" : "device-2");
      expect(session.info.peerCertificate?.fingerprint256).toBe(files[name]!.issued.fingerprint.hex);
      await cli.waitFor("Verify return code: 0 (ok)", WAIT);
      const got = nextData(session);
      cli.write("hello-mutual\n");
      expect(await got).toBe("hello-mutual\n");
      await cli.waitFor("dtlspush:hello-mutual", WAIT);
    },
    T,
  );

  it.each([
    ["no certificate", "handshake_failure", []],
    ["a certificate from another CA", "unknown_ca", ["-cert", "device-foreign"]],
    ["an expired certificate", "certificate_expired", ["-cert", "device-expired"]],
  ] as [string, string, string[]][])(
    "refuses %s with %s",
    async (_what, code, certArgs) => {
      const failures: string[] = [];
      const srv = await certServer([ECDSA], ["p256"], { clientAuth: "require", clientCa: caPem }, failures);
      const args = certArgs.length === 0 ? [] : ["-cert", files[certArgs[1]!]!.cert, "-key", files[certArgs[1]!]!.key];
      const cli = spawnPeer("openssl", [
        "s_client",
        "-dtls1_2",
        "-connect",
        `127.0.0.1:${srv.port}`,
        "-CAfile",
        caFile,
        ...args,
        "-nocommands",
        "-noservername",
      ]);
      const exit = await cli.waitExit(WAIT);
      expect(exit.code).not.toBe(0);
      expect(failures).toEqual([code]);
    },
    T,
  );
});

describe.skipIf(!GNUTLS)("mutual X.509: our server <- gnutls-cli with a device certificate", () => {
  it(
    "the device is named by its CN, data both ways",
    async () => {
      const srv = await certServer([ECDSA], ["p256"], { clientAuth: "require", clientCa: caPem });
      const cli = spawnPeer("gnutls-cli", [
        "--udp",
        "--x509cafile",
        caFile,
        "--x509certfile",
        files["device-p256"]!.cert,
        "--x509keyfile",
        files["device-p256"]!.key,
        "-p",
        String(srv.port),
        "--priority",
        "NORMAL:-VERS-ALL:+VERS-DTLS1.2",
        "127.0.0.1",
      ]);
      const session = await srv.session;
      expect(session.info.identity).toBe("device-1");
      await cli.waitFor("Handshake was completed", WAIT);
      const got = nextData(session);
      cli.write("hello-gnutls-mutual\n");
      expect(await got).toBe("hello-gnutls-mutual\n");
    },
    T,
  );
});

describe("mutual X.509: our server <- @nodertc/dtls with a P-384 device certificate", () => {
  it(
    "the device is named by its CN, data both ways",
    async () => {
      const srv = await certServer([ECDSA], ["p384"], { clientAuth: "require", clientCa: caPem, legacySha1Signatures: true });
      const c = await connectNodertc({
        port: srv.port,
        psk: { identity: "x", key: Buffer.alloc(16) },
        cipherSuites: [ECDSA],
        certificate: Buffer.from(files["device-p384"]!.issued.certPem),
        certificatePrivateKey: Buffer.from(files["device-p384"]!.issued.keyPem),
      });
      const session = await srv.session;
      expect(session.info.identity).toBe("device-2");
      c.send("hello-nodertc-mutual");
      expect((await c.messages.next(WAIT)).toString()).toBe("dtlspush:hello-nodertc-mutual");
    },
    T,
  );
});

describe.skipIf(!OPENSSL)("mutual X.509: our client -> openssl s_server requiring a client certificate", () => {
  it(
    "presents its device certificate when asked; without one the server refuses",
    async () => {
      const port = await freeUdpPort();
      const srv = spawnPeer("openssl", [
        "s_server",
        "-dtls1_2",
        "-accept",
        `127.0.0.1:${port}`,
        "-cert",
        files.p256!.cert,
        "-key",
        files.p256!.key,
        "-Verify",
        "2",
        "-CAfile",
        caFile,
        "-verify_return_error",
      ]);
      await srv.waitFor(/^ACCEPT$/m, WAIT);
      const c = await connect({
        host: "127.0.0.1",
        port,
        ca: caPem,
        suites: [ECDSA],
        cert: files["device-p256"]!.issued.chainPem,
        key: files["device-p256"]!.issued.keyPem,
      });
      conns.push(c);
      await srv.waitFor("CN = device-1", WAIT);
      c.send(Buffer.from("from-device\n"));
      await srv.waitFor("from-device", WAIT);
      c.close();
      await expect(connect({ host: "127.0.0.1", port, ca: caPem, suites: [ECDSA], timeoutMs: 5000 })).rejects.toMatchObject({
        code: "alert_received",
      });
    },
    T,
  );
});
