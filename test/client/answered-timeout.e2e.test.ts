/**
 * Failover order when a handshake times out although the server answered:
 * the server is up and the path loses datagrams, so the SDK tries it once
 * more before moving on to the next server (which may be the dead one it
 * just left). A relay to an in-process push server passes only the server's
 * HelloVerifyRequests while "half open"; a socket that never answers stands
 * for a dead server. Each handshake attempt is seen as a new source port.
 */
import { createSocket, type RemoteInfo } from "node:dgram";
import { afterEach, describe, expect, it } from "vitest";
import { connect, TransportError, openTransport, type DtlspushClient } from "../../src/client/index.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { openMemoryStore } from "../../src/store/index.ts";
import { until } from "../support/until.ts";
import { CLIENT_HELLO, handshakeType, HELLO_VERIFY_REQUEST, startUdpRelay } from "../support/udp-relay.ts";

const KEY = Buffer.from("000102030405060708090a0b0c0d0e0f", "hex");
const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Attempts in order: which server each new device source port sent its first ClientHello to. */
const attempts: string[] = [];

function noteAttempt(name: string, seen: Set<number>, d: Buffer, from: RemoteInfo): void {
  if (handshakeType(d) !== CLIENT_HELLO || seen.has(from.port)) return;
  seen.add(from.port);
  attempts.push(name);
}

async function bound(): Promise<ReturnType<typeof createSocket>> {
  const s = createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", r));
  cleanups.push(() => s.close());
  return s;
}

/** A relay to `port`; while `halfOpen`, only the server's HelloVerifyRequests reach the device. */
async function relay(name: string, port: number): Promise<{ port: number; halfOpen: boolean }> {
  const seen = new Set<number>();
  const r = { port: 0, halfOpen: false };
  const u = await startUdpRelay(port, {
    toServer: (d, from) => {
      noteAttempt(name, seen, d, from);
      return true;
    },
    toDevice: (d) => !r.halfOpen || handshakeType(d) === HELLO_VERIFY_REQUEST,
  });
  cleanups.push(() => u.close());
  r.port = u.port;
  return r;
}

/** A server that never answers. */
async function dead(name: string): Promise<number> {
  const s = await bound();
  const seen = new Set<number>();
  s.on("message", (d, from) => noteAttempt(name, seen, d, from));
  return s.address().port;
}

async function server(): Promise<PushServer> {
  const s = await startPushServer({ store: openMemoryStore(), dtls: { host: "127.0.0.1", port: 0 } });
  cleanups.push(() => s.close());
  await s.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
  return s;
}

describe("a handshake that timed out although the server answered", () => {
  it("is a TransportError timeout with serverAnswered; one with a silent server is not", async () => {
    const s = await server();
    const r = await relay("R", s.address().port);
    r.halfOpen = true;
    const psk = { identity: "d1", key: KEY };
    const answered = await openTransport("dtlspush", { host: "127.0.0.1", port: r.port, psk, timeoutMs: 500 }).catch((e: unknown) => e);
    expect(answered).toBeInstanceOf(TransportError);
    expect(answered).toMatchObject({ code: "timeout", serverAnswered: true });
    expect((answered as Error).message).toMatch(/the server answered/);
    const silent = await openTransport("dtlspush", { host: "127.0.0.1", port: await dead("B"), psk, timeoutMs: 500 }).catch((e: unknown) => e);
    expect(silent).toMatchObject({ code: "timeout", serverAnswered: false });
  });

  it("gets one more attempt at that server before the next one in the list", { timeout: 20_000 }, async () => {
    attempts.length = 0;
    const s = await server();
    const r = await relay("R", s.address().port);
    const b = await dead("B");
    const client: DtlspushClient = await connect({
      servers: [
        { host: "127.0.0.1", port: r.port },
        { host: "127.0.0.1", port: b },
      ],
      psk: { identity: "d1", key: KEY },
      timeoutMs: 800,
      reconnect: { initialDelayMs: 10, maxDelayMs: 20 },
      liveness: { idleMs: 200, probes: 1, minRtoMs: 100, maxRtoMs: 100 },
    });
    cleanups.push(() => client.close());
    client.on("error", () => undefined);
    expect(attempts).toEqual(["R"]);
    // the session on R looks dead (nothing comes back), and R's handshakes stall after the HelloVerifyRequest
    r.halfOpen = true;
    await until(() => attempts.length >= 5, "four attempts after the session was lost", 15_000);
    // lost session: the next server (B, silent: moved on); R answered but timed out: R once more, then B
    expect(attempts.slice(1, 5)).toEqual(["B", "R", "R", "B"]);
  });
});
