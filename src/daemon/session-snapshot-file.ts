/**
 * The file that carries the daemon's DTLS sessions over a restart
 * ([dtls] keep_sessions_on_restart): written on an orderly stop, read and
 * deleted on the next start. It holds every saved session's traffic keys, so
 * it is sealed (AES-256-GCM) under a key of its own kept in the data
 * directory (`session-snapshot.key`, 32 random bytes, mode 0600, made on first
 * use), and it is single-use: the start that reads it deletes it (unlink, then
 * an fsync of the directory) before any restored session sends a record. A
 * second load of the same bytes would seal new records under sequence numbers
 * the first already used: an AES-GCM nonce used twice under one key, which
 * gives away the authentication key and the XOR of the two plaintexts.
 *
 * Format (integers big-endian):
 *
 *   magic "DPSESS" (6) || version (1) = 1 || key id (8: SHA-256 of the key, first bytes)
 *   || written (6, wall ms) || nonce (12)
 *   || AES-256-GCM(key, nonce, aad = the 33 bytes before, body) || tag (16)
 *
 * body: count (4) || count x session <0..2^16-1> (src/dtls/session-snapshot.ts).
 */
import { open, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import { aeadKey, aeadOpen, aeadSeal, hash, randomBytes } from "../crypto/index.ts";
import { ByteReader, ByteWriter, bytesEqual } from "../util/bytes.ts";

export const SNAPSHOT_FILE = "session-snapshot.bin";
export const SNAPSHOT_KEY_FILE = "session-snapshot.key";
const MAGIC = new TextEncoder().encode("DPSESS");
export const SNAPSHOT_FILE_VERSION = 1;
const HEADER_LENGTH = 6 + 1 + 8 + 6 + 12;
const KEY_LENGTH = 32;

/**
 * Why a snapshot file was not used (the daemon starts without it; counted in
 * dtlspush_session_snapshots_refused_total{cause}): "too_old" (written longer
 * ago than session_snapshot_max_age_seconds, or in the future), "other_key"
 * (sealed under another data directory's key), "other_version" (another
 * format version), "damaged" (truncated, tampered, unreadable).
 */
export type SnapshotRefusal = "too_old" | "other_key" | "other_version" | "damaged";
export const SNAPSHOT_REFUSALS: readonly SnapshotRefusal[] = ["too_old", "other_key", "other_version", "damaged"];

export type SnapshotLoad =
  | { readonly kind: "none" }
  | { readonly kind: "refused"; readonly cause: SnapshotRefusal; readonly detail: string }
  | { readonly kind: "loaded"; readonly sessions: Uint8Array[]; readonly writtenAt: number; readonly bytes: number };

/** The data directory's snapshot key: read, or made (mode 0600, exclusive create) on first use. */
export async function snapshotKey(dataDir: string): Promise<Uint8Array> {
  const path = join(dataDir, SNAPSHOT_KEY_FILE);
  try {
    const key = new Uint8Array(await readFile(path));
    if (key.length === KEY_LENGTH) return key;
  } catch (e) {
    if ((e as { code?: unknown }).code !== "ENOENT") throw e;
  }
  // a key file of another length is replaced; its snapshots are then refused as "other_key"
  const key = randomBytes(KEY_LENGTH);
  await writeAtomic(dataDir, SNAPSHOT_KEY_FILE, key);
  return key;
}

function keyId(key: Uint8Array): Uint8Array {
  return hash("sha256", [key]).subarray(0, 8);
}

/** The file's bytes: the sessions sealed under `key`. */
export function sealSnapshot(key: Uint8Array, sessions: readonly Uint8Array[], writtenAt: number): Uint8Array {
  const body = new ByteWriter(16 + sessions.reduce((n, s) => n + 2 + s.length, 0)).u32(sessions.length);
  for (const s of sessions) body.vec16(s);
  const nonce = randomBytes(12);
  const header = new ByteWriter(HEADER_LENGTH).bytes(MAGIC).u8(SNAPSHOT_FILE_VERSION).bytes(keyId(key)).u48(writtenAt).bytes(nonce).finish();
  const sealed = aeadSeal("aes-256-gcm", aeadKey(key), nonce, header, body.finish(), HEADER_LENGTH);
  sealed.set(header, 0);
  return sealed;
}

/** The sessions in a file's bytes, or why they are refused. */
export function openSnapshot(key: Uint8Array, file: Uint8Array, wallNow: number, maxAgeMs: number): SnapshotLoad {
  if (file.length < HEADER_LENGTH + 16 || !bytesEqual(file.subarray(0, 6), MAGIC)) return refused("damaged", "not a session snapshot");
  const r = new ByteReader(file, 6);
  const version = r.u8();
  if (version !== SNAPSHOT_FILE_VERSION) return refused("other_version", `format version ${version}, this daemon reads ${SNAPSHOT_FILE_VERSION}`);
  if (!bytesEqual(r.bytes(8), keyId(key))) return refused("other_key", "sealed with another data directory's key");
  const writtenAt = r.u48();
  const age = wallNow - writtenAt;
  if (age > maxAgeMs || age < -60_000)
    return refused("too_old", `written ${Math.round(age / 1000)} s ago (session_snapshot_max_age_seconds ${maxAgeMs / 1000})`);
  const nonce = r.bytes(12);
  const body = aeadOpen("aes-256-gcm", aeadKey(key), nonce, file.subarray(0, HEADER_LENGTH), file.subarray(HEADER_LENGTH));
  if (body === null) return refused("damaged", "does not authenticate (truncated or tampered)");
  try {
    const b = new ByteReader(body);
    const n = b.u32("count");
    const sessions: Uint8Array[] = [];
    for (let i = 0; i < n; i++) sessions.push(b.vec16("session"));
    b.expectEnd("snapshot");
    return { kind: "loaded", sessions, writtenAt, bytes: file.length };
  } catch {
    return refused("damaged", "the sealed body does not parse");
  }
}

function refused(cause: SnapshotRefusal, detail: string): SnapshotLoad {
  return { kind: "refused", cause, detail };
}

/** Writes the snapshot file atomically (writeAtomic). */
export async function writeSnapshotFile(dataDir: string, bytes: Uint8Array): Promise<void> {
  await writeAtomic(dataDir, SNAPSHOT_FILE, bytes);
}

/** A temporary file (mode 0600) written and fsync'ed, renamed over `name`, the directory fsync'ed. */
async function writeAtomic(dir: string, name: string, bytes: Uint8Array): Promise<void> {
  const path = join(dir, name);
  const tmp = `${path}.tmp`;
  const f = await open(tmp, "w", 0o600);
  try {
    await f.chmod(0o600); // the umask does not widen it, but an old temporary file keeps its mode
    await f.write(bytes);
    await f.sync();
  } finally {
    await f.close();
  }
  await rename(tmp, path);
  await syncDir(dir);
}

/**
 * Reads the file and deletes it for good (unlink, directory fsync) before
 * anything else: whatever it holds, it is never read twice. Undefined when
 * there is none.
 */
export async function takeSnapshotFile(dataDir: string): Promise<Uint8Array | undefined> {
  const path = join(dataDir, SNAPSHOT_FILE);
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (e) {
    if ((e as { code?: unknown }).code === "ENOENT") return undefined;
    throw e;
  }
  await unlink(path);
  await syncDir(dataDir);
  return bytes;
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
