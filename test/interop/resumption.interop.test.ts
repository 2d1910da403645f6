/**
 * Interop of session resumption (RFC 5246 7.3 abbreviated handshake, RFC 5077
 * tickets, session IDs) with real peers:
 * - our server against `openssl s_client -dtls1_2 -sess_out / -sess_in` (ticket,
 *   and -no_ticket for session-ID resumption) and `gnutls-cli --resume`;
 * - our client against `openssl s_server -dtls1_2` and `gnutls-serv`.
 * A resumption shows on both sides: the peer prints it ("Reused, TLSv1.2",
 * "This is a resumed session"), our side says `resumed: true` and counts it.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createCertificateAuthority, issueDeviceCertificate, issueServerCertificate } from "../../src/pki/index.ts";
import { connect, listen, type DtlsConnection, type DtlsServer, type SavedSession } from "../../src/dtls/index.ts";
import {
  gnutlsPskPriority,
  killAllPeers,
  opensslCipherList,
  spawnPeer,
  peerAvailable,
  startGnutlsClient,
  startGnutlsServer,
  startOpensslClient,
  startOpensslServer,
  type PskCreds,
} from "./peers.ts";

const OPENSSL = peerAvailable("openssl");
const GNUTLS = peerAvailable("gnutls");
const T = 20_000;
const WAIT = 8_000;

const psk: PskCreds = { identity: "resume-device", key: randomBytes(16) };
const dir = mkdtempSync(join(tmpdir(), "dtlspush-resume-"));

let servers: DtlsServer[] = [];
afterEach(async () => {
  await killAllPeers();
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A PSK server on 127.0.0.1 (resumption on by default) that records its sessions. */
async function pskServer(): Promise<{ server: DtlsServer; port: number; sessions: DtlsConnection[] }> {
  const server = await listen({ host: "127.0.0.1", port: 0, sockets: 1, psk: { keys: new Map([[psk.identity, psk.key]]) } });
  servers.push(server);
  const sessions: DtlsConnection[] = [];
  server.on("session", (c) => sessions.push(c));
  return { server, port: server.address().port, sessions };
}

describe.skipIf(!OPENSSL)("our server, openssl s_client -sess_out / -sess_in", () => {
  for (const mode of ["ticket", "session ID"] as const) {
    it(
      `resumes by ${mode}: openssl prints "Reused", our session says resumed with the same identity`,
      async () => {
        const { server, port, sessions } = await pskServer();
        const file = join(dir, `openssl-${mode === "ticket" ? "ticket" : "id"}.pem`);
        const noTicket = mode === "ticket" ? [] : ["-no_ticket"];
        const first = startOpensslClient({ port, psk, extraArgs: [...noTicket, "-sess_out", file] });
        await first.waitFor(/New, TLSv1\.2, Cipher is/, WAIT);
        if (mode === "ticket") await first.waitFor(/TLS session ticket lifetime hint: 86400/, WAIT);
        first.endInput();
        await first.waitExit(WAIT);
        const second = startOpensslClient({ port, psk, extraArgs: [...noTicket, "-sess_in", file] });
        await second.waitFor(/Reused, TLSv1\.2, Cipher is/, WAIT);
        second.endInput();
        await second.waitExit(WAIT);
        expect(sessions.map((s) => s.info.resumed)).toEqual([false, true]);
        expect(sessions[1]?.info.identity).toBe(psk.identity);
        expect(sessions[1]?.info.suite).toBe(sessions[0]?.info.suite);
        expect(server.stats.handshakesResumed).toBe(1);
      },
      T,
    );
  }
});

describe.skipIf(!OPENSSL)("our server with mutual certificates (ECDHE_ECDSA), openssl s_client -cert -sess_out / -sess_in", () => {
  const files: Record<string, string> = {};
  let caPem = "";
  let deviceCaPem = "";
  let serverPem = { cert: "", key: "" };
  beforeAll(async () => {
    const { ca } = await createCertificateAuthority();
    const { ca: deviceCa } = await createCertificateAuthority({ commonName: "device CA" });
    const server = await issueServerCertificate(ca, { kind: "p256" });
    const device = await issueDeviceCertificate(deviceCa, { id: "sensor-9" });
    caPem = ca.certPem;
    deviceCaPem = deviceCa.certPem;
    serverPem = { cert: server.chainPem, key: server.keyPem };
    for (const [name, text] of Object.entries({ ca: caPem, cert: device.chainPem, key: device.keyPem })) {
      files[name] = join(dir, `mutual-${name}.pem`);
      writeFileSync(files[name], text, { mode: 0o600 });
    }
  }, 60_000);

  for (const mode of ["ticket", "session ID"] as const) {
    it(
      `resumes by ${mode}: "Reused", the device identity and certificate kept, authorizeClient asked again`,
      async () => {
        const asked: string[] = [];
        const server = await listen({
          host: "127.0.0.1",
          port: 0,
          sockets: 1,
          certificates: [serverPem],
          clientAuth: "require",
          clientCa: deviceCaPem,
          authorizeClient: (identity) => {
            asked.push(identity);
            return undefined;
          },
        });
        servers.push(server);
        const sessions: DtlsConnection[] = [];
        server.on("session", (c) => sessions.push(c));
        const port = server.address().port;
        const file = join(dir, `openssl-mutual-${mode === "ticket" ? "ticket" : "id"}.pem`);
        const noTicket = mode === "ticket" ? [] : ["-no_ticket"];
        const base = ["s_client", "-dtls1_2", "-connect", `127.0.0.1:${port}`, "-CAfile", files.ca ?? "", "-verify_return_error"];
        const creds = ["-cert", files.cert ?? "", "-key", files.key ?? "", "-nocommands", "-noservername", ...noTicket];
        const first = spawnPeer("openssl", [...base, ...creds, "-sess_out", file]);
        await first.waitFor(/New, TLSv1\.2, Cipher is ECDHE-ECDSA/, WAIT);
        first.endInput();
        await first.waitExit(WAIT);
        const second = spawnPeer("openssl", [...base, ...creds, "-sess_in", file]);
        await second.waitFor(/Reused, TLSv1\.2, Cipher is ECDHE-ECDSA/, WAIT);
        second.endInput();
        await second.waitExit(WAIT);
        expect(sessions.map((c) => c.info.resumed)).toEqual([false, true]);
        expect(sessions[1]?.info.identity).toBe("sensor-9");
        expect(sessions[1]?.info.peerCertificate).toEqual(sessions[0]?.info.peerCertificate);
        expect(asked).toEqual(["sensor-9", "sensor-9"]); // the full handshake's verdict, then the resumption's
      },
      T,
    );
  }
});

describe.skipIf(!GNUTLS)("our server, gnutls-cli --resume", () => {
  for (const mode of ["ticket", "session ID"] as const) {
    it(
      `resumes by ${mode}: gnutls says "This is a resumed session"`,
      async () => {
        const { server, port, sessions } = await pskServer();
        const priority = `NORMAL:-VERS-ALL:+VERS-DTLS1.2:+PSK${mode === "ticket" ? "" : ":%NO_TICKETS"}`;
        const cli = startGnutlsClient({ port, psk, priority, extraArgs: ["--resume"] });
        await cli.waitFor(/\*\*\* This is a resumed session/, WAIT);
        cli.endInput();
        await cli.waitExit(WAIT);
        expect(sessions.map((s) => s.info.resumed)).toEqual([false, true]);
        expect(server.stats.handshakesResumed).toBe(1);
      },
      T,
    );
  }
});

/** Two connects to a peer server on `port`, the second with the first's session; their `resumed` flags. */
async function connectTwice(port: number, o: { echo: boolean }): Promise<boolean[]> {
  const resumed: boolean[] = [];
  let session: SavedSession | undefined;
  for (let i = 0; i < 2; i++) {
    const c = await connect({
      host: "127.0.0.1",
      port,
      psk: { identity: psk.identity, key: psk.key },
      suites: ["TLS_PSK_WITH_AES_128_GCM_SHA256"],
      session,
      timeoutMs: WAIT,
    });
    resumed.push(c.info.resumed);
    session = c.session;
    expect(session).toBeDefined();
    if (o.echo) {
      const echoed = new Promise<string>((resolve) => c.once("data", (d) => resolve(d.toString())));
      c.send(Buffer.from(`hello ${i}`));
      expect(await echoed).toBe(`hello ${i}`);
    }
    c.close();
  }
  return resumed;
}

describe.skipIf(!OPENSSL)("our client, openssl s_server -dtls1_2", () => {
  for (const mode of ["ticket", "session ID"] as const) {
    it(
      `resumes by ${mode} on the second connect; openssl counts a reuse`,
      async () => {
        const extraArgs = mode === "ticket" ? [] : ["-no_ticket"];
        const { proc, port } = await startOpensslServer({ psk, cipher: opensslCipherList(["TLS_PSK_WITH_AES_128_GCM_SHA256"]), extraArgs });
        expect(await connectTwice(port, { echo: false })).toEqual([false, true]);
        // s_server prints this after a handshake that resumed (ticket or session ID alike)
        await proc.waitFor(/Reused session-id/, WAIT);
      },
      T,
    );
  }
});

describe.skipIf(!GNUTLS)("our client, gnutls-serv", () => {
  for (const mode of ["ticket", "session ID"] as const) {
    it(
      `resumes by ${mode} on the second connect, and data flows`,
      async () => {
        const priority = gnutlsPskPriority(["TLS_PSK_WITH_AES_128_GCM_SHA256"]) + (mode === "ticket" ? "" : ":%NO_TICKETS");
        const { port } = await startGnutlsServer({ psk, priority });
        expect(await connectTwice(port, { echo: true })).toEqual([false, true]);
      },
      T,
    );
  }
});
