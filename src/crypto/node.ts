/**
 * The one module that imports `node:crypto`: every other file of the crypto
 * layer takes Node's primitives from here, so what the process uses of
 * Node's crypto is listed in one place (the dependency rules allow
 * `node:crypto` in this file only).
 */
export {
  constants,
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  randomFillSync,
  randomUUID,
  sign,
  timingSafeEqual,
  verify,
  webcrypto,
  X509Certificate,
  type KeyObject,
} from "node:crypto";
