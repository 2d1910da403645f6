import { StoreError } from "../store/errors.ts";
import { compareText } from "../store/memory-store.ts";
import type { DeviceRecord, Store } from "../store/types.ts";
import { AuthError } from "./errors.ts";
import { checkDeviceId, checkTopic } from "./names.ts";

/** What an operator registers. A device needs a PSK, a certificate identity, or both. */
export interface DeviceInput {
  id: string;
  /** DTLS PSK credentials: identity 1..128 bytes of UTF-8, key 1..64 bytes */
  psk?: { identity: string; key: Uint8Array };
  /** the certificate identity as the DTLS server reports it (per its clientIdentity setting), 1..1024 characters */
  certIdentity?: string;
  /** topics the device receives (checked names; duplicates dropped) */
  topics?: string[];
}

export type DeviceChangeListener = (id: string, record: DeviceRecord | undefined) => void;

/** A refusal for the DTLS server's authorizeClient hook. */
export interface CertificateRefusal {
  code: "certificate_revoked" | "access_denied";
  message: string;
}

const MAX_PSK_IDENTITY_BYTES = 128;
const MAX_PSK_KEY_BYTES = 64;
const MAX_CERT_IDENTITY = 1024;
const utf8 = new TextEncoder();

/**
 * The device registry over the store: validates devices, keeps PSK and
 * certificate identities unique, answers the DTLS server's hooks (psk.lookup,
 * authorizeClient) and tells listeners about every change.
 *
 * Reads come from an in-memory copy of the registry (loaded by `open`, kept
 * current by this registry's own changes and by `reload`), so a handshake's
 * PSK lookup or a Hello never waits on the store. A change is checked against
 * that copy, applied to it at once (a concurrent change sees it), handed to
 * the store and told to the listeners in the same turn (so the delivery
 * engine's view never differs from the copy); its promise resolves once the
 * store has it durably. A write the store refuses is taken back from the copy
 * (the listeners are told of the record restored) and rejects.
 */
export class DeviceRegistry {
  private readonly store: Store;
  private readonly clock: { now(): number };
  private listeners: DeviceChangeListener[] = [];
  /** id -> record: every registered device as this registry knows it */
  private readonly byId = new Map<string, DeviceRecord>();
  private readonly byPsk = new Map<string, string>();
  private readonly byCert = new Map<string, string>();
  /** id -> writes of this registry not yet durable (reload leaves those devices alone) */
  private readonly writing = new Map<string, number>();

  private constructor(store: Store, clock: { now(): number }) {
    this.store = store;
    this.clock = clock;
  }

  /** Loads the registry from the store. `clock.now()` gives ms since the epoch (for createdAt/updatedAt). */
  static async open(store: Store, clock: { now(): number }): Promise<DeviceRegistry> {
    const registry = new DeviceRegistry(store, clock);
    for (const d of await store.listDevices()) registry.cache(d.id, d);
    return registry;
  }

  /**
   * Re-reads every device from the store, for changes another process made
   * (e.g. `dtlspush device add` while the daemon was unreachable), and tells
   * the listeners about each device added, changed or removed since this
   * registry last saw it. Resolves to their ids. A device this registry is
   * writing itself is left as it is (its own write is the newer one).
   */
  async reload(): Promise<{ changed: string[]; removed: string[] }> {
    const stored = await this.store.listDevices();
    const changed: string[] = [];
    const removed: string[] = [];
    const present = new Set<string>();
    for (const d of stored) {
      present.add(d.id);
      if (this.writing.has(d.id) || this.byId.get(d.id)?.updatedAt === d.updatedAt) continue;
      changed.push(d.id);
      this.cache(d.id, d);
    }
    for (const id of [...this.byId.keys()]) {
      if (present.has(id) || this.writing.has(id)) continue;
      removed.push(id);
      this.cache(id, undefined);
    }
    let first: { error: unknown } | undefined;
    for (const id of changed) first ??= this.emitCaught(id, this.byId.get(id));
    for (const id of removed) first ??= this.emitCaught(id, undefined);
    if (first !== undefined) throw first.error;
    return { changed, removed };
  }

  /**
   * Re-reads one device from the store (another node of a cluster changed
   * it) and tells the listeners when it was added, changed or removed since
   * this registry last saw it. Resolves to whether it changed. A device this
   * registry is writing itself is left as it is (as in `reload`).
   */
  async refresh(id: string): Promise<boolean> {
    const stored = await this.store.getDevice(id);
    if (this.writing.has(id)) return false;
    const known = this.byId.get(id);
    if (stored === undefined ? known === undefined : known?.updatedAt === stored.updatedAt) return false;
    this.cache(id, stored);
    const failed = this.emitCaught(id, stored);
    if (failed !== undefined) throw failed.error;
    return true;
  }

  /**
   * Registers a new device. AuthError device_exists if the id is taken;
   * bad_device for a bad id, no credentials, a PSK key outside 1..64 bytes, a
   * PSK identity outside 1..128 bytes of UTF-8, or a PSK or certificate identity
   * another device has; bad_topic for a bad topic.
   */
  async add(input: DeviceInput): Promise<DeviceRecord> {
    const id = checkDeviceId(input.id);
    if (this.byId.has(id)) throw new AuthError("device_exists", `Device ${id} is already registered.`);
    const now = this.clock.now();
    const record = this.build(id, input, { revoked: false, createdAt: now, updatedAt: now });
    await this.put(record);
    return record;
  }

  /**
   * Changes a registered device (AuthError device_unknown if there is none).
   * Members of `changes` that are absent or undefined are kept as they are;
   * `topics: []` clears the topics. To drop a credential, `upsert` the device
   * with the credentials it keeps.
   */
  async update(id: string, changes: Partial<Omit<DeviceInput, "id">> & { revoked?: boolean }): Promise<DeviceRecord> {
    const current = this.existing(id);
    const merged: DeviceInput = {
      id,
      psk: changes.psk ?? current.psk,
      certIdentity: changes.certIdentity ?? current.certIdentity,
      topics: changes.topics ?? [...current.topics],
    };
    const revoked = changes.revoked ?? current.revoked;
    if (typeof revoked !== "boolean") throw new AuthError("bad_device", `The revoked flag of device ${id} must be true or false.`);
    const record = this.build(id, merged, { revoked, createdAt: current.createdAt, updatedAt: this.clock.now() });
    await this.put(record);
    return record;
  }

  /**
   * Adds the device, or replaces the credentials and topics of the registered
   * one with exactly those of `input` (absent topics = none); createdAt and the
   * revoked flag are kept.
   */
  async upsert(input: DeviceInput): Promise<DeviceRecord> {
    const id = checkDeviceId(input.id);
    const current = this.byId.get(id);
    if (current === undefined) return this.add(input);
    const record = this.build(id, input, { revoked: current.revoked, createdAt: current.createdAt, updatedAt: this.clock.now() });
    await this.put(record);
    return record;
  }

  /** Marks the device revoked (device_unknown if there is none); revoking a revoked device changes nothing. */
  async revoke(id: string): Promise<DeviceRecord> {
    const current = this.existing(id);
    if (current.revoked) return current;
    const record: DeviceRecord = { ...current, revoked: true, updatedAt: this.clock.now() };
    await this.put(record);
    return record;
  }

  /** Deletes the device (its deliveries and subscriptions go with it); false when there was none. */
  async remove(id: string): Promise<boolean> {
    const previous = typeof id === "string" ? this.byId.get(id) : undefined;
    this.cache(id, undefined);
    const written = this.write(id, previous, () => this.store.deleteDevice(id));
    const told = previous === undefined ? undefined : this.emitCaught(id, undefined);
    const removed = await written;
    // a device only the store had (another process added it): the listeners hear of it now
    const late = previous === undefined && removed ? this.emitCaught(id, undefined) : undefined;
    const failed = told ?? late;
    if (failed !== undefined) throw failed.error;
    return removed || previous !== undefined;
  }

  get(id: string): DeviceRecord | undefined {
    return this.byId.get(id);
  }

  /** All devices, ordered by id. */
  list(): DeviceRecord[] {
    return [...this.byId.values()].sort((a, b) => compareText(a.id, b.id));
  }

  /** For the DTLS server's psk.lookup: a copy of the key of the enabled device with that PSK identity, else undefined. */
  pskKey(identity: string): Uint8Array | undefined {
    const device = this.byPskIdentity(identity);
    if (device === undefined || device.revoked || device.psk === undefined || device.psk.identity !== identity) return undefined;
    return new Uint8Array(device.psk.key);
  }

  /** For the DTLS server's authorizeClient: undefined accepts; unknown identities are access_denied, revoked devices certificate_revoked. */
  authorizeCertificate(identity: string): CertificateRefusal | undefined {
    const device = this.byCertIdentity(identity);
    if (device === undefined) {
      return { code: "access_denied", message: `No device is registered for certificate identity ${JSON.stringify(identity)}.` };
    }
    if (device.revoked) return { code: "certificate_revoked", message: `Device ${device.id} is revoked.` };
    return undefined;
  }

  /** The enabled device a DTLS session belongs to. viaCertificate: the session was authenticated by a client certificate. */
  deviceForSession(identity: string, viaCertificate: boolean): DeviceRecord | undefined {
    const device = viaCertificate ? this.byCertIdentity(identity) : this.byPskIdentity(identity);
    return device === undefined || device.revoked ? undefined : device;
  }

  /** The identity string session tokens bind to: "cert:<identity>" or "psk:<identity>". */
  static sessionIdentity(identity: string, viaCertificate: boolean): string {
    return `${viaCertificate ? "cert" : "psk"}:${identity}`;
  }

  /**
   * Calls `listener` after every change (add, update, upsert, revoke, remove)
   * with the device id and its new record (undefined when removed). A listener
   * that throws does not stop the others; the first error is rethrown after
   * all were called (the change itself is already stored). Returns the
   * unsubscribe function.
   */
  onChange(listener: DeviceChangeListener): () => void {
    const entry: DeviceChangeListener = (id, record) => listener(id, record);
    this.listeners = [...this.listeners, entry];
    return () => {
      this.listeners = this.listeners.filter((l) => l !== entry);
    };
  }

  private existing(id: string): DeviceRecord {
    const current = typeof id === "string" ? this.byId.get(id) : undefined;
    if (current === undefined) throw new AuthError("device_unknown", `No device ${JSON.stringify(id)} is registered.`);
    return current;
  }

  private build(id: string, input: DeviceInput, state: { revoked: boolean; createdAt: number; updatedAt: number }): DeviceRecord {
    const psk = input.psk === undefined ? undefined : checkPsk(id, input.psk);
    const certIdentity = input.certIdentity === undefined ? undefined : checkCertIdentity(id, input.certIdentity);
    if (psk === undefined && certIdentity === undefined) {
      throw new AuthError("bad_device", `Device ${id} needs a PSK or a certificate identity.`);
    }
    if (psk !== undefined) {
      const other = this.byPskIdentity(psk.identity);
      if (other !== undefined && other.id !== id) {
        throw new AuthError("bad_device", `PSK identity ${JSON.stringify(psk.identity)} is already used by device ${other.id}.`);
      }
    }
    if (certIdentity !== undefined) {
      const other = this.byCertIdentity(certIdentity);
      if (other !== undefined && other.id !== id) {
        throw new AuthError("bad_device", `Certificate identity ${JSON.stringify(certIdentity)} is already used by device ${other.id}.`);
      }
    }
    const topics = checkTopics(input.topics);
    return { id, psk, certIdentity, revoked: state.revoked, topics, createdAt: state.createdAt, updatedAt: state.updatedAt };
  }

  private byPskIdentity(identity: string): DeviceRecord | undefined {
    const id = this.byPsk.get(identity);
    return id === undefined ? undefined : this.byId.get(id);
  }

  private byCertIdentity(identity: string): DeviceRecord | undefined {
    const id = this.byCert.get(identity);
    return id === undefined ? undefined : this.byId.get(id);
  }

  /** Sets (or, with undefined, drops) the cached record of `id` and its identities. */
  private cache(id: string, record: DeviceRecord | undefined): void {
    const old = this.byId.get(id);
    if (old !== undefined) {
      if (old.psk !== undefined && this.byPsk.get(old.psk.identity) === id) this.byPsk.delete(old.psk.identity);
      if (old.certIdentity !== undefined && this.byCert.get(old.certIdentity) === id) this.byCert.delete(old.certIdentity);
    }
    if (record === undefined) {
      this.byId.delete(id);
      return;
    }
    this.byId.set(id, record);
    if (record.psk !== undefined) this.byPsk.set(record.psk.identity, id);
    if (record.certIdentity !== undefined) this.byCert.set(record.certIdentity, id);
  }

  /**
   * Caches `record`, hands it to the store and tells the listeners, all now;
   * resolves once it is durable. A listener that threw is rethrown then.
   */
  private async put(record: DeviceRecord): Promise<void> {
    const previous = this.byId.get(record.id);
    this.cache(record.id, record);
    const written = this.write(record.id, previous, () => this.store.putDevice(record));
    const told = this.emitCaught(record.id, record);
    await written;
    if (told !== undefined) throw told.error;
  }

  /**
   * Runs the store write of a change already applied to the cache (`fn` is
   * called at once). If the store refuses it, the cache gets `previous` back
   * and the listeners hear of it (unless a later change of the device
   * replaced ours meanwhile), and the write rejects; a PSK or certificate
   * identity that another process registered meanwhile is AuthError bad_device.
   */
  private async write<T>(id: string, previous: DeviceRecord | undefined, fn: () => Promise<T>): Promise<T> {
    const mine = this.byId.get(id);
    this.writing.set(id, (this.writing.get(id) ?? 0) + 1);
    try {
      return await fn();
    } catch (e) {
      if (this.byId.get(id) === mine) {
        this.cache(id, previous);
        this.emitCaught(id, previous);
      }
      if (e instanceof StoreError && e.code === "identity_in_use") throw new AuthError("bad_device", e.message, { cause: e });
      throw e;
    } finally {
      const n = (this.writing.get(id) ?? 1) - 1;
      if (n === 0) this.writing.delete(id);
      else this.writing.set(id, n);
    }
  }

  private emit(id: string, record: DeviceRecord | undefined): void {
    let first: { error: unknown } | undefined;
    for (const listener of this.listeners) {
      try {
        listener(id, record);
      } catch (error) {
        first ??= { error };
      }
    }
    if (first !== undefined) throw first.error;
  }

  /** emit, returning (not throwing) the first listener error */
  private emitCaught(id: string, record: DeviceRecord | undefined): { error: unknown } | undefined {
    try {
      this.emit(id, record);
      return undefined;
    } catch (error) {
      return { error };
    }
  }
}

function checkPsk(id: string, psk: { identity: string; key: Uint8Array }): { identity: string; key: Uint8Array } {
  if (typeof psk !== "object" || psk === null) throw new AuthError("bad_device", `The PSK of device ${id} must be an object with identity and key.`);
  const { identity, key } = psk;
  if (typeof identity !== "string") throw new AuthError("bad_device", `The PSK identity of device ${id} must be a string.`);
  const identityBytes = utf8.encode(identity).length;
  if (identityBytes < 1 || identityBytes > MAX_PSK_IDENTITY_BYTES) {
    throw new AuthError("bad_device", `The PSK identity of device ${id} is ${identityBytes} bytes of UTF-8 (1..${MAX_PSK_IDENTITY_BYTES} allowed).`);
  }
  if (!(key instanceof Uint8Array)) throw new AuthError("bad_device", `The PSK key of device ${id} must be bytes.`);
  if (key.length < 1 || key.length > MAX_PSK_KEY_BYTES) {
    throw new AuthError("bad_device", `The PSK key of device ${id} is ${key.length} bytes (1..${MAX_PSK_KEY_BYTES} allowed).`);
  }
  return { identity, key: new Uint8Array(key) };
}

function checkCertIdentity(id: string, certIdentity: string): string {
  if (typeof certIdentity !== "string" || certIdentity.length < 1 || certIdentity.length > MAX_CERT_IDENTITY) {
    throw new AuthError("bad_device", `The certificate identity of device ${id} must be a string of 1..${MAX_CERT_IDENTITY} characters.`);
  }
  return certIdentity;
}

function checkTopics(topics: readonly string[] | undefined): string[] {
  if (topics === undefined) return [];
  if (!Array.isArray(topics)) throw new AuthError("bad_topic", "Device topics must be a list of topic names.");
  return [...new Set(topics.map((t) => checkTopic(t)))];
}
