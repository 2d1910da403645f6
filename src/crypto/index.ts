/**
 * The crypto layer: the only part of dtlspush that imports node:crypto or
 * touches WebCrypto. A crypto review reads this folder (see docs/crypto.md).
 */
export { aeadKey, aeadKeyBytes, aeadOpen, aeadSeal, aeadTagLength, createAead } from "./aead.ts";
export type { Aead, AeadKey, AeadName } from "./aead.ts";
export { keyUsage, subjectNameDer } from "./der.ts";
export type { KeyUsage } from "./der.ts";
export { generateEcdh } from "./ecdh.ts";
export type { EcdhGroup, EcdhKeyPair } from "./ecdh.ts";
export { constantTimeEqual, hash, hmac, prf, runningHash, secretKey, secretKeyBytes } from "./hash.ts";
export type { HashName, RunningHash, SecretKey } from "./hash.ts";
export { jwsGenerateJwk, jwsPrivateKeyFromJwk, jwsPublicKeyFromJwk } from "./jws.ts";
export type { JwkKeyMembers, JwsAlg, JwsPrivateKey, JwsPublicKey, JwsSigner, JwsVerifier, KeyHandle, PrivateJwk } from "./jws.ts";
export {
  KEY_KINDS,
  exportPrivateKeyPem,
  generateKeyPair,
  importPrivateKeyPem,
  keyAlgorithm,
  keysMatch,
  kindOfAlgorithm,
  webCrypto,
} from "./key-pairs.ts";
export type { KeyKind, WebKey, WebKeyPair } from "./key-pairs.ts";
export { decodePem, encodePem, pemBlocks, toHex } from "./pem.ts";
export type { PemBlock } from "./pem.ts";
export { defaultCrypto } from "./provider.ts";
export type { AeadCiphers, CertificateKeys, Certificates, CryptoProvider, Digests, JwsKeys, KeyExchange, RandomSource } from "./provider.ts";
export { randomBytes, randomId, timeOrderedId } from "./random.ts";
export { loadPrivateKey, schemeKeyType, schemeUsesSha1, SignatureScheme } from "./signatures.ts";
export type { Curve, KeyType, Signer } from "./signatures.ts";
export { parseCertificate, pemCertificates } from "./x509.ts";
export type { Certificate } from "./x509.ts";
