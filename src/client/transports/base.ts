/**
 * What every device-side transport shares: the option and interface types,
 * TransportError, option checks, loading an optional library, and
 * TransportBase, which holds the record/close handler plumbing (records that
 * arrive before a handler is set are kept, onClose fires exactly once, send
 * checks sizes and state) so each library adapter only moves bytes.
 *
 * `src/client/transport.ts` is the public face of this file; it lives here so
 * the adapters can import it without an import cycle.
 */
import type { CryptoProvider } from "../../crypto/index.ts";
import { DtlspushError } from "../../util/errors.ts";

export type TransportName = "dtlspush" | "node-dtls-client" | "nodertc";

export const TRANSPORT_NAMES: readonly TransportName[] = ["dtlspush", "node-dtls-client", "nodertc"];

export interface TransportOptions {
  host: string;
  port: number;
  psk?: { identity: string; key: Uint8Array };
  /** PEM client chain (leaf first) and its PEM private key, for mutual X.509. */
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
  /** PEM CA certificate(s) the server's chain must lead to. */
  ca?: string | Uint8Array;
  /** SHA-256 of the server's leaf certificate (hex; colons and case ignored). */
  fingerprint?: string;
  /** Name the server certificate must be issued for; default `host`. */
  servername?: string;
  /** Handshake timeout, default 10 000 ms. */
  timeoutMs?: number;
  /**
   * The handshake's first retransmission timeout, ms (10 to 1000; default 1000, RFC 6347's initial
   * value), doubling per retransmission. The SDK sets it from the round trips it measured with the
   * server (liveness RTO) on reconnects. The dtlspush transport only.
   */
  handshakeRetransmitMs?: number;
  /** Largest UDP payload to send, default 1200. */
  mtu?: number;
  /**
   * A DTLS session saved from an earlier session (`Transport.session`), to
   * resume with an abbreviated handshake; a server that refuses it makes a
   * full handshake. The dtlspush transport only; the others ignore it.
   */
  session?: Uint8Array;
  /** Offer a DTLS Connection ID (RFC 9146): the session survives NAT rebinding. Default true; the dtlspush transport only. */
  connectionId?: boolean;
  /** The crypto provider of the DTLS handshake and records (default: the Node one, src/crypto); the dtlspush transport only. */
  crypto?: CryptoProvider;
}

export interface Transport {
  readonly name: TransportName;
  /** Largest plaintext one record may carry on this session (from the negotiated suite and MTU). */
  readonly maxRecordPayload: number;
  /** A short description for logs, e.g. "dtlspush TLS_PSK_WITH_AES_128_CCM_8 to 127.0.0.1:5684". */
  readonly description: string;
  /** The session was resumed (abbreviated handshake); the dtlspush transport only. */
  readonly resumed?: boolean;
  /** The DTLS session to save for the next connection (holds its master secret); the dtlspush transport only. */
  readonly session?: Uint8Array | undefined;
  /** Called when the server hands a new session to save (a new ticket); the dtlspush transport only. */
  onSession?(handler: (session: Uint8Array) => void): void;
  /** Sends each element as one DTLS record; several may share a datagram when the transport can. */
  send(records: readonly Uint8Array[]): void;
  /** One call per received record (the Uint8Array is the caller's to keep). */
  onRecord(handler: (record: Uint8Array) => void): void;
  /**
   * Called exactly once when the session ends: peer close_notify or fatal
   * alert, socket error, or our close() (error undefined for a clean end).
   */
  onClose(handler: (error: Error | undefined) => void): void;
  /** Sends close_notify when the library can, resolves when done; idempotent. */
  close(): Promise<void>;
}

/**
 * - `transport_unavailable`: the transport's library is not installed
 * - `transport_unsupported`: the library cannot do what the options ask (e.g. certificates with node-dtls-client)
 * - `connect_failed`: the handshake was refused or failed (the cause is the library's error)
 * - `timeout`: no handshake within `timeoutMs`
 * - `bad_option`: an invalid option
 * - `closed`: send on a session that has ended
 * - `too_large`: a record over `maxRecordPayload`
 * - `connection_lost`: (onClose) the session ended other than cleanly: fatal alert, socket error
 */
export type TransportErrorCode =
  "transport_unavailable" | "transport_unsupported" | "connect_failed" | "timeout" | "bad_option" | "closed" | "too_large" | "connection_lost";

export class TransportError extends DtlspushError {
  declare readonly code: TransportErrorCode;
  /** a "timeout" during which the server sent something (it is up; the path loses datagrams): the dtlspush transport only */
  readonly serverAnswered: boolean;
  constructor(code: TransportErrorCode, message: string, options?: { cause?: unknown; serverAnswered?: boolean }) {
    super(code, message, options);
    this.name = "TransportError";
    this.serverAnswered = options?.serverAnswered ?? false;
  }
}

export const DEFAULT_TIMEOUT_MS = 10_000;
export const DEFAULT_MTU = 1200;
/** Largest DTLS plaintext (RFC 6347: 2^14). */
export const MAX_PLAINTEXT = 16_384;
/** DTLS record header: type, version, epoch, sequence number, length. */
export const RECORD_HEADER = 13;

/** "host:port", with IPv6 literals in brackets. */
export function endpointName(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The largest plaintext of one record in one datagram of `mtu` bytes, given the suite's per-record overhead. */
export function recordPayloadLimit(mtu: number, suiteOverhead: number): number {
  return Math.max(0, Math.min(MAX_PLAINTEXT, mtu - RECORD_HEADER - suiteOverhead));
}

/** The library's error as an Error (libraries sometimes reject with other values). */
export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

function isBytes(x: unknown): x is Uint8Array {
  return x instanceof Uint8Array;
}

function isPemInput(x: unknown): x is string | Uint8Array {
  return typeof x === "string" || x instanceof Uint8Array;
}

/** Options every transport needs right, with defaults applied; throws TransportError "bad_option". */
export interface CheckedOptions extends TransportOptions {
  timeoutMs: number;
  mtu: number;
}

export function checkOptions(o: TransportOptions): CheckedOptions {
  const bad = (message: string): TransportError => new TransportError("bad_option", message);
  // The options come from callers' configuration files too: check the shapes, not just the types.
  const opts = o as Partial<TransportOptions> | undefined;
  if (opts === undefined || opts === null || typeof opts !== "object") throw bad("transport options are required");
  if (typeof opts.host !== "string" || opts.host.length === 0) throw bad("host must be a non-empty host name or IP address");
  if (typeof opts.port !== "number" || !Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
    throw bad(`port must be an integer from 1 to 65535, got ${String(opts.port)}`);
  }
  if (opts.psk !== undefined) {
    if (typeof opts.psk.identity !== "string" || opts.psk.identity.length === 0) throw bad("psk.identity must be a non-empty string");
    if (!isBytes(opts.psk.key) || opts.psk.key.length === 0) throw bad("psk.key must be non-empty bytes");
  }
  if ((opts.cert === undefined) !== (opts.key === undefined)) throw bad("cert and key go together: give both or neither");
  if (opts.cert !== undefined && !isPemInput(opts.cert)) throw bad("cert must be PEM text or bytes");
  if (opts.key !== undefined && !isPemInput(opts.key)) throw bad("key must be PEM text or bytes");
  if (opts.ca !== undefined && !isPemInput(opts.ca)) throw bad("ca must be PEM text or bytes");
  if (opts.fingerprint !== undefined && !/^[0-9a-f]{64}$/.test(String(opts.fingerprint).replaceAll(":", "").trim().toLowerCase())) {
    throw bad("fingerprint must be a SHA-256 fingerprint: 64 hex digits, colons allowed");
  }
  if (opts.servername !== undefined && (typeof opts.servername !== "string" || opts.servername.length === 0)) {
    throw bad("servername must be a non-empty string");
  }
  if (opts.session !== undefined && !isBytes(opts.session)) throw bad("session must be bytes (a saved DTLS session)");
  if (opts.connectionId !== undefined && typeof opts.connectionId !== "boolean") throw bad("connectionId must be true or false");
  if (opts.psk === undefined && opts.ca === undefined && opts.fingerprint === undefined) {
    throw bad("give psk, or ca or fingerprint to authenticate the server");
  }
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== "number" || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw bad(`timeoutMs must be a positive number of milliseconds, got ${String(timeoutMs)}`);
  }
  const rtx = opts.handshakeRetransmitMs;
  if (rtx !== undefined && (typeof rtx !== "number" || !Number.isInteger(rtx) || rtx < 10 || rtx > 1000)) {
    throw bad(`handshakeRetransmitMs must be an integer from 10 to 1000, got ${String(rtx)}`);
  }
  const mtu = opts.mtu ?? DEFAULT_MTU;
  if (typeof mtu !== "number" || !Number.isInteger(mtu) || mtu < 100 || mtu > 65507) {
    throw bad(`mtu must be an integer from 100 to 65507, got ${String(mtu)}`);
  }
  return { ...(opts as TransportOptions), timeoutMs, mtu };
}

/**
 * Loads an optional library with a dynamic import; a module that is not
 * installed becomes TransportError "transport_unavailable" naming the package.
 * (The specifier is a variable so TypeScript does not need the package's types.)
 */
export async function loadOptionalModule(specifier: string, transport: string): Promise<unknown> {
  try {
    return (await import(specifier)) as unknown;
  } catch (e) {
    const code = (e as { code?: unknown } | null)?.code;
    if (code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND") {
      throw new TransportError(
        "transport_unavailable",
        `the ${transport} transport needs the optional package ${specifier}, which is not installed (npm install ${specifier})`,
        { cause: e },
      );
    }
    throw new TransportError("transport_unavailable", `the optional package ${specifier} failed to load: ${asError(e).message}`, { cause: e });
  }
}

/**
 * Resolves with `promise`, or rejects with TransportError "timeout" after
 * `ms` (then `onTimeout` cleans up). The timer never outlives the promise.
 */
export function withDeadline<T>(promise: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      onTimeout();
      reject(new TransportError("timeout", `no DTLS handshake with ${what} within ${ms} ms`));
    }, ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(asError(e));
      },
    );
  });
}

/**
 * The shared half of a transport. Subclasses call `received` for each
 * record, `ended` when the library reports the session over, and implement
 * `transmit` (records already checked) and `shutdown` (close the library's
 * session; `ended(undefined)` follows automatically).
 */
export abstract class TransportBase implements Transport {
  readonly name: TransportName;
  readonly maxRecordPayload: number;
  readonly description: string;
  private recordHandler: ((record: Uint8Array) => void) | undefined;
  private closeHandler: ((error: Error | undefined) => void) | undefined;
  /** Records received before a handler was set (or while earlier ones are being flushed). */
  private pending: Uint8Array[] = [];
  private isEnded = false;
  private endError: Error | undefined;
  private closeReported = false;
  private closing: Promise<void> | undefined;

  protected constructor(name: TransportName, maxRecordPayload: number, description: string) {
    this.name = name;
    this.maxRecordPayload = maxRecordPayload;
    this.description = description;
  }

  /** True once the session has ended (peer close, error or our close()). */
  get closed(): boolean {
    return this.isEnded;
  }

  send(records: readonly Uint8Array[]): void {
    if (this.isEnded || this.closing !== undefined) throw new TransportError("closed", `cannot send: the ${this.description} session is closed`);
    for (const r of records) {
      if (!(r instanceof Uint8Array)) throw new TransportError("bad_option", "each record must be a Uint8Array");
      if (r.length > this.maxRecordPayload) {
        throw new TransportError("too_large", `a record of ${r.length} bytes exceeds this session's limit of ${this.maxRecordPayload} bytes`);
      }
    }
    if (records.length === 0) return;
    this.transmit(records);
  }

  onRecord(handler: (record: Uint8Array) => void): void {
    this.recordHandler = handler;
    if (this.pending.length > 0) queueMicrotask(() => this.flush());
  }

  onClose(handler: (error: Error | undefined) => void): void {
    this.closeHandler = handler;
    if (this.isEnded && !this.closeReported) queueMicrotask(() => this.reportClose());
  }

  close(): Promise<void> {
    if (this.closing === undefined) {
      this.closing = this.isEnded
        ? Promise.resolve()
        : this.shutdown().then(
            () => this.ended(undefined),
            () => this.ended(undefined),
          );
    }
    return this.closing;
  }

  protected abstract transmit(records: readonly Uint8Array[]): void;

  protected abstract shutdown(): Promise<void>;

  /** One received record; copied, so the library may reuse its buffer. */
  protected received(record: Uint8Array): void {
    if (this.isEnded) return;
    const copy = new Uint8Array(record);
    if (this.recordHandler !== undefined && this.pending.length === 0) this.recordHandler(copy);
    else this.pending.push(copy);
  }

  /** The session is over; the first call wins. */
  protected ended(error: Error | undefined): void {
    if (this.isEnded) return;
    this.isEnded = true;
    this.endError = error;
    // Records still waiting for a handler go first, then the close.
    if (this.pending.length > 0 && this.recordHandler !== undefined) queueMicrotask(() => this.flush());
    else this.reportClose();
  }

  private flush(): void {
    const handler = this.recordHandler;
    if (handler === undefined) return;
    while (this.pending.length > 0) {
      const r = this.pending.shift() as Uint8Array;
      handler(r);
    }
    if (this.isEnded) this.reportClose();
  }

  private reportClose(): void {
    if (this.closeReported || this.closeHandler === undefined) return;
    if (this.pending.length > 0 && this.recordHandler !== undefined) return; // flush() reports after the records
    this.closeReported = true;
    this.closeHandler(this.endError);
  }
}
