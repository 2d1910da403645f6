import { EventEmitter } from "node:events";
import type { Connection } from "./connection.ts";
import type { DtlsError } from "./errors.ts";
import type { EcdhGroup } from "./crypto.ts";
import type { ConnectionInfo } from "./options.ts";
import type { SuiteName } from "./suites.ts";

export interface PeerAddress {
  readonly address: string;
  readonly port: number;
}

export interface DtlsConnectionInfo {
  readonly peer: PeerAddress;
  /** The PSK identity; "" for certificate suites. */
  readonly identity: string;
  readonly suite: SuiteName;
  readonly extendedMasterSecret: boolean;
  /** The ECDHE group ("x25519", "secp256r1", "secp384r1") for suites with an ephemeral key exchange. */
  readonly group?: EcdhGroup | undefined;
  /** The peer's leaf certificate, when it presented one. */
  readonly peerCertificate?: { readonly subject: string; readonly fingerprint256: string } | undefined;
}

export interface CloseReason {
  readonly code: string;
  readonly message: string;
}

interface Events {
  data: [data: Buffer];
  close: [reason: CloseReason];
  error: [error: DtlsError];
}

/**
 * An established DTLS association as applications see it (both roles).
 * Events: "data" (one per application record), "close" (once), "error"
 * (a failure; "close" follows).
 */
export class DtlsConnection extends EventEmitter<Events> {
  private readonly core: Connection;
  private readonly peer: PeerAddress;
  /** The core's own info object (shared, not copied: a server holds many idle connections). */
  private readonly coreInfo: ConnectionInfo;
  private readonly afterSend: () => void;

  /** @internal created by the endpoint. */
  constructor(core: Connection, peer: PeerAddress, info: ConnectionInfo, afterSend: () => void) {
    super();
    this.core = core;
    this.peer = peer;
    this.coreInfo = info;
    this.afterSend = afterSend;
  }

  /** Who the peer is and what was negotiated (a new object on each read: keep it if you read it often). */
  get info(): DtlsConnectionInfo {
    return { peer: this.peer, ...this.coreInfo };
  }

  get closed(): boolean {
    return this.core.state === "closed";
  }

  /** The largest payload that fits one datagram at the configured MTU. */
  get maxDatagramPayload(): number {
    return this.core.maxDatagramPayload;
  }

  /** Sends one application record. Throws DtlsError ("closed", "too_large"). */
  send(data: Uint8Array): void {
    this.core.send(data);
  }

  /** Sends several records packed into as few datagrams as the MTU allows. */
  sendBatch(list: readonly Uint8Array[]): void {
    this.core.sendBatch(list);
  }

  /** Sends close_notify and emits "close". */
  close(): void {
    this.core.close();
    this.afterSend();
  }

  /** @internal */
  deliver(data: Uint8Array): void {
    this.emit("data", Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }

  /** @internal */
  ended(error: DtlsError | undefined): void {
    if (error !== undefined && error.code !== "closed" && this.listenerCount("error") > 0) this.emit("error", error);
    this.emit("close", error === undefined ? { code: "closed", message: "closed" } : { code: error.code, message: error.message });
  }
}
