import { calculateJwkThumbprint, type JWK } from "jose";
import { defaultCrypto, type CryptoProvider, type JwsPrivateKey, type JwsSigner, type JwsVerifier, type KeyHandle } from "../crypto/index.ts";
import { AuthError } from "./errors.ts";

/** The JWS algorithms dtlspush signs with: Ed25519 (default) or ECDSA P-256 with SHA-256. */
export type SigningAlg = "EdDSA" | "ES256";
export const SIGNING_ALGS: readonly SigningAlg[] = ["EdDSA", "ES256"];

/** A JSON Web Key (RFC 7517) as jose types it. */
export type JsonWebKey = JWK;

/** Where a ring keeps its key material; the Store satisfies it (putSetting resolves when durable). */
export interface KeyStorage {
  getSetting(key: string): Promise<string | undefined>;
  putSetting(key: string, value: string): Promise<void>;
}

/** A key ready to sign with (the ring's current key). */
export interface SigningKey {
  readonly kid: string;
  readonly alg: SigningAlg;
  /** the private key, for jose (JWTs) */
  readonly key: KeyHandle;
  /** the same key object for synchronous signing: JWS signature bytes of a JWS signing input */
  readonly signer: JwsSigner;
}

/** The private key material of the current key, to import elsewhere (a worker thread). */
export interface SigningKeyMaterial {
  readonly kid: string;
  readonly alg: SigningAlg;
  /** private JWK members only: kty, crv, x, y, d */
  readonly jwk: JWK;
}

/** A key ready to verify with. */
export interface VerificationKey {
  readonly kid: string;
  readonly alg: SigningAlg;
  /** the public key, for jose (JWTs) */
  readonly key: KeyHandle;
  /** the same key object for synchronous checks of JWS signature bytes */
  readonly verifier: JwsVerifier;
}

interface RingKey {
  readonly kid: string;
  readonly alg: SigningAlg;
  /** ms since the epoch */
  readonly createdAt: number;
  /** private JWK members only (kty, crv, x, y, d): what is persisted */
  readonly privateJwk: JWK;
  /** public JWKS entry: kty, crv, x, y, kid, alg, use */
  readonly publicJwk: JWK;
  /** the key, imported once: it signs (and its public key verifies) tokens through jose and content synchronously */
  readonly privateKey: JwsPrivateKey;
}

/** The persisted form, JSON under settings key `keys.<name>`. */
interface PersistedRing {
  version: 1;
  current: string;
  keys: { kid: string; alg: SigningAlg; createdAt: number; jwk: JWK }[];
}

const NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const PUBLIC_MEMBERS = ["kty", "crv", "x", "y"] as const;
const PRIVATE_MEMBERS = ["kty", "crv", "x", "y", "d"] as const;

/**
 * A named set of signing keys: one current key that signs, older keys that
 * still verify until retired. Each key's id is the RFC 7638 thumbprint of its
 * public JWK. Key material is persisted as JSON (private JWKs, creation time,
 * alg) through KeyStorage; each key is imported once (through the crypto
 * provider) into one key object that signs tokens (jose) and content
 * (synchronously), and whose public key verifies both.
 *
 * Distinct purposes (session tokens, publisher tokens, content signatures)
 * should use distinct rings; the caller decides.
 */
export class KeyRing {
  readonly name: string;
  private readonly storage: KeyStorage;
  private readonly provider: CryptoProvider;
  private keys: readonly RingKey[];
  private current: RingKey;

  private constructor(storage: KeyStorage, provider: CryptoProvider, name: string, keys: readonly RingKey[], current: RingKey) {
    this.storage = storage;
    this.provider = provider;
    this.name = name;
    this.keys = keys;
    this.current = current;
  }

  /**
   * Loads the ring persisted under settings key `keys.<name>`, or generates a
   * first key (alg `options.alg`, default EdDSA, created at `options.now`,
   * default 0) and persists it. When a stored ring's current key has another
   * alg than `options.alg`, a key of the requested alg is rotated in (the old
   * keys keep verifying until retired). A stored ring that cannot be read back
   * is AuthError key_ring_invalid. Keys are made and imported by
   * `options.crypto` (default: the Node provider).
   */
  static async open(storage: KeyStorage, name: string, options: { alg?: SigningAlg; now?: number; crypto?: CryptoProvider } = {}): Promise<KeyRing> {
    if (!NAME_PATTERN.test(name)) throw new RangeError(`Key ring name ${JSON.stringify(name)} must be 1..64 letters, digits, ".", "_" or "-".`);
    if (options.alg !== undefined && !SIGNING_ALGS.includes(options.alg)) {
      throw new RangeError(`Signing alg ${JSON.stringify(options.alg)} is not supported (EdDSA or ES256).`);
    }
    const now = options.now ?? 0;
    const provider = options.crypto ?? defaultCrypto;
    checkTime(now, "now");
    const settingsKey = `keys.${name}`;
    const stored = await storage.getSetting(settingsKey);
    if (stored === undefined) {
      const first = await newKey(provider, options.alg ?? "EdDSA", now);
      const ring = new KeyRing(storage, provider, name, [first], first);
      await ring.persist();
      return ring;
    }
    const { keys, current } = await loadRing(provider, settingsKey, stored);
    const ring = new KeyRing(storage, provider, name, keys, current);
    if (options.alg !== undefined && options.alg !== current.alg) await ring.rotate(now, options.alg);
    return ring;
  }

  /** The alg of the current key (what new signatures use). */
  get alg(): SigningAlg {
    return this.current.alg;
  }

  get currentKid(): string {
    return this.current.kid;
  }

  /** Kids of all keys, oldest first. */
  kids(): string[] {
    return this.keys.map((k) => k.kid);
  }

  /**
   * Makes a new current key (of `alg`, default the ring's alg); the previous
   * ones stay valid for verification until `retire`d. Persists; returns the new kid.
   */
  async rotate(now: number, alg: SigningAlg = this.current.alg): Promise<string> {
    checkTime(now, "now");
    if (!SIGNING_ALGS.includes(alg)) throw new RangeError(`Signing alg ${JSON.stringify(alg)} is not supported (EdDSA or ES256).`);
    const key = await newKey(this.provider, alg, now);
    const previous = { keys: this.keys, current: this.current };
    this.keys = [...this.keys.filter((k) => k.kid !== key.kid), key];
    this.current = key;
    try {
      await this.persist();
    } catch (e) {
      this.keys = previous.keys;
      this.current = previous.current;
      throw e;
    }
    return key.kid;
  }

  /** Drops the keys (never the current one) created before `before`; persists; resolves to the dropped kids. */
  async retire(before: number): Promise<string[]> {
    checkTime(before, "before");
    const dropped = this.keys.filter((k) => k !== this.current && k.createdAt < before);
    if (dropped.length === 0) return [];
    const previous = this.keys;
    this.keys = this.keys.filter((k) => !dropped.includes(k));
    try {
      await this.persist();
    } catch (e) {
      this.keys = previous;
      throw e;
    }
    return dropped.map((k) => k.kid);
  }

  /** Public JWKS (RFC 7517) of all keys in the ring, oldest first, each with kid, alg, use "sig". */
  jwks(): { keys: JsonWebKey[] } {
    return { keys: this.keys.map((k) => ({ ...k.publicJwk })) };
  }

  /** The current key, for signing. */
  signingKey(): SigningKey {
    const { kid, alg, privateKey } = this.current;
    return { kid, alg, key: privateKey.key, signer: privateKey };
  }

  /**
   * The current key's private JWK (kty, crv, x, y, d), kid and alg: for a
   * signing worker that imports it once (see SigningPool). Secret: never log it.
   */
  signingKeyMaterial(): SigningKeyMaterial {
    return { kid: this.current.kid, alg: this.current.alg, jwk: { ...this.current.privateJwk } };
  }

  /** The key with that kid, for verifying; undefined when it is not (or no longer) in the ring. */
  verificationKey(kid: string): VerificationKey | undefined {
    const k = this.keys.find((x) => x.kid === kid);
    return k === undefined ? undefined : { kid: k.kid, alg: k.alg, key: k.privateKey.publicKey.key, verifier: k.privateKey.publicKey };
  }

  /** The algs of the keys in the ring (an allowlist for verification). */
  algorithms(): SigningAlg[] {
    return [...new Set(this.keys.map((k) => k.alg))];
  }

  private async persist(): Promise<void> {
    const data: PersistedRing = {
      version: 1,
      current: this.current.kid,
      keys: this.keys.map((k) => ({ kid: k.kid, alg: k.alg, createdAt: k.createdAt, jwk: k.privateJwk })),
    };
    await this.storage.putSetting(`keys.${this.name}`, JSON.stringify(data));
  }
}

function checkTime(t: number, what: string): void {
  if (!Number.isSafeInteger(t) || t < 0) throw new RangeError(`${what} must be a non-negative integer of ms since the epoch, not ${t}.`);
}

async function newKey(provider: CryptoProvider, alg: SigningAlg, createdAt: number): Promise<RingKey> {
  return importRingKey(provider, alg, createdAt, pick({ ...provider.jws.generateJwk(alg) }, PRIVATE_MEMBERS));
}

/**
 * Imports one key from its private JWK, once: the key object (signs tokens and
 * content; its public key verifies them), kid = thumbprint. Throws when the
 * JWK is not a private key of `alg` or its public members are not those of its
 * private key.
 */
async function importRingKey(provider: CryptoProvider, alg: SigningAlg, createdAt: number, privateJwk: JWK): Promise<RingKey> {
  const privateKey = provider.jws.privateKeyFromJwk(privateJwk, alg);
  const publicPart = pick(privateJwk, PUBLIC_MEMBERS);
  const kid = await calculateJwkThumbprint(publicPart, "sha256");
  return { kid, alg, createdAt, privateJwk, publicJwk: { ...publicPart, kid, alg, use: "sig" }, privateKey };
}

async function loadRing(provider: CryptoProvider, settingsKey: string, text: string): Promise<{ keys: RingKey[]; current: RingKey }> {
  const bad = (problem: string, cause?: unknown): AuthError =>
    new AuthError("key_ring_invalid", `The key ring stored under ${settingsKey} ${problem}.`, cause === undefined ? undefined : { cause });
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw bad("is not JSON", e);
  }
  if (!isRecord(data) || data["version"] !== 1 || !Array.isArray(data["keys"]) || typeof data["current"] !== "string") {
    throw bad("is not a version 1 key ring");
  }
  const keys: RingKey[] = [];
  for (const [i, entry] of (data["keys"] as unknown[]).entries()) {
    if (!isRecord(entry)) throw bad(`has a key ${i} that is not an object`);
    const { kid, alg, createdAt, jwk } = entry;
    if (typeof kid !== "string" || !SIGNING_ALGS.includes(alg as SigningAlg) || !Number.isSafeInteger(createdAt) || !isRecord(jwk)) {
      throw bad(`has a key ${i} without kid, alg (EdDSA or ES256), createdAt and jwk`);
    }
    let key: RingKey;
    try {
      key = await importRingKey(provider, alg as SigningAlg, createdAt as number, pick(jwk as JWK, PRIVATE_MEMBERS));
    } catch (e) {
      throw bad(`has a key ${kid} that cannot be imported`, e);
    }
    if (key.kid !== kid) throw bad(`has a key whose kid ${kid} is not its thumbprint ${key.kid}`);
    if (keys.some((k) => k.kid === kid)) throw bad(`lists key ${kid} twice`);
    keys.push(key);
  }
  const current = keys.find((k) => k.kid === data["current"]);
  if (current === undefined) throw bad(`names current key ${String(data["current"])} that it does not hold`);
  return { keys, current };
}

function pick(jwk: JWK, members: readonly string[]): JWK {
  const out: Record<string, unknown> = {};
  for (const m of members) {
    const v = (jwk as Record<string, unknown>)[m];
    if (v !== undefined) out[m] = v;
  }
  return out as JWK;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
