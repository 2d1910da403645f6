/**
 * The DTLS server's session-ticket keys (RFC 5077 4) kept in the store, so a
 * restarted daemon (and later the other nodes of a cluster) opens the tickets
 * it sealed before. Each key is a random 16-byte name and a random 32-byte
 * secret made on this machine; it seals new tickets for one rotation period
 * and opens them until a ticket lifetime after that.
 *
 * The engine asks `current` and `byName` synchronously on every handshake, so
 * the keys are held in memory. `maintain` (run from a timer by the daemon)
 * does the slow part through the store: it writes the next key before it is
 * ever used, so a crash right after a ticket was sealed never loses its key,
 * and deletes keys once they retire.
 *
 * At rest the secrets are JSON in the store's settings (the same as the
 * signing key rings: protected by the data directory's permissions); anyone
 * who reads them can open the tickets sealed with them, and so the master
 * secrets of those sessions.
 */
import { randomBytes } from "../crypto/index.ts";
import { bytesEqual } from "../util/bytes.ts";
import type { TicketKey, TicketKeySource } from "../dtls/resumption-options.ts";
import { AuthError } from "./errors.ts";
import type { KeyStorage } from "./key-ring.ts";

/** Settings key of the persisted ticket keys. */
export const TICKET_KEYS_SETTING = "dtls.ticket_keys";
export const TICKET_KEY_NAME_BYTES = 16;
export const TICKET_KEY_SECRET_BYTES = 32;
/** How often at most `maintain` should run (it runs a quarter rotation period apart, this at most). */
const MAX_MAINTENANCE_INTERVAL_MS = 3_600_000;
const MIN_MAINTENANCE_INTERVAL_MS = 1_000;

export interface TicketKeyRingOptions {
  /** How long one key seals new tickets before the next takes over, ms. */
  readonly rotationMs: number;
  /** How long a ticket is accepted after it was sealed, ms: a key is kept this long after its last ticket. */
  readonly ticketLifetimeMs: number;
  /** Wall clock, ms since the epoch (default Date.now): tickets outlive the process. */
  readonly wallClock?: () => number;
}

/** What one `maintain` changed. */
export interface TicketKeyMaintenance {
  /** keys generated and stored */
  readonly added: number;
  /** retired keys deleted */
  readonly retired: number;
  /** keys another process stored that this ring did not hold yet */
  readonly merged: number;
}

interface PersistedKey {
  name: string;
  secret: string;
  notBefore: number;
  notAfter: number;
  retiresAt: number;
}

/**
 * A TicketKeySource over the store's settings. Open it with `open` (which
 * makes sure the current key and the next one are stored), then call
 * `maintain` every `maintenanceIntervalMs`.
 */
export class TicketKeyRing implements TicketKeySource {
  readonly rotationMs: number;
  readonly ticketLifetimeMs: number;
  private readonly storage: KeyStorage;
  private readonly wallClock: () => number;
  /** the keys held, every one of them stored before it was held */
  private held: readonly TicketKey[] = [];
  private running: Promise<TicketKeyMaintenance> | undefined;

  private constructor(storage: KeyStorage, o: TicketKeyRingOptions) {
    for (const [what, v] of [
      ["rotationMs", o.rotationMs],
      ["ticketLifetimeMs", o.ticketLifetimeMs],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${what} must be a positive integer of ms, not ${v}.`);
    }
    this.storage = storage;
    this.rotationMs = o.rotationMs;
    this.ticketLifetimeMs = o.ticketLifetimeMs;
    this.wallClock = o.wallClock ?? Date.now;
  }

  /**
   * Loads the stored keys, drops the retired ones and stores the keys that
   * are missing (one sealing now and the one after it); resolves once they
   * are stored. Stored keys that cannot be read back are AuthError
   * key_ring_invalid (nothing is overwritten).
   */
  static async open(storage: KeyStorage, o: TicketKeyRingOptions): Promise<TicketKeyRing> {
    const ring = new TicketKeyRing(storage, o);
    await ring.maintain();
    return ring;
  }

  /** How often `maintain` should run: a quarter of the rotation period, 1 s to 1 h. */
  get maintenanceIntervalMs(): number {
    return Math.min(MAX_MAINTENANCE_INTERVAL_MS, Math.max(MIN_MAINTENANCE_INTERVAL_MS, Math.floor(this.rotationMs / 4)));
  }

  /** The keys held, oldest first. Secret: never log them. */
  keys(): readonly TicketKey[] {
    return this.held;
  }

  /** TicketKeySource: the key sealing new tickets at `wallNow` (the newest whose period has begun; on a tie the lowest name, as on every node). */
  current(wallNow: number): TicketKey | undefined {
    let best: TicketKey | undefined;
    for (const k of this.held) {
      if (k.notBefore > wallNow || wallNow >= k.notAfter) continue;
      if (best === undefined || k.notBefore > best.notBefore || (k.notBefore === best.notBefore && compareBytes(k.name, best.name) < 0)) best = k;
    }
    return best;
  }

  /** TicketKeySource: the key named `name` while the tickets it sealed are accepted. */
  byName(name: Uint8Array, wallNow: number): TicketKey | undefined {
    for (const k of this.held) if (wallNow < k.retiresAt && bytesEqual(k.name, name)) return k;
    return undefined;
  }

  /**
   * Re-reads the stored keys (another node may have added some), drops the
   * retired ones and generates the keys needed to cover the next rotation
   * period; stores the result and only then holds it. One run at a time
   * (a call during a run gets that run's result).
   */
  maintain(wallNow: number = this.wallClock()): Promise<TicketKeyMaintenance> {
    if (this.running !== undefined) return this.running;
    const run = this.runMaintenance(wallNow).finally(() => {
      this.running = undefined;
    });
    this.running = run;
    return run;
  }

  private async runMaintenance(now: number): Promise<TicketKeyMaintenance> {
    if (!Number.isSafeInteger(now) || now < 0) throw new RangeError(`wallNow must be ms since the epoch, not ${now}.`);
    const stored = parseStored(await this.storage.getSetting(TICKET_KEYS_SETTING));
    const byName = new Map<string, TicketKey>();
    for (const k of this.held) byName.set(hex(k.name), k);
    let merged = 0;
    for (const k of stored) {
      if (byName.has(hex(k.name))) continue;
      byName.set(hex(k.name), k);
      merged++;
    }
    const all = [...byName.values()];
    const live = all.filter((k) => now < k.retiresAt);
    const retired = all.length - live.length;
    // cover [now, now + rotation]: the key sealing now and the one that follows it are stored before either seals
    let added = 0;
    if (!live.some((k) => k.notBefore <= now && now < k.notAfter)) {
      live.push(this.newKey(now));
      added++;
    }
    let end = Math.max(...live.map((k) => k.notAfter));
    while (end <= now + this.rotationMs) {
      const k = this.newKey(end);
      live.push(k);
      end = k.notAfter;
      added++;
    }
    live.sort((a, b) => a.notBefore - b.notBefore || compareBytes(a.name, b.name));
    if (added > 0 || retired > 0 || live.length !== stored.length) {
      await this.storage.putSetting(TICKET_KEYS_SETTING, serialize(live));
    }
    this.held = live;
    return { added, retired, merged };
  }

  private newKey(notBefore: number): TicketKey {
    const notAfter = notBefore + this.rotationMs;
    return {
      name: randomBytes(TICKET_KEY_NAME_BYTES),
      secret: randomBytes(TICKET_KEY_SECRET_BYTES),
      notBefore,
      notAfter,
      retiresAt: notAfter + this.ticketLifetimeMs,
    };
  }
}

function serialize(keys: readonly TicketKey[]): string {
  const persisted: PersistedKey[] = keys.map((k) => ({
    name: Buffer.from(k.name).toString("base64url"),
    secret: Buffer.from(k.secret).toString("base64url"),
    notBefore: k.notBefore,
    notAfter: k.notAfter,
    retiresAt: k.retiresAt,
  }));
  return JSON.stringify({ version: 1, keys: persisted });
}

function parseStored(text: string | undefined): TicketKey[] {
  if (text === undefined) return [];
  const bad = (problem: string, cause?: unknown): AuthError =>
    new AuthError("key_ring_invalid", `The ticket keys stored under ${TICKET_KEYS_SETTING} ${problem}.`, cause === undefined ? undefined : { cause });
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw bad("are not JSON", e);
  }
  if (
    typeof data !== "object" ||
    data === null ||
    (data as { version?: unknown }).version !== 1 ||
    !Array.isArray((data as { keys?: unknown }).keys)
  ) {
    throw bad("are not version 1 ticket keys");
  }
  return (data as { keys: unknown[] }).keys.map((entry, i) => {
    const e = entry as Partial<Record<keyof PersistedKey, unknown>> | null;
    const name = typeof e?.name === "string" ? Buffer.from(e.name, "base64url") : undefined;
    const secret = typeof e?.secret === "string" ? Buffer.from(e.secret, "base64url") : undefined;
    const times = [e?.notBefore, e?.notAfter, e?.retiresAt];
    if (
      name?.length !== TICKET_KEY_NAME_BYTES ||
      secret?.length !== TICKET_KEY_SECRET_BYTES ||
      !times.every((t) => Number.isSafeInteger(t) && (t as number) >= 0) ||
      !((e?.notBefore as number) < (e?.notAfter as number) && (e?.notAfter as number) <= (e?.retiresAt as number))
    ) {
      throw bad(`have a key ${i} without a ${TICKET_KEY_NAME_BYTES}-byte name, a ${TICKET_KEY_SECRET_BYTES}-byte secret and ordered times`);
    }
    return {
      name: new Uint8Array(name),
      secret: new Uint8Array(secret),
      notBefore: e?.notBefore as number,
      notAfter: e?.notAfter as number,
      retiresAt: e?.retiresAt as number,
    };
  });
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}
