import { createHmac } from "node:crypto";
import type { HashName } from "../../src/crypto/index.ts";

/**
 * Independent reference: RFC 5246 section 5 P_hash written directly against
 * node:crypto, sharing no code with src/crypto.
 */
export function refPrf(alg: HashName, secret: Uint8Array, label: string, seed: Uint8Array, length: number): Uint8Array {
  const labelSeed = Buffer.concat([Buffer.from(label, "latin1"), seed]);
  const chunks: Buffer[] = [];
  let total = 0;
  let a: Buffer = labelSeed; // A(0)
  while (total < length) {
    a = createHmac(alg, secret).update(a).digest(); // A(i)
    const block = createHmac(alg, secret)
      .update(Buffer.concat([a, labelSeed]))
      .digest();
    chunks.push(block);
    total += block.length;
  }
  return new Uint8Array(Buffer.concat(chunks).subarray(0, length));
}
