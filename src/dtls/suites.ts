/**
 * The cipher suite table (PSK, ECDHE_PSK, ECDHE_ECDSA, ECDHE_RSA, all AEAD)
 * with what each means to the record layer and the key schedule, the default
 * preference order, and lookups by id and name.
 */
import type { AeadName, HashName } from "../crypto/index.ts";
import { DtlsError } from "./errors.ts";

/** What a cipher suite means to the record layer and key schedule. */
export interface CipherSuite {
  readonly id: number;
  readonly name: SuiteName;
  /**
   * "psk": RFC 4279; "ecdhe_psk": RFC 5489 (ephemeral ECDH mixed with the PSK,
   * forward secrecy); "ecdhe_ecdsa" / "ecdhe_rsa": RFC 8422 / 5246, ephemeral
   * ECDH signed with the server certificate's key.
   */
  readonly keyExchange: KeyExchange;
  readonly aead: AeadName;
  readonly prfHash: HashName;
  readonly keyLength: number;
  /** Implicit IV bytes from the key block: 4 (GCM/CCM salt) or 12 (ChaCha20). */
  readonly fixedIvLength: number;
  /** Explicit nonce bytes carried in every record: 8 (GCM/CCM) or 0 (ChaCha20). */
  readonly recordIvLength: number;
  readonly tagLength: number;
}

export type KeyExchange = "psk" | "ecdhe_psk" | "ecdhe_ecdsa" | "ecdhe_rsa";

/** Suites authenticated by a pre-shared key (as opposed to a certificate). */
export function usesPsk(s: CipherSuite): boolean {
  return s.keyExchange === "psk" || s.keyExchange === "ecdhe_psk";
}

/** Suites with an ephemeral ECDH exchange. */
export function usesEcdhe(s: CipherSuite): boolean {
  return s.keyExchange !== "psk";
}

export type SuiteName =
  | "TLS_PSK_WITH_AES_128_CCM_8"
  | "TLS_PSK_WITH_AES_128_CCM"
  | "TLS_PSK_WITH_AES_128_GCM_SHA256"
  | "TLS_PSK_WITH_AES_256_GCM_SHA384"
  | "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256"
  | "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256"
  | "TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384"
  | "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"
  | "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
  | "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
  | "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"
  | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
  | "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
  | "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
  | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256";

function aes(
  id: number,
  name: SuiteName,
  aead: AeadName,
  keyLength: number,
  prfHash: HashName,
  tagLength: number,
  keyExchange: CipherSuite["keyExchange"] = "psk",
): CipherSuite {
  return { id, name, keyExchange, aead, prfHash, keyLength, fixedIvLength: 4, recordIvLength: 8, tagLength };
}

function chacha(id: number, name: SuiteName, keyExchange: CipherSuite["keyExchange"]): CipherSuite {
  return { id, name, keyExchange, aead: "chacha20-poly1305", prfHash: "sha256", keyLength: 32, fixedIvLength: 12, recordIvLength: 0, tagLength: 16 };
}

const ALL: readonly CipherSuite[] = [
  aes(0xc0a8, "TLS_PSK_WITH_AES_128_CCM_8", "aes-128-ccm8", 16, "sha256", 8),
  aes(0x00a8, "TLS_PSK_WITH_AES_128_GCM_SHA256", "aes-128-gcm", 16, "sha256", 16),
  aes(0x00a9, "TLS_PSK_WITH_AES_256_GCM_SHA384", "aes-256-gcm", 32, "sha384", 16),
  chacha(0xccab, "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256", "psk"),
  aes(0xc0a4, "TLS_PSK_WITH_AES_128_CCM", "aes-128-ccm", 16, "sha256", 16),
  // ECDHE_PSK (RFC 5489, 7905, 8442): forward secrecy for one ECDH per handshake.
  aes(0xd001, "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256", "aes-128-gcm", 16, "sha256", 16, "ecdhe_psk"),
  chacha(0xccac, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", "ecdhe_psk"),
  aes(0xd002, "TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384", "aes-256-gcm", 32, "sha384", 16, "ecdhe_psk"),
  // Certificates (RFC 8422, 5289, 7251, 7905).
  aes(0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "aes-128-gcm", 16, "sha256", 16, "ecdhe_ecdsa"),
  aes(0xc0ae, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", "aes-128-ccm8", 16, "sha256", 8, "ecdhe_ecdsa"),
  chacha(0xcca9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ecdhe_ecdsa"),
  aes(0xc02c, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "aes-256-gcm", 32, "sha384", 16, "ecdhe_ecdsa"),
  aes(0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "aes-128-gcm", 16, "sha256", 16, "ecdhe_rsa"),
  chacha(0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ecdhe_rsa"),
  aes(0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "aes-256-gcm", 32, "sha384", 16, "ecdhe_rsa"),
];

/**
 * Every supported suite, in the default preference order: plain PSK first
 * (cheapest for constrained devices, small tags first), then ECDHE_PSK, then
 * the certificate suites. An endpoint uses only those its credentials allow.
 */
export const SUITE_NAMES: readonly SuiteName[] = ALL.map((s) => s.name);

const byId = new Map(ALL.map((s) => [s.id, s]));
const byName = new Map(ALL.map((s) => [s.name as string, s]));

export function suiteById(id: number): CipherSuite | undefined {
  return byId.get(id);
}

export function suiteByName(name: SuiteName): CipherSuite {
  return byName.get(name) as CipherSuite;
}

export function isSuiteName(s: string): s is SuiteName {
  return byName.has(s);
}

/** Parses "NAME,NAME" of IANA suite names; throws DtlsError("bad_suite") naming the unknown one. */
export function parseSuiteList(csv: string): SuiteName[] {
  const names = csv
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (names.length === 0) throw new DtlsError("bad_suite", "empty cipher suite list");
  for (const n of names) {
    if (!isSuiteName(n)) throw new DtlsError("bad_suite", `unknown cipher suite ${n}; supported: ${SUITE_NAMES.join(", ")}`);
  }
  return names as SuiteName[];
}

export function suiteName(id: number): string {
  return byId.get(id)?.name ?? `0x${id.toString(16).padStart(4, "0")}`;
}
