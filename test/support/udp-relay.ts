/**
 * A UDP relay on 127.0.0.1 between one device and a server port, deciding
 * per datagram which pass (for tests that drop or time particular DTLS
 * handshake messages; test/support/lossy-udp-proxy.ts drops at random).
 * The device is whoever sent last (a new handshake from a new source port
 * takes over).
 */
import { createSocket, type RemoteInfo } from "node:dgram";

export interface UdpRelayOptions {
  /** a datagram from the device: forwarded when true (default: all) */
  toServer?(datagram: Buffer, from: RemoteInfo): boolean;
  /** a datagram from the server: forwarded when true (default: all) */
  toDevice?(datagram: Buffer): boolean;
}

export interface UdpRelay {
  /** the port devices send to */
  readonly port: number;
  close(): void;
}

/** A DTLS record of content type handshake in epoch 0: its handshake message type (1 ClientHello, 3 HelloVerifyRequest), else undefined. */
export const handshakeType = (d: Buffer): number | undefined => (d.length > 25 && d[0] === 22 && d[3] === 0 && d[4] === 0 ? d[13] : undefined);
export const CLIENT_HELLO = 1;
export const HELLO_VERIFY_REQUEST = 3;

export async function startUdpRelay(serverPort: number, o: UdpRelayOptions = {}): Promise<UdpRelay> {
  const front = createSocket("udp4");
  const back = createSocket("udp4");
  let device: RemoteInfo | undefined;
  front.on("message", (d, from) => {
    device = from;
    if (o.toServer?.(d, from) !== false) back.send(d, serverPort, "127.0.0.1");
  });
  back.on("message", (d) => {
    if (device !== undefined && o.toDevice?.(d) !== false) front.send(d, device.port, device.address);
  });
  await new Promise<void>((r) => front.bind(0, "127.0.0.1", r));
  await new Promise<void>((r) => back.bind(0, "127.0.0.1", r));
  return {
    port: front.address().port,
    close: () => {
      front.close();
      back.close();
    },
  };
}
