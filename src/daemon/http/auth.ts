import type { FastifyReply, FastifyRequest } from "fastify";
import { AuthError, verifyPublisherToken, type KeyRing, type PublisherClaims, type Scope } from "../../auth/index.ts";
import { HttpError } from "./errors.ts";

/** Result of one rate-limit check (what @fastify/rate-limit's createRateLimit answers). */
export type RateCheck =
  | { readonly isAllowed: true; readonly key: string }
  | {
      readonly isAllowed: false;
      readonly key: string;
      readonly max: number;
      readonly remaining: number;
      readonly ttlInSeconds: number;
      readonly isExceeded: boolean;
    };

export type RequestHook = (request: FastifyRequest, reply: FastifyReply) => Promise<void>;

export interface Guard {
  /**
   * The onRequest hook of a route: verifies the bearer token for `scope`
   * (none: a public route), then counts the request against the rate limit of
   * its token (of its IP when it has no valid token). Order of refusals: 429
   * rate_limited, then 401/403 from the token.
   */
  hook(scope?: Scope): RequestHook;
  /** The verified claims of a request that passed a scoped hook. */
  claims(request: FastifyRequest): PublisherClaims | undefined;
  /** The rate-limit key of a request: "token:<jti>" when its token verified, else "ip:<address>". */
  rateKey(request: FastifyRequest): string;
}

const REALM = 'Bearer realm="dtlspush"';
/** Verified tokens remembered (a signature check costs ~0.2 ms; a publisher sends the same token every time). */
const TOKEN_CACHE_SIZE = 4096;
/** How long a verification is trusted: a retired signing key stops its tokens within this time. */
const TOKEN_CACHE_MS = 60_000;
const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;

export function createGuard(o: {
  keys: KeyRing;
  clock: { now(): number };
  /** undefined: no rate limit */
  limit?: (request: FastifyRequest) => Promise<RateCheck>;
}): Guard {
  const verified = new WeakMap<FastifyRequest, PublisherClaims>();
  /** token -> its claims and when the check was made, oldest first */
  const cache = new Map<string, { claims: PublisherClaims; at: number }>();
  const cached = (token: string | undefined, scope: Scope, now: number): PublisherClaims | undefined => {
    if (token === undefined) return undefined;
    const hit = cache.get(token);
    if (hit === undefined) return undefined;
    if (now - hit.at >= TOKEN_CACHE_MS || now >= hit.claims.expiresAt) {
      cache.delete(token);
      return undefined;
    }
    // admin implies publish; anything else goes the slow way, which gives the exact error
    return hit.claims.scopes.includes(scope) || hit.claims.scopes.includes("admin") ? hit.claims : undefined;
  };
  const rateKey = (request: FastifyRequest): string => {
    const claims = verified.get(request);
    return claims !== undefined ? `token:${claims.tokenId}` : `ip:${request.ip}`;
  };

  async function authenticate(request: FastifyRequest, scope: Scope): Promise<PublisherClaims | HttpError> {
    const header = request.headers.authorization;
    let token: string | undefined;
    if (header !== undefined && header !== "") {
      const m = BEARER.exec(header);
      if (m === null) {
        return new HttpError("token_missing", "The Authorization header does not carry a Bearer token.", { "www-authenticate": REALM });
      }
      token = m[1];
    }
    const now = o.clock.now();
    const hit = cached(token, scope, now);
    if (hit !== undefined) return hit;
    try {
      const claims = await verifyPublisherToken(o.keys, token, { scope, now });
      if (token !== undefined) {
        if (cache.size >= TOKEN_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
        cache.set(token, { claims, at: now });
      }
      return claims;
    } catch (e) {
      if (!(e instanceof AuthError)) throw e;
      switch (e.code) {
        case "token_missing":
          return new HttpError(e.code, "This request needs a publisher token: Authorization: Bearer <token>.", { "www-authenticate": REALM });
        case "token_expired":
        case "token_invalid":
          return new HttpError(e.code, e.message, { "www-authenticate": `${REALM}, error="invalid_token"` });
        case "insufficient_scope":
          return new HttpError(e.code, e.message, { "www-authenticate": `${REALM}, error="insufficient_scope", scope="${scope}"` });
        default:
          return new HttpError("token_invalid", e.message, { "www-authenticate": `${REALM}, error="invalid_token"` });
      }
    }
  }

  return {
    hook(scope?: Scope): RequestHook {
      return async (request, reply) => {
        const outcome = scope === undefined ? undefined : await authenticate(request, scope);
        const claims = outcome instanceof HttpError ? undefined : outcome;
        if (claims !== undefined) verified.set(request, claims);
        if (o.limit !== undefined) {
          const r = await o.limit(request);
          if (!r.isAllowed) {
            void reply.header("x-ratelimit-limit", r.max).header("x-ratelimit-remaining", r.remaining).header("x-ratelimit-reset", r.ttlInSeconds);
            if (r.isExceeded) {
              const retry = String(Math.max(1, r.ttlInSeconds));
              throw new HttpError("rate_limited", `More than ${r.max} requests in a minute; retry in ${retry} s.`, { "retry-after": retry });
            }
          }
        }
        if (outcome instanceof HttpError) throw outcome;
      };
    },
    claims(request) {
      return verified.get(request);
    },
    rateKey,
  };
}
