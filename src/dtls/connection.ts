/**
 * One DTLS association, sans-I/O: datagrams in (`receive`), timers in
 * (`timeout`), datagrams and events out through a ConnectionHandler. The
 * role-specific handshake (server or client driver, full or abbreviated)
 * plugs in as a HandshakeDriver, which takes the peer's messages and returns
 * steps (a flight, keys, Connection IDs, a new session, "established") that
 * this connection applies in one place (applyStep). Everything shared lives
 * here: record protection (plain and tls12_cid records, RFC 9146) and the
 * replay window, flights with fragmentation and the retransmission state
 * machine (RFC 6347 4.2.4, drawn at sendFlight), reassembly, records that
 * come before their keys, alerts, close_notify, application data.
 */
import { copyBytes } from "../util/bytes.ts";
import { defaultCrypto } from "../crypto/index.ts";
import { AlertDescription, AlertLevel, alertName, ContentType, HANDSHAKE_HEADER_LENGTH, HandshakeType, MAX_PLAINTEXT } from "./constants.ts";
import { DtlsError, alertError, receivedAlertError, toDtlsError } from "./errors.ts";
import { encodeFragment, parseHandshakeFragments } from "./handshake-codec.ts";
import type { ConnectionConfig, ConnectionHandler, ConnectionInfo } from "./options.ts";
import { cidAt, type ConnectionIds } from "./connection-id.ts";
import { parseRecords, splitInnerPlaintext, type RawRecord } from "./record.ts";
import { RecordProtection } from "./record-protection.ts";
import { packDatagrams, RecordWriter } from "./record-writer.ts";
import { suiteById } from "./suites.ts";
import { UNLIMITED, type MemoryBudget } from "./memory-budget.ts";
import type { SavedSession } from "./resumption-options.ts";
import { Reassembler, type HandshakeMessage } from "./reassembly.ts";
import { replayAccept, replayCheck, type WindowState } from "./replay-window.ts";
import type { ConnectionSnapshot } from "./session-snapshot.ts";

export type FlightItem =
  | { readonly kind: "handshake"; readonly epoch: 0 | 1; readonly msgType: number; readonly messageSeq: number; readonly body: Uint8Array }
  | { readonly kind: "ccs" };

/**
 * What a flight is to the retransmission state machine, as the driver that
 * sends it says: "expects_reply" is resent until the peer's next flight
 * arrives; "last" ends our part of the handshake and is resent only when the
 * peer retransmits its own (it lost ours). Which side sends the last flight
 * depends on the handshake, not the role: the server in a full handshake,
 * the client in an abbreviated one.
 */
export type FlightRole = "expects_reply" | "last";

/** A flight the driver wants sent, and what it is to the retransmission state machine. */
export interface Flight {
  readonly items: readonly FlightItem[];
  readonly role: FlightRole;
}

/**
 * What a driver's step asks of the connection. Every field is optional; the
 * connection applies them in this order (applyStep):
 *
 *  1. `connectionIds`: the CIDs the hellos negotiated (RFC 9146), before any
 *     protected record is read or written;
 *  2. `keys`: the epoch-1 record protections, installed (the write side is
 *     used from our ChangeCipherSpec on, which the flight below carries);
 *  3. `flight`: sent, and the retransmission timer armed or not (its role);
 *  4. `session`: a new resumable session, handed to the driver's `onSession`
 *     before `established` (the layer above keeps it with the connection);
 *  5. `established`: the handshake is over, with this info;
 *  6. last, when `keys` came: epoch-1 records that arrived before the keys are
 *     read now, which may run the driver again (an early Finished) with the
 *     step already applied and the driver already in its next state.
 */
export interface HandshakeStep {
  readonly connectionIds?: ConnectionIds | undefined;
  readonly keys?: { readonly read: RecordProtection; readonly write: RecordProtection } | undefined;
  readonly flight?: Flight | undefined;
  readonly session?: SavedSession | undefined;
  readonly established?: ConnectionInfo | undefined;
}

/** A step that asks for nothing (a message taken, the next one awaited). */
export const NO_STEP: HandshakeStep = Object.freeze({});

/**
 * The role-specific half of the handshake (handshake-server.ts,
 * handshake-client.ts), sans-I/O and without a reference to the connection:
 * it takes the peer's messages and returns steps, which the connection
 * applies (attach, drainHandshake). Throwing a DtlsError fails the connection
 * with its alert.
 */
export interface HandshakeDriver {
  /** When the driver was made: its first step (start) is applied at this time. */
  readonly startedAt: number;
  /** The first step: the client's ClientHello; the server's answer to the cookie-checked ClientHello. */
  start(): HandshakeStep;
  /** The peer's next handshake message, in order (epoch 1 only after the peer's ChangeCipherSpec). */
  onMessage(msg: HandshakeMessage): HandshakeStep;
  /** Where the steps' new resumable sessions go (a client's saved session); undefined: nowhere. */
  readonly onSession?: ((session: SavedSession) => void) | undefined;
}

export type ConnectionState = "handshaking" | "established" | "closed";

/** Where a connection counts the alerts it sends and receives, by description name (e.g. a server's stats). */
export interface AlertCounters {
  readonly alertsSent: Record<string, number>;
  readonly alertsReceived: Record<string, number>;
}

/** Where a connection starts its numbering, and where it counts alerts. */
export interface ConnectionOptions {
  /** First epoch-0 record sequence number we send (a server continues above the ClientHello's). */
  readonly firstWriteSeq?: number;
  /** First handshake message_seq expected from the peer. */
  readonly firstMessageSeq?: number;
  readonly alerts?: AlertCounters;
  /** Where the handshake's buffered bytes are counted (a server's budget shared by its handshakes); default unlimited. */
  readonly budget?: MemoryBudget;
  /** The handshake must be over by then, or the connection ends with "handshake_timeout" (a server's deadline). */
  readonly handshakeDeadline?: number;
}

/** counts[key] += 1 (no allocation once the key exists). */
export function increment(counts: Record<string, number>, key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

/** Records held while their epoch's keys or the handshake's end are still ahead: at most this many, of at most MAX_EARLY_BYTES in all. */
const MAX_EARLY_RECORDS = 16;
/** Bytes of such early records (and early application data) one handshake holds at most. */
export const MAX_EARLY_BYTES = 8192;
const CCS_BODY = new Uint8Array([1]);
const NO_RECORDS: readonly RawRecord[] = Object.freeze([]);
const NO_DATA: readonly Uint8Array[] = Object.freeze([]);

/**
 * What only the handshake needs: the driver, reassembly, records that came
 * early, our last flight and its retransmission timer. A connection drops it
 * once established (a server once the peer shows it has our last flight by
 * sending protected data), so an idle session keeps none of it.
 */
class HandshakeState {
  driver: HandshakeDriver | undefined;
  readonly reassembler: Reassembler;
  earlyEpoch1: readonly RawRecord[] = NO_RECORDS;
  earlyData: readonly Uint8Array[] = NO_DATA;
  /** Bytes of earlyEpoch1 and earlyData, taken from the connection's budget. */
  earlyBytes = 0;
  /** The peer's ChangeCipherSpec arrived: its protected handshake messages (Finished) may be processed. */
  peerChangedCipherSpec = false;
  flight: readonly FlightItem[] = [];
  /** What our current flight is (see FlightRole). */
  flightRole: FlightRole = "expects_reply";
  retransmitAt: number | undefined;
  rto: number;
  retransmits = 0;
  lastTransmitAt = -Infinity;
  /** Where early records' bytes are counted (the reassembler counts its own there too). */
  readonly budget: MemoryBudget;
  /** The handshake must be over by then (cleared once established). */
  deadline: number | undefined;

  constructor(firstMessageSeq: number, rto: number, budget: MemoryBudget, deadline: number | undefined) {
    this.reassembler = new Reassembler(firstMessageSeq, 8, 0x20000, budget);
    this.rto = rto;
    this.budget = budget;
    this.deadline = deadline;
  }
}

export class Connection implements WindowState {
  readonly role: "client" | "server";
  readonly config: ConnectionConfig;
  private readonly handler: ConnectionHandler;
  private readonly alerts: AlertCounters | undefined;
  private stateValue: ConnectionState = "handshaking";
  private info: ConnectionInfo | undefined;

  private readonly writer: RecordWriter;
  private readProtection: RecordProtection | undefined;
  /** @internal the epoch-1 replay window (replay-window.ts), its fields here: no object of its own per session */
  replayMax = -1;
  /** @internal */
  replay0 = 0;
  /** @internal */
  replay1 = 0;
  /** @internal */
  replay2 = 0;
  /** @internal */
  replay3 = 0;
  /** Undefined once the handshake is over and our last flight needs no more retransmitting. */
  private hs: HandshakeState | undefined;
  /** The peer's next handshake message_seq once established (older ones are its retransmissions). */
  private peerMessageSeq = 0;
  /** Our CID (latin1) that the peer's protected records carry (RFC 9146); "" when it sends plain records. */
  private readCid = "";

  private lastActivity: number;
  private idleCheckAt: number | undefined;

  constructor(role: "client" | "server", config: ConnectionConfig, handler: ConnectionHandler, now: number, opts: ConnectionOptions = {}) {
    this.role = role;
    this.config = config;
    this.handler = handler;
    this.alerts = opts.alerts;
    this.writer = new RecordWriter(opts.firstWriteSeq ?? 0);
    // what only the handshake uses lives in its state, not in every session's connection
    this.hs = new HandshakeState(opts.firstMessageSeq ?? 0, config.retransmit.initialMs, opts.budget ?? UNLIMITED(), opts.handshakeDeadline);
    this.lastActivity = now;
    this.idleCheckAt = config.idleTimeoutMs > 0 ? now + config.idleTimeoutMs : undefined;
  }

  /**
   * Starts the handshake with its driver: the driver's first step is applied
   * at once (at driver.startedAt). A DtlsError thrown by the driver's start
   * (nothing could be negotiated) comes out of here, nothing applied; the
   * caller fails the connection with it.
   */
  attach(driver: HandshakeDriver): void {
    const hs = this.hs;
    if (hs === undefined || this.stateValue !== "handshaking") return;
    hs.driver = driver;
    this.applyStep(driver, driver.start(), driver.startedAt);
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  /** Set once established. */
  get connectionInfo(): ConnectionInfo | undefined {
    return this.info;
  }

  /** What was negotiated, once established (also after a close); throws "not_established" before. */
  get establishedInfo(): ConnectionInfo {
    const info = this.info;
    if (info === undefined) throw new DtlsError("not_established", "the handshake is not over: nothing was negotiated yet");
    return info;
  }

  /** The handshake's reassembler while the handshake runs (for inspection: its memory is bounded); undefined after. */
  get reassembler(): Reassembler | undefined {
    return this.hs?.reassembler;
  }

  /** The largest application payload that fits one datagram at the configured MTU. */
  get maxDatagramPayload(): number {
    return Math.min(MAX_PLAINTEXT, this.config.mtu - this.writer.overhead(1));
  }

  /**
   * The Connection IDs the hellos negotiated (RFC 9146), before the epoch-1
   * keys are installed: from then on our protected records carry `write`
   * (tls12_cid records) when it is not empty, and the peer's must carry `read`
   * when that is not empty (plain protected records are dropped then, and
   * tls12_cid records whenever it is empty).
   */
  useConnectionIds(ids: ConnectionIds): void {
    this.readCid = ids.read;
    this.writer.cid = ids.write;
  }

  /** Our CID in the peer's records (latin1), "" for none. */
  get readConnectionId(): string {
    return this.readCid;
  }

  /** The peer's CID in our records (latin1), "" for none. */
  get writeConnectionId(): string {
    return this.writer.cid;
  }

  /** When `timeout` wants to be called next, or undefined. */
  nextTimeout(): number | undefined {
    return earliest(earliest(this.hs?.retransmitAt, this.idleCheckAt), this.hs?.deadline);
  }

  // ---- snapshots (carrying an established session over a restart) -------

  /**
   * What the session is, to be restored by `Connection.restore` in another
   * process (session-snapshot.ts): undefined unless established with its
   * epoch-1 keys. The caller must not let this connection send afterwards
   * (`retire`): a record sealed after the snapshot would share its nonce with
   * one of the restored session's.
   */
  snapshot(): ConnectionSnapshot | undefined {
    const read = this.readProtection;
    const write = this.writer.installed;
    const info = this.info;
    if (this.stateValue !== "established" || read === undefined || write === undefined || info === undefined || this.writer.epoch !== 1)
      return undefined;
    const r = read.exportKeys();
    const w = write.exportKeys();
    const suite = suiteById(read.suiteId);
    if (suite === undefined) return undefined;
    return {
      suite,
      readKey: r.key,
      readIv: r.iv,
      writeKey: w.key,
      writeIv: w.iv,
      nextWriteSeq: this.writer.nextSeq,
      replayMax: this.replayMax,
      replayWords: [this.replay0, this.replay1, this.replay2, this.replay3],
      readCid: this.readCid,
      writeCid: this.writer.cid,
      peerMessageSeq: this.peerMessageSeq,
      info,
    };
  }

  /**
   * The connection is over without a word to anyone (its snapshot was taken):
   * nothing is sent, the handler hears nothing, `send` throws "closed".
   */
  retire(): void {
    if (this.hs !== undefined) this.dropBuffers(this.hs);
    this.hs = undefined;
    this.stateValue = "closed";
    this.idleCheckAt = undefined;
  }

  /**
   * An established connection from a snapshot: the same keys, CIDs, replay
   * window and ConnectionInfo, records numbered from the saved write sequence
   * number plus `seqMargin`, the idle timeout counted from `now`. The handler
   * is not told `established` (the caller knows).
   */
  static restore(
    role: "client" | "server",
    config: ConnectionConfig,
    handler: ConnectionHandler,
    now: number,
    snap: ConnectionSnapshot,
    seqMargin: number,
    opts: Pick<ConnectionOptions, "alerts"> = {},
  ): Connection {
    const c = new Connection(role, config, handler, now, opts);
    c.hs = undefined;
    c.stateValue = "established";
    c.info = snap.info;
    const aead = (config.crypto ?? defaultCrypto).aead;
    c.readProtection = new RecordProtection(snap.suite, snap.readKey, snap.readIv, aead);
    c.writer.restore(new RecordProtection(snap.suite, snap.writeKey, snap.writeIv, aead), snap.nextWriteSeq + seqMargin);
    c.replayMax = snap.replayMax;
    [c.replay0, c.replay1, c.replay2, c.replay3] = snap.replayWords;
    c.peerMessageSeq = snap.peerMessageSeq;
    c.useConnectionIds({ read: snap.readCid, write: snap.writeCid });
    return c;
  }

  // ---- input ------------------------------------------------------------

  /** Whether a protected record of the datagram authenticated (a server moves a session's address only then, RFC 9146 6). */
  receive(datagram: Uint8Array, now: number): boolean {
    let authenticated = false;
    for (const rec of parseRecords(datagram, this.readCid === "" ? undefined : this.readCid.length)) {
      if (this.stateValue === "closed") break;
      if (this.receiveRecord(rec, now)) authenticated = true;
    }
    return authenticated;
  }

  /** One record already split from a datagram; true when it was protected and authenticated. */
  receiveRecord(rec: RawRecord, now: number): boolean {
    let plaintext: Uint8Array;
    let type = rec.type;
    if (rec.epoch === 0) {
      // Epoch 0 is unauthenticated; handshake de-duplication is by message_seq,
      // so no replay window here (some stacks resend records with the same seq).
      if (this.stateValue === "established" && rec.type !== ContentType.handshake) return false;
      plaintext = rec.body;
    } else if (rec.epoch === 1) {
      if (this.readProtection === undefined) {
        const hs = this.hs;
        if (hs !== undefined && hs.earlyEpoch1.length < MAX_EARLY_RECORDS && this.keepEarly(hs, recordBytes(rec))) {
          hs.earlyEpoch1 = [...hs.earlyEpoch1, copyRecord(rec)];
        }
        return false;
      }
      const withCid = rec.type === ContentType.tls12_cid;
      // RFC 9146: with our CID negotiated the peer's protected records carry it, without one they carry none
      if (withCid ? this.readCid === "" || rec.cid === undefined || !cidAt(rec.cid, 0, this.readCid) : this.readCid !== "") {
        this.handler.recordDropped?.(withCid ? "cid_mismatch" : "cid_missing");
        return false;
      }
      if (!replayCheck(this, rec.seq)) {
        this.handler.recordDropped?.("replayed");
        return false;
      }
      const opened = withCid ? this.readProtection.openCid(rec) : this.readProtection.open(rec);
      if (opened === null) {
        this.handler.recordDropped?.("unauthenticated");
        // Established: drop silently (RFC 6347 4.1.2.7). During the handshake the
        // only protected record is the peer's Finished: failing to open it means
        // the keys differ (a wrong PSK), so say so now instead of timing out.
        if (this.stateValue === "handshaking" && (rec.type === ContentType.handshake || withCid)) {
          this.fail(alertError("bad_record_mac", "the peer's Finished does not authenticate: the pre-shared keys differ"));
        }
        return false;
      }
      if (withCid) {
        // DTLSInnerPlaintext: padding stripped; no real type, or a real type of 0, is a decode failure
        const inner = splitInnerPlaintext(opened);
        if (inner === undefined || inner.type === 0) {
          this.handler.recordDropped?.("bad_inner_plaintext");
          return false;
        }
        type = inner.type;
        plaintext = inner.content;
      } else {
        plaintext = opened;
      }
      replayAccept(this, rec.seq);
      this.lastActivity = now;
    } else {
      return false;
    }
    if (plaintext.length > MAX_PLAINTEXT) return false;
    switch (type) {
      case ContentType.handshake:
        this.onHandshakeRecord(plaintext, rec.epoch, now);
        break;
      case ContentType.application_data:
        this.onApplicationData(plaintext, rec.epoch);
        break;
      case ContentType.alert:
        this.onAlert(plaintext);
        break;
      case ContentType.change_cipher_spec:
        this.onChangeCipherSpec(plaintext, rec.epoch, now);
        break;
      default:
        break;
    }
    return rec.epoch !== 0;
  }

  private onHandshakeRecord(body: Uint8Array, epoch: number, now: number): void {
    let frags;
    try {
      frags = parseHandshakeFragments(body);
    } catch {
      return; // malformed fragment header: drop the record
    }
    let peerRetransmitted = false;
    for (const f of frags) {
      const hs = this.hs;
      if (this.stateValue !== "handshaking" || hs === undefined) {
        if (f.messageSeq < this.peerMessageSeq) {
          peerRetransmitted = true;
        } else if (epoch === 1 && (f.msgType === HandshakeType.client_hello || f.msgType === HandshakeType.hello_request)) {
          this.sendAlert(AlertLevel.warning, AlertDescription.no_renegotiation);
          return;
        }
        continue;
      }
      const r = hs.reassembler.add(f, epoch);
      if (r === "old") peerRetransmitted = true;
    }
    if (peerRetransmitted) this.answerRetransmission(now);
    this.drainHandshake(now);
  }

  /**
   * The peer's ChangeCipherSpec (epoch 0, the byte 1): from here on its
   * protected handshake messages count. The epoch switch itself is tracked per record.
   */
  private onChangeCipherSpec(body: Uint8Array, epoch: number, now: number): void {
    const hs = this.hs;
    if (epoch !== 0 || body.length !== 1 || body[0] !== 1 || this.stateValue !== "handshaking" || hs === undefined) return;
    hs.peerChangedCipherSpec = true;
    this.drainHandshake(now);
  }

  private drainHandshake(now: number): void {
    while (this.stateValue === "handshaking") {
      const hs = this.hs;
      if (hs === undefined) return;
      const epoch = hs.reassembler.readyEpoch();
      // RFC 5246 7.1 / RFC 6347 4.1: a protected Finished counts only after the peer's ChangeCipherSpec.
      // Without it the message waits (a lost CCS comes again with the peer's retransmitted flight).
      if (epoch === undefined || (epoch !== 0 && !hs.peerChangedCipherSpec)) return;
      const driver = hs.driver;
      if (driver === undefined) return;
      const msg = hs.reassembler.pop();
      if (msg === undefined) return;
      let step: HandshakeStep;
      try {
        step = driver.onMessage(msg);
      } catch (e) {
        this.fail(toDtlsError(e));
        return;
      }
      if (step !== NO_STEP) this.applyStep(driver, step, now);
    }
  }

  /** A driver's step, applied in the order HandshakeStep gives (the one place the handshake changes the connection). */
  private applyStep(driver: HandshakeDriver, step: HandshakeStep, now: number): void {
    if (step.connectionIds !== undefined) this.useConnectionIds(step.connectionIds);
    const keys = step.keys;
    if (keys !== undefined) {
      this.readProtection = keys.read;
      this.writer.install(keys.write);
    }
    const hs = this.hs;
    if (step.flight !== undefined && hs !== undefined) this.sendFlight(hs, step.flight, now);
    if (step.session !== undefined) driver.onSession?.(step.session);
    if (step.established !== undefined) this.establish(step.established, now);
    if (keys !== undefined) this.readEarlyRecords(now);
  }

  /** The peer resent its previous flight: ours was lost, resend it (at most every initialMs/2). */
  private answerRetransmission(now: number): void {
    const hs = this.hs;
    if (hs === undefined || hs.flight.length === 0) return;
    if (now - hs.lastTransmitAt < this.config.retransmit.initialMs / 2) return;
    this.transmitFlight(hs, now);
  }

  private onApplicationData(plaintext: Uint8Array, epoch: number): void {
    if (epoch === 0) return;
    if (this.stateValue === "established") {
      // The peer sends protected data: it has our final flight, and the handshake state can go.
      this.hs = undefined;
      this.handler.data(plaintext);
    } else if (this.hs !== undefined && this.hs.earlyData.length < MAX_EARLY_RECORDS && this.keepEarly(this.hs, plaintext.length)) {
      this.hs.earlyData = [...this.hs.earlyData, copyBytes(plaintext)];
    }
  }

  private onAlert(body: Uint8Array): void {
    if (body.length !== 2) return;
    const level = body[0] as number;
    const description = body[1] as number;
    if (this.alerts !== undefined) increment(this.alerts.alertsReceived, alertName(description));
    if (description === AlertDescription.close_notify) {
      this.sendAlert(AlertLevel.warning, AlertDescription.close_notify);
      this.finish(undefined);
    } else if (level === AlertLevel.fatal) {
      this.finish(receivedAlertError(level, description));
    }
  }

  timeout(now: number): void {
    if (this.stateValue === "closed") return;
    const deadline = this.hs?.deadline;
    if (deadline !== undefined && now >= deadline && this.stateValue === "handshaking") {
      this.finish(new DtlsError("handshake_timeout", "the handshake did not finish in time"));
      return;
    }
    const hs = this.hs;
    if (hs !== undefined && hs.retransmitAt !== undefined && now >= hs.retransmitAt) {
      if (hs.retransmits >= this.config.retransmit.maxRetransmits) {
        this.finish(new DtlsError("timeout", `handshake timed out: no answer after ${hs.retransmits} retransmissions`));
        return;
      }
      hs.retransmits++;
      hs.rto = Math.min(hs.rto * 2, this.config.retransmit.maxMs);
      this.transmitFlight(hs, now);
    }
    if (this.idleCheckAt !== undefined && now >= this.idleCheckAt) {
      const idleFor = now - this.lastActivity;
      if (idleFor >= this.config.idleTimeoutMs) {
        if (this.stateValue === "established") this.sendAlert(AlertLevel.warning, AlertDescription.close_notify);
        this.finish(new DtlsError("idle_timeout", `no record from the peer for ${Math.round(idleFor)} ms`));
        return;
      }
      this.idleCheckAt = this.lastActivity + this.config.idleTimeoutMs;
    }
  }

  // ---- what the drivers' steps do --------------------------------------

  /**
   * Sends a new flight (a step's). RFC 6347 4.2.4's retransmission state
   * machine, as this connection runs it (the driver prepares, the connection
   * does the rest):
   *
   *   PREPARING --sendFlight()--> SENDING (transmitFlight: fragment, pack, send)
   *   (the driver's               |
   *    step)        "expects_reply"                         "last"
   *        ^                      v                            v
   *        |   timeout(): resend, WAITING                   FINISHED
   *        |   rto doubles  <------'  |                         |
   *        |   (maxRetransmits:       | the peer's next flight  | the peer resends its
   *        |    "timeout")            | arrives                 | flight: resend ours
   *        +--------------------------+                         | (answerRetransmission);
   *           or, the peer's flight was the last: FINISHED,     | gone when the peer
   *           established, nothing of ours kept                 | sends protected data
   *
   * In WAITING the peer resending its previous flight (it lost ours) makes us
   * resend at once too (answerRetransmission, at most every initialMs / 2).
   * `role` is the driver's word: "expects_reply" arms the timer (WAITING);
   * "last" does not (FINISHED), and that flight is kept after the handshake.
   *
   * The flights of each handshake and where each side is (C client, S
   * server). The HelloVerifyRequest exchange has no state machine on the
   * server: ServerCore answers the first ClientHello statelessly, and the
   * server's Connection (in PREPARING) is made only for the ClientHello
   * with a valid cookie; the client resends its ClientHello from WAITING
   * until an answer comes.
   *
   *   Full handshake
   *   1 C ClientHello                         C PREPARING > SENDING > WAITING
   *   2 S HelloVerifyRequest                  (stateless)  C: > PREPARING
   *   3 C ClientHello(cookie)                 C PREPARING > SENDING > WAITING
   *   4 S ServerHello ... ServerHelloDone     S PREPARING > SENDING > WAITING   C: > PREPARING
   *   5 C [Certificate] ClientKeyExchange     C PREPARING > SENDING > WAITING   S: > PREPARING
   *       [CertificateVerify] CCS Finished
   *   6 S [NewSessionTicket] CCS Finished     S PREPARING > SENDING > FINISHED ("last", kept)
   *                                           C: > FINISHED (established; its flight 5 dropped)
   *
   *   Abbreviated handshake (resumption)
   *   1-3 as above, the ClientHellos offering the ticket or session ID
   *   4 S ServerHello [NewSessionTicket]      S PREPARING > SENDING > WAITING   C: > PREPARING
   *       CCS Finished
   *   5 C CCS Finished                        C PREPARING > SENDING > FINISHED ("last", kept)
   *                                           S: > FINISHED (established; its flight 4 dropped)
   *
   * So the server sends the last flight of a full handshake, the client that
   * of an abbreviated one; the side in FINISHED with a kept flight resends it
   * when the peer's previous flight comes again (its Finished was lost).
   */
  private sendFlight(hs: HandshakeState, flight: Flight, now: number): void {
    const role = flight.role;
    hs.flight = flight.items;
    hs.flightRole = role;
    hs.rto = this.config.retransmit.initialMs;
    hs.retransmits = 0;
    this.transmitFlight(hs, now);
    hs.retransmitAt = role === "expects_reply" ? now + hs.rto : undefined;
  }

  private transmitFlight(hs: HandshakeState, now: number): void {
    const mtu = this.config.mtu;
    const records: Uint8Array[] = [];
    for (const item of hs.flight) {
      if (item.kind === "ccs") {
        records.push(this.writer.record(ContentType.change_cipher_spec, 0, CCS_BODY));
        this.writer.epoch = 1;
        continue;
      }
      const maxFragment = mtu - this.writer.overhead(item.epoch) - HANDSHAKE_HEADER_LENGTH;
      const body = item.body;
      let offset = 0;
      do {
        const n = Math.min(maxFragment, body.length - offset);
        const frag = encodeFragment(item.msgType, item.messageSeq, body, offset, n);
        records.push(this.writer.record(ContentType.handshake, item.epoch, frag));
        offset += n;
      } while (offset < body.length);
    }
    for (const d of packDatagrams(records, mtu)) this.handler.sendDatagram(d);
    hs.lastTransmitAt = now;
    if (hs.retransmitAt !== undefined) hs.retransmitAt = now + hs.rto;
  }

  /**
   * Installs epoch 1 keys: read side at once (early records replay), write
   * side at our ChangeCipherSpec. What a step's `keys` does; public for tests
   * that set up a connection's record layer without a handshake.
   */
  installKeys(read: RecordProtection, write: RecordProtection, now: number): void {
    this.readProtection = read;
    this.writer.install(write);
    this.readEarlyRecords(now);
  }

  /** Epoch-1 records that came before the read keys, read now that they are here. */
  private readEarlyRecords(now: number): void {
    const hs = this.hs;
    if (hs === undefined) return;
    const early = hs.earlyEpoch1;
    hs.earlyEpoch1 = NO_RECORDS;
    let n = 0;
    for (const rec of early) n += recordBytes(rec);
    this.giveBackEarly(hs, n);
    for (const rec of early) {
      if (this.stateValue === "closed") return;
      this.receiveRecord(rec, now);
    }
  }

  /** The handshake is over: what a step's `established` does; public for tests that set up a connection without a handshake. */
  establish(info: ConnectionInfo, now: number): void {
    this.stateValue = "established";
    this.info = info;
    const hs = this.hs;
    const early = hs?.earlyData ?? NO_DATA;
    if (hs !== undefined) {
      hs.deadline = undefined;
      this.peerMessageSeq = hs.reassembler.nextSeq;
      this.dropBuffers(hs);
      if (hs.flightRole === "expects_reply") {
        // the peer's final flight answered ours: nothing of ours is left to resend
        this.hs = undefined;
      } else {
        // Our last flight stays until the peer sends protected data (it then has it); the rest goes now.
        hs.driver = undefined;
        hs.retransmitAt = undefined;
      }
    }
    this.lastActivity = now;
    this.handler.established(info);
    for (const d of early) {
      if (this.stateValue !== "established") return;
      this.handler.data(d);
    }
  }

  // ---- output -------------------------------------------------------------

  /** Sends one application record. */
  send(data: Uint8Array): void {
    this.assertOpen();
    if (data.length > MAX_PLAINTEXT) throw new DtlsError("too_large", `application record of ${data.length} bytes exceeds ${MAX_PLAINTEXT}`);
    this.handler.sendDatagram(this.writer.record(ContentType.application_data, 1, data));
  }

  /** Sends several application records, packed into as few datagrams as the MTU allows. */
  sendBatch(list: readonly Uint8Array[]): void {
    this.assertOpen();
    const records: Uint8Array[] = [];
    for (const data of list) {
      if (data.length > MAX_PLAINTEXT) throw new DtlsError("too_large", `application record of ${data.length} bytes exceeds ${MAX_PLAINTEXT}`);
      records.push(this.writer.record(ContentType.application_data, 1, data));
    }
    for (const d of packDatagrams(records, this.config.mtu)) this.handler.sendDatagram(d);
  }

  private assertOpen(): void {
    if (this.stateValue !== "established") {
      throw new DtlsError(this.stateValue === "closed" ? "closed" : "not_established", `connection is ${this.stateValue}`);
    }
  }

  /** Orderly close: close_notify, then "closed" with no error. */
  close(): void {
    if (this.stateValue === "closed") return;
    this.sendAlert(AlertLevel.warning, AlertDescription.close_notify);
    this.finish(undefined);
  }

  /** Fails the connection: the fatal alert of the error (if any), then "closed" with it. */
  fail(error: DtlsError): void {
    if (this.stateValue === "closed") return;
    if (error.alert !== undefined) this.sendAlert(AlertLevel.fatal, error.alert);
    this.finish(error);
  }

  /** Closes without a word to the peer (e.g. replaced by a new handshake from the same address). */
  abandon(error: DtlsError): void {
    this.finish(error);
  }

  private sendAlert(level: number, description: number): void {
    try {
      this.handler.sendDatagram(this.writer.record(ContentType.alert, this.writer.epoch, new Uint8Array([level, description])));
      if (this.alerts !== undefined) increment(this.alerts.alertsSent, alertName(description));
    } catch {
      // No keys or sequence space left: nothing can be said to the peer.
    }
  }

  /** Early records within MAX_EARLY_BYTES and the budget are kept; others are dropped. */
  private keepEarly(hs: HandshakeState, n: number): boolean {
    if (hs.earlyBytes + n > MAX_EARLY_BYTES || !hs.budget.take(n)) return false;
    hs.earlyBytes += n;
    return true;
  }

  private giveBackEarly(hs: HandshakeState, n: number): void {
    hs.earlyBytes -= n;
    hs.budget.release(n);
  }

  /** Everything the peer's input left buffered goes, and its bytes back to the budget. */
  private dropBuffers(hs: HandshakeState): void {
    hs.reassembler.clear();
    this.giveBackEarly(hs, hs.earlyBytes);
    hs.earlyEpoch1 = NO_RECORDS;
    hs.earlyData = NO_DATA;
  }

  private finish(error: DtlsError | undefined): void {
    if (this.stateValue === "closed") return;
    this.stateValue = "closed";
    if (this.hs !== undefined) this.dropBuffers(this.hs);
    this.hs = undefined;
    this.idleCheckAt = undefined;
    this.handler.closed(error);
  }
}

function earliest(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return a < b ? a : b;
}

function recordBytes(rec: RawRecord): number {
  return rec.header.length + rec.body.length;
}

function copyRecord(rec: RawRecord): RawRecord {
  const header = copyBytes(rec.header);
  // a tls12_cid record's CID is a view into its header: into the copy, so nothing points into the datagram
  const cid = rec.cid === undefined ? undefined : header.subarray(11, 11 + rec.cid.length);
  return { ...rec, header, body: copyBytes(rec.body), cid };
}
