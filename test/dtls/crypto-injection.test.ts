/**
 * The DTLS engine takes its crypto from the provider it is given: a server
 * (`listen({ crypto })`) and our client (`connect({ crypto })`) on loopback
 * UDP, each with a provider that wraps the Node one and counts what goes
 * through it. A mutual-certificate handshake (ECDHE_ECDSA) must use each
 * side's provider for ECDH, its signature, the peer's signature check, the
 * PRF and the record AEAD keys, and every record must be sealed and opened
 * by it; a server whose random source is deterministic puts its bytes in the
 * ServerHello random.
 */
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { defaultCrypto, type CryptoProvider } from "../../src/crypto/index.ts";
import { connect, type DtlsConnection, type DtlsServer } from "../../src/dtls/index.ts";
import { createCertificateAuthority, issueDeviceCertificate, type IssuedCertificate } from "../../src/pki/index.ts";
import { echoServers, KEY, nextData } from "./echo-server.ts";
import { makeTestPki, type TestPki } from "./test-certs.ts";

interface Counts {
  randomBytes: number;
  ecdh: number;
  prf: number;
  hmac: number;
  signs: number;
  verifies: number;
  certificates: number;
  aeadKeys: number;
  seals: number;
  opens: number;
  /** Seals with AES-256-GCM: session tickets (the record suite here is AES-128-GCM). */
  ticketSeals: number;
}

/** The Node provider, counting; `random` replaces its byte source. `expansionSeeds` are the PRF seeds of the key blocks (server random || client random). */
function counting(random?: (n: number) => Uint8Array): { provider: CryptoProvider; counts: Counts; expansionSeeds: Uint8Array[] } {
  const counts: Counts = {
    randomBytes: 0,
    ecdh: 0,
    prf: 0,
    hmac: 0,
    signs: 0,
    verifies: 0,
    certificates: 0,
    aeadKeys: 0,
    seals: 0,
    opens: 0,
    ticketSeals: 0,
  };
  const expansionSeeds: Uint8Array[] = [];
  const d = defaultCrypto;
  const provider: CryptoProvider = {
    ...d,
    random: { ...d.random, bytes: (n) => (counts.randomBytes++, random === undefined ? d.random.bytes(n) : random(n)) },
    digest: {
      ...d.digest,
      prf: (alg, secret, label, seed, length) => {
        counts.prf++;
        if (label === "key expansion") expansionSeeds.push(Uint8Array.from(seed));
        return d.digest.prf(alg, secret, label, seed, length);
      },
      hmac: (alg, key, parts) => (counts.hmac++, d.digest.hmac(alg, key, parts)),
    },
    ecdh: { generate: (group, x) => (counts.ecdh++, d.ecdh.generate(group, x)) },
    aead: {
      ...d.aead,
      key: (bytes) => (counts.aeadKeys++, d.aead.key(bytes)),
      seal: (name, key, nonce, aad, plaintext, reserve) => {
        counts.seals++;
        if (name === "aes-256-gcm") counts.ticketSeals++;
        return d.aead.seal(name, key, nonce, aad, plaintext, reserve);
      },
      open: (name, key, nonce, aad, sealed) => (counts.opens++, d.aead.open(name, key, nonce, aad, sealed)),
    },
    x509: {
      ...d.x509,
      loadPrivateKey: (pem) => {
        const signer = d.x509.loadPrivateKey(pem);
        return { keyType: signer.keyType, curve: signer.curve, sign: (scheme, data) => (counts.signs++, signer.sign(scheme, data)) };
      },
      parse: (der) => {
        counts.certificates++;
        const cert = d.x509.parse(der);
        return { ...cert, verifySignature: (scheme, data, signature) => (counts.verifies++, cert.verifySignature(scheme, data, signature)) };
      },
    },
  };
  return { provider, counts, expansionSeeds };
}

/** A deterministic byte source: SHA-256 of a counter, so two sources of one seed give the same bytes in the same order. */
function deterministic(seed: string): { bytes: (n: number) => Uint8Array; given: Uint8Array[] } {
  let counter = 0;
  const given: Uint8Array[] = [];
  const bytes = (n: number): Uint8Array => {
    const out = new Uint8Array(n);
    for (let at = 0; at < n; at += 32) {
      const block = defaultCrypto.digest.hash("sha256", [new TextEncoder().encode(`${seed}:${counter++}`)]);
      out.set(block.subarray(0, Math.min(32, n - at)), at);
    }
    given.push(Uint8Array.from(out));
    return out;
  };
  return { bytes, given };
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

let pki: TestPki;
let deviceCa = "";
let device: IssuedCertificate;

beforeAll(async () => {
  pki = await makeTestPki();
  const { ca } = await createCertificateAuthority({ commonName: "device CA" });
  deviceCa = ca.certPem;
  device = await issueDeviceCertificate(ca, { id: "dev-1" });
}, 60_000);

/** Echo servers (PSK "dev" with KEY, and what each test adds), closed after each test. */
const echoServer = echoServers();
const conns: DtlsConnection[] = [];
afterEach(() => {
  for (const c of conns.splice(0)) if (!c.closed) c.close();
});

async function open(s: DtlsServer, opts: Partial<Parameters<typeof connect>[0]>): Promise<DtlsConnection> {
  const c = await connect({ host: "127.0.0.1", port: s.address().port, timeoutMs: 5000, ...opts });
  conns.push(c);
  return c;
}

async function roundTrip(c: DtlsConnection, text: string): Promise<string> {
  const reply = nextData(c);
  c.send(Buffer.from(text));
  return await reply;
}

describe("the DTLS engine's crypto provider", () => {
  it("a mutual-certificate handshake and its records go through each side's provider", async () => {
    const server = counting();
    const client = counting();
    const s = await echoServer({
      certificates: [{ cert: pki.p256.chainPem, key: pki.p256.keyPem }],
      clientAuth: "require",
      clientCa: deviceCa,
      suites: ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
      crypto: server.provider,
    });
    // loading: the server's chain, its key and the client CA; the client's CA, chain and key
    expect(server.counts.certificates).toBeGreaterThanOrEqual(2);
    expect(client.counts.certificates).toBe(0);
    const c = await open(s, {
      ca: pki.caPem,
      servername: "localhost",
      cert: device.chainPem,
      key: device.keyPem,
      suites: ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
      crypto: client.provider,
    });
    expect(await roundTrip(c, "one")).toBe("echo:one");
    for (const side of [server.counts, client.counts]) {
      expect(side.ecdh).toBe(1); // each side's ephemeral key
      expect(side.signs).toBe(1); // ServerKeyExchange / CertificateVerify
      expect(side.verifies).toBe(1); // the peer's signature
      expect(side.prf).toBeGreaterThanOrEqual(4); // master secret, key block, two Finished
      expect(side.randomBytes).toBeGreaterThanOrEqual(1); // the hello random
    }
    expect(client.counts.aeadKeys).toBe(2); // read and write keys of epoch 1
    expect(server.counts.aeadKeys).toBe(3); // and the ticket key
    expect(server.counts.hmac).toBeGreaterThanOrEqual(2); // the cookie made and checked
    expect(server.counts.ticketSeals).toBe(1); // the NewSessionTicket
    // every record of epoch 1 is sealed and opened by the providers: Finished each way, then the echo
    const before = { server: { ...server.counts }, client: { ...client.counts } };
    expect(await roundTrip(c, "two")).toBe("echo:two");
    expect(client.counts.seals - before.client.seals).toBe(1);
    expect(client.counts.opens - before.client.opens).toBe(1);
    expect(server.counts.seals - before.server.seals).toBe(1);
    expect(server.counts.opens - before.server.opens).toBe(1);
  });

  it("a PSK session's PRF, ECDH and record keys are the providers' on both sides", async () => {
    const server = counting();
    const client = counting();
    const s = await echoServer({
      psk: { keys: new Map([["dev", KEY]]) },
      suites: ["TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"],
      crypto: server.provider,
    });
    const c = await open(s, { psk: { identity: "dev", key: KEY }, suites: ["TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"], crypto: client.provider });
    expect(await roundTrip(c, "psk")).toBe("echo:psk");
    for (const side of [server.counts, client.counts]) {
      expect(side.ecdh).toBe(1);
      expect(side.prf).toBeGreaterThanOrEqual(4);
      expect(side.seals).toBeGreaterThanOrEqual(2);
      expect(side.opens).toBeGreaterThanOrEqual(2);
    }
    expect(client.counts.aeadKeys).toBe(2);
    expect(server.counts.aeadKeys).toBe(3);
    expect(server.expansionSeeds).toHaveLength(1);
    expect(hex(client.expansionSeeds[0] ?? new Uint8Array(0))).toBe(hex(server.expansionSeeds[0] ?? new Uint8Array(0)));
  });

  it("a server whose random source is deterministic sends its bytes as the ServerHello random", async () => {
    const randomOf = async (): Promise<{ serverRandom: string; given: string[] }> => {
      const source = deterministic("server");
      const server = counting(source.bytes);
      const client = counting();
      const s = await echoServer({ crypto: server.provider });
      const c = await open(s, { psk: { identity: "dev", key: KEY }, crypto: client.provider });
      expect(await roundTrip(c, "r")).toBe("echo:r");
      // the client's key block seed is server random || client random, the server random as the client read it off the wire
      const seed = client.expansionSeeds[0];
      if (seed === undefined) throw new Error("the client made no key block");
      return { serverRandom: hex(seed.subarray(0, 32)), given: source.given.map(hex) };
    };
    const first = await randomOf();
    expect(first.given).toContain(first.serverRandom);
    // the same seed, the same ServerHello random: nothing else fed it
    const second = await randomOf();
    expect(second.serverRandom).toBe(first.serverRandom);
  });
});
