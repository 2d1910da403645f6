/** Public API of the DTLS 1.2 engine (see docs/dtls-api.md). */
export { listen, connect, DtlsServer, DEFAULT_SERVER_SOCKETS, MAX_SERVER_SOCKETS, type ListenOptions, type ConnectOptions } from "./endpoint.ts";
export { DtlsConnection, type DtlsConnectionInfo, type PeerAddress, type CloseReason, type ConnectionReceiver } from "./dtls-connection.ts";
export { DtlsError, HandshakeTimeoutError, type DtlsErrorCode } from "./errors.ts";
export { SUITE_NAMES, parseSuiteList, isSuiteName, type SuiteName } from "./suites.ts";
export { DEFAULT_MTU, MIN_MTU, DEFAULT_RETRANSMIT, type RetransmitPolicy, type ClientAuthMode } from "./options.ts";
export type { EcdhGroup } from "../crypto/index.ts";
export type { IdentitySource } from "./cert-verify.ts";
export type { ServerStats, AddressChangeRefusal, RestoreRefusal } from "./server-core.ts";
export { RESTORE_REFUSALS, newRestoreRefusalCounts } from "./server-core.ts";
export { SNAPSHOT_VERSION, RESTORE_SEQUENCE_MARGIN } from "./session-snapshot.ts";
export { DEFAULT_SERVER_CID_LENGTH, MIN_CID_RANDOM_BYTES } from "./connection-id.ts";
export type { SavedSession, ServerResumptionOptions, TicketKey, TicketKeySource } from "./resumption-options.ts";
export { RESUMPTION_REFUSALS, newResumptionRefusalCounts, DEFAULT_RESUMPTION, type ResumptionRefusal } from "./resumption.ts";
export { RotatingTicketKeys } from "./ticket-keys.ts";
export {
  CidForwarder,
  DEFAULT_FORWARD_RATE,
  FORWARD_DROP_CAUSES,
  type CidForwarderOptions,
  type ForwardDropCause,
  type ForwardStats,
} from "./cid-forwarder.ts";
