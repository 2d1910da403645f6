/**
 * A hand-driven DTLS peer on a plain UDP socket, for tests that attack the
 * real endpoint with what no honest client sends: ClientHellos with bad
 * extensions, handshakes held open after the cookie exchange, fragments and
 * records crafted byte by byte.
 */
import { createSocket, type Socket } from "node:dgram";
import { afterEach } from "vitest";
import { ContentType, HandshakeType, ProtocolVersion } from "../../src/dtls/constants.ts";
import { encodeFragment, encodeHandshake, parseHandshakeFragments, type HandshakeFragment } from "../../src/dtls/handshake-codec.ts";
import { decodeHelloVerifyRequest, encodeClientHello, EMPTY, type ClientHello } from "../../src/dtls/messages.ts";
import { encodePlainRecord, parseRecords, type RawRecord } from "../../src/dtls/record.ts";

/** A ClientHello offering TLS_PSK_WITH_AES_128_GCM_SHA256 and TLS_PSK_WITH_AES_128_CCM_8, no extensions unless given. */
export function pskHello(over: Partial<ClientHello> = {}): ClientHello {
  return {
    version: ProtocolVersion.DTLS1_2,
    random: crypto.getRandomValues(new Uint8Array(32)),
    sessionId: EMPTY,
    cookie: EMPTY,
    cipherSuites: [0x00a8, 0xc0a8],
    compressionMethods: new Uint8Array([0]),
    extensions: undefined,
    ...over,
  };
}

export function helloRecord(h: ClientHello, messageSeq: number, recordSeq: number): Uint8Array {
  return encodePlainRecord(
    ContentType.handshake,
    ProtocolVersion.DTLS1_2,
    0,
    recordSeq,
    encodeHandshake(HandshakeType.client_hello, messageSeq, encodeClientHello(h)),
  );
}

/** One record holding a fragment [offset, offset+bytes.length) of a message declared `length` bytes long. */
export function fragmentRecord(
  msgType: number,
  messageSeq: number,
  length: number,
  offset: number,
  bytes: Uint8Array,
  epoch: number,
  recordSeq: number,
): Uint8Array {
  const full = new Uint8Array(length);
  full.set(bytes, offset);
  return encodePlainRecord(
    ContentType.handshake,
    ProtocolVersion.DTLS1_2,
    epoch,
    recordSeq,
    encodeFragment(msgType, messageSeq, full, offset, bytes.length),
  );
}

export class RawPeer {
  private readonly socket: Socket;
  private readonly inbox: Uint8Array[] = [];
  private waiter: (() => void) | undefined;
  private recordSeq = 0;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on("message", (m) => {
      this.inbox.push(new Uint8Array(m));
      this.waiter?.();
    });
  }

  static async open(serverPort: number, address = "127.0.0.1"): Promise<RawPeer> {
    const socket = createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind({ address, port: 0 }, () => socket.connect(serverPort, "127.0.0.1", () => resolve()));
    });
    return new RawPeer(socket);
  }

  send(datagram: Uint8Array): void {
    this.socket.send(datagram);
  }

  nextRecordSeq(): number {
    return this.recordSeq++;
  }

  /** The next datagram from the server, or undefined after `timeoutMs`. */
  async next(timeoutMs = 2000): Promise<Uint8Array | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return this.inbox.shift();
  }

  /** The first record of the next datagram of the given content type, or undefined after `timeoutMs`. */
  async nextRecord(type: number, timeoutMs = 2000): Promise<RawRecord | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const d = await this.next(deadline - Date.now());
      if (d === undefined) return undefined;
      const r = parseRecords(d).find((x) => x.type === type);
      if (r !== undefined) return r;
    }
  }

  /**
   * ClientHello, HelloVerifyRequest, ClientHello with the cookie: resolves
   * with the server's answer to the second ClientHello (its flight 4, or an
   * alert), undefined if none came.
   */
  async helloWithCookie(hello: ClientHello = pskHello(), timeoutMs = 2000): Promise<Uint8Array | undefined> {
    this.send(helloRecord(hello, 0, this.nextRecordSeq()));
    const hvr = await this.nextRecord(ContentType.handshake, timeoutMs);
    if (hvr === undefined) return undefined;
    const cookie = decodeHelloVerifyRequest((parseHandshakeFragments(hvr.body)[0] as HandshakeFragment).body).cookie;
    this.send(helloRecord({ ...hello, cookie }, 1, this.nextRecordSeq()));
    return this.next(timeoutMs);
  }

  /**
   * A cookieless ClientHello answered by a HelloVerifyRequest: everything sent
   * to the server's socket before it has been read. Retried a few times (a full
   * socket buffer drops datagrams); false if no answer came.
   */
  async roundTrip(): Promise<boolean> {
    for (let i = 0; i < 10; i++) {
      this.send(helloRecord(pskHello(), 0, this.nextRecordSeq()));
      if ((await this.nextRecord(ContentType.handshake, 300)) !== undefined) return true;
    }
    return false;
  }

  /** The cookie exchange, after which the server holds a handshake for us; the handshake messages of its flight 4. */
  async cookieExchange(hello: ClientHello = pskHello(), timeoutMs = 2000): Promise<HandshakeFragment[] | undefined> {
    const flight = await this.helloWithCookie(hello, timeoutMs);
    if (flight === undefined) return undefined;
    return parseRecords(flight).flatMap((r) => (r.type === ContentType.handshake ? parseHandshakeFragments(r.body) : []));
  }

  close(): void {
    this.socket.close();
  }
}

/** Returns `open(port, address?)`: a RawPeer closed after each test. */
export function rawPeers(): (serverPort: number, address?: string) => Promise<RawPeer> {
  let peers: RawPeer[] = [];
  afterEach(() => {
    for (const p of peers) p.close();
    peers = [];
  });
  return async (serverPort, address) => {
    const p = await RawPeer.open(serverPort, address);
    peers.push(p);
    return p;
  };
}
