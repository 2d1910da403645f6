/**
 * A worker thread of the SigningPool: it imports the current content-signing
 * key once (again only when the pool sends another one, after a rotation) and
 * signs each batch the pool posts, answering with one message per batch.
 * Signing goes through the crypto provider, like on the main thread.
 *
 * A batch whose key cannot be imported, or anything else thrown outside one
 * item, is a crash: the exception ends the thread and the pool fails that
 * batch and starts a replacement. An item that cannot be signed is answered
 * with its own error; the others are signed.
 */
import { parentPort } from "node:worker_threads";
import { defaultCrypto, type JwsSigner } from "../crypto/index.ts";
import { signContentWith } from "./content-signing.ts";
import type { SigningKeyMaterial } from "./key-ring.ts";
import type { SignedFields } from "./signed-content.ts";

/** Pool -> worker: one batch (one message per worker per event-loop turn). */
export interface SignBatch {
  readonly id: number;
  /** present when the worker does not hold the ring's current key yet */
  readonly key?: SigningKeyMaterial;
  readonly items: readonly SignedFields[];
}

/** Worker -> pool: the batch's signatures in item order, or an item's error message. */
export interface SignResults {
  readonly id: number;
  readonly results: readonly (string | { readonly error: string })[];
}

if (parentPort !== null) {
  const port = parentPort;
  let key: { kid: string; alg: SigningKeyMaterial["alg"]; signer: JwsSigner } | undefined;
  port.on("message", (batch: SignBatch) => {
    if (batch.key !== undefined)
      key = { kid: batch.key.kid, alg: batch.key.alg, signer: defaultCrypto.jws.privateKeyFromJwk(batch.key.jwk, batch.key.alg) };
    const k = key;
    if (k === undefined) throw new Error("the signing worker got a batch before any key");
    const results = batch.items.map((fields) => {
      try {
        return signContentWith(k, fields);
      } catch (e) {
        return { error: e instanceof Error ? e.message : String(e) };
      }
    });
    const answer: SignResults = { id: batch.id, results };
    port.postMessage(answer);
  });
}
