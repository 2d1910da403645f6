/** The HTTP API of the daemon (fastify): publishing, message status, receipt/presence events, the device registry, health, JWKS, metrics, OpenAPI. */
export { createHttpApi, startHttpApi } from "./app.ts";
export type { HttpApi, HttpApiDeps, StoreHealth } from "./types.ts";
export { DEFAULT_BODY_LIMIT_BYTES, DEFAULT_RATE_LIMIT_PER_MINUTE, DEFAULT_REQUEST_TIMEOUT_MS } from "./types.ts";
export type { BatchEntryResult, BatchObserver } from "./routes-batch.ts";
export { HTTP_ERROR_CODES, HTTP_STATUS, HttpError, MESSAGING_HTTP_CODE, type ErrorBody, type HttpErrorCode, type HttpObserver } from "./errors.ts";
export { EventHub, type EventFilter, type EventHubOptions } from "./events-sse.ts";
export { API_VERSION } from "./openapi.ts";
