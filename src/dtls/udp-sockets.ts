/**
 * The one module that imports node:dgram: UDP sockets for the endpoint
 * (endpoint.ts: servers and clients) and for the CID forwarder between
 * processes sharing a port (cid-forwarder.ts).
 */
import { createSocket, type Socket } from "node:dgram";
import { DtlsError } from "./errors.ts";

export type { Socket };

/** A new unbound UDP socket (a client's, which connects it). */
export function udpSocket(type: "udp4" | "udp6"): Socket {
  return createSocket({ type });
}

/**
 * A UDP socket bound to host:port (0: any free port), exclusively unless
 * `reusePort` (SO_REUSEPORT, a port shared by several sockets or processes).
 * A bind that fails closes the socket and rejects with DtlsError
 * listen_failed, `what` naming what could not be bound.
 */
export function bindUdpSocket(type: "udp4" | "udp6", host: string, port: number, reusePort: boolean, what: string): Promise<Socket> {
  const socket = createSocket(reusePort ? { type, reusePort: true } : { type });
  return new Promise<Socket>((resolve, reject) => {
    socket.once("error", (e) => {
      socket.close();
      reject(new DtlsError("listen_failed", `${what}: ${e.message}`, undefined, { cause: e }));
    });
    socket.bind({ port, address: host, exclusive: true }, () => {
      socket.removeAllListeners("error");
      resolve(socket);
    });
  });
}
