/**
 * A client's resumable session as bytes (SavedSession, opaque to
 * applications): what our client offers again in an abbreviated handshake.
 *
 *   version (1) = 1 || server <0..255> (UTF-8 "host:port" as connect was given it)
 *   || session core (resumption.ts: suite, master secret, EMS, group, identity, peer certificate, full handshake time)
 *   || ticket <0..2^16-1> (empty: none) || session_id <0..32> (empty: none)
 *   || issued (6, wall ms) || lifetime (6, ms; 0: the server gave none)
 *
 * It holds the master secret: whoever has it can resume the session.
 */
import { ByteReader, ByteWriter, copyBytes } from "../util/bytes.ts";
import { readSessionCore, writeSessionCore, type SessionCore } from "./resumption.ts";
import type { SavedSession } from "./resumption-options.ts";

export interface ClientSessionState extends SessionCore {
  /** Where the session was made ("host:port"): it is offered to that server only. */
  readonly server: string;
  /** The server's ticket (RFC 5077), or empty. */
  readonly ticket: Uint8Array;
  /** The server's session ID, or empty. */
  readonly sessionId: Uint8Array;
  /** Wall time the ticket (or session ID) was received. */
  readonly issuedAt: number;
  /** How long the server said the ticket lives (its lifetime hint), ms; 0: not said. */
  readonly lifetimeMs: number;
}

const VERSION = 1;
const utf8Encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

export function encodeSavedSession(s: ClientSessionState): SavedSession {
  const w = new ByteWriter(256 + s.ticket.length);
  w.u8(VERSION).vec8(utf8Encoder.encode(s.server));
  writeSessionCore(w, s);
  w.vec16(s.ticket).vec8(s.sessionId).u48(s.issuedAt).u48(s.lifetimeMs);
  return w.finish();
}

/** The session, or undefined when the bytes are not one (another version, damaged): such a session is simply not offered. */
export function decodeSavedSession(b: Uint8Array): ClientSessionState | undefined {
  try {
    const r = new ByteReader(b);
    if (r.u8("version") !== VERSION) return undefined;
    const server = utf8.decode(r.vec8("server"));
    const core = readSessionCore(r);
    const ticket = copyBytes(r.vec16("ticket"));
    const sessionId = copyBytes(r.vec8("session_id", 0, 32));
    const issuedAt = r.u48("issued");
    const lifetimeMs = r.u48("lifetime");
    r.expectEnd("saved session");
    return { ...core, server, ticket, sessionId, issuedAt, lifetimeMs };
  } catch {
    return undefined;
  }
}
