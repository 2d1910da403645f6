/**
 * Transport over the optional `node-dtls-client` package (2.x): pre-shared
 * keys only. What the library does and does not do, and what this adapter
 * does about it:
 * - PSK suites only, no certificates: certificate options are refused
 *   ("transport_unsupported"); `ca`/`fingerprint` beside `psk` are unused.
 * - It offers CBC suites by default; only its AEAD PSK suites are offered here.
 * - It never retransmits a handshake flight: on a lossy path the handshake can
 *   fail ("timeout"); the caller retries.
 * - The identity is sent as ASCII; other identities are refused.
 * - One record per datagram (no packing); no record fragmentation.
 * - The negotiated suite is not public: it is read from the record layer, and
 *   the most conservative overhead is assumed when that fails.
 */
import {
  asError,
  endpointName,
  loadOptionalModule,
  recordPayloadLimit,
  TransportBase,
  TransportError,
  withDeadline,
  type CheckedOptions,
  type Transport,
} from "./base.ts";

/** The part of node-dtls-client's API used here (typed by hand: the package is optional). */
interface NdcSocket {
  on(event: "connected" | "close", listener: () => void): unknown;
  on(event: "message", listener: (msg: Buffer) => void): unknown;
  on(event: "error", listener: (e: Error) => void): unknown;
  send(data: Buffer, callback?: (error: Error | null | undefined) => void): void;
  close(callback?: () => void): void;
}

interface NdcNamespace {
  createSocket(options: {
    type: "udp4" | "udp6";
    address: string;
    port: number;
    psk: Record<string, Buffer>;
    timeout: number;
    ciphers: string[];
  }): NdcSocket;
}

/** Record-layer internals read for the negotiated suite (private in the library; optional here). */
interface NdcInternals {
  recordLayer?: { currentWriteEpoch?: { connectionState?: { cipherSuite?: { id?: number } } } };
  killConnection?: (err?: Error) => void;
}

/** The AEAD PSK suites offered, in order, with their per-record overhead (explicit nonce + tag). */
const SUITES: ReadonlyArray<{ id: number; name: string; overhead: number }> = [
  { id: 0xc0a8, name: "TLS_PSK_WITH_AES_128_CCM_8", overhead: 8 + 8 },
  { id: 0x00a8, name: "TLS_PSK_WITH_AES_128_GCM_SHA256", overhead: 8 + 16 },
  { id: 0xc0a4, name: "TLS_PSK_WITH_AES_128_CCM", overhead: 8 + 16 },
  { id: 0x00a9, name: "TLS_PSK_WITH_AES_256_GCM_SHA384", overhead: 8 + 16 },
];
const WORST_OVERHEAD = Math.max(...SUITES.map((s) => s.overhead));

/** How long close() waits for the library to send close_notify and close its socket. */
const CLOSE_WAIT_MS = 1000;

class NodeDtlsClientTransport extends TransportBase {
  private readonly socket: NdcSocket;
  private readonly where: string;

  constructor(socket: NdcSocket, where: string, suite: string, maxRecordPayload: number) {
    super("node-dtls-client", maxRecordPayload, `node-dtls-client ${suite} to ${where}`);
    this.socket = socket;
    this.where = where;
  }

  /** A record from the library's "message" event. */
  record(msg: Uint8Array): void {
    this.received(msg);
  }

  /** The library emits "close" after a close_notify (the peer's, answered, or ours). */
  closedByLibrary(): void {
    this.ended(undefined);
  }

  /** The library emits "error" for fatal alerts and socket errors. */
  lost(e: Error): void {
    this.ended(new TransportError("connection_lost", `the DTLS session with ${this.where} ended: ${e.message}`, { cause: e }));
  }

  protected transmit(records: readonly Uint8Array[]): void {
    for (const r of records) {
      try {
        // Encrypted synchronously, so a view of the caller's bytes is enough.
        this.socket.send(Buffer.from(r.buffer, r.byteOffset, r.byteLength), (err) => {
          if (err) this.lost(err);
        });
      } catch (e) {
        throw new TransportError("closed", `cannot send on the DTLS session with ${this.where}: ${asError(e).message}`, { cause: e });
      }
    }
  }

  protected shutdown(): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, CLOSE_WAIT_MS);
      try {
        this.socket.close(() => {
          clearTimeout(timer);
          resolve();
        });
      } catch {
        clearTimeout(timer);
        (this.socket as NdcInternals).killConnection?.();
        resolve();
      }
    });
  }
}

function negotiated(socket: NdcSocket): { name: string; overhead: number } {
  const id = (socket as NdcInternals).recordLayer?.currentWriteEpoch?.connectionState?.cipherSuite?.id;
  return SUITES.find((s) => s.id === id) ?? { name: "(PSK suite)", overhead: WORST_OVERHEAD };
}

/** Ends a socket whose handshake did not complete, without events we would have to handle. */
function abandon(socket: NdcSocket): void {
  const internals = socket as NdcInternals;
  if (typeof internals.killConnection === "function") internals.killConnection();
  else {
    try {
      socket.close();
    } catch {
      // not listening yet: the library's own timeout closes it
    }
  }
}

export async function openNodeDtlsClientTransport(o: CheckedOptions): Promise<Transport> {
  if (o.cert !== undefined || o.key !== undefined) {
    throw new TransportError("transport_unsupported", "node-dtls-client supports only pre-shared keys, not client certificates");
  }
  if (o.psk === undefined) {
    throw new TransportError("transport_unsupported", "node-dtls-client supports only pre-shared keys, not certificate suites: give psk");
  }
  if (!/^[\x20-\x7e]+$/.test(o.psk.identity)) {
    throw new TransportError("transport_unsupported", "node-dtls-client sends the PSK identity as ASCII: use printable ASCII characters");
  }
  const mod = (await loadOptionalModule("node-dtls-client", "node-dtls-client")) as { dtls?: NdcNamespace } | undefined;
  const dtls = mod?.dtls;
  if (dtls === undefined || typeof dtls.createSocket !== "function") {
    throw new TransportError("transport_unavailable", "the installed node-dtls-client has no dtls.createSocket: version 2 is needed");
  }
  const where = endpointName(o.host, o.port);
  let socket: NdcSocket;
  try {
    socket = dtls.createSocket({
      type: o.host.includes(":") ? "udp6" : "udp4",
      address: o.host,
      port: o.port,
      psk: { [o.psk.identity]: Buffer.from(o.psk.key) },
      // Our deadline below comes first; the library's is a backstop.
      timeout: Math.ceil(o.timeoutMs) + 1000,
      ciphers: SUITES.map((s) => s.name),
    });
  } catch (e) {
    throw new TransportError("bad_option", `node-dtls-client refused the options: ${asError(e).message}`, { cause: e });
  }
  // Listeners for the whole life of the socket (an "error" without one would throw). The library
  // emits the records that arrived during the handshake right after "connected", before the
  // transport exists: they wait in `early`.
  let transport: NodeDtlsClientTransport | undefined;
  const early: Uint8Array[] = [];
  /** How the session ended if that happened between "connected" and the transport's creation. */
  let earlyEnd: { error: Error | undefined } | undefined;
  let handshakeDone = false;
  const handshake = new Promise<void>((resolve, reject) => {
    socket.on("connected", () => {
      handshakeDone = true;
      resolve();
    });
    socket.on("message", (msg) => {
      if (transport !== undefined) transport.record(msg);
      else if (handshakeDone) early.push(new Uint8Array(msg));
    });
    socket.on("error", (e) => {
      if (transport !== undefined) transport.lost(e);
      else if (handshakeDone) earlyEnd ??= { error: e };
      else if (/timed out/i.test(e.message))
        reject(new TransportError("timeout", `no DTLS handshake with ${where} within ${o.timeoutMs} ms`, { cause: e }));
      else reject(new TransportError("connect_failed", `the DTLS handshake with ${where} failed: ${e.message}`, { cause: e }));
    });
    socket.on("close", () => {
      if (transport !== undefined) transport.closedByLibrary();
      else if (handshakeDone) earlyEnd ??= { error: undefined };
      else reject(new TransportError("connect_failed", `the DTLS handshake with ${where} failed: the session closed before it was established`));
    });
  });
  try {
    await withDeadline(handshake, o.timeoutMs, where, () => abandon(socket));
  } catch (e) {
    abandon(socket);
    throw e instanceof TransportError
      ? e
      : new TransportError("connect_failed", `the DTLS handshake with ${where} failed: ${asError(e).message}`, { cause: e });
  }
  const suite = negotiated(socket);
  transport = new NodeDtlsClientTransport(socket, where, suite.name, recordPayloadLimit(o.mtu, suite.overhead));
  for (const m of early) transport.record(m);
  if (earlyEnd !== undefined) {
    if (earlyEnd.error === undefined) transport.closedByLibrary();
    else transport.lost(earlyEnd.error);
  }
  return transport;
}
