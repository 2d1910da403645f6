/**
 * Device-side transports: a DTLS client session that carries one protocol
 * frame per DTLS record. Three are available:
 * - "dtlspush" (default): the project's own DTLS 1.2 client: PSK, X.509
 *   (CA or pinned fingerprint), mutual X.509; packs several records per datagram.
 * - "node-dtls-client": the optional package of that name (2.x), PSK only.
 * - "nodertc": the optional package `@nodertc/dtls` (0.6): PSK and X.509
 *   (the server needs a P-384 ECDSA certificate and legacy SHA-1 signatures).
 * The optional packages are loaded on first use; a missing one is
 * TransportError "transport_unavailable".
 */
import { checkOptions, TRANSPORT_NAMES, TransportError, type Transport, type TransportName, type TransportOptions } from "./transports/base.ts";
import { openDtlspushTransport } from "./transports/dtlspush.ts";
import { openNodeDtlsClientTransport } from "./transports/node-dtls-client.ts";
import { openNodertcTransport } from "./transports/nodertc.ts";

export {
  TRANSPORT_NAMES,
  TransportError,
  type Transport,
  type TransportErrorCode,
  type TransportName,
  type TransportOptions,
} from "./transports/base.ts";

/**
 * Opens a DTLS session to the server with the named transport; resolves once
 * the handshake is complete. Rejects with TransportError: "bad_option",
 * "transport_unavailable", "transport_unsupported", "connect_failed" (the
 * library's error is the cause), "timeout" (after `timeoutMs`, default 10 s).
 */
export async function openTransport(name: TransportName, options: TransportOptions): Promise<Transport> {
  if (!TRANSPORT_NAMES.includes(name)) {
    throw new TransportError("bad_option", `unknown transport ${JSON.stringify(name)}: use one of ${TRANSPORT_NAMES.join(", ")}`);
  }
  const checked = checkOptions(options);
  switch (name) {
    case "dtlspush":
      return await openDtlspushTransport(checked);
    case "node-dtls-client":
      return await openNodeDtlsClientTransport(checked);
    case "nodertc":
      return await openNodertcTransport(checked);
  }
}
