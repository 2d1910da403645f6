import type { Clock } from "../util/clock.ts";
import type { Receipt, Store } from "../store/types.ts";
import type { ClusterStore } from "../store/cluster-types.ts";
import type { ContentSigner, DeviceRegistry, KeyRing } from "../auth/index.ts";
import type { DeliveryObserver, EngineFailure } from "./observer.ts";
import type { DeliveryOptions } from "./options.ts";

/** One DTLS session as the engine sees it. */
export interface SessionLink {
  /** the DTLS identity: PSK identity or certificate identity */
  readonly identity: string;
  /** the session was authenticated by a client certificate */
  readonly viaCertificate: boolean;
  /** for logs, e.g. "127.0.0.1:50123" */
  readonly peer: string;
  /** sends each element as one record */
  send(records: readonly Uint8Array[]): void;
  /** ends the DTLS session (close_notify); the driver then calls `detach` */
  close(): void;
}

export interface PublishResult {
  readonly messageId: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  /** devices the message was queued for */
  readonly recipients: number;
  /** recipients refused (topic publishes only; a direct publish that is refused throws) */
  readonly rejected: readonly { readonly device: string; readonly reason: string }[];
}

export interface DeviceStatus {
  readonly id: string;
  readonly online: boolean;
  /** ms; 0 when never seen since the daemon started */
  readonly lastSeen: number;
  /** messages queued or in flight */
  readonly queueDepth: number;
  readonly lastSeq: number;
  readonly ackedSeq: number;
}

export interface PresenceEvent {
  readonly device: string;
  readonly online: boolean;
  readonly at: number;
  readonly peer: string;
}

/** An operation that failed and was isolated (the engine went on). */
export interface EngineFailureEvent {
  readonly cause: EngineFailure;
  /** the device concerned, "" when none */
  readonly device: string;
  readonly error: Error;
}

export interface EngineEvents {
  receipt: [Receipt];
  presence: [PresenceEvent];
  /** one device's operation, one publish or one listener failed; only it was failed (for logs) */
  failure: [EngineFailureEvent];
  /** a commit failed: the engine has stopped; restart the process to recover from the store */
  fatal: [Error];
}

export interface DeliveryEngineDeps {
  readonly store: Store;
  /**
   * The store's cluster side when it is shared (clusterOf(store): the same
   * object as `store`): the engine then holds only the queues of devices
   * with a session on this node (cluster-holds.ts). Absent: one node, every
   * device held.
   */
  readonly cluster?: ClusterStore | undefined;
  readonly registry: DeviceRegistry;
  /** signs publishes; its JWKS goes to devices in Welcome */
  readonly contentKeys: KeyRing;
  /** makes the content signatures with contentKeys (default: on the main thread; a SigningPool signs off it) */
  readonly contentSigner?: ContentSigner;
  /** signs session tokens */
  readonly sessionKeys: KeyRing;
  /** wall clock, ms since the epoch */
  readonly clock: Clock;
  /** called when the engine has work for `flush()`; the driver calls flush soon (e.g. setImmediate) */
  readonly requestFlush: () => void;
  readonly random?: () => number;
  /** metrics sink (default: none) */
  readonly observer?: DeliveryObserver;
  readonly newId?: () => string;
  readonly options?: Partial<DeliveryOptions>;
}
