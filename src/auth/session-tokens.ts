import { AuthError } from "./errors.ts";
import type { KeyRing } from "./key-ring.ts";
import { checkDeviceId } from "./names.ts";
import { SESSION_AUDIENCE, signToken, verifyToken } from "./tokens.ts";

/** What a verified session token says. Times are ms since the epoch (whole seconds). */
export interface SessionClaims {
  deviceId: string;
  /** the DTLS identity the session is bound to: "psk:<identity>" or "cert:<identity>" */
  identity: string;
  sessionId: string;
  issuedAt: number;
  expiresAt: number;
}

/**
 * Issues a session token: a JWT with iss "dtlspush", aud "dtlspush:session",
 * sub = device id, `identity` = the DTLS identity string the session is bound
 * to ("psk:<identity>" or "cert:<identity>"), `sid` = session id.
 */
export async function issueSessionToken(
  ring: KeyRing,
  claims: { deviceId: string; identity: string; sessionId: string; now: number; ttlSeconds: number },
): Promise<{ token: string; expiresAt: number }> {
  checkDeviceId(claims.deviceId);
  if (typeof claims.identity !== "string" || !/^(psk|cert):./s.test(claims.identity)) {
    throw new RangeError(`Session identity ${JSON.stringify(claims.identity)} must be "psk:<identity>" or "cert:<identity>".`);
  }
  if (typeof claims.sessionId !== "string" || claims.sessionId.length === 0) throw new RangeError("The session id must be a non-empty string.");
  const { token, expiresAt } = await signToken(
    ring,
    { sub: claims.deviceId, sid: claims.sessionId, identity: claims.identity },
    SESSION_AUDIENCE,
    claims.now,
    claims.ttlSeconds,
  );
  return { token, expiresAt };
}

/**
 * Verifies a session token: signature by a key of the ring with that key's alg,
 * iss "dtlspush", aud "dtlspush:session", exp against `now` (5 s leeway), then
 * that sub is expected.deviceId and the identity claim expected.identity.
 * Throws AuthError token_invalid, token_expired or token_identity_mismatch.
 */
export async function verifySessionToken(
  ring: KeyRing,
  token: string,
  expected: { deviceId: string; identity: string; now: number },
): Promise<SessionClaims> {
  const claims = await verifyToken(ring, token, SESSION_AUDIENCE, expected.now, "session token");
  const { sid, identity } = claims;
  if (typeof sid !== "string" || typeof identity !== "string") {
    throw new AuthError("token_invalid", "The session token lacks a string sid or identity claim.");
  }
  if (claims.sub !== expected.deviceId) {
    throw new AuthError(
      "token_identity_mismatch",
      `The session token belongs to device ${JSON.stringify(claims.sub)}, not ${JSON.stringify(expected.deviceId)}.`,
    );
  }
  if (identity !== expected.identity) {
    throw new AuthError("token_identity_mismatch", `The session token is bound to another DTLS identity than ${JSON.stringify(expected.identity)}.`);
  }
  return { deviceId: claims.sub, identity, sessionId: sid, issuedAt: claims.iat * 1000, expiresAt: claims.exp * 1000 };
}
