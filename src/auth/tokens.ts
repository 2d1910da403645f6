import { errors, jwtVerify, SignJWT, type JWTPayload, type JWTHeaderParameters } from "jose";
import { AuthError } from "./errors.ts";
import type { KeyRing } from "./key-ring.ts";

/** `iss` of every token dtlspush issues. */
export const TOKEN_ISSUER = "dtlspush";
/** `aud` of session tokens (devices). */
export const SESSION_AUDIENCE = "dtlspush:session";
/** `aud` of publisher tokens (the HTTP API). */
export const API_AUDIENCE = "dtlspush:api";
/** Leeway for exp, in seconds: a token is refused once `now` is past exp + this. */
export const CLOCK_TOLERANCE_SECONDS = 5;

/** Longest token lifetime accepted by the issuers (10 years). */
const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;

/**
 * Signs a JWT with the ring's current key. iat is `now` rounded down to the
 * second, exp = iat + ttlSeconds; the returned times are ms since the epoch.
 */
export async function signToken(
  ring: KeyRing,
  claims: JWTPayload,
  audience: string,
  now: number,
  ttlSeconds: number,
): Promise<{ token: string; issuedAt: number; expiresAt: number }> {
  checkNow(now);
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds <= 0 || ttlSeconds > MAX_TTL_SECONDS) {
    throw new RangeError(`ttlSeconds must be a whole number of seconds in 1..${MAX_TTL_SECONDS}, not ${ttlSeconds}.`);
  }
  const iat = Math.floor(now / 1000);
  const exp = iat + ttlSeconds;
  const { kid, alg, key } = ring.signingKey();
  const token = await new SignJWT(claims)
    .setProtectedHeader({ alg, kid, typ: "JWT" })
    .setIssuer(TOKEN_ISSUER)
    .setAudience(audience)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(key);
  return { token, issuedAt: iat * 1000, expiresAt: exp * 1000 };
}

/**
 * Verifies a JWT against the ring: the kid must name a key of the ring and the
 * alg must be that key's (an allowlist: no "none", no HMAC), iss must be
 * dtlspush, aud exactly `audience`, iat/exp/sub present, exp not past (5 s
 * leeway). Refusals are AuthError token_invalid or token_expired.
 */
export async function verifyToken(
  ring: KeyRing,
  token: string,
  audience: string,
  now: number,
  what: string,
): Promise<JWTPayload & { iat: number; exp: number; sub: string }> {
  checkNow(now);
  if (typeof token !== "string") throw new AuthError("token_invalid", `The ${what} is not a string.`);
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(
      token,
      (header: JWTHeaderParameters) => {
        const kid = header.kid;
        if (typeof kid !== "string") throw new AuthError("token_invalid", `The ${what} has no kid in its header.`);
        const key = ring.verificationKey(kid);
        if (key === undefined) throw new AuthError("token_invalid", `The ${what} is signed by key ${kid}, which is not in key ring ${ring.name}.`);
        if (header.alg !== key.alg) throw new AuthError("token_invalid", `The ${what} says alg ${header.alg} but key ${kid} is ${key.alg}.`);
        return key.key;
      },
      {
        algorithms: ring.algorithms(),
        issuer: TOKEN_ISSUER,
        audience,
        currentDate: new Date(now),
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        requiredClaims: ["iat", "exp", "sub"],
      },
    ));
  } catch (e) {
    throw tokenError(e, what);
  }
  // jose accepts an aud array that merely contains the audience; ours are single strings.
  if (payload.aud !== audience) throw new AuthError("token_invalid", `The ${what} is not meant for ${audience}.`);
  const { iat, exp, sub } = payload;
  if (typeof iat !== "number" || typeof exp !== "number" || typeof sub !== "string") {
    throw new AuthError("token_invalid", `The ${what} has iat, exp or sub of the wrong type.`);
  }
  return { ...payload, iat, exp, sub };
}

function tokenError(e: unknown, what: string): AuthError {
  if (e instanceof AuthError) return e;
  if (e instanceof errors.JWTExpired) return new AuthError("token_expired", `The ${what} has expired.`, { cause: e });
  if (e instanceof errors.JOSEAlgNotAllowed || e instanceof errors.JOSENotSupported) {
    return new AuthError("token_invalid", `The ${what} uses an algorithm that is not allowed.`, { cause: e });
  }
  if (e instanceof errors.JWSSignatureVerificationFailed) {
    return new AuthError("token_invalid", `The ${what} signature does not verify.`, { cause: e });
  }
  if (e instanceof errors.JWTClaimValidationFailed) {
    return new AuthError("token_invalid", `The ${what} has a missing or wrong ${e.claim} claim.`, { cause: e });
  }
  return new AuthError("token_invalid", `The ${what} is malformed.`, { cause: e });
}

function checkNow(now: number): void {
  if (!Number.isFinite(now) || now < 0) throw new RangeError(`now must be ms since the epoch, not ${now}.`);
}
