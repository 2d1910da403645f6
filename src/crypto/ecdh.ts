/**
 * Ephemeral ECDH (RFC 8422 / RFC 7748): x25519 and the NIST curves, with the
 * TLS wire encodings of public keys.
 */
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from "./node.ts";

/** Groups for ephemeral ECDH (RFC 8422 / RFC 7748). */
export type EcdhGroup = "x25519" | "secp256r1" | "secp384r1" | "secp521r1";

const NIST: Record<Exclude<EcdhGroup, "x25519">, { crv: string; size: number }> = {
  secp256r1: { crv: "P-256", size: 32 },
  secp384r1: { crv: "P-384", size: 48 },
  secp521r1: { crv: "P-521", size: 66 },
};

/** One side's ephemeral key pair. `derive` returns null for an invalid peer key. */
export interface EcdhKeyPair {
  /** The wire encoding: 32 raw bytes for x25519, an uncompressed point (0x04 || X || Y) otherwise. */
  readonly publicKey: Uint8Array;
  derive(peerPublic: Uint8Array): Uint8Array | null;
}

function x25519FromPrivate(d: Uint8Array): { privateKey: KeyObject; publicKey: KeyObject } {
  const privateKey = createPrivateKey({ key: { kty: "OKP", crv: "X25519", d: b64u(d), x: "" }, format: "jwk" });
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

const b64u = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64url");

/** An ephemeral key pair: a fresh one, or (for known-answer tests) one from a raw x25519 private key. */
export function generateEcdh(group: EcdhGroup, x25519PrivateKey?: Uint8Array): EcdhKeyPair {
  if (group === "x25519") {
    const { privateKey, publicKey } = x25519PrivateKey === undefined ? generateKeyPairSync("x25519") : x25519FromPrivate(x25519PrivateKey);
    const x = Buffer.from(publicKey.export({ format: "jwk" }).x as string, "base64url");
    return {
      publicKey: x,
      derive(peer) {
        if (peer.length !== 32) return null;
        try {
          const peerKey = createPublicKey({ key: { kty: "OKP", crv: "X25519", x: b64u(peer) }, format: "jwk" });
          const z = diffieHellman({ privateKey, publicKey: peerKey });
          // RFC 7748 6.1: an all-zero result means a small-order peer key.
          return z.some((v) => v !== 0) ? z : null;
        } catch {
          return null;
        }
      },
    };
  }
  const { crv, size } = NIST[group];
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: crv });
  const jwk = publicKey.export({ format: "jwk" });
  const point = Buffer.concat([Buffer.of(4), Buffer.from(jwk.x as string, "base64url"), Buffer.from(jwk.y as string, "base64url")]);
  return {
    publicKey: point,
    derive(peer) {
      // Only uncompressed points (RFC 8422 5.1.2); OpenSSL checks the point is on the curve.
      if (peer.length !== 1 + 2 * size || peer[0] !== 4) return null;
      try {
        const peerKey = createPublicKey({
          key: { kty: "EC", crv, x: b64u(peer.subarray(1, 1 + size)), y: b64u(peer.subarray(1 + size)) },
          format: "jwk",
        });
        return diffieHellman({ privateKey, publicKey: peerKey });
      } catch {
        return null;
      }
    },
  };
}
