/**
 * The daemon's logs: JSON lines (pino) with an ISO time, the level's name and
 * `name: "dtlspush"`, secrets redacted; and the listeners that log what the
 * push server does (handshake failures, device presence, fatal engine errors).
 */
import { pino, type Logger } from "pino";
import type { PresenceEvent } from "../messaging/delivery-engine.ts";
import type { PeerAddress, DtlsError } from "../dtls/index.ts";
import { DtlspushError } from "../util/errors.ts";
import type { PushServer } from "./push-server.ts";

export type { Logger } from "pino";

const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

/** What never reaches a log line: tokens, authorization headers, key material, message payloads. */
export const REDACTED_PATHS: readonly string[] = [
  "token",
  "*.token",
  "sessionToken",
  "*.sessionToken",
  "authorization",
  "*.authorization",
  "headers.authorization",
  "*.headers.authorization",
  "headers.cookie",
  "*.headers.cookie",
  "psk.key",
  "*.psk.key",
  "psk.keyHex",
  "*.psk.keyHex",
  "*.*.psk.key",
  "*.*.psk.keyHex",
  "keyHex",
  "*.keyHex",
  "privateKey",
  "*.privateKey",
  "secret",
  "*.secret",
  "payload",
  "*.payload",
  "payloadBase64",
  "*.payloadBase64",
];

export const REDACTED = "[redacted]";

export interface LoggerOptions {
  /** trace | debug | info | warn | error | fatal | silent */
  readonly level: string;
  /** where the JSON lines go; default standard output */
  readonly destination?: NodeJS.WritableStream;
}

export function createLogger(o: LoggerOptions): Logger {
  if (!(LOG_LEVELS as readonly string[]).includes(o.level)) {
    throw new DtlspushError("bad_log_level", `log level must be one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(o.level)}`);
  }
  return pino(
    {
      name: "dtlspush",
      level: o.level,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: [...REDACTED_PATHS], censor: REDACTED },
    },
    o.destination ?? pino.destination(1),
  );
}

export interface DaemonLogOptions {
  /** handshake failures logged per second at most (the rest are counted and reported with the next one); default 10 */
  readonly handshakeFailuresPerSecond?: number;
  /** ms clock for the rate limit; default Date.now */
  readonly now?: () => number;
}

function peerText(peer: PeerAddress): string {
  return peer.address.includes(":") ? `[${peer.address}]:${peer.port}` : `${peer.address}:${peer.port}`;
}

/**
 * Logs the push server's events: handshake failures (debug, rate-limited so
 * a flood of bad handshakes cannot flood the log), device presence (info),
 * a stopped delivery engine (fatal) and DTLS socket errors (error). Returns
 * a function that removes the listeners.
 */
export function logDaemonEvents(server: PushServer, logger: Logger, o: DaemonLogOptions = {}): () => void {
  const limit = o.handshakeFailuresPerSecond ?? 10;
  const now = o.now ?? Date.now;
  let windowStart = -Infinity;
  let inWindow = 0;
  let suppressed = 0;

  const onHandshakeError = (e: { peer: PeerAddress; error: DtlsError }): void => {
    if (!logger.isLevelEnabled("debug")) return;
    const t = now();
    if (t - windowStart >= 1000) {
      windowStart = t;
      inWindow = 0;
    }
    if (inWindow >= limit) {
      suppressed++;
      return;
    }
    inWindow++;
    const fields: Record<string, unknown> = { event: "handshake_failed", peer: peerText(e.peer), code: e.error.code };
    if (suppressed > 0) {
      fields.suppressed = suppressed;
      suppressed = 0;
    }
    logger.debug(fields, `DTLS handshake failed: ${e.error.message}`);
  };
  const onPresence = (p: PresenceEvent): void => {
    logger.info({ event: "presence", device: p.device, peer: p.peer, online: p.online }, p.online ? "device online" : "device offline");
  };
  const onFatal = (err: Error): void => {
    logger.fatal({ event: "engine_stopped", err }, "the delivery engine stopped: a store commit failed; restart to recover from the store");
  };
  const onSocketError = (err: Error): void => {
    logger.error({ event: "socket_error", err }, `DTLS socket error: ${err.message}`);
  };

  server.dtls.on("handshakeError", onHandshakeError);
  server.dtls.on("error", onSocketError);
  server.engine.on("presence", onPresence);
  server.engine.on("fatal", onFatal);
  return () => {
    server.dtls.off("handshakeError", onHandshakeError);
    server.dtls.off("error", onSocketError);
    server.engine.off("presence", onPresence);
    server.engine.off("fatal", onFatal);
  };
}
