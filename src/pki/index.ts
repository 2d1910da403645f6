/** Certificate generation (development CA, server and device certificates), sans-I/O. */
export * from "./certificates.ts";
export { KEY_KINDS, exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem, keysMatch } from "./keys.ts";
export type { KeyKind, WebKey, WebKeyPair } from "./keys.ts";
export { decodePem, encodePem, pemBlocks } from "./pem.ts";
export type { PemBlock } from "./pem.ts";
