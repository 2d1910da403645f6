import { base64url } from "jose";
import { randomBytes } from "../crypto/index.ts";
import { AuthError } from "./errors.ts";
import type { KeyRing } from "./key-ring.ts";
import { API_AUDIENCE, signToken, verifyToken } from "./tokens.ts";

/** What a publisher may do; admin implies publish. */
export type Scope = "publish" | "admin";
export const SCOPES: readonly Scope[] = ["publish", "admin"];

/** What a verified publisher token says. Times are ms since the epoch (whole seconds). */
export interface PublisherClaims {
  subject: string;
  scopes: Scope[];
  issuedAt: number;
  expiresAt: number;
  /** the jti: 16 random bytes, base64url */
  tokenId: string;
}

/**
 * Issues a publisher token: a JWT with iss "dtlspush", aud "dtlspush:api",
 * sub = subject, `scope` = the scopes space-separated (RFC 8693), jti random.
 */
export async function issuePublisherToken(
  ring: KeyRing,
  claims: { subject: string; scopes: Scope[]; now: number; ttlSeconds: number },
): Promise<{ token: string; expiresAt: number }> {
  if (typeof claims.subject !== "string" || claims.subject.length === 0 || claims.subject.length > 256) {
    throw new RangeError("The publisher token subject must be a string of 1..256 characters.");
  }
  if (!Array.isArray(claims.scopes) || claims.scopes.length === 0) throw new RangeError("A publisher token needs at least one scope.");
  for (const s of claims.scopes) {
    if (!SCOPES.includes(s)) throw new RangeError(`Unknown scope ${JSON.stringify(s)} (publish or admin).`);
  }
  const scope = [...new Set(claims.scopes)].join(" ");
  const { token, expiresAt } = await signToken(
    ring,
    { sub: claims.subject, scope, jti: base64url.encode(randomBytes(16)) },
    API_AUDIENCE,
    claims.now,
    claims.ttlSeconds,
  );
  return { token, expiresAt };
}

/**
 * Verifies a publisher token (aud "dtlspush:api", otherwise as session tokens)
 * and that it grants `required.scope` (admin implies publish). An empty or
 * undefined token is token_missing; a token without the scope (or without a
 * `scope` claim) is insufficient_scope.
 */
export async function verifyPublisherToken(
  ring: KeyRing,
  token: string | undefined,
  required: { scope: Scope; now: number },
): Promise<PublisherClaims> {
  if (token === undefined || token === null || (typeof token === "string" && token.trim() === "")) {
    throw new AuthError("token_missing", "No publisher token was presented.");
  }
  const claims = await verifyToken(ring, token, API_AUDIENCE, required.now, "publisher token");
  const { scope, jti } = claims;
  if (typeof jti !== "string") throw new AuthError("token_invalid", "The publisher token lacks a string jti claim.");
  if (scope !== undefined && typeof scope !== "string")
    throw new AuthError("token_invalid", "The publisher token has a scope claim that is not a string.");
  // Unknown scope values are ignored (a newer issuer may know more).
  const scopes = (scope ?? "").split(" ").filter((s): s is Scope => SCOPES.includes(s as Scope));
  const granted = scopes.includes("admin") || (required.scope === "publish" && scopes.includes("publish"));
  if (!granted) {
    throw new AuthError("insufficient_scope", `The publisher token of ${JSON.stringify(claims.sub)} does not grant the ${required.scope} scope.`);
  }
  return { subject: claims.sub, scopes: [...new Set(scopes)], issuedAt: claims.iat * 1000, expiresAt: claims.exp * 1000, tokenId: jti };
}
