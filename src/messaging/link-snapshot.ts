/**
 * What the engine keeps of one DTLS session across a daemon restart (the
 * attachment of the session's DTLS snapshot, src/dtls/session-snapshot.ts):
 * the engine's session id (session tokens name it) and the device it was
 * bound to by its Hello ("" while it had none). Everything else the Hello
 * negotiated is the server's configuration (heartbeat interval, limits, the
 * JWKS) or lives in the store (queues, seqs, subscriptions).
 *
 *   version (1) = 1 || session id <0..255> (UTF-8) || device id <0..255> (UTF-8; empty: not bound)
 */
import { ByteReader, ByteWriter } from "../util/bytes.ts";

export interface LinkSnapshot {
  readonly sessionId: string;
  /** "" when the session had no Welcome yet */
  readonly deviceId: string;
}

/**
 * What happened to a restored session (DeliveryObserver.linkRestored):
 * "bound" (to its device, no Hello needed), "unbound" (it had not said Hello:
 * it goes on waiting for one), "device_unknown" (its device was removed or its
 * identity now names another device), "device_revoked" (revoked meanwhile),
 * "damaged" (the attachment does not decode). The last three end the session
 * with Bye.
 */
export const LINK_RESTORE_OUTCOMES = ["bound", "unbound", "device_unknown", "device_revoked", "damaged"] as const;
export type LinkRestoreOutcome = (typeof LINK_RESTORE_OUTCOMES)[number];

const VERSION = 1;
const utf8Encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

export function encodeLinkSnapshot(s: LinkSnapshot): Uint8Array {
  return new ByteWriter(64).u8(VERSION).vec8(utf8Encoder.encode(s.sessionId)).vec8(utf8Encoder.encode(s.deviceId)).finish();
}

/** The link, or undefined when the bytes are not one (another version, damaged). */
export function decodeLinkSnapshot(b: Uint8Array): LinkSnapshot | undefined {
  try {
    const r = new ByteReader(b);
    if (r.u8("version") !== VERSION) return undefined;
    const sessionId = utf8.decode(r.vec8("session id", 1));
    const deviceId = utf8.decode(r.vec8("device id"));
    r.expectEnd("link snapshot");
    return { sessionId, deviceId };
  } catch {
    return undefined;
  }
}
