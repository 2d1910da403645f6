/** Pure formatting of the CLI's log lines (`key=value` pairs, one event a line). */
import { formatHostPort, quote } from "./args.ts";

export interface PeerLike {
  readonly address: string;
  readonly port: number;
}

export interface SessionInfoLike {
  readonly peer: PeerLike;
  readonly identity: string;
  readonly suite: string;
  readonly extendedMasterSecret: boolean;
  /** The peer's leaf certificate, when it presented one. */
  readonly peerCertificate?: PeerCertificateLike | undefined;
}

export interface PeerCertificateLike {
  /** Distinguished name as Node prints it: one `KEY=value` per line. */
  readonly subject: string;
  /** SHA-256 of the DER certificate, lowercase hex. */
  readonly fingerprint256: string;
}

export function formatPeer(peer: PeerLike): string {
  return formatHostPort(peer.address, peer.port);
}

export function yesNo(value: boolean): "yes" | "no" {
  return value ? "yes" : "no";
}

/**
 * `established peer=127.0.0.1:50000 identity=dev1 suite=TLS_PSK_WITH_AES_128_CCM_8 ems=yes`;
 * certificate suites add `peer-subject="CN=…, O=…" peer-sha256=HEX` when the
 * peer presented a certificate, else `peer-cert=none` (PSK suites add nothing).
 */
export function formatEstablished(info: SessionInfoLike): string {
  const base = `established peer=${formatPeer(info.peer)} identity=${quote(info.identity)} suite=${info.suite} ems=${yesNo(info.extendedMasterSecret)}`;
  const cert = info.peerCertificate;
  if (cert !== undefined) return `${base} peer-subject=${JSON.stringify(formatSubject(cert.subject))} peer-sha256=${cert.fingerprint256}`;
  return isPskSuite(info.suite) ? base : `${base} peer-cert=none`;
}

/** True for the PSK and ECDHE_PSK suites (IANA names). */
export function isPskSuite(suite: string): boolean {
  return suite.includes("_PSK_");
}

/** A multi-line distinguished name (`CN=a\nO=b`, as Node prints it) on one line: `CN=a, O=b`. */
export function formatSubject(subject: string): string {
  return subject
    .split("\n")
    .map((part) => part.trim())
    .filter((part) => part !== "")
    .join(", ");
}

/** `server-cert subject="CN=localhost, O=dtlspush" sha256=HEX`, or undefined when the server sent none. */
export function formatServerCertificate(info: SessionInfoLike): string | undefined {
  const cert = info.peerCertificate;
  if (cert === undefined) return undefined;
  return `server-cert subject=${JSON.stringify(formatSubject(cert.subject))} sha256=${cert.fingerprint256}`;
}

/** `connected suite=TLS_PSK_WITH_AES_128_CCM_8 ems=yes peer=127.0.0.1:5684` */
export function formatConnected(info: SessionInfoLike): string {
  return `connected suite=${info.suite} ems=${yesNo(info.extendedMasterSecret)} peer=${formatPeer(info.peer)}`;
}

export interface CloseReasonLike {
  readonly code: string;
  readonly message: string;
}

/** `closed peer=… identity=… reason=close_notify` (plus the message when it adds something). */
export function formatClosed(info: SessionInfoLike, reason: CloseReasonLike): string {
  return `closed peer=${formatPeer(info.peer)} identity=${quote(info.identity)}${formatReason(reason)}`;
}

export function formatReason(reason: CloseReasonLike): string {
  const code = reason.code === "" ? "unknown" : reason.code;
  const message = reason.message.trim();
  return message === "" || message === code ? ` reason=${quote(code)}` : ` reason=${quote(code)} message=${JSON.stringify(message)}`;
}

export interface ErrorLike {
  readonly code?: unknown;
  readonly alert?: unknown;
  readonly message?: unknown;
}

/** `handshake-failed peer=… code=decrypt_error alert=51 message="…"` */
export function formatHandshakeError(peer: PeerLike, error: ErrorLike): string {
  return `handshake-failed peer=${formatPeer(peer)}${formatErrorFields(error)}`;
}

/** `error peer=… identity=… code=… message="…"` for errors on an established session. */
export function formatSessionError(info: SessionInfoLike, error: ErrorLike): string {
  return `error peer=${formatPeer(info.peer)} identity=${quote(info.identity)}${formatErrorFields(error)}`;
}

function formatErrorFields(error: ErrorLike): string {
  let out = "";
  if (typeof error.code === "string" && error.code !== "") out += ` code=${quote(error.code)}`;
  if (typeof error.alert === "number") out += ` alert=${error.alert}`;
  if (typeof error.message === "string" && error.message !== "") out += ` message=${JSON.stringify(error.message)}`;
  return out;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Describes a received record: `data peer=… identity=… bytes=5 text="hello"`,
 * or `hex=…` when the bytes are not valid UTF-8.
 */
export function formatData(info: SessionInfoLike, data: Uint8Array): string {
  return `data peer=${formatPeer(info.peer)} identity=${quote(info.identity)} bytes=${data.length} ${formatPayload(data)}`;
}

export function formatPayload(data: Uint8Array): string {
  try {
    return `text=${JSON.stringify(UTF8.decode(data))}`;
  } catch {
    return `hex=${Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("hex")}`;
  }
}
