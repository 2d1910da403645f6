/**
 * Stateless HelloVerifyRequest cookies (RFC 6347 4.2.1): an HMAC-SHA256 over
 * the client's address and port and the ClientHello's fields, cut to
 * COOKIE_LENGTH bytes, under a secret that rotates (the previous secret still
 * verifies). Nothing is stored per client before its cookie checks out.
 */
import { ByteWriter } from "../util/bytes.ts";
import { defaultCrypto, type CryptoProvider, type SecretKey } from "../crypto/index.ts";
import type { ClientHello } from "./messages.ts";

/** Cookie length: GnuTLS clients abort on cookies over 32 bytes. */
export const COOKIE_LENGTH = 20;

/**
 * Stateless HelloVerifyRequest cookies (RFC 6347 4.2.1): HMAC-SHA256 over the
 * client's address and port and the ClientHello fields a retransmission keeps
 * (version, random, session id, suites, compression), truncated to 20 bytes.
 * The secret rotates every `rotateMs`; the previous one still verifies, so a
 * cookie lives between one and two rotation periods. No per-peer state.
 */
export class CookieJar {
  private current: SecretKey;
  private previous: SecretKey | undefined;
  private rotatedAt: number;
  private readonly rotateMs: number;
  private readonly provider: CryptoProvider;

  /** `provider`: the crypto provider of the secrets' randomness and of the HMAC. */
  constructor(now: number, rotateMs = 60_000, provider: CryptoProvider = defaultCrypto) {
    this.provider = provider;
    this.current = provider.digest.secretKey(provider.random.bytes(32));
    this.rotatedAt = now;
    this.rotateMs = rotateMs;
  }

  private maybeRotate(now: number): void {
    if (now - this.rotatedAt < this.rotateMs) return;
    // After a long idle gap both secrets are stale: drop the old one too.
    this.previous = now - this.rotatedAt < 2 * this.rotateMs ? this.current : undefined;
    this.current = this.provider.digest.secretKey(this.provider.random.bytes(32));
    this.rotatedAt = now;
  }

  make(peer: string, hello: ClientHello, now: number): Uint8Array {
    this.maybeRotate(now);
    return this.compute(this.current, peer, hello);
  }

  verify(peer: string, hello: ClientHello, now: number): boolean {
    this.maybeRotate(now);
    if (hello.cookie.length !== COOKIE_LENGTH) return false;
    if (this.provider.digest.constantTimeEqual(hello.cookie, this.compute(this.current, peer, hello))) return true;
    return this.previous !== undefined && this.provider.digest.constantTimeEqual(hello.cookie, this.compute(this.previous, peer, hello));
  }

  private compute(key: SecretKey, peer: string, hello: ClientHello): Uint8Array {
    const w = new ByteWriter(128);
    w.vec8(new TextEncoder().encode(peer));
    w.u16(hello.version).bytes(hello.random).vec8(hello.sessionId);
    w.u16(hello.cipherSuites.length);
    for (const s of hello.cipherSuites) w.u16(s);
    w.vec8(hello.compressionMethods);
    return this.provider.digest.hmac("sha256", key, [w.finish()]).subarray(0, COOKIE_LENGTH);
  }
}
