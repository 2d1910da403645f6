/**
 * Client side of the PSK handshake (RFC 6347 4.2.1, RFC 4279):
 *
 *   ClientHello                        -->
 *                                      <--  HelloVerifyRequest (optional)
 *   ClientHello(cookie)                -->
 *                                      <--  ServerHello, [ServerKeyExchange], ServerHelloDone
 *   ClientKeyExchange, CCS, Finished   -->
 *                                      <--  CCS, Finished
 *
 * We always offer extended_master_secret and renegotiation_info. Keys exist
 * only in the state after ServerHelloDone.
 */
import { copyBytes } from "../util/bytes.ts";
import { ExtensionType, HandshakeType, ProtocolVersion } from "./constants.ts";
import { generateEcdh, randomBytes, type SecretKey } from "./crypto.ts";
import type { Connection, HandshakeDriver } from "./connection.ts";
import { alertError, unexpectedMessage } from "./errors.ts";
import { encodeHandshake } from "./handshake-codec.ts";
import {
  ecdhePskPremasterSecret,
  finishedVerifyData,
  keyBlock,
  masterSecret,
  pskPremasterSecret,
  secretKey,
  Transcript,
  verifyPeerFinished,
} from "./key-schedule.ts";
import {
  decodeEcdhePskServerParams,
  decodeEcPointFormats,
  decodeEmpty,
  decodeFinished,
  decodeHelloVerifyRequest,
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
import { GROUPS, groupById } from "./negotiation.ts";
import type { ClientPskConfig } from "./options.ts";
import type { HandshakeMessage } from "./reassembly.ts";
import { RecordProtection } from "./record-protection.ts";
import type { CipherSuite } from "./suites.ts";

interface Hello {
  readonly hello: ClientHello;
  readonly transcript: Transcript;
}

interface Negotiated {
  readonly suite: CipherSuite;
  readonly ems: boolean;
  readonly clientRandom: Uint8Array;
  readonly serverRandom: Uint8Array;
  readonly transcript: Transcript;
}

/** What the ServerKeyExchange gave: the hint, and for ECDHE_PSK the shared secret and our public key. */
interface ServerKeyExchange {
  readonly hint: Uint8Array;
  readonly ecdh: { readonly z: Uint8Array; readonly publicKey: Uint8Array } | undefined;
}

type ClientState =
  | ({ readonly kind: "await_server_hello"; readonly cookieRounds: number } & Hello)
  | ({ readonly kind: "await_server_hello_done"; readonly ske: ServerKeyExchange | undefined } & Negotiated)
  | ({ readonly kind: "await_finished"; readonly master: SecretKey } & Negotiated)
  | { readonly kind: "done" };

/** A server that keeps sending HelloVerifyRequests is refused after this many. */
const MAX_COOKIE_ROUNDS = 4;

export class ClientHandshake implements HandshakeDriver {
  private readonly host: Connection;
  private readonly psk: ClientPskConfig;
  private state: ClientState;
  private nextSendSeq = 0;

  constructor(host: Connection, psk: ClientPskConfig, now: number) {
    this.host = host;
    this.psk = psk;
    const extensions: Extension[] = [
      { type: ExtensionType.extended_master_secret, data: EMPTY },
      { type: ExtensionType.renegotiation_info, data: EMPTY_RENEGOTIATION_INFO },
    ];
    if (host.config.suites.some((s) => s.keyExchange !== "psk")) {
      extensions.push({ type: ExtensionType.supported_groups, data: encodeSupportedGroups(GROUPS.map((g) => g.id)) });
      extensions.push({ type: ExtensionType.ec_point_formats, data: EC_POINT_FORMATS_UNCOMPRESSED });
    }
    const hello: ClientHello = {
      version: ProtocolVersion.DTLS1_2,
      random: randomBytes(32),
      sessionId: EMPTY,
      cookie: EMPTY,
      cipherSuites: host.config.suites.map((s) => s.id),
      compressionMethods: new Uint8Array([0]),
      extensions,
    };
    this.state = { kind: "await_server_hello", cookieRounds: 0, ...this.sendHello(hello, now) };
  }

  private sendHello(hello: ClientHello, now: number): Hello {
    const body = encodeClientHello(hello);
    const messageSeq = this.nextSendSeq++;
    const transcript = new Transcript();
    transcript.add(encodeHandshake(HandshakeType.client_hello, messageSeq, body));
    this.host.sendFlight([{ kind: "handshake", epoch: 0, msgType: HandshakeType.client_hello, messageSeq, body }], now, true);
    return { hello, transcript };
  }

  onMessage(msg: HandshakeMessage, now: number): void {
    const s = this.state;
    switch (s.kind) {
      case "await_server_hello":
        if (msg.msgType === HandshakeType.hello_verify_request) return this.onHelloVerifyRequest(s, msg, now);
        if (msg.msgType === HandshakeType.server_hello) return this.onServerHello(s, msg);
        throw unexpectedMessage(msg.msgType, "ServerHello or HelloVerifyRequest");
      case "await_server_hello_done":
        if (msg.msgType === HandshakeType.server_key_exchange && s.ske === undefined) {
          s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
          this.state = { ...s, ske: this.onServerKeyExchange(s.suite, msg.body) };
          return;
        }
        if (msg.msgType === HandshakeType.server_hello_done) return this.onServerHelloDone(s, msg, now);
        if (msg.msgType === HandshakeType.certificate || msg.msgType === HandshakeType.certificate_request) {
          throw alertError("handshake_failure", "server asks for certificates; this client speaks PSK only");
        }
        throw unexpectedMessage(msg.msgType, "ServerKeyExchange or ServerHelloDone");
      case "await_finished":
        if (msg.msgType !== HandshakeType.finished) throw unexpectedMessage(msg.msgType, "Finished");
        if (msg.epoch !== 1) throw alertError("unexpected_message", "Finished arrived unprotected");
        return this.onFinished(s, msg, now);
      case "done":
        return;
    }
  }

  private onHelloVerifyRequest(s: Extract<ClientState, { kind: "await_server_hello" }>, msg: HandshakeMessage, now: number): void {
    const hvr = decodeHelloVerifyRequest(msg.body);
    if (s.cookieRounds >= MAX_COOKIE_ROUNDS) throw alertError("handshake_failure", "server keeps sending HelloVerifyRequest");
    const hello = { ...s.hello, cookie: copyBytes(hvr.cookie) };
    // RFC 6347 4.2.1: the first ClientHello and the HelloVerifyRequest stay out of the transcript.
    this.state = { kind: "await_server_hello", cookieRounds: s.cookieRounds + 1, ...this.sendHello(hello, now) };
  }

  private onServerHello(s: Extract<ClientState, { kind: "await_server_hello" }>, msg: HandshakeMessage): void {
    const sh = decodeServerHello(msg.body);
    if (sh.version !== ProtocolVersion.DTLS1_2) {
      throw alertError("protocol_version", `server chose version 0x${sh.version.toString(16)}, DTLS 1.2 is required`);
    }
    const suite = this.host.config.suites.find((c) => c.id === sh.cipherSuite);
    if (suite === undefined) throw alertError("illegal_parameter", `server chose cipher suite 0x${sh.cipherSuite.toString(16)} we did not offer`);
    if (sh.compressionMethod !== 0) throw alertError("illegal_parameter", "server chose a compression method");
    let ems = false;
    for (const e of sh.extensions ?? []) {
      if (e.type === ExtensionType.extended_master_secret) {
        if (e.data.length !== 0) throw alertError("decode_error", "extended_master_secret must be empty");
        ems = true;
      } else if (e.type === ExtensionType.ec_point_formats && suite.keyExchange !== "psk") {
        if (!decodeEcPointFormats(e.data).includes(0)) throw alertError("illegal_parameter", "server does not accept uncompressed points");
      } else if (e.type === ExtensionType.renegotiation_info) {
        if (decodeRenegotiationInfo(e.data).length !== 0) throw alertError("handshake_failure", "renegotiation_info must be empty");
      } else {
        throw alertError("unsupported_extension", `server sent extension ${e.type} we did not offer`);
      }
    }
    if (this.host.config.requireExtendedMasterSecret && !ems) {
      throw alertError("handshake_failure", "server does not support extended master secret, which is required");
    }
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    this.state = {
      kind: "await_server_hello_done",
      suite,
      ems,
      clientRandom: s.hello.random,
      serverRandom: copyBytes(sh.random),
      transcript: s.transcript,
      ske: undefined,
    };
  }

  private onServerKeyExchange(suite: CipherSuite, body: Uint8Array): ServerKeyExchange {
    if (suite.keyExchange === "psk") return { hint: decodePskIdentity(body, "psk_identity_hint"), ecdh: undefined };
    const params = decodeEcdhePskServerParams(body);
    const group = groupById(params.group);
    if (group === undefined) throw alertError("illegal_parameter", `server chose group ${params.group} we did not offer`);
    const ours = generateEcdh(group);
    const z = ours.derive(params.publicKey);
    if (z === null) throw alertError("illegal_parameter", "the server's ECDH public key is invalid");
    return { hint: params.hint, ecdh: { z, publicKey: ours.publicKey } };
  }

  private onServerHelloDone(s: Extract<ClientState, { kind: "await_server_hello_done" }>, msg: HandshakeMessage, now: number): void {
    decodeEmpty(msg.body, "ServerHelloDone");
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    const hashAlg = s.suite.prfHash;
    const ecdh = s.ske?.ecdh;
    if (s.suite.keyExchange !== "psk" && ecdh === undefined) {
      throw alertError("unexpected_message", "ServerHelloDone without the ECDHE ServerKeyExchange");
    }
    const ckeSeq = this.nextSendSeq++;
    const identity = new TextEncoder().encode(this.psk.identity);
    const cke = ecdh ? encodeEcdhePskClientKeyExchange({ identity, publicKey: ecdh.publicKey }) : encodePskIdentity(identity);
    s.transcript.add(encodeHandshake(HandshakeType.client_key_exchange, ckeSeq, cke));
    const premaster = ecdh ? ecdhePskPremasterSecret(ecdh.z, this.psk.key) : pskPremasterSecret(this.psk.key);
    const master = secretKey(masterSecret(hashAlg, premaster, s.clientRandom, s.serverRandom, s.ems ? s.transcript.hash(hashAlg) : undefined));
    const keys = keyBlock(s.suite, master, s.clientRandom, s.serverRandom);
    const verify = finishedVerifyData(hashAlg, master, "client finished", s.transcript.hash(hashAlg));
    const finSeq = this.nextSendSeq++;
    s.transcript.add(encodeHandshake(HandshakeType.finished, finSeq, verify));
    this.state = { ...s, kind: "await_finished", master };
    this.host.installKeys(
      new RecordProtection(s.suite, keys.serverKey, keys.serverIv),
      new RecordProtection(s.suite, keys.clientKey, keys.clientIv),
      now,
    );
    this.host.sendFlight(
      [
        { kind: "handshake", epoch: 0, msgType: HandshakeType.client_key_exchange, messageSeq: ckeSeq, body: cke },
        { kind: "ccs" },
        { kind: "handshake", epoch: 1, msgType: HandshakeType.finished, messageSeq: finSeq, body: verify },
      ],
      now,
      true,
    );
  }

  private onFinished(s: Extract<ClientState, { kind: "await_finished" }>, msg: HandshakeMessage, now: number): void {
    verifyPeerFinished(s.suite.prfHash, s.master, "server finished", s.transcript, decodeFinished(msg.body));
    this.state = { kind: "done" };
    this.host.establish({ identity: this.psk.identity, suite: s.suite.name, extendedMasterSecret: s.ems }, now);
  }
}
