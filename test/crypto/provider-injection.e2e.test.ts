/**
 * The crypto provider is used where it is injected: a push server and a
 * device (real DTLS over loopback UDP) each given a provider of their own.
 * The server's makes the ring keys and the message ids; the device's imports
 * the JWKS key its pushes are checked with, so a provider whose verifier
 * refuses everything makes the device refuse a good push. Both run their DTLS
 * handshake and records through theirs (startPushServer passes it to listen,
 * connect to the DTLS connect).
 */
import { afterEach, describe, expect, it } from "vitest";
import { connect, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { defaultCrypto, type CryptoProvider } from "../../src/crypto/index.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { openMemoryStore } from "../../src/store/index.ts";
import { until } from "../support/until.ts";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const KEY = enc("0123456789abcdef");
const servers: PushServer[] = [];
const clients: DtlspushClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const s of servers.splice(0)) await s.close();
});

/** The default provider, counting the calls a test looks at; `refuse` makes every imported public key refuse every signature. */
function counting(refuse = false): {
  provider: CryptoProvider;
  calls: { generatedJwks: number; publicKeys: number; ids: string[]; prf: number; recordKeys: number };
} {
  const calls = { generatedJwks: 0, publicKeys: 0, ids: [] as string[], prf: 0, recordKeys: 0 };
  const provider: CryptoProvider = {
    ...defaultCrypto,
    digest: { ...defaultCrypto.digest, prf: (...args) => (calls.prf++, defaultCrypto.digest.prf(...args)) },
    aead: { ...defaultCrypto.aead, key: (bytes) => (calls.recordKeys++, defaultCrypto.aead.key(bytes)) },
    random: {
      ...defaultCrypto.random,
      timeOrderedId: (now) => {
        const id = defaultCrypto.random.timeOrderedId(now);
        calls.ids.push(id);
        return id;
      },
    },
    jws: {
      ...defaultCrypto.jws,
      generateJwk: (alg) => (calls.generatedJwks++, defaultCrypto.jws.generateJwk(alg)),
      publicKeyFromJwk: (jwk, alg) => {
        calls.publicKeys++;
        const key = defaultCrypto.jws.publicKeyFromJwk(jwk, alg);
        return refuse ? { ...key, verify: () => false } : key;
      },
    },
  };
  return { provider, calls };
}

async function serverAndDevice(serverCrypto: CryptoProvider, deviceCrypto: CryptoProvider): Promise<{ server: PushServer; device: DtlspushClient }> {
  const server = await startPushServer({ store: openMemoryStore(), dtls: { host: "127.0.0.1", port: 0 }, crypto: serverCrypto });
  servers.push(server);
  await server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
  const device = await connect({ host: "127.0.0.1", port: server.address().port, psk: { identity: "d1", key: KEY }, crypto: deviceCrypto });
  clients.push(device);
  return { server, device };
}

describe("crypto provider injection", () => {
  it("the server's provider makes the ring keys and the message ids; the device's checks the push", async () => {
    const s = counting();
    const d = counting();
    const { server, device } = await serverAndDevice(s.provider, d.provider);
    expect(s.calls.generatedJwks).toBe(3); // content, session and publisher rings
    expect(d.calls.generatedJwks).toBe(0);
    // the DTLS handshake of each side ran through its provider: master secret, key block, Finished; the record keys
    expect(s.calls.prf).toBeGreaterThanOrEqual(4);
    expect(d.calls.prf).toBeGreaterThanOrEqual(4);
    expect(s.calls.recordKeys).toBeGreaterThanOrEqual(2);
    expect(d.calls.recordKeys).toBe(2);
    const got: ReceivedMessage[] = [];
    device.on("message", (m) => got.push(m));
    const r = await server.publish({ target: { device: "d1" }, payload: enc("hello"), publisher: "t" });
    expect(s.calls.ids).toContain(r.messageId);
    await until(() => got.length === 1, "the push", 10_000);
    expect(got[0]?.id).toBe(r.messageId);
    expect(d.calls.publicKeys).toBe(1);
    expect(s.calls.publicKeys).toBe(0);
  });

  it("a device whose provider refuses every signature refuses a good push (its provider is the one that checks)", async () => {
    const { server, device } = await serverAndDevice(counting().provider, counting(true).provider);
    const rejected: { messageId: string; reason: string }[] = [];
    const got: ReceivedMessage[] = [];
    device.on("rejected", (x) => rejected.push(x));
    device.on("message", (m) => got.push(m));
    const r = await server.publish({ target: { device: "d1" }, payload: enc("hello"), publisher: "t" });
    await until(() => rejected.length === 1, "the refusal", 10_000);
    expect(rejected[0]?.messageId).toBe(r.messageId);
    expect(got).toEqual([]);
  });
});
