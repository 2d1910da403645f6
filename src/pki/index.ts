/** Certificate generation (development CA, server and device certificates), sans-I/O. */
export * from "./certificates.ts";
export { KEY_KINDS, decodePem, encodePem, exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem, keysMatch, pemBlocks } from "../crypto/index.ts";
export type { KeyKind, PemBlock, WebKey, WebKeyPair } from "../crypto/index.ts";
