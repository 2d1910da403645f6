import { DtlspushError } from "../util/errors.ts";

/**
 * The stable codes of AuthError. Token codes are what an API answers a
 * publisher with (401 for token_*, 403 for insufficient_scope); the device
 * codes are registry refusals.
 */
export const AUTH_ERROR_CODES = [
  /** no token was presented */
  "token_missing",
  /** malformed, bad signature, unknown kid, alg "none" or not allowed, wrong iss or aud, claims of the wrong type */
  "token_invalid",
  /** past its exp (more than the 5 s leeway) */
  "token_expired",
  /** a valid session token for another device or another DTLS identity */
  "token_identity_mismatch",
  /** a valid publisher token without the scope the operation needs */
  "insufficient_scope",
  /** a content signature that is malformed or does not verify */
  "signature_invalid",
  /** a content signature whose kid is not in the verifier's JWKS, or an unusable JWKS */
  "unknown_key",
  /** a persisted key ring that cannot be read back */
  "key_ring_invalid",
  /** a device id or device credentials that break the registry's rules */
  "bad_device",
  /** a topic name that breaks the naming rules */
  "bad_topic",
  /** adding a device whose id is taken */
  "device_exists",
  /** changing a device that is not registered */
  "device_unknown",
] as const;

export type AuthErrorCode = (typeof AUTH_ERROR_CODES)[number];

export class AuthError extends DtlspushError {
  declare readonly code: AuthErrorCode;
  constructor(code: AuthErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "AuthError";
  }
}
