/**
 * TLS 1.2 key schedule for every suite of the engine: the premaster secret of
 * the PSK (RFC 4279 2) and ECDHE_PSK (RFC 5489 2) suites (the certificate
 * suites' premaster is the ECDH shared secret itself, RFC 8422 5.10), the
 * master secret with or without extended master secret (RFC 7627 4), the key
 * block (RFC 5246 6.3), Finished (RFC 5246 7.4.9) and the transcript they
 * hash. An abbreviated handshake takes the session's master secret and makes
 * a new key block and Finished from it.
 */
import { concatBytes } from "../util/bytes.ts";
import type { Digests, HashName, RunningHash, SecretKey } from "../crypto/index.ts";
import { alertError } from "./errors.ts";
import type { CipherSuite } from "./suites.ts";

/** struct { uint16 N; N zero bytes; uint16 N; psk } for plain PSK. */
export function pskPremasterSecret(psk: Uint8Array): Uint8Array {
  const n = psk.length;
  const out = new Uint8Array(4 + 2 * n);
  out[0] = n >>> 8;
  out[1] = n & 0xff;
  out[2 + n] = n >>> 8;
  out[3 + n] = n & 0xff;
  out.set(psk, 4 + n);
  return out;
}

export function masterSecret(
  d: Digests,
  alg: HashName,
  premaster: Uint8Array,
  clientRandom: Uint8Array,
  serverRandom: Uint8Array,
  sessionHash: Uint8Array | undefined,
): Uint8Array {
  return sessionHash
    ? d.prf(alg, premaster, "extended master secret", sessionHash, 48)
    : d.prf(alg, premaster, "master secret", concatBytes([clientRandom, serverRandom]), 48);
}

export interface TrafficKeys {
  readonly clientKey: Uint8Array;
  readonly serverKey: Uint8Array;
  readonly clientIv: Uint8Array;
  readonly serverIv: Uint8Array;
}

export function keyBlock(d: Digests, suite: CipherSuite, master: SecretKey, clientRandom: Uint8Array, serverRandom: Uint8Array): TrafficKeys {
  const k = suite.keyLength;
  const iv = suite.fixedIvLength;
  const block = d.prf(suite.prfHash, master, "key expansion", concatBytes([serverRandom, clientRandom]), 2 * k + 2 * iv);
  return {
    clientKey: block.subarray(0, k),
    serverKey: block.subarray(k, 2 * k),
    clientIv: block.subarray(2 * k, 2 * k + iv),
    serverIv: block.subarray(2 * k + iv, 2 * k + 2 * iv),
  };
}

/** Checks the peer's Finished against the transcript so far; throws decrypt_error (RFC 5246 7.4.9) when it differs. */
export function verifyPeerFinished(
  d: Digests,
  alg: HashName,
  master: SecretKey,
  label: "client finished" | "server finished",
  transcript: Transcript,
  verifyData: Uint8Array,
): void {
  const expected = finishedVerifyData(d, alg, master, label, transcript.hash(alg));
  if (verifyData.length !== expected.length || !d.constantTimeEqual(verifyData, expected)) {
    throw alertError("decrypt_error", `${label === "client finished" ? "client" : "server"} Finished does not verify (wrong PSK?)`);
  }
}

export function finishedVerifyData(
  d: Digests,
  alg: HashName,
  master: SecretKey,
  label: "client finished" | "server finished",
  transcriptHash: Uint8Array,
): Uint8Array {
  return d.prf(alg, master, label, transcriptHash, 12);
}

/**
 * The handshake transcript: whole messages with unfragmented DTLS headers, in
 * order. Messages are buffered until the hash is known (the suite decides it),
 * then fed to one running hash whose digest is taken at each point needed.
 */
export class Transcript {
  private pending: Uint8Array[] = [];
  private running: { alg: HashName; hash: RunningHash } | undefined;
  /** Every message, kept for CertificateVerify, which signs the messages themselves. */
  private readonly all: Uint8Array[] = [];
  private readonly digests: Digests;

  constructor(digests: Digests) {
    this.digests = digests;
  }

  add(message: Uint8Array): void {
    this.all.push(message);
    if (this.running) this.running.hash.update(message);
    else this.pending.push(message);
  }

  /** The concatenated messages so far. */
  messages(): Uint8Array {
    return concatBytes(this.all);
  }

  hash(alg: HashName): Uint8Array {
    if (this.running === undefined) {
      const h = this.digests.runningHash(alg);
      for (const m of this.pending) h.update(m);
      this.pending = [];
      this.running = { alg, hash: h };
    } else if (this.running.alg !== alg) {
      throw new Error(`transcript hashed with ${this.running.alg}, asked for ${alg}`);
    }
    return this.running.hash.digest();
  }
}

/** RFC 5489 2: struct { opaque other_secret<0..2^16-1>; opaque psk<0..2^16-1>; } with other_secret = the ECDH result. */
export function ecdhePskPremasterSecret(z: Uint8Array, psk: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + z.length + psk.length);
  out[0] = z.length >>> 8;
  out[1] = z.length & 0xff;
  out.set(z, 2);
  out[2 + z.length] = psk.length >>> 8;
  out[3 + z.length] = psk.length & 0xff;
  out.set(psk, 4 + z.length);
  return out;
}
