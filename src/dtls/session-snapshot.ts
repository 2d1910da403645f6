/**
 * An established DTLS 1.2 session as bytes, to carry it over a restart of the
 * process (sans-I/O: what the bytes become is the caller's business). A
 * server exports its sessions on an orderly stop and adopts them on start
 * (ServerCore.exportSessions / adoptSession); the peers notice nothing.
 *
 * Format (all integers big-endian; docs/dtls-engine.md, "Session snapshots"):
 *
 *   version (1) = 1 || role (1: 0 server, 1 client) || cipher suite (2)
 *   || read key <1..255> || read IV <1..255> || write key <1..255> || write IV <1..255>
 *   || next write sequence number (6, epoch 1)
 *   || replay window: highest received + 1 (6; 0: none) || 4 x 32-bit window words
 *   || our CID <0..255> || the peer's CID <0..255>
 *   || the peer's next handshake message_seq (2)
 *   || peer address <1..255> (latin1: an IP address's text) || peer port (2)
 *   || identity <0..2^16-1> (UTF-8) || EMS (1) || ECDHE group (2; 0: none)
 *   || peer certificate flag (1) [|| subject <0..2^16-1> || SHA-256 fingerprint <32>]
 *   || resumed (1)
 *   || attachment <0..2^16-1> (the layers above: e.g. the delivery engine's link)
 *
 * About 110 bytes for a PSK session with AES-128-CCM_8 and a CID, before the
 * attachment. It holds the session's traffic keys: whoever has it can read
 * and forge the session's records, and (worse) a second load of the same
 * bytes would seal new records under sequence numbers already used (an AEAD
 * nonce used twice). A snapshot is loaded once: its holder deletes it before
 * any restored session sends, and adoption adds RESTORE_SEQUENCE_MARGIN to
 * the saved write sequence number.
 */
import { ByteReader, ByteWriter, copyBytes, fromHex, toHex } from "../util/bytes.ts";
import { DecodeError } from "../util/errors.ts";
import { cidBytes, cidString } from "./connection-id.ts";
import { MAX_SEQUENCE } from "./constants.ts";
import { groupById, GROUPS } from "./negotiation.ts";
import type { ConnectionInfo } from "./options.ts";
import { suiteById, type CipherSuite } from "./suites.ts";

export const SNAPSHOT_VERSION = 1;

/**
 * Added to a restored session's saved write sequence number: records sealed
 * after the snapshot was taken (none, when the caller stopped sending first,
 * as the daemon does) can never share a nonce with the restored session's.
 * The peer's replay window just moves up; 2^20 of the 2^48 numbers is nothing.
 */
export const RESTORE_SEQUENCE_MARGIN = 1 << 20;

/** What a Connection exports of itself (Connection.snapshot) and is restored from (Connection.restore). */
export interface ConnectionSnapshot {
  readonly suite: CipherSuite;
  readonly readKey: Uint8Array;
  readonly readIv: Uint8Array;
  readonly writeKey: Uint8Array;
  readonly writeIv: Uint8Array;
  /** The sequence number our next epoch-1 record would have had. */
  readonly nextWriteSeq: number;
  /** The epoch-1 replay window: highest sequence number accepted (-1: none) and its 128 bits. */
  readonly replayMax: number;
  readonly replayWords: readonly [number, number, number, number];
  /** Our CID (latin1), "" for none. */
  readonly readCid: string;
  /** The peer's CID (latin1), "" for none. */
  readonly writeCid: string;
  readonly peerMessageSeq: number;
  readonly info: ConnectionInfo;
}

/** A whole session: the connection, its role, where its peer is, and what the layers above attached. */
export interface SessionSnapshot extends ConnectionSnapshot {
  readonly role: "server" | "client";
  readonly address: string;
  readonly port: number;
  /** Opaque bytes of the layers above (at most 65535). */
  readonly attachment: Uint8Array;
}

const utf8Encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

export function encodeSessionSnapshot(s: SessionSnapshot): Uint8Array {
  const w = new ByteWriter(160 + s.attachment.length);
  w.u8(SNAPSHOT_VERSION)
    .u8(s.role === "server" ? 0 : 1)
    .u16(s.suite.id);
  w.vec8(s.readKey).vec8(s.readIv).vec8(s.writeKey).vec8(s.writeIv);
  w.u48(s.nextWriteSeq).u48(s.replayMax + 1);
  for (const word of s.replayWords) w.u32(word >>> 0);
  w.vec8(cidBytes(s.readCid)).vec8(cidBytes(s.writeCid));
  w.u16(s.peerMessageSeq);
  w.vec8(cidBytes(s.address)).u16(s.port);
  const info = s.info;
  w.vec16(utf8Encoder.encode(info.identity)).u8(info.extendedMasterSecret ? 1 : 0);
  w.u16(info.group === undefined ? 0 : (GROUPS.find((g) => g.name === info.group)?.id ?? 0));
  const peer = info.peerCertificate;
  if (peer === undefined) w.u8(0);
  else w.u8(1).vec16(utf8Encoder.encode(peer.subject)).vec8(fromHex(peer.fingerprint256));
  w.u8(info.resumed ? 1 : 0);
  w.vec16(s.attachment);
  return w.finish();
}

/** The session, or a DecodeError naming what is wrong (another version, an unknown suite, damaged bytes). */
export function decodeSessionSnapshot(b: Uint8Array): SessionSnapshot {
  const r = new ByteReader(b);
  const version = r.u8("version");
  if (version !== SNAPSHOT_VERSION) throw new DecodeError(`session snapshot version ${version}, expected ${SNAPSHOT_VERSION}`);
  const roleByte = r.u8("role");
  if (roleByte > 1) throw new DecodeError("bad role");
  const suiteId = r.u16("suite");
  const suite = suiteById(suiteId);
  if (suite === undefined) throw new DecodeError(`unknown cipher suite 0x${suiteId.toString(16)}`);
  const readKey = copyBytes(r.vec8("read key", suite.keyLength, suite.keyLength));
  const readIv = copyBytes(r.vec8("read iv", suite.fixedIvLength, suite.fixedIvLength));
  const writeKey = copyBytes(r.vec8("write key", suite.keyLength, suite.keyLength));
  const writeIv = copyBytes(r.vec8("write iv", suite.fixedIvLength, suite.fixedIvLength));
  const nextWriteSeq = r.u48("write seq");
  if (nextWriteSeq > MAX_SEQUENCE + 1) throw new DecodeError("bad write sequence number");
  const replayMax = r.u48("replay max") - 1;
  const replayWords: [number, number, number, number] = [r.u32("w0") | 0, r.u32("w1") | 0, r.u32("w2") | 0, r.u32("w3") | 0];
  const readCid = cidString(r.vec8("read cid"));
  const writeCid = cidString(r.vec8("write cid"));
  const peerMessageSeq = r.u16("message seq");
  const address = cidString(r.vec8("address", 1, 255));
  const port = r.u16("port");
  const identity = utf8.decode(r.vec16("identity"));
  const ems = r.u8("ems");
  const groupId = r.u16("group");
  const group = groupId === 0 ? undefined : groupById(groupId);
  if (ems > 1 || (groupId !== 0 && group === undefined)) throw new DecodeError("bad session info");
  let peerCertificate: ConnectionInfo["peerCertificate"];
  const hasPeer = r.u8("peer flag");
  if (hasPeer === 1) peerCertificate = { subject: utf8.decode(r.vec16("subject")), fingerprint256: toHex(r.vec8("fingerprint", 32, 32)) };
  else if (hasPeer !== 0) throw new DecodeError("bad peer flag");
  const resumed = r.u8("resumed");
  if (resumed > 1) throw new DecodeError("bad resumed flag");
  const attachment = copyBytes(r.vec16("attachment"));
  r.expectEnd("session snapshot");
  const info: ConnectionInfo = {
    identity,
    suite: suite.name,
    extendedMasterSecret: ems === 1,
    ...(group === undefined ? {} : { group }),
    ...(peerCertificate === undefined ? {} : { peerCertificate }),
    resumed: resumed === 1,
  };
  return {
    role: roleByte === 0 ? "server" : "client",
    suite,
    readKey,
    readIv,
    writeKey,
    writeIv,
    nextWriteSeq,
    replayMax,
    replayWords,
    readCid,
    writeCid,
    peerMessageSeq,
    address,
    port,
    info,
    attachment,
  };
}
