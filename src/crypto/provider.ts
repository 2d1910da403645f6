/**
 * The crypto provider: every cryptographic operation of dtlspush, as one
 * interface. `defaultCrypto` is the Node implementation (node:crypto, the
 * files of this folder); components that take a `crypto` option (KeyRing,
 * content verifiers, the delivery engine's ids, ...) use it when none is
 * given. Another implementation (an HSM, a FIPS module, a test double that
 * counts calls) implements this interface and is passed where it is used.
 */
import { aeadKey, aeadKeyBytes, aeadOpen, aeadSeal, aeadTagLength, createAead } from "./aead.ts";
import { subjectNameDer } from "./der.ts";
import { generateEcdh } from "./ecdh.ts";
import { constantTimeEqual, hash, hmac, prf, runningHash, secretKey, secretKeyBytes } from "./hash.ts";
import { jwsGenerateJwk, jwsPrivateKeyFromJwk, jwsPublicKeyFromJwk } from "./jws.ts";
import { exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem, keysMatch, webCrypto } from "./key-pairs.ts";
import { randomBytes, randomId, timeOrderedId } from "./random.ts";
import { loadPrivateKey } from "./signatures.ts";
import { parseCertificate, pemCertificates } from "./x509.ts";

/** Randomness and identifiers. */
export interface RandomSource {
  /** `n` bytes from a CSPRNG. */
  readonly bytes: typeof randomBytes;
  /** A random (version 4) UUID. */
  readonly uuid: typeof randomId;
  /** A time-ordered (version 7) UUID for the time `now` (ms since the epoch). */
  readonly timeOrderedId: typeof timeOrderedId;
}

/** Hashes, HMAC, the TLS 1.2 PRF, MAC keys and constant-time comparison. */
export interface Digests {
  readonly hash: typeof hash;
  readonly runningHash: typeof runningHash;
  readonly hmac: typeof hmac;
  readonly prf: typeof prf;
  readonly secretKey: typeof secretKey;
  readonly secretKeyBytes: typeof secretKeyBytes;
  readonly constantTimeEqual: typeof constantTimeEqual;
}

/** AEAD ciphers (AES-GCM, AES-CCM, AES-CCM_8, ChaCha20-Poly1305). */
export interface AeadCiphers {
  readonly key: typeof aeadKey;
  readonly keyBytes: typeof aeadKeyBytes;
  readonly tagLength: typeof aeadTagLength;
  readonly seal: typeof aeadSeal;
  readonly open: typeof aeadOpen;
  readonly create: typeof createAead;
}

/** Ephemeral ECDH (x25519, P-256, P-384, P-521). */
export interface KeyExchange {
  readonly generate: typeof generateEcdh;
}

/** Handshake signatures with PEM private keys, and X.509 certificates. */
export interface Certificates {
  readonly loadPrivateKey: typeof loadPrivateKey;
  readonly parse: typeof parseCertificate;
  readonly pemCertificates: typeof pemCertificates;
  /** The DER subject Name of a DER certificate. */
  readonly subjectNameDer: typeof subjectNameDer;
}

/** JWS keys (EdDSA, ES256) for content signatures and tokens. */
export interface JwsKeys {
  readonly generateJwk: typeof jwsGenerateJwk;
  readonly privateKeyFromJwk: typeof jwsPrivateKeyFromJwk;
  readonly publicKeyFromJwk: typeof jwsPublicKeyFromJwk;
}

/** Key pairs for certificate generation (WebCrypto keys, what @peculiar/x509 signs with). */
export interface CertificateKeys {
  /** The WebCrypto object handed to @peculiar/x509. */
  readonly webCrypto: typeof webCrypto;
  readonly generate: typeof generateKeyPair;
  readonly exportPrivateKeyPem: typeof exportPrivateKeyPem;
  readonly importPrivateKeyPem: typeof importPrivateKeyPem;
  readonly keysMatch: typeof keysMatch;
}

export interface CryptoProvider {
  readonly random: RandomSource;
  readonly digest: Digests;
  readonly aead: AeadCiphers;
  readonly ecdh: KeyExchange;
  readonly x509: Certificates;
  readonly jws: JwsKeys;
  readonly certificateKeys: CertificateKeys;
}

/** The Node implementation (node:crypto), used wherever no provider is injected. */
export const defaultCrypto: CryptoProvider = Object.freeze({
  random: Object.freeze({ bytes: randomBytes, uuid: randomId, timeOrderedId }),
  digest: Object.freeze({ hash, runningHash, hmac, prf, secretKey, secretKeyBytes, constantTimeEqual }),
  aead: Object.freeze({ key: aeadKey, keyBytes: aeadKeyBytes, tagLength: aeadTagLength, seal: aeadSeal, open: aeadOpen, create: createAead }),
  ecdh: Object.freeze({ generate: generateEcdh }),
  x509: Object.freeze({ loadPrivateKey, parse: parseCertificate, pemCertificates, subjectNameDer }),
  jws: Object.freeze({ generateJwk: jwsGenerateJwk, privateKeyFromJwk: jwsPrivateKeyFromJwk, publicKeyFromJwk: jwsPublicKeyFromJwk }),
  certificateKeys: Object.freeze({ webCrypto, generate: generateKeyPair, exportPrivateKeyPem, importPrivateKeyPem, keysMatch }),
});
