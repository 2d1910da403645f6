/**
 * The public face of one established association (`connect`'s result, a
 * server's "session" event): send and receive application data, close, the
 * negotiated info and the peer, the client's resumable session. It wraps the
 * sans-I/O Connection; the endpoint feeds it.
 */
import { EventEmitter } from "node:events";
import type { Connection } from "./connection.ts";
import type { DtlsError } from "./errors.ts";
import type { EcdhGroup } from "../crypto/index.ts";
import type { SuiteName } from "./suites.ts";
import type { SavedSession } from "./resumption-options.ts";

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
  /** The session was resumed (abbreviated handshake): identity and certificate are the original handshake's. */
  readonly resumed: boolean;
}

export interface CloseReason {
  readonly code: string;
  readonly message: string;
}

/**
 * What `setReceiver` hands a connection's records and its end to: the methods
 * of one object (a class instance whose methods live on its prototype), so a
 * server holding many sessions pays no listener closures and no event table
 * per session. Listeners, if any, still get the events after it.
 */
export interface ConnectionReceiver {
  /** One application record, in bytes of its own (the connection does not reuse them). */
  data(record: Uint8Array): void;
  /** The connection ended (once): "closed" for an orderly close, else the error's code and message. */
  closed(reason: CloseReason): void;
}

/** Client connections' resumable sessions: beside the connection, so a server's sessions pay no field for it. */
const savedSessions = new WeakMap<DtlsConnection, SavedSession>();

/** Server sessions taken over from a snapshot: what the layers above attached to them when they were saved. */
const restoredAttachments = new WeakMap<DtlsConnection, Uint8Array>();

/** The reason of an orderly close (one object for all). */
const CLOSED: CloseReason = Object.freeze({ code: "closed", message: "closed" });

interface Events {
  data: [data: Buffer];
  /** A new resumable session (client role), to keep and give to the next connect as `session`. */
  session: [session: SavedSession];
  close: [reason: CloseReason];
  error: [error: DtlsError];
}

/**
 * An established DTLS association as applications see it (both roles).
 * Events: "data" (one per application record), "close" (once), "error"
 * (a failure; "close" follows). `setReceiver` hands records and the end
 * to the methods of one object first.
 */
export class DtlsConnection extends EventEmitter<Events> {
  private readonly core: Connection;
  /** The peer's address and port: a server passes its session object (which has both), not a copy. */
  private readonly peer: PeerAddress;
  private readonly afterSend: () => void;
  private receiver: ConnectionReceiver | undefined;

  /** @internal created by the endpoint, once `core` is established. */
  constructor(core: Connection, peer: PeerAddress, afterSend: () => void) {
    super();
    // EventEmitter starts every instance with an empty listener table, a
    // null-prototype object V8 keeps in dictionary mode: some 200 bytes per
    // connection, most of what an idle server session would pay for events it
    // never gets. EventEmitter makes that table on the first listener when
    // there is none (every method accepts _events undefined), so an
    // application that listens pays it then and one using setReceiver never.
    (this as unknown as { _events: object | undefined })._events = undefined;
    this.core = core;
    this.peer = peer;
    this.afterSend = afterSend;
  }

  /** Who the peer is and what was negotiated (a new object on each read: keep it if you read it often). */
  get info(): DtlsConnectionInfo {
    return { peer: { address: this.peer.address, port: this.peer.port }, ...this.core.establishedInfo };
  }

  /**
   * The client's resumable session from this connection's handshake (a new
   * ticket or session ID, or the resumed session), undefined when the server
   * gave none (and always on the server side). It holds the session's master
   * secret: keep it as carefully as a private key.
   */
  get session(): SavedSession | undefined {
    return savedSessions.get(this);
  }

  /**
   * @internal the client's new session: kept at once, emitted as "session" in
   * the next turn (after the caller's `await connect()` went on and could listen)
   */
  setSession(session: SavedSession): void {
    savedSessions.set(this, session);
    setImmediate(() => this.emit("session", session));
  }

  /**
   * Set when the server took this session over from a snapshot of an earlier
   * process (DtlsServer.restoreSessions) instead of a handshake: the bytes the
   * layers above attached when it was saved (DtlsServer.exportSessions).
   */
  get restored(): Uint8Array | undefined {
    return restoredAttachments.get(this);
  }

  /** @internal the endpoint marks a restored session before emitting it */
  markRestored(attachment: Uint8Array): void {
    restoredAttachments.set(this, attachment);
  }

  /**
   * From now on records go to `receiver.data` and the end to
   * `receiver.closed`, each before the "data" and "close" events (emitted
   * as before to the listeners there are, if any). For servers holding many
   * sessions: one object per session instead of listener closures.
   */
  setReceiver(receiver: ConnectionReceiver): void {
    this.receiver = receiver;
  }

  /** The object `setReceiver` gave, if any (e.g. to find the layer above's state of this session). */
  get currentReceiver(): ConnectionReceiver | undefined {
    return this.receiver;
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

  /** @internal one record from the peer */
  deliver(data: Uint8Array): void {
    const receiver = this.receiver;
    if (receiver !== undefined) {
      receiver.data(data);
      if (this.listenerCount("data") === 0) return;
    }
    this.emit("data", Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }

  /** @internal the connection is over */
  ended(error: DtlsError | undefined): void {
    if (error !== undefined && error.code !== "closed" && this.listenerCount("error") > 0) this.emit("error", error);
    const reason = error === undefined ? CLOSED : { code: error.code, message: error.message };
    this.receiver?.closed(reason);
    this.emit("close", reason);
  }
}
