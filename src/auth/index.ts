/** Auth: signing key rings and JWKS, session and publisher tokens (JWT), content signatures (detached JWS), the device registry. */
export { AuthError, AUTH_ERROR_CODES, type AuthErrorCode } from "./errors.ts";
export {
  KeyRing,
  SIGNING_ALGS,
  type SigningAlg,
  type KeyStorage,
  type JsonWebKey,
  type SigningKey,
  type SigningKeyMaterial,
  type VerificationKey,
} from "./key-ring.ts";
export { TOKEN_ISSUER, SESSION_AUDIENCE, API_AUDIENCE, CLOCK_TOLERANCE_SECONDS } from "./tokens.ts";
export { issueSessionToken, verifySessionToken, type SessionClaims } from "./session-tokens.ts";
export { issuePublisherToken, verifyPublisherToken, SCOPES, type Scope, type PublisherClaims } from "./publisher-tokens.ts";
export { signedContent, SIGNED_CONTENT_LABEL, type SignedFields } from "./signed-content.ts";
export {
  signContent,
  signContentWith,
  mainThreadSigner,
  contentSignatureLength,
  createContentVerifier,
  type ContentSigner,
  type ContentVerifier,
} from "./content-signing.ts";
export { SigningPool, type SigningPoolStats, type SigningKeySource } from "./signing-pool.ts";
export { DEVICE_ID_PATTERN, TOPIC_PATTERN, checkDeviceId, checkTopic } from "./names.ts";
export { DeviceRegistry, type DeviceInput, type DeviceChangeListener, type CertificateRefusal } from "./device-registry.ts";
export { TicketKeyRing, TICKET_KEYS_SETTING, type TicketKeyRingOptions, type TicketKeyMaintenance } from "./ticket-keys.ts";
