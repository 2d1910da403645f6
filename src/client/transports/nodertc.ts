/**
 * Transport over the optional `@nodertc/dtls` package (0.6): PSK, ECDHE_PSK
 * and ECDHE_ECDSA, with client certificates. What the library does and does
 * not do, and what this adapter does about it:
 * - It has no CA option, only a callback that gets the server's leaf: this
 *   adapter verifies the chain itself (`ca` or `fingerprint`, and the name,
 *   as the dtlspush client does), reading the whole Certificate message when
 *   the library's internals allow, else the leaf alone.
 * - It speaks ECDHE only over secp384r1/secp521r1 and sends no
 *   signature_algorithms: the server needs a P-384 (or P-521) ECDSA
 *   certificate and must accept SHA-1 signatures (our server's
 *   `legacySha1Signatures`). Client certificates must be P-384 (or P-521)
 *   too; only the leaf is sent.
 * - It requires extended_master_secret (our server supports it).
 * - It never encrypts alerts: close() encrypts and sends the close_notify
 *   itself, and the server's (encrypted) alerts are decrypted here to tell a
 *   close_notify from a fatal alert; alerts that do not authenticate are ignored.
 * - It passes on application records that fail to decrypt as they are: this
 *   adapter drops them.
 * - It takes only IP addresses: host names are resolved here.
 * - One record per datagram (no packing).
 * Library internals used (each optional, with a fallback): the socket's
 * session (negotiated suite, record keys, its decrypt) and protocol reader
 * (the record being handled).
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { Duplex } from "node:stream";
import { verifyChain, type TrustOptions } from "../../dtls/cert-verify.ts";
import { alertName } from "../../dtls/constants.ts";
import { parseCertificate, pemCertificates } from "../../crypto/index.ts";
import type { DtlsError } from "../../dtls/index.ts";
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

// ---------------------------------------------------------------------------
// The library's API as used here (typed by hand: CommonJS without typings, and optional)

interface NodertcConnectOptions {
  type: "udp4" | "udp6";
  /** Local bind address of the library's UDP socket. */
  address?: string;
  remoteAddress: string;
  remotePort: number;
  cipherSuites: string[];
  pskIdentity?: string;
  pskSecret?: Buffer;
  certificate?: Buffer;
  certificatePrivateKey?: Buffer;
  checkServerIdentity?: (certificate: { raw?: Buffer }) => boolean;
}

interface NodertcSocket extends Duplex {
  setMTU(mtu: number): void;
  /** Closes the UDP socket (the library itself sends no close_notify). */
  close(): void;
}

interface NodertcModule {
  connect(options: NodertcConnectOptions): NodertcSocket;
}

/** A record as the library decodes it (version is the wire uint16). */
interface LibRecord {
  type: number;
  version: number;
  epoch: number;
  sequenceNumber: number;
  length: number;
  fragment: Buffer | { body?: Buffer };
}

interface LibSession {
  cipher?: { name?: string | null };
  version?: number;
  clientEpoch?: number;
  nextRecordNumber?: () => number;
  encrypt?: (cipher: unknown, record: LibRecord) => void;
  decrypt?: (cipher: unknown, record: LibRecord) => void;
  retransmitter?: { finish?: () => void };
}

interface LibProtocol {
  message?: LibRecord | null;
}

/** A private member of the library's socket, found by its Symbol's description. */
function internal<T>(socket: object, name: string): T | undefined {
  const sym = Object.getOwnPropertySymbols(socket).find((s) => s.description === name);
  return sym === undefined ? undefined : ((socket as Record<symbol, T | undefined>)[sym] ?? undefined);
}

// ---------------------------------------------------------------------------

const ALERT = 21;

/** Suites offered: with psk, then with ca/fingerprint; overhead = explicit nonce + tag. */
const PSK_SUITES = [
  "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_PSK_WITH_AES_128_GCM_SHA256",
  "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_PSK_WITH_AES_256_GCM_SHA384",
  "TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384",
];
const CERTIFICATE_SUITES = [
  "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
];

function suiteOverhead(name: string | undefined): number {
  return name !== undefined && name.includes("CHACHA20") ? 16 : 8 + 16;
}

/** The library's MTU range (setMTU). */
const LIB_MIN_MTU = 100;
const LIB_MAX_MTU = 1420;
const CLOSE_WAIT_MS = 1000;

/** The DER certificates of a Certificate handshake body (uint24 list length, then uint24 length + DER each). */
function certificateList(body: Uint8Array): Uint8Array[] | undefined {
  const u24 = (at: number): number => ((body[at] ?? 0) << 16) | ((body[at + 1] ?? 0) << 8) | (body[at + 2] ?? 0);
  if (body.length < 3 || u24(0) !== body.length - 3) return undefined;
  const out: Uint8Array[] = [];
  for (let at = 3; at < body.length;) {
    if (at + 3 > body.length) return undefined;
    const n = u24(at);
    if (at + 3 + n > body.length) return undefined;
    out.push(body.subarray(at + 3, at + 3 + n));
    at += 3 + n;
  }
  return out;
}

/** The server's chain: the whole Certificate message when the protocol reader shows it, else the leaf. */
function serverChain(socket: NodertcSocket | undefined, leaf: { raw?: Buffer }): Uint8Array[] {
  const fragment = socket === undefined ? undefined : internal<LibProtocol>(socket, "_protocol")?.message?.fragment;
  const body = fragment !== undefined && !Buffer.isBuffer(fragment) ? fragment.body : undefined;
  const list = body instanceof Uint8Array ? certificateList(body) : undefined;
  if (list !== undefined && list.length > 0 && (leaf.raw === undefined || Buffer.compare(Buffer.from(list[0] as Uint8Array), leaf.raw) === 0))
    return list;
  return leaf.raw === undefined ? [] : [leaf.raw];
}

/**
 * The alert record being handled (after the handshake), decrypted with the session's keys:
 * its level and description; "forged" when it does not authenticate (or is in plaintext,
 * which no server sends after the handshake): RFC 6347 4.1.2.7 drops such records;
 * "unknown" when the library's internals are not there to tell.
 */
function currentAlert(socket: NodertcSocket): { level: number; description: number } | "forged" | "unknown" {
  const record = internal<LibProtocol>(socket, "_protocol")?.message;
  const session = internal<LibSession>(socket, "_session");
  if (record === undefined || record === null || record.type !== ALERT || !Buffer.isBuffer(record.fragment)) return "unknown";
  if (session?.decrypt === undefined || session.cipher === undefined) return "unknown";
  if (record.epoch === 0) return "forged";
  const copy: LibRecord = { ...record, fragment: Buffer.from(record.fragment) };
  try {
    session.decrypt(session.cipher, copy);
  } catch {
    return "forged";
  }
  const plain = copy.fragment;
  if (!Buffer.isBuffer(plain) || plain.length !== 2) return "forged";
  return { level: plain[0] as number, description: plain[1] as number };
}

/**
 * The library passes on records that fail to decrypt as they are (filter/decoder.js
 * ignores the error), so forged or corrupted application data would reach the caller.
 * This wraps the session's decrypt to remember the buffers of records that failed;
 * the "data" listener drops them. Without the internals, nothing is filtered.
 */
function trackDecryptFailures(socket: NodertcSocket): WeakSet<object> {
  const failed = new WeakSet<object>();
  const session = internal<LibSession>(socket, "_session");
  const decrypt = session?.decrypt;
  if (session !== undefined && typeof decrypt === "function") {
    session.decrypt = (cipher, record) => {
      const ciphertext = record.fragment;
      try {
        decrypt.call(session, cipher, record);
      } catch (e) {
        failed.add(ciphertext);
        throw e;
      }
    };
  }
  return failed;
}

/** close_notify encrypted with the session's keys, as a datagram; undefined when the internals are not there. */
function closeNotifyDatagram(socket: NodertcSocket): Buffer | undefined {
  const session = internal<LibSession>(socket, "_session");
  if (
    session?.encrypt === undefined ||
    session.nextRecordNumber === undefined ||
    session.cipher === undefined ||
    typeof session.version !== "number" ||
    typeof session.clientEpoch !== "number"
  ) {
    return undefined;
  }
  const record: LibRecord = {
    type: ALERT,
    version: session.version,
    epoch: session.clientEpoch,
    sequenceNumber: session.nextRecordNumber(),
    length: 2,
    fragment: Buffer.from([1, 0]), // warning, close_notify
  };
  session.encrypt(session.cipher, record);
  if (!Buffer.isBuffer(record.fragment)) return undefined;
  const header = Buffer.alloc(13);
  header[0] = ALERT;
  header.writeUInt16BE(record.version, 1);
  header.writeUInt16BE(record.epoch, 3);
  header.writeUIntBE(record.sequenceNumber, 5, 6);
  header.writeUInt16BE(record.fragment.length, 11);
  return Buffer.concat([header, record.fragment]);
}

/** Stops a socket: no more retransmissions, UDP socket closed. */
function release(socket: NodertcSocket): void {
  try {
    internal<LibSession>(socket, "_session")?.retransmitter?.finish?.();
  } catch {
    // not in a state that can finish: its timers are unref'd and write into the closed socket
  }
  try {
    socket.close();
  } catch {
    // already closed
  }
}

class NodertcTransport extends TransportBase {
  private readonly socket: NodertcSocket;
  private readonly where: string;
  private released = false;

  constructor(socket: NodertcSocket, where: string, suite: string, maxRecordPayload: number) {
    super("nodertc", maxRecordPayload, `nodertc ${suite} to ${where}`);
    this.socket = socket;
    this.where = where;
  }

  record(data: Uint8Array): void {
    this.received(data);
  }

  /** An "error" event after the handshake: alerts end the session (close_notify cleanly), other errors are fatal. */
  libraryError(e: Error): void {
    if (this.closed) return;
    if (/^alert code \d+$/.test(e.message)) {
      const alert = currentAlert(this.socket);
      if (alert === "forged") return;
      if (alert !== "unknown" && alert.level === 1 && alert.description !== 0) return; // a warning other than close_notify
      this.release();
      if (alert !== "unknown" && alert.description === 0) this.ended(undefined);
      else {
        const what = alert === "unknown" ? "an alert" : `fatal alert ${alertName(alert.description)} (${alert.description})`;
        this.ended(new TransportError("connection_lost", `the DTLS session with ${this.where} ended: the server sent ${what}`, { cause: e }));
      }
      return;
    }
    this.release();
    this.ended(new TransportError("connection_lost", `the DTLS session with ${this.where} ended: ${e.message}`, { cause: e }));
  }

  protected transmit(records: readonly Uint8Array[]): void {
    for (const r of records) this.socket.write(Buffer.from(r));
  }

  protected async shutdown(): Promise<void> {
    let datagram: Buffer | undefined;
    try {
      datagram = closeNotifyDatagram(this.socket);
    } catch {
      datagram = undefined;
    }
    const udp = internal<Duplex>(this.socket, "_socket");
    if (datagram !== undefined && udp !== undefined && udp.writable) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, CLOSE_WAIT_MS);
        try {
          udp.write(datagram, () => {
            clearTimeout(timer);
            resolve();
          });
        } catch {
          clearTimeout(timer);
          resolve();
        }
      });
    }
    this.release();
  }

  private release(): void {
    if (this.released) return;
    this.released = true;
    release(this.socket);
  }
}

async function resolveHost(host: string, where: string): Promise<{ address: string; family: 4 | 6 }> {
  const family = isIP(host);
  if (family === 4 || family === 6) return { address: host, family };
  try {
    const r = await lookup(host);
    return { address: r.address, family: r.family === 6 ? 6 : 4 };
  } catch (e) {
    throw new TransportError("connect_failed", `cannot resolve ${where}: ${asError(e).message}`, { cause: e });
  }
}

function trustOptions(o: CheckedOptions): TrustOptions | undefined {
  if (o.ca === undefined && o.fingerprint === undefined) return undefined;
  let anchors: ReturnType<typeof parseCertificate>[] = [];
  if (o.ca !== undefined) {
    const text = typeof o.ca === "string" ? o.ca : Buffer.from(o.ca).toString("utf8");
    try {
      anchors = pemCertificates(text).map(parseCertificate);
    } catch (e) {
      throw new TransportError("bad_option", `ca holds a certificate that does not parse: ${asError(e).message}`, { cause: e });
    }
    if (anchors.length === 0) throw new TransportError("bad_option", "ca holds no PEM certificate");
  }
  return { anchors, fingerprint: o.fingerprint, servername: o.servername ?? o.host };
}

export async function openNodertcTransport(o: CheckedOptions): Promise<Transport> {
  if (o.mtu < LIB_MIN_MTU || o.mtu > LIB_MAX_MTU) {
    throw new TransportError("transport_unsupported", `@nodertc/dtls takes an mtu from ${LIB_MIN_MTU} to ${LIB_MAX_MTU}, got ${o.mtu}`);
  }
  if (o.psk !== undefined && Buffer.byteLength(o.psk.identity) > 128) {
    throw new TransportError("transport_unsupported", "@nodertc/dtls takes PSK identities of up to 128 bytes");
  }
  const trust = trustOptions(o);
  if (o.cert !== undefined && trust === undefined) {
    throw new TransportError("bad_option", "a client certificate is used only with the certificate suites: give ca or fingerprint too");
  }
  const mod = (await loadOptionalModule("@nodertc/dtls", "nodertc")) as { default?: unknown; connect?: unknown } | undefined;
  const lib = (typeof mod?.connect === "function" ? mod : mod?.default) as Partial<NodertcModule> | undefined;
  if (typeof lib?.connect !== "function") {
    throw new TransportError("transport_unavailable", "the installed @nodertc/dtls has no connect(): version 0.6 is needed");
  }
  const where = endpointName(o.host, o.port);
  const remote = await resolveHost(o.host, where);

  let socket: NodertcSocket | undefined;
  /** Why our certificate check refused the server, if it did. */
  let refusal: { message: string; cause: unknown } | undefined;
  const options: NodertcConnectOptions = {
    type: remote.family === 6 ? "udp6" : "udp4",
    ...(remote.family === 6 ? { address: "::" } : {}),
    remoteAddress: remote.address,
    remotePort: o.port,
    cipherSuites: [...(o.psk !== undefined ? PSK_SUITES : []), ...(trust !== undefined ? CERTIFICATE_SUITES : [])],
  };
  if (o.psk !== undefined) {
    options.pskIdentity = o.psk.identity;
    options.pskSecret = Buffer.from(o.psk.key);
  }
  if (o.cert !== undefined && o.key !== undefined) {
    options.certificate = Buffer.from(o.cert);
    options.certificatePrivateKey = Buffer.from(o.key);
  }
  if (trust !== undefined) {
    options.checkServerIdentity = (leaf) => {
      let bad: DtlsError | undefined;
      try {
        bad = verifyChain(serverChain(socket, leaf).map(parseCertificate), trust, new Date());
      } catch (e) {
        refusal = { message: `the server certificate does not parse: ${asError(e).message}`, cause: e };
        return false;
      }
      if (bad !== undefined) refusal = { message: `the server certificate was refused (${bad.code}): ${bad.message}`, cause: bad };
      return bad === undefined;
    };
  }

  try {
    socket = lib.connect(options);
    socket.setMTU(o.mtu);
  } catch (e) {
    if (socket !== undefined) release(socket);
    throw new TransportError("bad_option", `@nodertc/dtls refused the options: ${asError(e).message}`, { cause: e });
  }
  const s = socket;
  const forged = trackDecryptFailures(s);

  // Listeners for the whole life of the socket (an "error" without one would throw); after the
  // handshake they forward to the transport.
  let transport: NodertcTransport | undefined;
  const early: Uint8Array[] = [];
  const earlyErrors: Error[] = [];
  let connected = false;
  const handshake = new Promise<void>((resolve, reject) => {
    s.on("connect", () => {
      connected = true;
      resolve();
    });
    s.on("data", (d: Buffer) => {
      if (forged.has(d)) return;
      if (transport !== undefined) transport.record(d);
      else early.push(new Uint8Array(d));
    });
    s.on("error", (e: Error) => {
      if (transport !== undefined) {
        transport.libraryError(e);
        return;
      }
      if (connected) {
        earlyErrors.push(e); // between "connect" and the transport's creation
        return;
      }
      if (refusal !== undefined) {
        reject(new TransportError("connect_failed", refusal.message, { cause: refusal.cause }));
        return;
      }
      const m = /^alert code (\d+)$/.exec(e.message);
      const why = m ? `alert ${alertName(Number(m[1]))} (${m[1]})` : e.message;
      reject(new TransportError("connect_failed", `the DTLS handshake with ${where} failed: ${why}`, { cause: e }));
    });
    s.on("timeout", () => {
      if (!connected) reject(new TransportError("timeout", `no DTLS handshake with ${where}: @nodertc/dtls gave up retransmitting`));
    });
  });
  try {
    await withDeadline(handshake, o.timeoutMs, where, () => release(s));
  } catch (e) {
    release(s);
    throw e instanceof TransportError
      ? e
      : new TransportError("connect_failed", `the DTLS handshake with ${where} failed: ${asError(e).message}`, { cause: e });
  }
  const suite = internal<LibSession>(s, "_session")?.cipher?.name ?? undefined;
  transport = new NodertcTransport(s, where, suite ?? "(unknown suite)", recordPayloadLimit(o.mtu, suiteOverhead(suite)));
  for (const d of early) transport.record(d);
  for (const e of earlyErrors) transport.libraryError(e);
  return transport;
}
