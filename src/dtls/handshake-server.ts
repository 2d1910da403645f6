/**
 * Server side of the PSK handshake (RFC 6347 4.2.1, RFC 4279), from the
 * ClientHello that carried a valid cookie:
 *
 *   ClientHello(cookie)  -->
 *                        <--  ServerHello, [ServerKeyExchange(hint)], ServerHelloDone
 *   ClientKeyExchange, ChangeCipherSpec, Finished  -->
 *                        <--  ChangeCipherSpec, Finished
 *
 * The states are types: keys and the master secret exist only in the state
 * after the ClientKeyExchange.
 */
import { concatBytes, copyBytes } from "../util/bytes.ts";
import { HandshakeType, ProtocolVersion } from "./constants.ts";
import { generateEcdh, parseCertificate, randomBytes, schemeKeyType, type Certificate, type EcdhGroup, type EcdhKeyPair, type SecretKey } from "./crypto.ts";
import type { Connection, FlightItem, HandshakeDriver } from "./connection.ts";
import { answerConnectionId } from "./connection-id.ts";
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
  encodePskIdentity,
  encodeServerHello,
  EMPTY,
  type ClientHello,
} from "./messages.ts";
import { chooseServerParameters, VERIFIABLE_SCHEMES } from "./negotiation.ts";
import type { ClientAuthMode, ClientVerdict, ConnectionInfo, ServerCredential, ServerPskConfig } from "./options.ts";
import type { HandshakeMessage } from "./reassembly.ts";
import { RecordProtection } from "./record-protection.ts";
import { usesPsk, type CipherSuite } from "./suites.ts";

interface Negotiated {
  readonly suite: CipherSuite;
  /** Our ephemeral ECDH key, for ECDHE_PSK suites. */
  readonly ecdh: EcdhKeyPair | undefined;
  readonly ems: boolean;
  readonly group: EcdhGroup | undefined;
  readonly clientRandom: Uint8Array;
  readonly serverRandom: Uint8Array;
  readonly transcript: Transcript;
}

/** The client's certificate as far as it got: not asked for, asked for, or received (with its identity). */
type ClientCertificate =
  | { readonly kind: "none" }
  | { readonly kind: "requested" }
  | { readonly kind: "empty" }
  | { readonly kind: "received"; readonly leaf: Certificate; readonly identity: string };

type ServerState =
  | ({ readonly kind: "await_client_key_exchange"; readonly client: ClientCertificate } & Negotiated)
  | ({
      readonly kind: "await_certificate_verify";
      readonly client: Extract<ClientCertificate, { kind: "received" }>;
      readonly master: SecretKey;
    } & Negotiated)
  | ({ readonly kind: "await_finished"; readonly identity: string; readonly peer: Certificate | undefined; readonly master: SecretKey } & Negotiated)
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
}

export class ServerHandshake implements HandshakeDriver {
  private readonly host: Connection;
  private readonly psk: ServerPskConfig | undefined;
  private readonly auth: ServerAuth;
  private state: ServerState;
  private nextSendSeq: number;

  /**
   * Answers the cookie-verified ClientHello with the server's flight at once.
   * Throws DtlsError when nothing can be negotiated (caller fails the connection).
   * `cid` is the Connection ID we hand out (latin1) if the client offers the extension.
   */
  constructor(host: Connection, auth: ServerAuth, hello: ClientHello, helloMessageSeq: number, helloBody: Uint8Array, now: number, cid?: string) {
    this.host = host;
    this.psk = auth.psk;
    this.auth = auth;
    this.nextSendSeq = helloMessageSeq;
    const choice = chooseServerParameters(
      hello,
      host.config.suites,
      host.config.requireExtendedMasterSecret,
      { psk: auth.psk !== undefined, certificates: auth.certificates, legacySha1: auth.legacySha1Signatures },
      host.config.groups,
    );
    const connectionId = answerConnectionId(choice.extensions, hello.extensions, cid);
    if (connectionId.ids !== undefined) host.useConnectionIds(connectionId.ids);
    const transcript = new Transcript();
    transcript.add(encodeHandshake(HandshakeType.client_hello, helloMessageSeq, helloBody));
    const serverRandom = randomBytes(32);
    const flight: FlightItem[] = [];
    const add = (msgType: number, body: Uint8Array): void => {
      const messageSeq = this.nextSendSeq++;
      flight.push({ kind: "handshake", epoch: 0, msgType, messageSeq, body });
      transcript.add(encodeHandshake(msgType, messageSeq, body));
    };
    add(
      HandshakeType.server_hello,
      encodeServerHello({
        version: ProtocolVersion.DTLS1_2,
        random: serverRandom,
        sessionId: EMPTY,
        cipherSuite: choice.suite.id,
        compressionMethod: 0,
        extensions: connectionId.extensions,
      }),
    );
    const hint = auth.psk?.hint === undefined ? undefined : new TextEncoder().encode(auth.psk.hint);
    let ecdh: EcdhKeyPair | undefined;
    if (choice.credential !== undefined && choice.group !== undefined && choice.signatureScheme !== undefined) {
      // ECDHE_ECDSA / ECDHE_RSA: our chain, then the ECDH parameters signed with its key (RFC 8422 5.4).
      add(HandshakeType.certificate, encodeCertificateList(choice.credential.chain.map((c) => c.der)));
      ecdh = generateEcdh(choice.group.name);
      const params = encodeEcdhParams({ group: choice.group.id, publicKey: ecdh.publicKey });
      const signature = choice.credential.signer.sign(choice.signatureScheme, concatBytes([hello.random, serverRandom, params]));
      add(HandshakeType.server_key_exchange, encodeSignedEcdhParams(params, choice.signatureScheme, signature));
      if (auth.clientAuth !== "none") {
        add(
          HandshakeType.certificate_request,
          encodeCertificateRequest({
            certificateTypes: new Uint8Array([ClientCertificateType.ecdsa_sign, ClientCertificateType.rsa_sign]),
            signatureAlgorithms: VERIFIABLE_SCHEMES,
            authorities: auth.clientCaNames,
          }),
        );
      }
    } else if (choice.group !== undefined) {
      ecdh = generateEcdh(choice.group.name);
      add(
        HandshakeType.server_key_exchange,
        encodeEcdhePskServerParams({ hint: hint ?? EMPTY, group: choice.group.id, publicKey: ecdh.publicKey }),
      );
    } else if (hint !== undefined) {
      add(HandshakeType.server_key_exchange, encodePskIdentity(hint));
    }
    add(HandshakeType.server_hello_done, EMPTY);
    this.state = {
      kind: "await_client_key_exchange",
      client: { kind: choice.credential !== undefined && auth.clientAuth !== "none" ? "requested" : "none" },
      suite: choice.suite,
      ecdh,
      group: choice.group?.name,
      ems: choice.extendedMasterSecret,
      clientRandom: copyBytes(hello.random),
      serverRandom,
      transcript,
    };
    host.sendFlight(flight, now, true);
  }

  onMessage(msg: HandshakeMessage, now: number): void {
    const s = this.state;
    switch (s.kind) {
      case "await_client_key_exchange":
        if (s.client.kind === "requested") {
          if (msg.msgType !== HandshakeType.certificate) throw unexpectedMessage(msg.msgType, "Certificate (we asked for one)");
          this.onClientCertificate(s, msg);
          return;
        }
        if (msg.msgType !== HandshakeType.client_key_exchange) throw unexpectedMessage(msg.msgType, "ClientKeyExchange");
        this.onClientKeyExchange(s, msg, now);
        return;
      case "await_certificate_verify":
        if (msg.msgType !== HandshakeType.certificate_verify) throw unexpectedMessage(msg.msgType, "CertificateVerify");
        this.onCertificateVerify(s, msg);
        return;
      case "await_finished":
        if (msg.msgType !== HandshakeType.finished) throw unexpectedMessage(msg.msgType, "Finished");
        if (msg.epoch !== 1) throw alertError("unexpected_message", "Finished arrived unprotected");
        this.onFinished(s, msg, now);
        return;
      case "done":
        return;
    }
  }

  private onClientKeyExchange(s: Extract<ServerState, { kind: "await_client_key_exchange" }>, msg: HandshakeMessage, now: number): void {
    if (!usesPsk(s.suite)) {
      // Certificate suite, no client certificate: the client is anonymous here.
      const z = (s.ecdh as EcdhKeyPair).derive(decodeEcdhPublic(msg.body));
      if (z === null) throw alertError("illegal_parameter", "the client's ECDH public key is invalid");
      this.deriveKeys(s, msg, "", z, now);
      return;
    }
    let raw: Uint8Array;
    let premasterOf: (psk: Uint8Array) => Uint8Array;
    if (s.ecdh !== undefined) {
      const cke = decodeEcdhePskClientKeyExchange(msg.body);
      const z = s.ecdh.derive(cke.publicKey);
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
    this.deriveKeys(s, msg, identity, premasterOf(key), now);
  }

  /** The client's Certificate: empty (allowed unless required) or a chain the policy accepts. */
  private onClientCertificate(s: Extract<ServerState, { kind: "await_client_key_exchange" }>, msg: HandshakeMessage): void {
    const ders = decodeCertificateList(msg.body);
    let client: ClientCertificate;
    if (ders.length === 0) {
      if (this.auth.clientAuth === "require") throw alertError("handshake_failure", "a client certificate is required and the client sent none");
      client = { kind: "empty" };
    } else {
      let chain: Certificate[];
      try {
        chain = ders.map(parseCertificate);
      } catch (e) {
        throw alertError("bad_certificate", `the client's certificate does not parse: ${(e as Error).message}`);
      }
      const verdict = (this.auth.verifyClient as NonNullable<ServerAuth["verifyClient"]>)(chain);
      if (verdict instanceof Error) throw verdict;
      client = { kind: "received", leaf: chain[0] as Certificate, identity: verdict.identity };
    }
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    this.state = { ...s, client };
  }

  /** CertificateVerify: the client proves it holds its certificate's key (RFC 5246 7.4.8). */
  private onCertificateVerify(s: Extract<ServerState, { kind: "await_certificate_verify" }>, msg: HandshakeMessage): void {
    const cv = decodeCertificateVerify(msg.body);
    const leaf = s.client.leaf;
    if (!VERIFIABLE_SCHEMES.includes(cv.scheme) || schemeKeyType(cv.scheme) !== leaf.keyType) {
      throw alertError("illegal_parameter", `CertificateVerify uses scheme 0x${cv.scheme.toString(16)}, which we did not offer or which does not fit a ${leaf.keyType} key`);
    }
    if (!leaf.verifySignature(cv.scheme, s.transcript.messages(), cv.signature)) {
      throw alertError("decrypt_error", "the client's CertificateVerify signature does not verify");
    }
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    this.state = { ...s, kind: "await_finished", identity: s.client.identity, peer: leaf };
  }

  private deriveKeys(
    s: Extract<ServerState, { kind: "await_client_key_exchange" }>,
    msg: HandshakeMessage,
    identity: string,
    premaster: Uint8Array,
    now: number,
  ): void {
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    const hashAlg = s.suite.prfHash;
    const master = secretKey(masterSecret(hashAlg, premaster, s.clientRandom, s.serverRandom, s.ems ? s.transcript.hash(hashAlg) : undefined));
    const keys = keyBlock(s.suite, master, s.clientRandom, s.serverRandom);
    // State first: installing the read keys may replay an early Finished into onMessage.
    if (s.client.kind === "received") {
      this.state = { ...s, kind: "await_certificate_verify", ecdh: undefined, client: s.client, master };
    } else {
      this.state = { ...s, kind: "await_finished", ecdh: undefined, identity, peer: undefined, master };
    }
    this.host.installKeys(
      new RecordProtection(s.suite, keys.clientKey, keys.clientIv),
      new RecordProtection(s.suite, keys.serverKey, keys.serverIv),
      now,
    );
  }

  private onFinished(s: Extract<ServerState, { kind: "await_finished" }>, msg: HandshakeMessage, now: number): void {
    const hashAlg = s.suite.prfHash;
    verifyPeerFinished(hashAlg, s.master, "client finished", s.transcript, decodeFinished(msg.body));
    s.transcript.add(encodeHandshake(msg.msgType, msg.messageSeq, msg.body));
    const verify = finishedVerifyData(hashAlg, s.master, "server finished", s.transcript.hash(hashAlg));
    this.state = { kind: "done" };
    this.host.sendFlight(
      [{ kind: "ccs" }, { kind: "handshake", epoch: 1, msgType: HandshakeType.finished, messageSeq: this.nextSendSeq++, body: verify }],
      now,
      false,
    );
    // kept for the session's life: the optional fields only when they have a value (8 bytes each otherwise)
    const info: { -readonly [K in keyof ConnectionInfo]: ConnectionInfo[K] } = { identity: s.identity, suite: s.suite.name, extendedMasterSecret: s.ems };
    if (s.group !== undefined) info.group = s.group;
    if (s.peer !== undefined) info.peerCertificate = { subject: s.peer.subject, fingerprint256: s.peer.fingerprint256 };
    this.host.establish(info, now);
  }
}


