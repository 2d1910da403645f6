/**
 * The default transport: the project's own DTLS 1.2 client (PSK, X.509 with
 * a CA or a pinned fingerprint, mutual X.509). Several records of one send
 * share datagrams (sendBatch).
 */
import { connect, DtlsError, HandshakeTimeoutError, type DtlsConnection } from "../../dtls/index.ts";
import { asError, endpointName, TransportBase, TransportError, type CheckedOptions, type Transport } from "./base.ts";

class DtlspushTransport extends TransportBase {
  private readonly conn: DtlsConnection;
  private sessionHandler: ((session: Uint8Array) => void) | undefined;

  constructor(conn: DtlsConnection, where: string) {
    super("dtlspush", conn.maxDatagramPayload, `dtlspush ${conn.info.suite}${conn.info.resumed ? " (resumed)" : ""} to ${where}`);
    this.conn = conn;
    let failure: DtlsError | undefined;
    conn.on("session", (session) => this.sessionHandler?.(session));
    conn.on("data", (d) => this.received(d));
    conn.on("error", (e) => {
      failure = e;
    });
    conn.on("close", (reason) => {
      if (reason.code === "closed") this.ended(undefined);
      else this.ended(new TransportError("connection_lost", `the DTLS session with ${where} ended: ${reason.message}`, { cause: failure }));
    });
  }

  get resumed(): boolean {
    return this.conn.info.resumed;
  }

  get session(): Uint8Array | undefined {
    return this.conn.session;
  }

  onSession(handler: (session: Uint8Array) => void): void {
    this.sessionHandler = handler;
  }

  protected transmit(records: readonly Uint8Array[]): void {
    try {
      if (records.length === 1) this.conn.send(records[0] as Uint8Array);
      else this.conn.sendBatch(records);
    } catch (e) {
      if (e instanceof DtlsError && e.code === "too_large") throw new TransportError("too_large", e.message, { cause: e });
      throw new TransportError("closed", `cannot send on the DTLS session: ${asError(e).message}`, { cause: e });
    }
  }

  protected shutdown(): Promise<void> {
    if (!this.conn.closed) this.conn.close(); // close_notify; the connection emits "close" synchronously
    return Promise.resolve();
  }
}

/** Maps the engine's handshake failure to a TransportError. */
function connectError(e: unknown, where: string): TransportError {
  if (e instanceof DtlsError) {
    if (e.code === "timeout")
      return new TransportError("timeout", e.message, { cause: e, serverAnswered: e instanceof HandshakeTimeoutError && e.serverAnswered });
    if (e.code === "bad_option" || e.code === "bad_suite") return new TransportError("bad_option", e.message, { cause: e });
    if (e.code === "socket_error") return new TransportError("connect_failed", `cannot reach ${where}: ${e.message}`, { cause: e });
    return new TransportError("connect_failed", `the DTLS handshake with ${where} failed (${e.code}): ${e.message}`, { cause: e });
  }
  return new TransportError("connect_failed", `the DTLS handshake with ${where} failed: ${asError(e).message}`, { cause: e });
}

export async function openDtlspushTransport(o: CheckedOptions): Promise<Transport> {
  const where = endpointName(o.host, o.port);
  let conn: DtlsConnection;
  try {
    conn = await connect({
      host: o.host,
      port: o.port,
      psk: o.psk,
      ca: o.ca,
      fingerprint: o.fingerprint,
      servername: o.servername,
      cert: o.cert,
      key: o.key,
      mtu: o.mtu,
      timeoutMs: o.timeoutMs,
      ...(o.handshakeRetransmitMs === undefined ? {} : { retransmit: { initialMs: o.handshakeRetransmitMs } }),
      ...(o.session === undefined ? {} : { session: o.session }),
      ...(o.connectionId === undefined ? {} : { connectionId: o.connectionId }),
      ...(o.crypto === undefined ? {} : { crypto: o.crypto }),
    });
  } catch (e) {
    throw connectError(e, where);
  }
  return new DtlspushTransport(conn, where);
}
