import { createContentVerifier, type ContentVerifier } from "../auth/index.ts";
import type { Push } from "../wire/index.ts";

/**
 * The device's check of a push's detached signature against the JWKS from
 * Welcome (the verifier is rebuilt only when the JWKS changes). Resolves
 * false for a bad signature, an unknown key or an unusable JWKS.
 */
export function createPushVerifier(): (push: Push, jwks: string) => Promise<boolean> {
  let cached: { jwks: string; verifier: ContentVerifier } | undefined;
  return async (push, jwks) => {
    try {
      if (cached?.jwks !== jwks) cached = { jwks, verifier: createContentVerifier(jwks) };
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
    } catch {
      return false;
    }
  };
}
