/**
 * Wrappers for the third-party Node DTLS clients used as interop peers:
 * - node-dtls-client 2.x (ESM, PSK only, no extensions, no retransmission)
 * - @nodertc/dtls 0.6 (CJS, no typings; requires extended_master_secret)
 *
 * Every client created here is tracked; `closeAllClients()` (afterEach) closes
 * whatever a test left open. All waits are bounded.
 */
import { createRequire } from "node:module";
import type { Duplex } from "node:stream";
import { dtls as ndc } from "node-dtls-client";
import { suiteFromId, type PskCreds, type PskSuiteName } from "./peers.ts";

const openClients = new Set<{ destroy(): void }>();

/** Close every client a test left open. */
export function closeAllClients(): void {
  for (const c of [...openClients]) c.destroy();
  openClients.clear();
}

/** FIFO of received application data with a bounded `next()`. */
export class MessageQueue {
  private items: Buffer[] = [];
  private waiters: Array<(b: Buffer) => void> = [];
  readonly all: Buffer[] = [];

  push(b: Buffer): void {
    this.all.push(b);
    const w = this.waiters.shift();
    if (w) w(b);
    else this.items.push(b);
  }

  next(timeoutMs = 5_000, what = "application data"): Promise<Buffer> {
    const b = this.items.shift();
    if (b) return Promise.resolve(b);
    return new Promise<Buffer>((resolve, reject) => {
      const waiter = (x: Buffer): void => {
        clearTimeout(timer);
        resolve(x);
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

// ---------------------------------------------------------------------------
// node-dtls-client

export type NdcCipher = NonNullable<ndc.Options["ciphers"]>[number];

export interface NdcOptions {
  port: number;
  host?: string;
  psk: PskCreds;
  /** suites offered, in order; default = the library's full list */
  ciphers?: NdcCipher[];
  /** whole-handshake timeout (library default 1000 ms is too tight for a noisy CI box) */
  timeoutMs?: number;
}

export interface NdcClient {
  readonly socket: ndc.Socket;
  readonly messages: MessageQueue;
  readonly errors: Error[];
  /** negotiated suite read from the library's record layer (not public API; undefined if it changes) */
  readonly suite: PskSuiteName | undefined;
  readonly closed: boolean;
  send(data: Buffer | string): Promise<void>;
  /** Sends close_notify and waits for the socket's 'close' (bounded). */
  close(timeoutMs?: number): Promise<void>;
  /** Resolves when the socket closes for any reason (e.g. after the server's close_notify). */
  waitClosed(timeoutMs?: number): Promise<void>;
  destroy(): void;
}

/** Internal shape we peek at to learn the negotiated suite (private in the typings). */
interface NdcInternals {
  recordLayer?: { currentWriteEpoch?: { connectionState?: { cipherSuite?: { id?: number } } } };
}

/**
 * Connect with node-dtls-client; resolves on 'connected', rejects on 'error'/'close'
 * before the handshake completes (the socket is then already closed by the library).
 */
export function connectNodeDtlsClient(o: NdcOptions): Promise<NdcClient> {
  const timeoutMs = o.timeoutMs ?? 10_000;
  const socket = ndc.createSocket({
    type: "udp4",
    address: o.host ?? "127.0.0.1",
    port: o.port,
    psk: { [o.psk.identity]: o.psk.key },
    timeout: timeoutMs,
    ...(o.ciphers ? { ciphers: o.ciphers } : {}),
  });
  const messages = new MessageQueue();
  const errors: Error[] = [];
  let closed = false;
  let suite: PskSuiteName | undefined;
  let markClosed = (): void => {};
  // On an error the library closes the UDP socket without emitting 'close'.
  const closedP = new Promise<void>((resolve) => {
    markClosed = () => {
      closed = true;
      resolve();
    };
  });
  socket.once("close", () => markClosed());
  socket.on("message", (msg: Buffer) => messages.push(msg));
  socket.on("error", (e: Error) => {
    errors.push(e);
    markClosed();
  });

  const client: NdcClient = {
    socket,
    messages,
    errors,
    get suite() {
      return suite;
    },
    get closed() {
      return closed;
    },
    send(data) {
      return new Promise<void>((resolve, reject) => {
        socket.send(Buffer.from(data), (err) => (err ? reject(err) : resolve()));
      });
    },
    async close(ms = 5_000) {
      if (closed) return;
      socket.close();
      await withTimeout(closedP, ms, "node-dtls-client close");
      openClients.delete(client);
    },
    waitClosed(ms = 5_000) {
      return withTimeout(closedP, ms, "node-dtls-client socket close");
    },
    destroy() {
      openClients.delete(client);
      if (closed) return;
      closed = true;
      try {
        // close() sends close_notify then closes the UDP socket
        socket.close();
      } catch {
        // already closed
      }
    },
  };
  openClients.add(client);

  return new Promise<NdcClient>((resolve, reject) => {
    const guard = setTimeout(() => {
      client.destroy();
      reject(new Error(`node-dtls-client: no handshake result within ${timeoutMs + 2_000} ms`));
    }, timeoutMs + 2_000);
    socket.once("connected", () => {
      clearTimeout(guard);
      const id = (socket as unknown as NdcInternals).recordLayer?.currentWriteEpoch?.connectionState?.cipherSuite?.id;
      suite = id === undefined ? undefined : suiteFromId(id);
      resolve(client);
    });
    socket.once("error", (e: Error) => {
      clearTimeout(guard);
      openClients.delete(client);
      reject(e);
    });
    void closedP.then(() => {
      clearTimeout(guard);
      openClients.delete(client);
      reject(new Error("node-dtls-client: socket closed before the handshake completed"));
    });
  });
}

// ---------------------------------------------------------------------------
// @nodertc/dtls (CommonJS without typings: typed here by hand)

export type NodertcSuite =
  | "TLS_PSK_WITH_AES_128_GCM_SHA256"
  | "TLS_PSK_WITH_AES_256_GCM_SHA384"
  | "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256"
  | "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256"
  | "TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384"
  | "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"
  | "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
  | "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
  | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256";

interface NodertcConnectOptions {
  type: "udp4" | "udp6";
  remoteAddress: string;
  remotePort: number;
  pskIdentity: string | Buffer;
  pskSecret: string | Buffer;
  cipherSuites: NodertcSuite[];
  extendedMasterSecret?: boolean;
  maxHandshakeRetransmissions?: number;
  certificate?: Buffer;
  certificatePrivateKey?: Buffer;
}

interface NodertcSocket extends Duplex {
  setMTU(mtu: number): void;
  /** closes the UDP socket; NOTE: sends no close_notify */
  close(): void;
}

interface NodertcModule {
  connect(options: NodertcConnectOptions, callback?: () => void): NodertcSocket;
  constants: { cipherSuites: Record<string, number> };
}

const requireCjs = createRequire(import.meta.url);
const nodertc = requireCjs("@nodertc/dtls") as NodertcModule;

export interface NodertcOptions {
  port: number;
  host?: string;
  psk: PskCreds;
  cipherSuites?: NodertcSuite[];
  /** default true (the library's default); false disables the extension */
  extendedMasterSecret?: boolean;
  mtu?: number;
  timeoutMs?: number;
  /** A client certificate (PEM) and its key (PEM), sent when the server asks. */
  certificate?: Buffer;
  certificatePrivateKey?: Buffer;
}

export interface NodertcClient {
  readonly socket: NodertcSocket;
  readonly messages: MessageQueue;
  /**
   * Alert "descriptions" received (the library reports every alert as error "alert code N").
   * CAVEAT (library bug, filter/decoder.js): @nodertc/dtls never decrypts alert records,
   * so after the handshake an (encrypted) close_notify is parsed from the ciphertext and
   * shows up as a garbage code (with GCM: 1, the low byte of the epoch in the explicit
   * nonce). Only plaintext alerts (during the handshake) carry a meaningful code.
   */
  readonly alerts: number[];
  readonly errors: Error[];
  /** negotiated suite name read from the library's session (private; undefined if it changes) */
  readonly suite: string | undefined;
  send(data: Buffer | string): void;
  /** Resolves when an alert with this description arrives, or any alert if undefined (see `alerts`). */
  waitAlert(description: number | undefined, timeoutMs?: number): Promise<void>;
  /** Closes the UDP socket (the library sends no close_notify). */
  destroy(): void;
}

/** Internal session object reached through the socket's `Symbol(_session)`. */
interface NodertcSessionInternals {
  cipher?: { name?: string | null };
}

function nodertcSuiteOf(socket: NodertcSocket): string | undefined {
  const sym = Object.getOwnPropertySymbols(socket).find((s) => s.description === "_session");
  if (!sym) return undefined;
  const session = (socket as unknown as Record<symbol, NodertcSessionInternals | null>)[sym];
  return session?.cipher?.name ?? undefined;
}

export function connectNodertc(o: NodertcOptions): Promise<NodertcClient> {
  const timeoutMs = o.timeoutMs ?? 10_000;
  const socket = nodertc.connect({
    type: "udp4",
    remoteAddress: o.host ?? "127.0.0.1",
    remotePort: o.port,
    pskIdentity: o.psk.identity,
    pskSecret: o.psk.key,
    cipherSuites: o.cipherSuites ?? ["TLS_PSK_WITH_AES_128_GCM_SHA256"],
    ...(o.extendedMasterSecret === false ? { extendedMasterSecret: false } : {}),
    ...(o.certificate !== undefined ? { certificate: o.certificate, certificatePrivateKey: o.certificatePrivateKey } : {}),
  });
  if (o.mtu !== undefined) socket.setMTU(o.mtu);
  const messages = new MessageQueue();
  const alerts: number[] = [];
  const errors: Error[] = [];
  const alertWaiters: Array<{ d: number | undefined; resolve: () => void }> = [];
  let suite: string | undefined;
  let destroyed = false;

  socket.on("data", (d: Buffer) => messages.push(d));
  socket.on("error", (e: Error) => {
    errors.push(e);
    const m = /^alert code (\d+)$/.exec(e.message);
    if (m) {
      const d = Number(m[1]);
      alerts.push(d);
      for (const w of alertWaiters.filter((x) => x.d === undefined || x.d === d)) w.resolve();
    }
  });

  const client: NodertcClient = {
    socket,
    messages,
    alerts,
    errors,
    get suite() {
      return suite;
    },
    send(data) {
      socket.write(Buffer.from(data));
    },
    waitAlert(description, ms = 5_000) {
      if (description === undefined ? alerts.length > 0 : alerts.includes(description)) return Promise.resolve();
      return withTimeout(
        new Promise<void>((resolve) => alertWaiters.push({ d: description, resolve })),
        ms,
        `@nodertc/dtls alert ${description ?? "(any)"}`,
      );
    },
    destroy() {
      openClients.delete(client);
      if (destroyed) return;
      destroyed = true;
      try {
        socket.close();
      } catch {
        // already closed
      }
      socket.destroy();
    },
  };
  openClients.add(client);

  return new Promise<NodertcClient>((resolve, reject) => {
    const fail = (e: Error): void => {
      clearTimeout(guard);
      client.destroy();
      reject(e);
    };
    const guard = setTimeout(() => fail(new Error(`@nodertc/dtls: no handshake within ${timeoutMs} ms`)), timeoutMs);
    const onError = (e: Error): void => fail(e);
    socket.once("error", onError);
    socket.once("timeout", () => fail(new Error("@nodertc/dtls: handshake retransmissions exhausted")));
    socket.once("connect", () => {
      clearTimeout(guard);
      socket.off("error", onError);
      suite = nodertcSuiteOf(socket);
      resolve(client);
    });
  });
}

// ---------------------------------------------------------------------------
// werift-dtls 0.5.8: its package entry is broken (lib/index.js is missing), so
// the client and the UDP transport are loaded from their files. It offers only
// TLS_ECDHE_ECDSA/RSA_WITH_AES_128_GCM_SHA256 over x25519 or secp256r1.

interface WeriftEvent<T extends unknown[]> {
  subscribe(fn: (...args: T) => void): unknown;
}

interface WeriftClient {
  readonly onConnect: WeriftEvent<[]>;
  readonly onData: WeriftEvent<[Buffer]>;
  readonly onError: WeriftEvent<[Error]>;
  readonly cipher: { cipherSuite?: number } | undefined;
  connect(): Promise<void>;
  send(data: Buffer): void;
  close(): void;
}

interface WeriftTransport {
  rinfo?: { address: string; port: number };
  close(): Promise<void>;
}

interface WeriftModules {
  DtlsClient: new (options: { transport: WeriftTransport }) => WeriftClient;
  UdpTransport: { init(type: "udp4"): Promise<WeriftTransport> };
}

function weriftModules(): WeriftModules {
  const { DtlsClient } = requireCjs("werift-dtls/lib/dtls/src/index.js") as Pick<WeriftModules, "DtlsClient">;
  const { UdpTransport } = requireCjs("werift-dtls/lib/common/src/transport.js") as Pick<WeriftModules, "UdpTransport">;
  return { DtlsClient, UdpTransport };
}

export interface WeriftConnection {
  readonly messages: MessageQueue;
  /** The IANA code point werift negotiated. */
  readonly suite: number | undefined;
  send(data: string): void;
  close(): Promise<void>;
}

/** Connects a werift-dtls client (certificate suites only; it does not check our chain). */
export async function connectWerift(port: number, timeoutMs = 10_000): Promise<WeriftConnection> {
  const { DtlsClient, UdpTransport } = weriftModules();
  const transport = await UdpTransport.init("udp4");
  transport.rinfo = { address: "127.0.0.1", port };
  const client = new DtlsClient({ transport });
  const messages = new MessageQueue();
  client.onData.subscribe((d) => messages.push(d));
  const close = async (): Promise<void> => {
    client.close();
    await transport.close();
  };
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      void close();
      reject(new Error(`werift-dtls did not connect within ${timeoutMs} ms`));
    }, timeoutMs);
    client.onConnect.subscribe(() => {
      clearTimeout(timer);
      resolve();
    });
    client.onError.subscribe((e) => {
      clearTimeout(timer);
      void close();
      reject(e);
    });
    client.connect().catch((e: unknown) => {
      clearTimeout(timer);
      reject(e instanceof Error ? e : new Error(String(e)));
    });
  });
  return { messages, suite: client.cipher?.cipherSuite, send: (d) => client.send(Buffer.from(d)), close };
}
