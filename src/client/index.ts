/** The device SDK: `import { connect } from "dtlspush/client"`. */
export { connect, DtlspushClient, ClientError, type ClientWarning, type ConnectOptions, type ReceivedMessage, type ServerAddress } from "./client.ts";
export { LIVENESS_DEFAULTS, type LivenessOptions } from "./liveness.ts";
export { memoryStateStore, fileStateStore, type ClientState, type ClientStateStore } from "./state-store.ts";
export { openTransport, TransportError, TRANSPORT_NAMES, type Transport, type TransportName, type TransportOptions } from "./transport.ts";
