/**
 * Client side of the handshake (RFC 6347 4.2.1; PSK, ECDHE_PSK and the
 * certificate suites, with a client certificate when the server asks):
 *
 *   ClientHello                        -->
 *                                      <--  HelloVerifyRequest (optional)
 *   ClientHello(cookie)                -->
 *                                      <--  ServerHello, [Certificate], [ServerKeyExchange],
 *                                           [CertificateRequest], ServerHelloDone
 *   [Certificate], ClientKeyExchange, [CertificateVerify], CCS, Finished  -->
 *                                      <--  [NewSessionTicket], CCS, Finished
 *
 * With a saved session (ClientResumption) the ClientHello offers its ticket
 * and/or session ID; a server that resumes it answers with the abbreviated
 * handshake (RFC 5246 7.3, RFC 5077 3.1), and then our flight is the last:
 *
 *                                      <--  ServerHello(our session_id), [NewSessionTicket], CCS, Finished
 *   CCS, Finished                      -->
 *
 * A server that answers with a full handshake instead is fine: the new
 * session replaces the saved one. We always offer extended_master_secret,
 * renegotiation_info and a SessionTicket extension (empty without a ticket,
 * so servers issue one).
 *
 * The states are types, one per message we wait for: the server's
 * Certificate, its ServerKeyExchange (signed ECDH parameters, or ECDHE_PSK
 * parameters), a PSK hint or the ServerHelloDone, a CertificateRequest or the
 * ServerHelloDone, the ServerHelloDone, NewSessionTicket and Finished of
 * either handshake. The ECDH share exists only in the states of suites that
 * have one, keys only after the key exchange (or the ServerHello that
 * resumed).
 *
 * The driver holds no connection: `start` gives the ClientHello and
 * `onMessage` takes the server's messages, each returning a step (our
 * flight, the keys, the CIDs, the new session, "established") that the
 * connection applies (connection.ts, HandshakeStep).
 */
import { bytesEqual, concatBytes, copyBytes } from "../util/bytes.ts";
import { ExtensionType, HandshakeType, ProtocolVersion } from "./constants.ts";
import { defaultCrypto, schemeKeyType, type CryptoProvider, type Certificate, type EcdhGroup, type SecretKey } from "../crypto/index.ts";
import { NO_STEP, type Connection, type FlightItem, type HandshakeDriver, type HandshakeStep } from "./connection.ts";
import { acceptedConnectionId, clientConnectionIdExtension } from "./connection-id.ts";
import { alertError, errorMessage, unexpectedMessage, type DtlsError } from "./errors.ts";
import { encodeHandshake } from "./handshake-codec.ts";
import {
  ecdhePskPremasterSecret,
  finishedVerifyData,
  keyBlock,
  masterSecret,
  pskPremasterSecret,
  Transcript,
  verifyPeerFinished,
} from "./key-schedule.ts";
import {
  ClientCertificateType,
  decodeCertificateList,
  decodeCertificateRequest,
  encodeCertificateVerify,
  type CertificateRequest,
  decodeEcdhePskServerParams,
  decodeSignedEcdhParams,
  encodeCertificateList,
  encodeEcdhPublic,
  encodeSignatureAlgorithms,
  decodeEcPointFormats,
  decodeEmpty,
  decodeFinished,
  decodeHelloVerifyRequest,
  decodeNewSessionTicket,
  decodePskIdentity,
  decodeRenegotiationInfo,
  decodeServerHello,
  EMPTY,
  EC_POINT_FORMATS_UNCOMPRESSED,
  EMPTY_RENEGOTIATION_INFO,
  encodeClientHello,
  encodeEcdhePskClientKeyExchange,
  encodePskIdentity,
  encodeSupportedGroups,
  type ClientHello,
  type Extension,
} from "./messages.ts";
import { candidateSchemes, DEFAULT_GROUPS, groupById, groupsByName, VERIFIABLE_SCHEMES as OFFERED_SCHEMES } from "./negotiation.ts";
import type { ClientCredential, ClientPskConfig, ConnectionConfig, ConnectionInfo } from "./options.ts";
import type { SavedSession } from "./resumption-options.ts";
import { encodeSavedSession, type ClientSessionState } from "./saved-session.ts";
import type { HandshakeMessage } from "./reassembly.ts";
import { RecordProtection } from "./record-protection.ts";
import { usesPsk, type CipherSuite } from "./suites.ts";

interface Hello {
  readonly hello: ClientHello;
  readonly transcript: Transcript;
}

/** A client's resumption: the session to offer (already checked to fit this server and our configuration), and where new ones go. */
export interface ClientResumption {
  readonly offer: ClientSessionState | undefined;
  /** "host:port" the new sessions are bound to. */
  readonly server: string;
  readonly wallClock: () => number;
  /** A new resumable session (once per handshake, before it is established). */
  readonly onSession: (session: SavedSession) => void;
}

/** What an abbreviated handshake carries from the ServerHello to its end. */
interface Resumed {
  readonly suite: CipherSuite;
  readonly master: SecretKey;
  readonly transcript: Transcript;
  readonly session: ClientSessionState;
}

interface Negotiated {
  readonly suite: CipherSuite;
  readonly ems: boolean;
  readonly clientRandom: Uint8Array;
  readonly serverRandom: Uint8Array;
  readonly transcript: Transcript;
}

/** Our ECDH share and the shared secret, once the server's ECDHE parameters came. */
interface EcdhShared {
  readonly z: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly group: EcdhGroup;
}

/** What the server's second flight gave, by key exchange: the ECDHE share wherever the suite has one. */
type ServerKeys =
  | { readonly kind: "psk" }
  | { readonly kind: "ecdhe_psk"; readonly ecdh: EcdhShared }
  | {
      readonly kind: "certificate";
      readonly certificate: Certificate;
      readonly ecdh: EcdhShared;
      /** The server's CertificateRequest (we send our Certificate, possibly empty), or undefined. */
      readonly request: CertificateRequest | undefined;
    };

/** After a ServerHello that did not resume: what the full handshake goes on with. */
interface AfterHello extends Negotiated {
  readonly sessionId: Uint8Array;
  /** The server announced a ticket (an empty SessionTicket in its ServerHello): a NewSessionTicket comes before its Finished. */
  readonly ticketAnnounced: boolean;
}

/** What the client authenticates with and how it judges the server. */
export interface ClientAuth {
  readonly psk: ClientPskConfig | undefined;
  /** Our certificate chain and key, sent when a server asks for one (certificate suites). */
  readonly certificate?: ClientCredential | undefined;
  /** Judges the server's chain (leaf first): an error fails the handshake with its alert; undefined accepts. */
  readonly verifyServer: ((chain: readonly Certificate[]) => DtlsError | undefined) | undefined;
}

/** After our key exchange flight: the session as far as it is known. */
interface Keyed extends Negotiated {
  readonly master: SecretKey;
  readonly certificate: Certificate | undefined;
  readonly group: EcdhGroup | undefined;
  readonly sessionId: Uint8Array;
  /** The server's new ticket (NewSessionTicket before its Finished), if any. */
  readonly ticket: { readonly ticket: Uint8Array; readonly lifetimeMs: number } | undefined;
}

type ClientState =
  /** Made, not started: the ClientHello is ready to go (start sends it). */
  | { readonly kind: "start"; readonly hello: ClientHello }
  | ({ readonly kind: "await_server_hello"; readonly cookieRounds: number } & Hello)
  /** Certificate suites: the server's Certificate is next. */
  | ({ readonly kind: "await_certificate" } & AfterHello)
  /** Certificate suites after the Certificate: the ServerKeyExchange with the ECDH parameters signed by its key is next. */
  | ({ readonly kind: "await_server_key_exchange"; readonly certificate: Certificate } & AfterHello)
  /** ECDHE_PSK: the ServerKeyExchange with the hint and the ECDH parameters is next. */
  | ({ readonly kind: "await_ecdhe_psk_server_key_exchange" } & AfterHello)
  /** Plain PSK: a ServerKeyExchange with the identity hint, or the ServerHelloDone. */
  | ({ readonly kind: "await_psk_hint_or_done" } & AfterHello)
  /** Certificate suites after the ServerKeyExchange: a CertificateRequest, or the ServerHelloDone. */
  | ({ readonly kind: "await_certificate_request_or_done"; readonly certificate: Certificate; readonly ecdh: EcdhShared } & AfterHello)
  /** The rest of the server's second flight came (by key exchange): the ServerHelloDone is next. */
  | ({ readonly kind: "await_server_hello_done"; readonly keys: ServerKeys } & AfterHello)
  /** Full handshake: the server announced a ticket (empty SessionTicket in its ServerHello); the NewSessionTicket is next. */
  | ({ readonly kind: "await_new_session_ticket" } & Keyed)
  | ({ readonly kind: "await_finished" } & Keyed)
  /** Abbreviated handshake with a renewed ticket: the NewSessionTicket is next. */
  | ({ readonly kind: "await_resumed_ticket" } & Resumed)
  /** Abbreviated handshake: the server's Finished is next (after its CCS). */
  | ({ readonly kind: "await_resumed_finished" } & Resumed)
  | { readonly kind: "done" };

const DONE: ClientState = { kind: "done" };
const PSK_KEYS: ServerKeys = { kind: "psk" };

/** A server that keeps sending HelloVerifyRequests is refused after this many. */
const MAX_COOKIE_ROUNDS = 4;

export class ClientHandshake implements HandshakeDriver {
  readonly startedAt: number;
  private readonly config: ConnectionConfig;
  /** The endpoint's crypto provider (config.crypto, or defaultCrypto). */
  private readonly crypto: CryptoProvider;
  private readonly auth: ClientAuth;
  private state: ClientState;
  private nextSendSeq = 0;
  /** Our PSK identity once sent; "" for certificate suites (no client certificate yet). */
  private identityName = "";
  private readonly resumption: ClientResumption | undefined;
  readonly onSession: ((session: SavedSession) => void) | undefined;

  /**
   * A driver for the connection `host` (only its configuration is read), to
   * send its ClientHello at `now` when the connection starts it; with a
   * saved session to offer, and where new ones go, in `resumption`.
   */
  constructor(host: Pick<Connection, "config">, auth: ClientAuth, now: number, resumption?: ClientResumption) {
    this.startedAt = now;
    const config = host.config;
    this.config = config;
    this.crypto = config.crypto ?? defaultCrypto;
    this.auth = auth;
    this.resumption = resumption;
    this.onSession = resumption?.onSession;
    const extensions: Extension[] = [
      { type: ExtensionType.extended_master_secret, data: EMPTY },
      { type: ExtensionType.renegotiation_info, data: EMPTY_RENEGOTIATION_INFO },
    ];
    if (config.suites.some((s) => s.keyExchange !== "psk")) {
      extensions.push({
        type: ExtensionType.supported_groups,
        data: encodeSupportedGroups(groupsByName(config.groups ?? DEFAULT_GROUPS).map((g) => g.id)),
      });
      extensions.push({ type: ExtensionType.ec_point_formats, data: EC_POINT_FORMATS_UNCOMPRESSED });
    }
    if (config.suites.some((s) => !usesPsk(s))) {
      extensions.push({ type: ExtensionType.signature_algorithms, data: encodeSignatureAlgorithms(OFFERED_SCHEMES) });
    }
    const offer = resumption?.offer;
    // RFC 5077 3.4: a session ID of our own with a ticket, so the echo tells us the server resumed
    extensions.push({ type: ExtensionType.session_ticket, data: offer?.ticket ?? EMPTY });
    if (config.connectionId !== false) extensions.push(clientConnectionIdExtension());
    const hello: ClientHello = {
      version: ProtocolVersion.DTLS1_2,
      random: this.crypto.random.bytes(32),
      sessionId: offer === undefined ? EMPTY : offer.sessionId.length > 0 ? offer.sessionId : this.crypto.random.bytes(32),
      cookie: EMPTY,
      cipherSuites: config.suites.map((s) => s.id),
      compressionMethods: new Uint8Array([0]),
      extensions,
    };
    this.state = { kind: "start", hello };
  }

  /** Our first ClientHello. */
  start(): HandshakeStep {
    const s = this.state;
    if (s.kind !== "start") throw alertError("internal_error", "the client handshake was started twice");
    const { step, transcript } = this.sendHello(s.hello);
    this.state = { kind: "await_server_hello", cookieRounds: 0, hello: s.hello, transcript };
    return step;
  }

  /** A ClientHello as our flight; its transcript starts with it. */
  private sendHello(hello: ClientHello): { step: HandshakeStep; transcript: Transcript } {
    const body = encodeClientHello(hello);
    const messageSeq = this.nextSendSeq++;
    const transcript = new Transcript(this.crypto.digest);
    transcript.add(encodeHandshake(HandshakeType.client_hello, messageSeq, body));
    const items: FlightItem[] = [{ kind: "handshake", epoch: 0, msgType: HandshakeType.client_hello, messageSeq, body }];
    return { step: { flight: { items, role: "expects_reply" } }, transcript };
  }

  onMessage(msg: HandshakeMessage): HandshakeStep {
    const s = this.state;
    switch (s.kind) {
      case "start":
        throw alertError("internal_error", "a handshake message reached a client handshake that was not started");
      case "await_server_hello":
        if (msg.msgType === HandshakeType.hello_verify_request) return this.onHelloVerifyRequest(s, msg);
        if (msg.msgType === HandshakeType.server_hello) return this.onServerHello(s, msg);
        throw unexpectedMessage(msg.msgType, "ServerHello or HelloVerifyRequest");
      case "await_certificate":
        if (msg.msgType !== HandshakeType.certificate) throw unexpectedMessage(msg.msgType, "Certificate");
        return this.next(s, msg, { ...s, kind: "await_server_key_exchange", certificate: this.onCertificate(msg.body) });
      case "await_server_key_exchange":
        if (msg.msgType !== HandshakeType.server_key_exchange) throw unexpectedMessage(msg.msgType, "ServerKeyExchange");
        return this.next(s, msg, { ...s, kind: "await_certificate_request_or_done", ecdh: this.signedShare(s, s.certificate, msg.body) });
      case "await_ecdhe_psk_server_key_exchange": {
        if (msg.msgType !== HandshakeType.server_key_exchange) throw unexpectedMessage(msg.msgType, "ServerKeyExchange");
        const params = decodeEcdhePskServerParams(msg.body);
        return this.next(s, msg, {
          ...s,
          kind: "await_server_hello_done",
          keys: { kind: "ecdhe_psk", ecdh: this.ecdhShare(params.group, params.publicKey) },
        });
      }
      case "await_psk_hint_or_done":
        if (msg.msgType === HandshakeType.server_key_exchange) {
          decodePskIdentity(msg.body, "psk_identity_hint");
          return this.next(s, msg, { ...s, kind: "await_server_hello_done", keys: PSK_KEYS });
        }
        if (msg.msgType !== HandshakeType.server_hello_done) throw unexpectedMessage(msg.msgType, "ServerKeyExchange or ServerHelloDone");
        return this.onServerHelloDone({ ...s, kind: "await_server_hello_done", keys: PSK_KEYS }, msg);
      case "await_certificate_request_or_done": {
        const { certificate, ecdh, ...afterHello } = s;
        if (msg.msgType === HandshakeType.certificate_request) {
          const request = decodeCertificateRequest(msg.body);
          return this.next(s, msg, { ...afterHello, kind: "await_server_hello_done", keys: { kind: "certificate", certificate, ecdh, request } });
        }
        if (msg.msgType !== HandshakeType.server_hello_done) throw unexpectedMessage(msg.msgType, "CertificateRequest or ServerHelloDone");
        return this.onServerHelloDone(
          { ...afterHello, kind: "await_server_hello_done", keys: { kind: "certificate", certificate, ecdh, request: undefined } },
          msg,
        );
      }
      case "await_server_hello_done":
        if (msg.msgType !== HandshakeType.server_hello_done) throw unexpectedMessage(msg.msgType, "ServerHelloDone");
        return this.onServerHelloDone(s, msg);
      case "await_new_session_ticket":
        if (msg.msgType !== HandshakeType.new_session_ticket) throw unexpectedMessage(msg.msgType, "NewSessionTicket");
        this.state = { ...s, kind: "await_finished", ticket: this.onNewSessionTicket(s.transcript, msg) };
        return NO_STEP;
      case "await_finished":
        if (msg.msgType !== HandshakeType.finished) throw unexpectedMessage(msg.msgType, "Finished");
        if (msg.epoch !== 1) throw alertError("unexpected_message", "Finished arrived unprotected");
        return this.onFinished(s, msg);
      case "await_resumed_ticket": {
        if (msg.msgType !== HandshakeType.new_session_ticket) throw unexpectedMessage(msg.msgType, "NewSessionTicket");
        const t = this.onNewSessionTicket(s.transcript, msg);
        const session = t === undefined ? s.session : { ...s.session, ticket: t.ticket, lifetimeMs: t.lifetimeMs, issuedAt: this.wallNow() };
        this.state = { ...s, kind: "await_resumed_finished", session };
        return NO_STEP;
      }
      case "await_resumed_finished":
        if (msg.msgType !== HandshakeType.finished) throw unexpectedMessage(msg.msgType, "Finished");
        if (msg.epoch !== 1) throw alertError("unexpected_message", "Finished arrived unprotected");
        return this.onResumedFinished(s, msg);
      case "done":
        return NO_STEP;
    }
  }

  private onHelloVerifyRequest(s: Extract<ClientState, { kind: "await_server_hello" }>, msg: HandshakeMessage): HandshakeStep {
    const hvr = decodeHelloVerifyRequest(msg.body);
    if (s.cookieRounds >= MAX_COOKIE_ROUNDS) throw alertError("handshake_failure", "server keeps sending HelloVerifyRequest");
    const hello = { ...s.hello, cookie: copyBytes(hvr.cookie) };
    // RFC 6347 4.2.1: the first ClientHello and the HelloVerifyRequest stay out of the transcript.
    const { step, transcript } = this.sendHello(hello);
    this.state = { kind: "await_server_hello", cookieRounds: s.cookieRounds + 1, hello, transcript };
    return step;
  }

  private onServerHello(s: Extract<ClientState, { kind: "await_server_hello" }>, msg: HandshakeMessage): HandshakeStep {
    const sh = decodeServerHello(msg.body);
    if (sh.version !== ProtocolVersion.DTLS1_2) {
      throw alertError("protocol_version", `server chose version 0x${sh.version.toString(16)}, DTLS 1.2 is required`);
    }
    const suite = this.config.suites.find((c) => c.id === sh.cipherSuite);
    if (suite === undefined) throw alertError("illegal_parameter", `server chose cipher suite 0x${sh.cipherSuite.toString(16)} we did not offer`);
    if (sh.compressionMethod !== 0) throw alertError("illegal_parameter", "server chose a compression method");
    let ems = false;
    let ticketAnnounced = false;
    // RFC 5246 7.4.1.4: the server may answer any extension we offered (e.g. ec_point_formats echoed
    // with a plain PSK suite, as wolfSSL does), and only those.
    const offered = new Set((s.hello.extensions ?? []).map((e) => e.type));
    for (const e of sh.extensions ?? []) {
      if (!offered.has(e.type)) throw alertError("unsupported_extension", `server sent extension ${e.type} we did not offer`);
      if (e.type === ExtensionType.extended_master_secret) {
        if (e.data.length !== 0) throw alertError("decode_error", "extended_master_secret must be empty");
        ems = true;
      } else if (e.type === ExtensionType.ec_point_formats) {
        const formats = decodeEcPointFormats(e.data);
        if (suite.keyExchange !== "psk" && !formats.includes(0)) throw alertError("illegal_parameter", "server does not accept uncompressed points");
      } else if (e.type === ExtensionType.renegotiation_info) {
        if (decodeRenegotiationInfo(e.data).length !== 0) throw alertError("handshake_failure", "renegotiation_info must be empty");
      } else if (e.type === ExtensionType.session_ticket) {
        if (e.data.length !== 0) throw alertError("decode_error", "the server's SessionTicket extension must be empty");
        ticketAnnounced = true;
      }
    }
    if (this.config.requireExtendedMasterSecret && !ems) {
      throw alertError("handshake_failure", "server does not support extended master secret, which is required");
    }
    // RFC 9146: the server's answer names the CID our protected records carry from now on
    const connectionIds = acceptedConnectionId(sh.extensions);
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    const offer = this.resumption?.offer;
    // RFC 5246 7.4.1.3: our session ID echoed means the server resumes the session
    if (offer !== undefined && sh.sessionId.length > 0 && bytesEqual(sh.sessionId, s.hello.sessionId)) {
      if (suite.id !== offer.suite) throw alertError("illegal_parameter", "the server resumed our session with another cipher suite");
      // RFC 7627 5.3: the client aborts when the resumed session's EMS use and the ServerHello's differ
      if (ems !== offer.ems)
        throw alertError("handshake_failure", "the server resumed our session with extended master secret use that differs from the session's");
      const master = this.crypto.digest.secretKey(offer.master);
      const keys = keyBlock(this.crypto.digest, suite, master, s.hello.random, sh.random);
      const resumed: Resumed = { suite, master, transcript: s.transcript, session: { ...offer, sessionId: copyBytes(sh.sessionId) } };
      // state first: the connection installs the read keys last, which may replay an early Finished into onMessage
      this.state = ticketAnnounced ? { kind: "await_resumed_ticket", ...resumed } : { kind: "await_resumed_finished", ...resumed };
      return {
        connectionIds,
        keys: {
          read: new RecordProtection(suite, keys.serverKey, keys.serverIv, this.crypto.aead),
          write: new RecordProtection(suite, keys.clientKey, keys.clientIv, this.crypto.aead),
        },
      };
    }
    const next: AfterHello = {
      sessionId: copyBytes(sh.sessionId),
      ticketAnnounced,
      suite,
      ems,
      clientRandom: s.hello.random,
      serverRandom: copyBytes(sh.random),
      transcript: s.transcript,
    };
    if (suite.keyExchange === "psk") this.state = { ...next, kind: "await_psk_hint_or_done" };
    else if (suite.keyExchange === "ecdhe_psk") this.state = { ...next, kind: "await_ecdhe_psk_server_key_exchange" };
    else this.state = { ...next, kind: "await_certificate" };
    return connectionIds === undefined ? NO_STEP : { connectionIds };
  }

  /** A message of the server's second flight taken: into the transcript, and the state it leads to. */
  private next(from: AfterHello, msg: HandshakeMessage, to: ClientState): HandshakeStep {
    from.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    this.state = to;
    return NO_STEP;
  }

  /** The server's chain: parsed, fitting the suite, and accepted by the configured trust. */
  private onCertificate(body: Uint8Array): Certificate {
    const ders = decodeCertificateList(body);
    let chain: Certificate[];
    try {
      chain = ders.map((der) => this.crypto.x509.parse(der));
    } catch (e) {
      throw alertError("bad_certificate", `the server's certificate does not parse: ${errorMessage(e)}`);
    }
    const verify = this.auth.verifyServer;
    if (verify === undefined) throw alertError("handshake_failure", "no way to verify a server certificate is configured");
    const leaf = chain[0];
    if (leaf === undefined) throw alertError("bad_certificate", "the server sent an empty certificate list");
    const error = verify(chain);
    if (error !== undefined) throw error;
    return leaf;
  }

  /** ECDHE_ECDSA / ECDHE_RSA: the parameters must carry a valid signature by the certificate's key (RFC 8422 5.4). */
  private signedShare(s: AfterHello, cert: Certificate, body: Uint8Array): EcdhShared {
    const params = decodeSignedEcdhParams(body);
    const keyType = schemeKeyType(params.scheme);
    if (!OFFERED_SCHEMES.includes(params.scheme) || keyType !== cert.keyType) {
      throw alertError(
        "illegal_parameter",
        `server signed with scheme 0x${params.scheme.toString(16)}, which we did not offer or which does not fit its ${cert.keyType} key`,
      );
    }
    if ((s.suite.keyExchange === "ecdhe_rsa") !== (cert.keyType === "rsa")) {
      throw alertError("bad_certificate", `a ${cert.keyType} certificate cannot serve ${s.suite.name}`);
    }
    const signed = concatBytes([s.clientRandom, s.serverRandom, params.paramsBytes]);
    if (!cert.verifySignature(params.scheme, signed, params.signature)) {
      throw alertError("decrypt_error", "the ServerKeyExchange signature does not verify with the server certificate's key");
    }
    return this.ecdhShare(params.group, params.publicKey);
  }

  /** Our ECDH key on the server's group, and the shared secret with its public key. */
  private ecdhShare(group: number, peerPublic: Uint8Array): EcdhShared {
    const groupName = groupById(group);
    if (groupName === undefined) throw alertError("illegal_parameter", `server chose group ${group} we did not offer`);
    const ours = this.crypto.ecdh.generate(groupName);
    const z = ours.derive(peerPublic);
    if (z === null) throw alertError("illegal_parameter", "the server's ECDH public key is invalid");
    return { z, publicKey: ours.publicKey, group: groupName };
  }

  /**
   * The server's flight is complete: our [Certificate], ClientKeyExchange,
   * [CertificateVerify], ChangeCipherSpec and Finished, with the keys our
   * Finished is protected with.
   */
  private onServerHelloDone(s: Extract<ClientState, { kind: "await_server_hello_done" }>, msg: HandshakeMessage): HandshakeStep {
    decodeEmpty(msg.body, "ServerHelloDone");
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    const hashAlg = s.suite.prfHash;
    const kx = s.keys;
    const ecdh = kx.kind === "psk" ? undefined : kx.ecdh;
    const request = kx.kind === "certificate" ? kx.request : undefined;
    const flight: FlightItem[] = [];
    const addToFlight = (msgType: number, body: Uint8Array): number => {
      const messageSeq = this.nextSendSeq++;
      s.transcript.add(encodeHandshake(msgType, messageSeq, body));
      flight.push({ kind: "handshake", epoch: 0, msgType, messageSeq, body });
      return messageSeq;
    };
    // Asked for a certificate: ours if it fits the request, else an empty list (RFC 5246 7.4.6).
    const ours = request === undefined ? undefined : pickClientCredential(this.auth.certificate, request);
    if (request !== undefined) addToFlight(HandshakeType.certificate, encodeCertificateList(ours?.credential.chain.map((c) => c.der) ?? []));
    const ckeSeq = this.nextSendSeq++;
    let cke: Uint8Array;
    let premaster: Uint8Array;
    let identityName = "";
    if (kx.kind === "certificate") {
      cke = encodeEcdhPublic(kx.ecdh.publicKey);
      premaster = kx.ecdh.z;
    } else {
      const psk = this.auth.psk;
      if (psk === undefined) throw alertError("internal_error", "a PSK suite was negotiated without a PSK");
      identityName = psk.identity;
      const identity = new TextEncoder().encode(psk.identity);
      cke = kx.kind === "ecdhe_psk" ? encodeEcdhePskClientKeyExchange({ identity, publicKey: kx.ecdh.publicKey }) : encodePskIdentity(identity);
      premaster = kx.kind === "ecdhe_psk" ? ecdhePskPremasterSecret(kx.ecdh.z, psk.key) : pskPremasterSecret(psk.key);
    }
    this.identityName = identityName;
    s.transcript.add(encodeHandshake(HandshakeType.client_key_exchange, ckeSeq, cke));
    flight.push({ kind: "handshake", epoch: 0, msgType: HandshakeType.client_key_exchange, messageSeq: ckeSeq, body: cke });
    // The extended master secret's session hash ends at the ClientKeyExchange (RFC 7627 3).
    const master = this.crypto.digest.secretKey(
      masterSecret(this.crypto.digest, hashAlg, premaster, s.clientRandom, s.serverRandom, s.ems ? s.transcript.hash(hashAlg) : undefined),
    );
    if (ours !== undefined) {
      // CertificateVerify signs every handshake message so far (RFC 5246 7.4.8).
      const signature = ours.credential.signer.sign(ours.scheme, s.transcript.messages());
      addToFlight(HandshakeType.certificate_verify, encodeCertificateVerify({ scheme: ours.scheme, signature }));
    }
    const keys = keyBlock(this.crypto.digest, s.suite, master, s.clientRandom, s.serverRandom);
    const verify = finishedVerifyData(this.crypto.digest, hashAlg, master, "client finished", s.transcript.hash(hashAlg));
    const finSeq = this.nextSendSeq++;
    s.transcript.add(encodeHandshake(HandshakeType.finished, finSeq, verify));
    const keyed: Keyed = {
      suite: s.suite,
      ems: s.ems,
      clientRandom: s.clientRandom,
      serverRandom: s.serverRandom,
      transcript: s.transcript,
      sessionId: s.sessionId,
      master,
      certificate: kx.kind === "certificate" ? kx.certificate : undefined,
      group: ecdh?.group,
      ticket: undefined,
    };
    this.state = s.ticketAnnounced ? { ...keyed, kind: "await_new_session_ticket" } : { ...keyed, kind: "await_finished" };
    flight.push({ kind: "ccs" }, { kind: "handshake", epoch: 1, msgType: HandshakeType.finished, messageSeq: finSeq, body: verify });
    return {
      keys: {
        read: new RecordProtection(s.suite, keys.serverKey, keys.serverIv, this.crypto.aead),
        write: new RecordProtection(s.suite, keys.clientKey, keys.clientIv, this.crypto.aead),
      },
      flight: { items: flight, role: "expects_reply" },
    };
  }

  /** The server's Finished of a full handshake: established, with the new session if the server gave one. */
  private onFinished(s: Extract<ClientState, { kind: "await_finished" }>, msg: HandshakeMessage): HandshakeStep {
    verifyPeerFinished(this.crypto.digest, s.suite.prfHash, s.master, "server finished", s.transcript, decodeFinished(msg.body));
    this.state = DONE;
    const peerCertificate =
      s.certificate === undefined ? undefined : { subject: s.certificate.subject, fingerprint256: s.certificate.fingerprint256 };
    const r = this.resumption;
    let session: SavedSession | undefined;
    if (r !== undefined && (s.ticket !== undefined || s.sessionId.length > 0)) {
      const wallNow = r.wallClock();
      session = encodeSavedSession({
        server: r.server,
        suite: s.suite.id,
        master: this.crypto.digest.secretKeyBytes(s.master),
        ems: s.ems,
        group: s.group,
        identity: this.identityName,
        peer: peerCertificate,
        createdAt: wallNow,
        ticket: s.ticket?.ticket ?? EMPTY,
        sessionId: s.sessionId,
        issuedAt: wallNow,
        lifetimeMs: s.ticket?.lifetimeMs ?? 0,
      });
    }
    return {
      session,
      established: { identity: this.identityName, suite: s.suite.name, extendedMasterSecret: s.ems, resumed: false, group: s.group, peerCertificate },
    };
  }

  /** A NewSessionTicket (RFC 5077 3.3), in the transcript; an empty ticket means none. */
  private onNewSessionTicket(transcript: Transcript, msg: HandshakeMessage): { ticket: Uint8Array; lifetimeMs: number } | undefined {
    const nst = decodeNewSessionTicket(msg.body);
    transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    return nst.ticket.length === 0 ? undefined : { ticket: copyBytes(nst.ticket), lifetimeMs: nst.lifetimeHint * 1000 };
  }

  /** The server's Finished of an abbreviated handshake: then our CCS and Finished, the handshake's last flight. */
  private onResumedFinished(s: Extract<ClientState, { kind: "await_resumed_finished" }>, msg: HandshakeMessage): HandshakeStep {
    const hashAlg = s.suite.prfHash;
    verifyPeerFinished(this.crypto.digest, hashAlg, s.master, "server finished", s.transcript, decodeFinished(msg.body));
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    const verify = finishedVerifyData(this.crypto.digest, hashAlg, s.master, "client finished", s.transcript.hash(hashAlg));
    this.state = DONE;
    // ours is the last flight here: kept to answer the server's retransmitted Finished
    const items: FlightItem[] = [
      { kind: "ccs" },
      { kind: "handshake", epoch: 1, msgType: HandshakeType.finished, messageSeq: this.nextSendSeq++, body: verify },
    ];
    const established: ConnectionInfo = {
      identity: s.session.identity,
      suite: s.suite.name,
      extendedMasterSecret: s.session.ems,
      resumed: true,
      group: s.session.group,
      peerCertificate: s.session.peer,
    };
    return { flight: { items, role: "last" }, session: this.resumption === undefined ? undefined : encodeSavedSession(s.session), established };
  }

  private wallNow(): number {
    return this.resumption?.wallClock() ?? 0;
  }
}

/** Our credential if its key type is among the requested ones and it can sign with a requested scheme. */
function pickClientCredential(
  credential: ClientCredential | undefined,
  request: CertificateRequest,
): { credential: ClientCredential; scheme: number } | undefined {
  if (credential === undefined) return undefined;
  const { keyType, curve } = credential.signer;
  const type = keyType === "rsa" ? ClientCertificateType.rsa_sign : ClientCertificateType.ecdsa_sign;
  if (!request.certificateTypes.includes(type)) return undefined;
  const scheme = candidateSchemes(keyType, curve).find((c) => request.signatureAlgorithms.includes(c));
  return scheme === undefined ? undefined : { credential, scheme };
}
