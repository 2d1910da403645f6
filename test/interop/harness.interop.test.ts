/**
 * Self-check of the interop harness: real peers against each other, no dtlspush
 * code involved. If this fails, the harness (or the installed peers) is broken,
 * not the engine.
 */
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { closeAllClients, connectNodeDtlsClient, connectNodertc } from "./clients.ts";
import {
  gnutlsClientHandshake,
  gnutlsPskPriority,
  killAllPeers,
  livePeerCount,
  opensslClientHandshake,
  opensslServerHandshake,
  peerAvailable,
  startGnutlsClient,
  startGnutlsServer,
  startOpensslClient,
  startOpensslServer,
  type PskCreds,
} from "./peers.ts";

const OPENSSL = peerAvailable("openssl");
const GNUTLS = peerAvailable("gnutls");

const psk: PskCreds = { identity: "harness-device", key: randomBytes(16) };

afterEach(async () => {
  closeAllClients();
  await killAllPeers();
  expect(livePeerCount()).toBe(0);
});

describe.skipIf(!OPENSSL)("harness: openssl s_server as the reference server", () => {
  it("openssl s_client <-> s_server, PSK-AES128-CCM8, data both ways, close_notify", async () => {
    const srv = await startOpensslServer({ psk, cipher: "PSK-AES128-CCM8" });
    const cli = startOpensslClient({ port: srv.port, psk, cipher: "PSK-AES128-CCM8" });
    expect(await opensslClientHandshake(cli)).toBe("TLS_PSK_WITH_AES_128_CCM_8");
    expect(await opensslServerHandshake(srv.proc)).toBe("TLS_PSK_WITH_AES_128_CCM_8");
    cli.write("ping-from-sclient\n");
    await srv.proc.waitFor("ping-from-sclient");
    srv.proc.write("pong-from-sserver\n");
    await cli.waitFor("pong-from-sserver");
    const mark = srv.proc.mark();
    cli.endInput();
    expect((await cli.waitExit()).code).toBe(0);
    await srv.proc.waitFor(/^DONE$/m, 5_000, mark);
  });

  it.skipIf(!GNUTLS)("gnutls-cli -> s_server, AES-128-CCM", async () => {
    const srv = await startOpensslServer({ psk, cipher: "PSK-AES128-CCM" });
    const cli = startGnutlsClient({ port: srv.port, psk, priority: gnutlsPskPriority(["TLS_PSK_WITH_AES_128_CCM"]) });
    expect(await gnutlsClientHandshake(cli)).toBe("TLS_PSK_WITH_AES_128_CCM");
    expect(await opensslServerHandshake(srv.proc)).toBe("TLS_PSK_WITH_AES_128_CCM");
    cli.write("ping-from-gnutls\n");
    await srv.proc.waitFor("ping-from-gnutls");
    srv.proc.write("pong-from-sserver\n");
    await cli.waitFor("pong-from-sserver");
    cli.endInput();
    await cli.waitFor("Peer has closed the GnuTLS connection");
    expect((await cli.waitExit()).code).toBe(0);
  });

  it("node-dtls-client -> s_server, CCM_8", async () => {
    const srv = await startOpensslServer({ psk, cipher: "PSK-AES128-CCM8" });
    const c = await connectNodeDtlsClient({ port: srv.port, psk, ciphers: ["TLS_PSK_WITH_AES_128_CCM_8"] });
    expect(c.suite).toBe("TLS_PSK_WITH_AES_128_CCM_8");
    expect(await opensslServerHandshake(srv.proc)).toBe("TLS_PSK_WITH_AES_128_CCM_8");
    await c.send("ping-from-ndc");
    await srv.proc.waitFor("ping-from-ndc");
    srv.proc.write("pong-from-sserver\n");
    expect((await c.messages.next()).toString()).toBe("pong-from-sserver\n");
    const mark = srv.proc.mark();
    await c.close();
    await srv.proc.waitFor(/^DONE$/m, 5_000, mark);
  });

  it("@nodertc/dtls -> s_server, PSK-AES128-GCM-SHA256 with EMS", async () => {
    const srv = await startOpensslServer({ psk, cipher: "PSK-AES128-GCM-SHA256" });
    const c = await connectNodertc({ port: srv.port, psk, cipherSuites: ["TLS_PSK_WITH_AES_128_GCM_SHA256"] });
    expect(c.suite).toBe("TLS_PSK_WITH_AES_128_GCM_SHA256");
    expect(await opensslServerHandshake(srv.proc)).toBe("TLS_PSK_WITH_AES_128_GCM_SHA256");
    c.send("ping-from-nodertc");
    await srv.proc.waitFor("ping-from-nodertc");
    srv.proc.write("pong-from-sserver\n");
    expect((await c.messages.next()).toString()).toBe("pong-from-sserver\n");
    // No close here: @nodertc/dtls sends no close_notify, and s_server's "q" command
    // closes its DTLS socket before its close_notify goes out (the alert is lost).
    c.destroy();
  });

  it("wrong PSK key: no connection (DTLS drops the undecryptable Finished silently), wrappers reject", async () => {
    const srv = await startOpensslServer({ psk, cipher: "PSK-AES128-GCM-SHA256" });
    const bad: PskCreds = { identity: psk.identity, key: randomBytes(16) };
    await Promise.all([
      expect(connectNodeDtlsClient({ port: srv.port, psk: bad, ciphers: ["TLS_PSK_WITH_AES_128_GCM_SHA256"], timeoutMs: 1_500 })).rejects.toThrow(
        /timed out|alert/,
      ),
      expect(connectNodertc({ port: srv.port, psk: bad, timeoutMs: 1_500 })).rejects.toThrow(/no handshake|alert code/),
    ]);
  });
});

describe.skipIf(!GNUTLS)("harness: gnutls-serv as the reference server", () => {
  it.skipIf(!OPENSSL)("openssl s_client -> gnutls-serv --echo, CCM_8", async () => {
    const srv = await startGnutlsServer({ psk, priority: gnutlsPskPriority(["TLS_PSK_WITH_AES_128_CCM_8"]) });
    const cli = startOpensslClient({ port: srv.port, psk, cipher: "PSK-AES128-CCM8" });
    expect(await opensslClientHandshake(cli)).toBe("TLS_PSK_WITH_AES_128_CCM_8");
    const mark = cli.mark();
    cli.write("ping-to-gnutls-serv\n");
    await srv.proc.waitFor("ping-to-gnutls-serv");
    await cli.waitFor("ping-to-gnutls-serv", 5_000, mark);
    cli.endInput();
    expect((await cli.waitExit()).code).toBe(0);
  });

  it("node-dtls-client -> gnutls-serv --echo, GCM", async () => {
    const srv = await startGnutlsServer({
      psk,
      priority: gnutlsPskPriority(["TLS_PSK_WITH_AES_128_GCM_SHA256"]),
    });
    const c = await connectNodeDtlsClient({ port: srv.port, psk, ciphers: ["TLS_PSK_WITH_AES_128_GCM_SHA256"] });
    expect(c.suite).toBe("TLS_PSK_WITH_AES_128_GCM_SHA256");
    await c.send("echo-me");
    expect((await c.messages.next()).toString()).toBe("echo-me");
    await c.close();
  });
});
