/**
 * Server side of the handshake (RFC 6347 4.2.1; RFC 4279 / 5489 PSK and
 * ECDHE_PSK, RFC 8422 ECDHE_ECDSA / ECDHE_RSA with optional client
 * certificates), from the ClientHello that carried a valid cookie.
 *
 * Full handshake:
 *
 *   ClientHello(cookie)  -->
 *                        <--  ServerHello, [Certificate, ServerKeyExchange, [CertificateRequest]]
 *                             or [ServerKeyExchange(hint / ECDHE_PSK)], ServerHelloDone
 *   [Certificate], ClientKeyExchange, [CertificateVerify], ChangeCipherSpec, Finished  -->
 *                        <--  [NewSessionTicket], ChangeCipherSpec, Finished
 *
 * Abbreviated handshake (RFC 5246 7.3, RFC 5077 3.1/3.2), when the hello's
 * SessionTicket extension opens or its session_id is in the cache, and the
 * session may still be resumed (resumption.ts):
 *
 *   ClientHello(cookie, ticket or session_id)  -->
 *                        <--  ServerHello(session_id echoed), [NewSessionTicket], ChangeCipherSpec, Finished
 *   ChangeCipherSpec, Finished  -->
 *
 * Here our flight is the one that awaits an answer (retransmitted until the
 * client's Finished arrives); in the full handshake it is the client's.
 *
 * The states are types, one per message the server waits for (the client's
 * Certificate when we asked for one, ClientKeyExchange, CertificateVerify
 * when the client sent a certificate, Finished, or the resumed Finished): our
 * ECDH key only in the states of suites that have one, keys and the master
 * secret only after the key exchange (or after the session was found).
 *
 * The driver holds no connection: `start` answers the ClientHello and
 * `onMessage` takes the client's messages, each returning a step (our
 * flight, the keys, the CIDs, "established") that the connection applies
 * (connection.ts, HandshakeStep). The next state is set before the step is
 * returned, so a Finished that came early and is read once the keys are in
 * finds the driver ready for it.
 */
import { bytesEqual, concatBytes, copyBytes } from "../util/bytes.ts";
import { ExtensionType, HandshakeType, ProtocolVersion } from "./constants.ts";
import {
  defaultCrypto,
  schemeKeyType,
  type CryptoProvider,
  type Certificate,
  type EcdhGroup,
  type EcdhKeyPair,
  type SecretKey,
} from "../crypto/index.ts";
import { NO_STEP, type FlightItem, type HandshakeDriver, type HandshakeStep } from "./connection.ts";
import { answerConnectionId } from "./connection-id.ts";
import { alertError, unexpectedMessage, type DtlsError } from "./errors.ts";
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
  decodeCertificateVerify,
  decodeEcdhePskClientKeyExchange,
  encodeCertificateRequest,
  decodeEcdhPublic,
  encodeCertificateList,
  encodeEcdhParams,
  encodeSignedEcdhParams,
  decodeFinished,
  decodePskIdentity,
  encodeEcdhePskServerParams,
  encodeNewSessionTicket,
  encodePskIdentity,
  encodeServerHello,
  EC_POINT_FORMATS_UNCOMPRESSED,
  EMPTY,
  findExtension,
  type ClientHello,
  type Extension,
} from "./messages.ts";
import { chooseServerParameters, VERIFIABLE_SCHEMES, type ServerChoice } from "./negotiation.ts";
import type { ClientAuthMode, ClientVerdict, ConnectionConfig, ConnectionInfo, ServerCredential, ServerPskConfig } from "./options.ts";
import type { HandshakeMessage } from "./reassembly.ts";
import { RecordProtection } from "./record-protection.ts";
import {
  openTicket,
  pskDigest,
  samePsk,
  sealTicket,
  type PeerCertificateInfo,
  type ResumptionRefusal,
  type ServerResumption,
  type ServerSessionState,
} from "./resumption.ts";
import type { TicketKey } from "./resumption-options.ts";
import { usesEcdhe, usesPsk, type CipherSuite } from "./suites.ts";

/** A certificate suite's key exchange: our ephemeral ECDH key (signed in the ServerKeyExchange). */
interface CertificateKeyExchange {
  readonly kind: "certificate";
  readonly ecdh: EcdhKeyPair;
}

/** How the premaster secret comes about: our ephemeral ECDH key wherever the suite has one. */
type KeyExchange = { readonly kind: "psk" } | { readonly kind: "ecdhe_psk"; readonly ecdh: EcdhKeyPair } | CertificateKeyExchange;

interface Negotiated {
  readonly suite: CipherSuite;
  readonly ems: boolean;
  readonly group: EcdhGroup | undefined;
  readonly clientRandom: Uint8Array;
  readonly serverRandom: Uint8Array;
  readonly transcript: Transcript;
  /** What the session will be resumable by: a ticket sealed with this key (the client offered the extension), else the cached session ID. */
  readonly resumable: Resumable;
}

/** How a full handshake's session is made resumable (once it is established). */
type Resumable =
  { readonly kind: "none" } | { readonly kind: "ticket"; readonly key: TicketKey } | { readonly kind: "session_id"; readonly id: Uint8Array };

/** The client's certificate: not asked for, an empty list, or received (with its identity). */
type ClientCertificate =
  { readonly kind: "none" } | { readonly kind: "empty" } | { readonly kind: "received"; readonly leaf: Certificate; readonly identity: string };

type ServerState =
  /** Made, not started: the cookie-checked ClientHello (message_seq, body) is still to be answered. */
  | {
      readonly kind: "start";
      readonly hello: ClientHello;
      readonly helloMessageSeq: number;
      readonly helloBody: Uint8Array;
      readonly counters: ResumptionCounters;
      readonly cid: string | undefined;
    }
  /** We sent a CertificateRequest: the client's Certificate (possibly empty) is next. */
  | ({ readonly kind: "await_client_certificate"; readonly kx: CertificateKeyExchange } & Negotiated)
  | ({ readonly kind: "await_client_key_exchange"; readonly kx: KeyExchange; readonly client: ClientCertificate } & Negotiated)
  | ({
      readonly kind: "await_certificate_verify";
      readonly client: Extract<ClientCertificate, { kind: "received" }>;
      readonly master: SecretKey;
    } & Negotiated)
  | ({
      readonly kind: "await_finished";
      readonly identity: string;
      readonly peer: Certificate | undefined;
      readonly master: SecretKey;
      /** SHA-256 of the PSK for PSK suites (goes into the ticket), else empty. */
      readonly pskDigest: Uint8Array;
    } & Negotiated)
  | {
      /** Abbreviated handshake: our CCS and Finished are out, the client's Finished is next. */
      readonly kind: "await_resumed_finished";
      readonly suite: CipherSuite;
      readonly master: SecretKey;
      readonly transcript: Transcript;
      readonly info: ConnectionInfo;
    }
  | { readonly kind: "done" };

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** What the server authenticates with: PSKs, certificate chains, or both. */
export interface ServerAuth {
  readonly psk: ServerPskConfig | undefined;
  readonly certificates: readonly ServerCredential[];
  readonly legacySha1Signatures: boolean;
  /** Client certificates with certificate suites: not asked for, asked for, or required. */
  readonly clientAuth: ClientAuthMode;
  /** DER subject names of the CAs we accept client certificates from (sent in CertificateRequest). */
  readonly clientCaNames: readonly Uint8Array[];
  /** Verifies a client chain and names the device; required when clientAuth is not "none". */
  readonly verifyClient: ((chain: readonly Certificate[]) => ClientVerdict) | undefined;
  /** Asked again when a session with a client certificate is resumed: an error refuses the resumption. */
  readonly reauthorizeClient: ((identity: string, certificate: PeerCertificateInfo) => DtlsError | undefined) | undefined;
  /** Tickets, the session-ID cache and their limits; undefined: every handshake is full. */
  readonly resumption: ServerResumption | undefined;
}

/** Where resumption refusals are counted (the server's stats). */
export interface ResumptionCounters {
  readonly resumptionsRefused: Record<ResumptionRefusal, number>;
}

/** A session a ClientHello may resume, and how it was found. */
interface Resumption {
  readonly state: ServerSessionState;
  /** The session's suite (configured here and offered by the client). */
  readonly suite: CipherSuite;
  /** Renew the ticket (sealed with a key that is no longer current, or past half its lifetime); false for session IDs. */
  readonly renewWith: TicketKey | undefined;
}

export class ServerHandshake implements HandshakeDriver {
  readonly startedAt: number;
  private readonly config: ConnectionConfig;
  /** The endpoint's crypto provider (config.crypto, or defaultCrypto). */
  private readonly crypto: CryptoProvider;
  private readonly psk: ServerPskConfig | undefined;
  private readonly auth: ServerAuth;
  private state: ServerState;
  private nextSendSeq: number;

  /**
   * A driver for the cookie-verified ClientHello (`helloMessageSeq`,
   * `helloBody`), to answer at `now` when the connection starts it. `cid` is
   * the Connection ID we hand out (latin1) if the client offers the extension
   * (full and abbreviated handshakes alike); resumption refusals are counted
   * in `counters`.
   */
  constructor(
    config: ConnectionConfig,
    auth: ServerAuth,
    hello: ClientHello,
    helloMessageSeq: number,
    helloBody: Uint8Array,
    now: number,
    counters: ResumptionCounters,
    cid?: string,
  ) {
    this.startedAt = now;
    this.config = config;
    this.crypto = config.crypto ?? defaultCrypto;
    this.psk = auth.psk;
    this.auth = auth;
    this.nextSendSeq = helloMessageSeq;
    this.state = { kind: "start", hello, helloMessageSeq, helloBody, counters, cid };
  }

  /**
   * The answer to the ClientHello: the server's flight (abbreviated when it
   * resumes a session), the CIDs, and for a resumption the keys. Throws
   * DtlsError when nothing can be negotiated (the connection fails with it).
   */
  start(): HandshakeStep {
    const s = this.state;
    if (s.kind !== "start") throw alertError("internal_error", "the server handshake was started twice");
    const { hello, helloMessageSeq, helloBody, counters } = s;
    const config = this.config;
    const auth = this.auth;
    const offered = chooseServerParameters(
      hello,
      config.suites,
      config.requireExtendedMasterSecret,
      { psk: auth.psk !== undefined, certificates: auth.certificates, legacySha1: auth.legacySha1Signatures },
      config.groups,
    );
    // RFC 9146: our CID answer goes into the ServerHello of either handshake
    const connectionId = answerConnectionId(offered.extensions, hello.extensions, s.cid);
    const connectionIds = connectionId.ids;
    const choice: ServerChoice = { ...offered, extensions: connectionId.extensions };
    const transcript = new Transcript(this.crypto.digest);
    transcript.add(encodeHandshake(HandshakeType.client_hello, helloMessageSeq, helloBody));
    const res = auth.resumption;
    const wallNow = res?.wallClock() ?? 0;
    const found = res === undefined ? undefined : this.findSession(res, hello, choice.extendedMasterSecret, wallNow, counters);
    if (res !== undefined && found !== undefined) return { ...this.resume(res, found, hello, choice, transcript, wallNow), connectionIds };
    const serverRandom = this.crypto.random.bytes(32);
    const flight: FlightItem[] = [];
    const add = (msgType: number, body: Uint8Array): void => {
      const messageSeq = this.nextSendSeq++;
      flight.push({ kind: "handshake", epoch: 0, msgType, messageSeq, body });
      transcript.add(encodeHandshake(msgType, messageSeq, body));
    };
    // RFC 5077 3.2: a ticket when the client offered the extension, announced by an empty one in the ServerHello
    const ticketKey =
      res !== undefined && findExtension(hello.extensions, ExtensionType.session_ticket) !== undefined ? res.ticketKeys.current(wallNow) : undefined;
    const resumable: Resumable =
      ticketKey !== undefined
        ? { kind: "ticket", key: ticketKey }
        : res?.cache !== undefined
          ? { kind: "session_id", id: this.crypto.random.bytes(32) }
          : { kind: "none" };
    add(
      HandshakeType.server_hello,
      encodeServerHello({
        version: ProtocolVersion.DTLS1_2,
        random: serverRandom,
        sessionId: resumable.kind === "session_id" ? resumable.id : EMPTY,
        cipherSuite: choice.suite.id,
        compressionMethod: 0,
        extensions: ticketKey === undefined ? choice.extensions : [...(choice.extensions ?? []), EMPTY_SESSION_TICKET],
      }),
    );
    const negotiated: Negotiated = {
      suite: choice.suite,
      group: choice.group?.name,
      ems: choice.extendedMasterSecret,
      clientRandom: copyBytes(hello.random),
      serverRandom,
      transcript,
      resumable,
    };
    const hint = auth.psk?.hint === undefined ? undefined : new TextEncoder().encode(auth.psk.hint);
    if (choice.credential !== undefined && choice.group !== undefined && choice.signatureScheme !== undefined) {
      // ECDHE_ECDSA / ECDHE_RSA: our chain, then the ECDH parameters signed with its key (RFC 8422 5.4).
      add(HandshakeType.certificate, encodeCertificateList(choice.credential.chain.map((c) => c.der)));
      const ecdh = this.crypto.ecdh.generate(choice.group.name);
      const params = encodeEcdhParams({ group: choice.group.id, publicKey: ecdh.publicKey });
      const signature = choice.credential.signer.sign(choice.signatureScheme, concatBytes([hello.random, serverRandom, params]));
      add(HandshakeType.server_key_exchange, encodeSignedEcdhParams(params, choice.signatureScheme, signature));
      const kx: CertificateKeyExchange = { kind: "certificate", ecdh };
      if (auth.clientAuth !== "none") {
        add(
          HandshakeType.certificate_request,
          encodeCertificateRequest({
            certificateTypes: new Uint8Array([ClientCertificateType.ecdsa_sign, ClientCertificateType.rsa_sign]),
            signatureAlgorithms: VERIFIABLE_SCHEMES,
            authorities: auth.clientCaNames,
          }),
        );
        this.state = { ...negotiated, kind: "await_client_certificate", kx };
      } else {
        this.state = { ...negotiated, kind: "await_client_key_exchange", kx, client: NO_CLIENT_CERTIFICATE };
      }
    } else if (choice.group !== undefined) {
      const ecdh = this.crypto.ecdh.generate(choice.group.name);
      add(HandshakeType.server_key_exchange, encodeEcdhePskServerParams({ hint: hint ?? EMPTY, group: choice.group.id, publicKey: ecdh.publicKey }));
      this.state = { ...negotiated, kind: "await_client_key_exchange", kx: { kind: "ecdhe_psk", ecdh }, client: NO_CLIENT_CERTIFICATE };
    } else {
      if (hint !== undefined) add(HandshakeType.server_key_exchange, encodePskIdentity(hint));
      this.state = { ...negotiated, kind: "await_client_key_exchange", kx: PSK_KEY_EXCHANGE, client: NO_CLIENT_CERTIFICATE };
    }
    add(HandshakeType.server_hello_done, EMPTY);
    return { connectionIds, flight: { items: flight, role: "expects_reply" } };
  }

  /**
   * The session the hello's ticket (first) or session ID names, if it may be
   * resumed now; every refusal is counted and means a full handshake.
   */
  private findSession(
    res: ServerResumption,
    hello: ClientHello,
    ems: boolean,
    wallNow: number,
    counters: ResumptionCounters,
  ): Resumption | undefined {
    const ticket = findExtension(hello.extensions, ExtensionType.session_ticket)?.data;
    let state: ServerSessionState | ResumptionRefusal;
    let fromCache = false;
    if (ticket !== undefined && ticket.length > 0) {
      state = openTicket(this.crypto, res.ticketKeys, ticket, wallNow);
    } else if (hello.sessionId.length > 0 && res.cache !== undefined) {
      state = res.cache.get(hello.sessionId) ?? "unknown_session_id";
      fromCache = true;
    } else {
      return undefined;
    }
    if (typeof state !== "string") {
      const suite = this.refusal(res, state, hello, ems, wallNow);
      if (typeof suite !== "string") {
        let renewWith: TicketKey | undefined;
        if (ticket !== undefined && !fromCache) {
          const current = res.ticketKeys.current(wallNow);
          // renewed when its key is no longer the one sealing, or past half its life (the session's age stays)
          const stale =
            current !== undefined &&
            (!bytesEqual(current.name, ticket.subarray(0, current.name.length)) || wallNow - state.issuedAt > res.ticketLifetimeMs / 2);
          renewWith = stale ? current : undefined;
        }
        return { state, suite, renewWith };
      }
      if (fromCache) res.cache?.delete(hello.sessionId);
      state = suite;
    }
    counters.resumptionsRefused[state]++;
    return undefined;
  }

  /** The session's suite if this hello may resume it now, else why not (limits, suite, EMS, authorization again). */
  private refusal(res: ServerResumption, s: ServerSessionState, hello: ClientHello, ems: boolean, wallNow: number): CipherSuite | ResumptionRefusal {
    if (wallNow - s.issuedAt > res.ticketLifetimeMs || wallNow < s.issuedAt - 60_000) return "ticket_expired";
    if (wallNow - s.createdAt > res.maxSessionAgeMs) return "session_too_old";
    const suite = this.config.suites.find((c) => c.id === s.suite);
    if (suite === undefined || !hello.cipherSuites.includes(s.suite)) return "suite_not_offered";
    // RFC 7627 5.3: a session with EMS resumes only with EMS offered, one without never when it is
    if (s.ems !== ems) return "ems_mismatch";
    if (usesPsk(suite)) {
      const key = this.psk?.lookup(s.identity);
      if (key === undefined) return "psk_unknown";
      return samePsk(this.crypto.digest, s, key) ? suite : "psk_changed";
    }
    if (s.peer !== undefined) {
      if (this.auth.clientAuth === "none") return "client_refused";
      return this.auth.reauthorizeClient?.(s.identity, s.peer) === undefined ? suite : "client_refused";
    }
    return this.auth.clientAuth === "require" ? "client_refused" : suite;
  }

  /**
   * The abbreviated handshake's flight: ServerHello, [NewSessionTicket],
   * ChangeCipherSpec, Finished, with the keys it needs (our Finished is
   * protected). Ours is the flight that awaits an answer here: resent until
   * the client's Finished comes.
   */
  private resume(
    res: ServerResumption,
    found: Resumption,
    hello: ClientHello,
    choice: ServerChoice,
    transcript: Transcript,
    wallNow: number,
  ): HandshakeStep {
    const { state: s, suite } = found;
    const serverRandom = this.crypto.random.bytes(32);
    const flight: FlightItem[] = [];
    const add = (msgType: number, body: Uint8Array, epoch: 0 | 1): void => {
      const messageSeq = this.nextSendSeq++;
      flight.push({ kind: "handshake", epoch, msgType, messageSeq, body });
      transcript.add(encodeHandshake(msgType, messageSeq, body));
    };
    add(
      HandshakeType.server_hello,
      encodeServerHello({
        version: ProtocolVersion.DTLS1_2,
        random: serverRandom,
        sessionId: hello.sessionId,
        cipherSuite: suite.id,
        compressionMethod: 0,
        extensions: resumedExtensions(choice, hello, suite, found.renewWith !== undefined),
      }),
      0,
    );
    if (found.renewWith !== undefined) {
      add(HandshakeType.new_session_ticket, this.newTicket(res, found.renewWith, { ...s, issuedAt: wallNow }), 0);
    }
    const master = this.crypto.digest.secretKey(s.master);
    const keys = keyBlock(this.crypto.digest, suite, master, hello.random, serverRandom);
    const verify = finishedVerifyData(this.crypto.digest, suite.prfHash, master, "server finished", transcript.hash(suite.prfHash));
    flight.push({ kind: "ccs" });
    add(HandshakeType.finished, verify, 1);
    const info: { -readonly [K in keyof ConnectionInfo]: ConnectionInfo[K] } = {
      identity: s.identity,
      suite: suite.name,
      extendedMasterSecret: s.ems,
      resumed: true,
    };
    if (s.group !== undefined) info.group = s.group;
    if (s.peer !== undefined) info.peerCertificate = s.peer;
    this.state = { kind: "await_resumed_finished", suite, master, transcript, info };
    return {
      keys: {
        read: new RecordProtection(suite, keys.clientKey, keys.clientIv, this.crypto.aead),
        write: new RecordProtection(suite, keys.serverKey, keys.serverIv, this.crypto.aead),
      },
      flight: { items: flight, role: "expects_reply" },
    };
  }

  private newTicket(res: ServerResumption, key: TicketKey, state: ServerSessionState): Uint8Array {
    return encodeNewSessionTicket({ lifetimeHint: Math.floor(res.ticketLifetimeMs / 1000), ticket: sealTicket(this.crypto, key, state) });
  }

  onMessage(msg: HandshakeMessage): HandshakeStep {
    const s = this.state;
    switch (s.kind) {
      case "start":
        throw alertError("internal_error", "a handshake message reached a server handshake that was not started");
      case "await_client_certificate":
        if (msg.msgType !== HandshakeType.certificate) throw unexpectedMessage(msg.msgType, "Certificate (we asked for one)");
        this.state = { ...s, kind: "await_client_key_exchange", client: this.onClientCertificate(s, msg) };
        return NO_STEP;
      case "await_client_key_exchange":
        if (msg.msgType !== HandshakeType.client_key_exchange) throw unexpectedMessage(msg.msgType, "ClientKeyExchange");
        return this.onClientKeyExchange(s, msg);
      case "await_certificate_verify":
        if (msg.msgType !== HandshakeType.certificate_verify) throw unexpectedMessage(msg.msgType, "CertificateVerify");
        this.onCertificateVerify(s, msg);
        return NO_STEP;
      case "await_finished":
        if (msg.msgType !== HandshakeType.finished) throw unexpectedMessage(msg.msgType, "Finished");
        if (msg.epoch !== 1) throw alertError("unexpected_message", "Finished arrived unprotected");
        return this.onFinished(s, msg);
      case "await_resumed_finished":
        if (msg.msgType !== HandshakeType.finished) throw unexpectedMessage(msg.msgType, "Finished");
        if (msg.epoch !== 1) throw alertError("unexpected_message", "Finished arrived unprotected");
        verifyPeerFinished(this.crypto.digest, s.suite.prfHash, s.master, "client finished", s.transcript, decodeFinished(msg.body));
        this.state = DONE;
        return { established: s.info };
      case "done":
        return NO_STEP;
    }
  }

  /** The client's ClientKeyExchange: the premaster secret by key exchange, the PSK identity for PSK suites; then the keys. */
  private onClientKeyExchange(s: Extract<ServerState, { kind: "await_client_key_exchange" }>, msg: HandshakeMessage): HandshakeStep {
    const kx = s.kx;
    if (kx.kind === "certificate") {
      // Certificate suite: the client is named by its certificate (or anonymous), not here.
      const z = kx.ecdh.derive(decodeEcdhPublic(msg.body));
      if (z === null) throw alertError("illegal_parameter", "the client's ECDH public key is invalid");
      return this.deriveKeys(s, msg, "", z, EMPTY);
    }
    let raw: Uint8Array;
    let premasterOf: (psk: Uint8Array) => Uint8Array;
    if (kx.kind === "ecdhe_psk") {
      const cke = decodeEcdhePskClientKeyExchange(msg.body);
      const z = kx.ecdh.derive(cke.publicKey);
      if (z === null) throw alertError("illegal_parameter", "the client's ECDH public key is invalid");
      raw = cke.identity;
      premasterOf = (psk) => ecdhePskPremasterSecret(z, psk);
    } else {
      raw = decodePskIdentity(msg.body, "psk_identity");
      premasterOf = pskPremasterSecret;
    }
    let identity: string;
    try {
      identity = utf8.decode(raw);
    } catch {
      throw alertError("decode_error", "PSK identity is not UTF-8");
    }
    const key = this.psk?.lookup(identity);
    if (key === undefined) throw alertError("unknown_psk_identity", `unknown PSK identity ${JSON.stringify(identity)}`);
    return this.deriveKeys(s, msg, identity, premasterOf(key), s.resumable.kind === "none" ? EMPTY : pskDigest(this.crypto.digest, key));
  }

  /** The client's Certificate: empty (allowed unless required) or a chain the policy accepts; into the transcript. */
  private onClientCertificate(s: Extract<ServerState, { kind: "await_client_certificate" }>, msg: HandshakeMessage): ClientCertificate {
    const ders = decodeCertificateList(msg.body);
    let client: ClientCertificate;
    if (ders.length === 0) {
      if (this.auth.clientAuth === "require") throw alertError("handshake_failure", "a client certificate is required and the client sent none");
      client = EMPTY_CLIENT_CERTIFICATE;
    } else {
      let chain: Certificate[];
      try {
        chain = ders.map((der) => this.crypto.x509.parse(der));
      } catch (e) {
        throw alertError("bad_certificate", `the client's certificate does not parse: ${errorMessage(e)}`);
      }
      const verifyClient = this.auth.verifyClient;
      if (verifyClient === undefined) throw alertError("internal_error", "a client certificate was asked for and nothing verifies it");
      const verdict = verifyClient(chain);
      if (verdict instanceof Error) throw verdict;
      const leaf = chain[0];
      if (leaf === undefined) throw alertError("internal_error", "a non-empty certificate list without a leaf");
      client = { kind: "received", leaf, identity: verdict.identity };
    }
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    return client;
  }

  /** CertificateVerify: the client proves it holds its certificate's key (RFC 5246 7.4.8). */
  private onCertificateVerify(s: Extract<ServerState, { kind: "await_certificate_verify" }>, msg: HandshakeMessage): void {
    const cv = decodeCertificateVerify(msg.body);
    const leaf = s.client.leaf;
    if (!VERIFIABLE_SCHEMES.includes(cv.scheme) || schemeKeyType(cv.scheme) !== leaf.keyType) {
      throw alertError(
        "illegal_parameter",
        `CertificateVerify uses scheme 0x${cv.scheme.toString(16)}, which we did not offer or which does not fit a ${leaf.keyType} key`,
      );
    }
    if (!leaf.verifySignature(cv.scheme, s.transcript.messages(), cv.signature)) {
      throw alertError("decrypt_error", "the client's CertificateVerify signature does not verify");
    }
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    const { client: _verified, ...rest } = s;
    this.state = { ...rest, kind: "await_finished", identity: s.client.identity, peer: leaf, pskDigest: EMPTY };
  }

  /**
   * The master secret and the epoch-1 keys, once the ClientKeyExchange is in
   * the transcript. The next state is set before the step goes back: the
   * connection installs the read keys last, which may replay an early
   * Finished into onMessage. Our ECDH key is left behind here.
   */
  private deriveKeys(
    s: Extract<ServerState, { kind: "await_client_key_exchange" }>,
    msg: HandshakeMessage,
    identity: string,
    premaster: Uint8Array,
    digest: Uint8Array,
  ): HandshakeStep {
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    const hashAlg = s.suite.prfHash;
    const master = this.crypto.digest.secretKey(
      masterSecret(this.crypto.digest, hashAlg, premaster, s.clientRandom, s.serverRandom, s.ems ? s.transcript.hash(hashAlg) : undefined),
    );
    const keys = keyBlock(this.crypto.digest, s.suite, master, s.clientRandom, s.serverRandom);
    const { kx: _spent, client, ...negotiated } = s;
    if (client.kind === "received") {
      this.state = { ...negotiated, kind: "await_certificate_verify", client, master };
    } else {
      this.state = { ...negotiated, kind: "await_finished", identity, peer: undefined, master, pskDigest: digest };
    }
    return {
      keys: {
        read: new RecordProtection(s.suite, keys.clientKey, keys.clientIv, this.crypto.aead),
        write: new RecordProtection(s.suite, keys.serverKey, keys.serverIv, this.crypto.aead),
      },
    };
  }

  /** The client's Finished: then our [NewSessionTicket], ChangeCipherSpec and Finished, the handshake's last flight. */
  private onFinished(s: Extract<ServerState, { kind: "await_finished" }>, msg: HandshakeMessage): HandshakeStep {
    const hashAlg = s.suite.prfHash;
    verifyPeerFinished(this.crypto.digest, hashAlg, s.master, "client finished", s.transcript, decodeFinished(msg.body));
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    // kept for the session's life: the optional fields only when they have a value (8 bytes each otherwise)
    const info: { -readonly [K in keyof ConnectionInfo]: ConnectionInfo[K] } = {
      identity: s.identity,
      suite: s.suite.name,
      extendedMasterSecret: s.ems,
      resumed: false,
    };
    if (s.group !== undefined) info.group = s.group;
    if (s.peer !== undefined) info.peerCertificate = { subject: s.peer.subject, fingerprint256: s.peer.fingerprint256 };
    const flight: FlightItem[] = [];
    const res = this.auth.resumption;
    if (res !== undefined && s.resumable.kind !== "none") {
      const wallNow = res.wallClock();
      const state: ServerSessionState = {
        suite: s.suite.id,
        master: this.crypto.digest.secretKeyBytes(s.master),
        ems: s.ems,
        group: s.group,
        identity: s.identity,
        peer: info.peerCertificate,
        createdAt: wallNow,
        issuedAt: wallNow,
        pskDigest: s.pskDigest,
      };
      if (s.resumable.kind === "ticket") {
        // RFC 5077 3.3: the NewSessionTicket before our ChangeCipherSpec, in the Finished's transcript
        const body = this.newTicket(res, s.resumable.key, state);
        const messageSeq = this.nextSendSeq++;
        flight.push({ kind: "handshake", epoch: 0, msgType: HandshakeType.new_session_ticket, messageSeq, body });
        s.transcript.add(encodeHandshake(HandshakeType.new_session_ticket, messageSeq, body));
      } else {
        res.cache?.set(s.resumable.id, state);
      }
    }
    const verify = finishedVerifyData(this.crypto.digest, hashAlg, s.master, "server finished", s.transcript.hash(hashAlg));
    this.state = DONE;
    flight.push({ kind: "ccs" }, { kind: "handshake", epoch: 1, msgType: HandshakeType.finished, messageSeq: this.nextSendSeq++, body: verify });
    // our last flight: kept to answer the client's retransmissions until it sends protected data
    return { flight: { items: flight, role: "last" }, established: info };
  }
}

const DONE: ServerState = { kind: "done" };
const PSK_KEY_EXCHANGE: KeyExchange = { kind: "psk" };
const NO_CLIENT_CERTIFICATE: ClientCertificate = { kind: "none" };
const EMPTY_CLIENT_CERTIFICATE: ClientCertificate = { kind: "empty" };

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const EMPTY_SESSION_TICKET: Extension = { type: ExtensionType.session_ticket, data: EMPTY };

/**
 * The ServerHello extensions of an abbreviated handshake: the full
 * handshake's echoes (EMS, renegotiation_info, and what else the client
 * offered), ec_point_formats only if the resumed suite is an ECDHE one, and
 * an empty SessionTicket when a renewed ticket follows.
 */
function resumedExtensions(choice: ServerChoice, hello: ClientHello, suite: CipherSuite, renew: boolean): Extension[] | undefined {
  const out = (choice.extensions ?? []).filter((e) => e.type !== ExtensionType.ec_point_formats);
  if (usesEcdhe(suite) && findExtension(hello.extensions, ExtensionType.ec_point_formats) !== undefined) {
    out.push({ type: ExtensionType.ec_point_formats, data: EC_POINT_FORMATS_UNCOMPRESSED });
  }
  if (renew) out.push(EMPTY_SESSION_TICKET);
  return out.length > 0 ? out : undefined;
}
