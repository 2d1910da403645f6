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
 */
export class DeviceRegistry {
  private readonly store: Store;
  private readonly clock: { now(): number };
  private listeners: DeviceChangeListener[] = [];
  /** id -> updatedAt of every device as this registry last saw it (reload() compares against it) */
  private readonly seen = new Map<string, number>();

  /** `clock.now()` gives ms since the epoch (for createdAt/updatedAt). */
  constructor(store: Store, clock: { now(): number }) {
    this.store = store;
    this.clock = clock;
    for (const d of store.listDevices()) this.seen.set(d.id, d.updatedAt);
  }

  /**
   * Re-reads every device from the store, for changes another process made
   * (e.g. `dtlspush device add` while the daemon was unreachable), and tells
   * the listeners about each device added, changed or removed since this
   * registry last saw it. Returns their ids.
   */
  reload(): { changed: string[]; removed: string[] } {
    const changed: string[] = [];
    const removed: string[] = [];
    const present = new Set<string>();
    for (const d of this.store.listDevices()) {
      present.add(d.id);
      if (this.seen.get(d.id) !== d.updatedAt) {
        changed.push(d.id);
        this.emit(d.id, d);
      }
    }
    for (const id of [...this.seen.keys()]) {
      if (!present.has(id)) {
        removed.push(id);
        this.emit(id, undefined);
      }
    }
    return { changed, removed };
  }

  /**
   * Registers a new device. AuthError device_exists if the id is taken;
   * bad_device for a bad id, no credentials, a PSK key outside 1..64 bytes, a
   * PSK identity outside 1..128 bytes of UTF-8, or a PSK or certificate identity
   * another device has; bad_topic for a bad topic.
   */
  add(input: DeviceInput): DeviceRecord {
    const id = checkDeviceId(input.id);
    if (this.store.getDevice(id) !== undefined) throw new AuthError("device_exists", `Device ${id} is already registered.`);
    const now = this.clock.now();
    const record = this.build(id, input, { revoked: false, createdAt: now, updatedAt: now });
    this.store.putDevice(record);
    this.emit(id, record);
    return record;
  }

  /**
   * Changes a registered device (AuthError device_unknown if there is none).
   * Members of `changes` that are absent or undefined are kept as they are;
   * `topics: []` clears the topics. To drop a credential, `upsert` the device
   * with the credentials it keeps.
   */
  update(id: string, changes: Partial<Omit<DeviceInput, "id">> & { revoked?: boolean }): DeviceRecord {
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
    this.store.putDevice(record);
    this.emit(id, record);
    return record;
  }

  /**
   * Adds the device, or replaces the credentials and topics of the registered
   * one with exactly those of `input` (absent topics = none); createdAt and the
   * revoked flag are kept.
   */
  upsert(input: DeviceInput): DeviceRecord {
    const id = checkDeviceId(input.id);
    const current = this.store.getDevice(id);
    if (current === undefined) return this.add(input);
    const record = this.build(id, input, { revoked: current.revoked, createdAt: current.createdAt, updatedAt: this.clock.now() });
    this.store.putDevice(record);
    this.emit(id, record);
    return record;
  }

  /** Marks the device revoked (device_unknown if there is none); revoking a revoked device changes nothing. */
  revoke(id: string): DeviceRecord {
    const current = this.existing(id);
    if (current.revoked) return current;
    const record: DeviceRecord = { ...current, revoked: true, updatedAt: this.clock.now() };
    this.store.putDevice(record);
    this.emit(id, record);
    return record;
  }

  /** Deletes the device (its deliveries and subscriptions go with it); false when there was none. */
  remove(id: string): boolean {
    const removed = this.store.deleteDevice(id);
    if (removed) this.emit(id, undefined);
    return removed;
  }

  get(id: string): DeviceRecord | undefined {
    return this.store.getDevice(id);
  }

  /** All devices, ordered by id. */
  list(): DeviceRecord[] {
    return this.store.listDevices();
  }

  /** For the DTLS server's psk.lookup: a copy of the key of the enabled device with that PSK identity, else undefined. */
  pskKey(identity: string): Uint8Array | undefined {
    const device = this.store.findDeviceByPskIdentity(identity);
    if (device === undefined || device.revoked || device.psk === undefined || device.psk.identity !== identity) return undefined;
    return new Uint8Array(device.psk.key);
  }

  /** For the DTLS server's authorizeClient: undefined accepts; unknown identities are access_denied, revoked devices certificate_revoked. */
  authorizeCertificate(identity: string): CertificateRefusal | undefined {
    const device = this.store.findDeviceByCertIdentity(identity);
    if (device === undefined) {
      return { code: "access_denied", message: `No device is registered for certificate identity ${JSON.stringify(identity)}.` };
    }
    if (device.revoked) return { code: "certificate_revoked", message: `Device ${device.id} is revoked.` };
    return undefined;
  }

  /** The enabled device a DTLS session belongs to. viaCertificate: the session was authenticated by a client certificate. */
  deviceForSession(identity: string, viaCertificate: boolean): DeviceRecord | undefined {
    const device = viaCertificate ? this.store.findDeviceByCertIdentity(identity) : this.store.findDeviceByPskIdentity(identity);
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
    const current = typeof id === "string" ? this.store.getDevice(id) : undefined;
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
      const other = this.store.findDeviceByPskIdentity(psk.identity);
      if (other !== undefined && other.id !== id) {
        throw new AuthError("bad_device", `PSK identity ${JSON.stringify(psk.identity)} is already used by device ${other.id}.`);
      }
    }
    if (certIdentity !== undefined) {
      const other = this.store.findDeviceByCertIdentity(certIdentity);
      if (other !== undefined && other.id !== id) {
        throw new AuthError("bad_device", `Certificate identity ${JSON.stringify(certIdentity)} is already used by device ${other.id}.`);
      }
    }
    const topics = checkTopics(input.topics);
    return { id, psk, certIdentity, revoked: state.revoked, topics, createdAt: state.createdAt, updatedAt: state.updatedAt };
  }

  private emit(id: string, record: DeviceRecord | undefined): void {
    if (record === undefined) this.seen.delete(id);
    else this.seen.set(id, record.updatedAt);
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
