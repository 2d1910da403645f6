import { AuthError, createContentVerifier, type ContentVerifier } from "../auth/index.ts";
import type { PushVerdict } from "./device-session.ts";
import type { Push } from "../wire/index.ts";
import type { CryptoProvider } from "../crypto/index.ts";

/**
 * The device's check of a push's detached signature against the JWKS from
 * Welcome (the verifier is rebuilt only when the JWKS changes). Resolves
 * true for a good signature, "unknown_key" when its kid is not in the JWKS,
 * false for anything else (bad signature, unusable JWKS). The JWKS keys are
 * imported by `provider` (default: the Node one).
 */
export function createPushVerifier(provider?: CryptoProvider): (push: Push, jwks: string) => Promise<PushVerdict> {
  let cached: { jwks: string; verifier: ContentVerifier } | undefined;
  return async (push, jwks) => {
    try {
      if (cached?.jwks !== jwks) cached = { jwks, verifier: createContentVerifier(jwks, provider) };
      await cached.verifier.verify(
        {
          messageId: push.messageId,
          topic: push.topic,
          device: push.device,
          contentType: push.contentType,
          publisher: push.publisher,
          collapseKey: push.collapseKey,
          payload: push.payload,
          createdAt: push.createdAt,
          expiresAt: push.expiresAt,
          priority: push.priority,
        },
        push.signature,
      );
      return true;
    } catch (e) {
      return e instanceof AuthError && e.code === "unknown_key" ? "unknown_key" : false;
    }
  };
}
