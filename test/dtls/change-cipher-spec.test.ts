/**
 * RFC 5246 7.1 / RFC 6347 4.1: a protected Finished counts only after the
 * peer's ChangeCipherSpec. An on-path relay takes the CCS records out of one
 * side's flights: the real server (or the real client) must not complete the
 * handshake on the Finished alone; with the CCS it completes.
 */
import { afterEach, describe, expect, it } from "vitest";
import { connect, type DtlsConnection } from "../../src/dtls/index.ts";
import { ContentType } from "../../src/dtls/constants.ts";
import { echoServers, KEY, nextData } from "./echo-server.ts";
import { UdpProxy, withoutRecords } from "./udp-proxy.ts";

const server = echoServers();
let proxies: UdpProxy[] = [];
let conns: DtlsConnection[] = [];
afterEach(() => {
  for (const c of conns) c.close();
  for (const p of proxies) p.close();
  conns = [];
  proxies = [];
});

const FAST = { initialMs: 100, maxMs: 400, maxRetransmits: 3 };

function open(port: number) {
  return connect({ host: "127.0.0.1", port, psk: { identity: "dev", key: KEY }, timeoutMs: 1500, retransmit: FAST });
}

describe("ChangeCipherSpec before Finished (real endpoints through a relay)", () => {
  it("the server does not complete a handshake whose client sends Finished without ChangeCipherSpec", async () => {
    const s = await server({ retransmit: FAST });
    const relay = await UdpProxy.start(s.address().port, { toServer: withoutRecords(ContentType.change_cipher_spec) });
    proxies.push(relay);
    await expect(open(relay.port)).rejects.toMatchObject({ code: "timeout" });
    expect(s.stats.handshakesCompleted).toBe(0);
    expect(s.sessions()).toBe(0);

    // the same relay passing the CCS: the handshake completes
    relay.rewrites = {};
    const c = await open(relay.port);
    conns.push(c);
    c.send(Buffer.from("hi"));
    expect(await nextData(c)).toBe("echo:hi");
    expect(s.stats.handshakesCompleted).toBe(1);
  });

  it("the client does not complete a handshake whose server sends Finished without ChangeCipherSpec", async () => {
    const s = await server({ retransmit: FAST });
    const relay = await UdpProxy.start(s.address().port, { toClient: withoutRecords(ContentType.change_cipher_spec) });
    proxies.push(relay);
    await expect(open(relay.port)).rejects.toMatchObject({ code: "timeout" });

    relay.rewrites = {};
    const c = await open(relay.port);
    conns.push(c);
    expect(c.info.suite).toBeDefined();
  });
});
