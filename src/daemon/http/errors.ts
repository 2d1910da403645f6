import { STATUS_CODES, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AuthError, type AuthErrorCode } from "../../auth/index.ts";
import { MessagingError, type MessagingErrorCode } from "../../messaging/errors.ts";
import { StoreError, type StoreErrorCode } from "../../store/errors.ts";
import { DtlspushError } from "../../util/errors.ts";

/**
 * Every code an error answer of the API carries, with its status: the table of
 * docs/http-api.md. A new code must be given a status here (and documented).
 */
export const HTTP_STATUS = {
  bad_request: 400,
  bad_topic: 400,
  bad_device: 400,
  malformed_request: 400,
  token_missing: 401,
  token_invalid: 401,
  token_expired: 401,
  insufficient_scope: 403,
  not_found: 404,
  device_unknown: 404,
  message_unknown: 404,
  request_timeout: 408,
  device_exists: 409,
  device_revoked: 409,
  duplicate_message: 409,
  sequence_exhausted: 409,
  body_too_large: 413,
  payload_too_large: 413,
  uri_too_long: 414,
  unsupported_media_type: 415,
  expectation_failed: 417,
  rate_limited: 429,
  queue_full: 429,
  headers_too_large: 431,
  internal: 500,
  shutting_down: 503,
  store_unavailable: 503,
} as const satisfies Record<string, number>;

/** The stable codes of the API's error answers. */
export type HttpErrorCode = keyof typeof HTTP_STATUS;
export const HTTP_ERROR_CODES = Object.keys(HTTP_STATUS) as readonly HttpErrorCode[];

export function isHttpErrorCode(code: string): code is HttpErrorCode {
  return Object.hasOwn(HTTP_STATUS, code);
}

/** An answer of the HTTP API other than success: stable code (which fixes the status), one-sentence message, extra headers. */
export class HttpError extends DtlspushError {
  declare readonly code: HttpErrorCode;
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  constructor(code: HttpErrorCode, message: string, headers: Readonly<Record<string, string>> = {}) {
    super(code, message);
    this.name = "HttpError";
    this.status = HTTP_STATUS[code];
    this.headers = headers;
  }
}

/** The JSON body of every error answer. */
export interface ErrorBody {
  error: { code: HttpErrorCode; message: string };
}

/** Counts the error answers by code (the daemon's metrics); never throws. */
export interface HttpObserver {
  httpError(code: HttpErrorCode, status: number): void;
}

/**
 * The answer to each MessagingError code. A Record over the closed union, so a new code without an
 * answer fails to compile. The codes from "bad_option" on never come from a publish (options are
 * checked at start; the rest are answers of a server to a device session): here they would be a
 * server fault.
 */
export const MESSAGING_HTTP_CODE: Readonly<Record<MessagingErrorCode, HttpErrorCode>> = {
  payload_too_large: "payload_too_large",
  queue_full: "queue_full",
  device_unknown: "device_unknown",
  device_revoked: "device_revoked",
  bad_request: "bad_request",
  bad_topic: "bad_topic",
  too_many_topics: "bad_request",
  duplicate_message: "duplicate_message",
  sequence_exhausted: "sequence_exhausted",
  shutting_down: "shutting_down",
  internal: "internal",
  bad_option: "internal",
  bad_frame: "internal",
  unsupported_version: "internal",
  hello_required: "internal",
  token_invalid: "internal",
  token_expired: "internal",
  token_identity_mismatch: "internal",
  rate_limited: "internal",
  session_replaced: "internal",
  // only a device's Hello meets it; a publish never raises it
  seq_ahead: "internal",
};

/**
 * The answer to each AuthError code. Token codes are mapped by the auth hook
 * (with their WWW-Authenticate headers); codes no route can meet (content
 * signatures, key rings) are a server failure.
 */
export const AUTH_HTTP_CODE: Readonly<Record<AuthErrorCode, HttpErrorCode>> = {
  token_missing: "token_missing",
  token_invalid: "token_invalid",
  token_expired: "token_expired",
  token_identity_mismatch: "token_invalid",
  insufficient_scope: "insufficient_scope",
  signature_invalid: "internal",
  unknown_key: "internal",
  key_ring_invalid: "internal",
  bad_device: "bad_device",
  bad_topic: "bad_topic",
  device_exists: "device_exists",
  device_unknown: "device_unknown",
};

/**
 * The answer to each StoreError code that reaches a route. A Record over the
 * closed union, so a new code without an answer fails to compile. Only an
 * unreachable shared store is the client's to retry (503); the rest is a
 * server fault.
 */
export const STORE_HTTP_CODE: Readonly<Record<StoreErrorCode, HttpErrorCode>> = {
  store_unavailable: "store_unavailable",
  store_closed: "shutting_down",
  store_open_failed: "internal",
  store_version: "internal",
  store_corrupt: "internal",
  invalid_record: "internal",
  identity_in_use: "internal",
  duplicate_message: "internal",
  commit_failed: "internal",
  store_failed: "internal",
  write_failed: "internal",
  read_failed: "internal",
};

/** The code of a framework error that carries only a 4xx status (any other 4xx is answered 400 bad_request). */
export const GENERIC_CODES: Readonly<Record<number, HttpErrorCode>> = {
  400: "bad_request",
  404: "not_found",
  408: "request_timeout",
  413: "body_too_large",
  414: "uri_too_long",
  415: "unsupported_media_type",
  417: "expectation_failed",
  431: "headers_too_large",
};

const INTERNAL_MESSAGE = "The server failed to handle the request; the server log has the details.";

interface ValidationIssue {
  instancePath?: string;
  keyword?: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** "body.psk.keyHex must match pattern …": the field and what is wrong with it, from the first schema violation. */
export function validationMessage(issues: readonly ValidationIssue[], context: string | undefined): string {
  const first = issues[0];
  const root = context ?? "request";
  if (first === undefined) return `The ${root} is not valid.`;
  const path = (first.instancePath ?? "")
    .split("/")
    .filter((p) => p !== "")
    .map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"));
  const field = [root, ...path].join(".");
  const params = first.params ?? {};
  if (first.keyword === "required" && typeof params["missingProperty"] === "string") {
    return `${field}.${params["missingProperty"]} is required.`;
  }
  if (first.keyword === "additionalProperties" && typeof params["additionalProperty"] === "string") {
    return `${field}.${params["additionalProperty"]} is not a known field.`;
  }
  return `${field} ${first.message ?? "is not valid"}.`;
}

/** Turns anything thrown by a route, a hook or fastify itself into the HTTP error the client sees. */
export function toHttpError(e: unknown, bodyLimitBytes: number): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof MessagingError) {
    const code = MESSAGING_HTTP_CODE[e.code];
    if (code === "internal") return new HttpError("internal", INTERNAL_MESSAGE);
    return new HttpError(code, sentence(e.message));
  }
  if (e instanceof AuthError) {
    const code = AUTH_HTTP_CODE[e.code];
    if (code === "internal") return new HttpError("internal", INTERNAL_MESSAGE);
    return new HttpError(code, sentence(e.message));
  }
  if (e instanceof StoreError) {
    const code = STORE_HTTP_CODE[e.code];
    if (code === "internal") return new HttpError("internal", INTERNAL_MESSAGE);
    if (code === "store_unavailable")
      return new HttpError(code, "The shared store (Redis) is unreachable for now; nothing was done. Try again later.", { "retry-after": "1" });
    return new HttpError(code, sentence(e.message));
  }
  const fe = e as Partial<FastifyError> | undefined;
  if (fe !== undefined && fe !== null && typeof fe === "object") {
    if (Array.isArray(fe.validation)) return new HttpError("bad_request", validationMessage(fe.validation, fe.validationContext));
    switch (fe.code) {
      case "FST_ERR_CTP_BODY_TOO_LARGE":
        return new HttpError("body_too_large", `The request body is larger than ${bodyLimitBytes} bytes.`);
      case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
        return new HttpError("unsupported_media_type", "The request body must be JSON (Content-Type: application/json).");
      case "FST_ERR_CTP_INVALID_JSON_BODY":
        return new HttpError("bad_request", "The request body is not valid JSON.");
      case "FST_ERR_CTP_EMPTY_JSON_BODY":
        return new HttpError("bad_request", "The request body is empty; send a JSON object.");
      case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
        return new HttpError("bad_request", "The request body's length is not its Content-Length.");
      case "FST_ERR_BAD_URL":
        return new HttpError("bad_request", "The URL path is not valid: a % must start a percent-encoded UTF-8 byte (%XX).");
      case "FST_ERR_MAX_PARAM_LENGTH":
        return new HttpError("uri_too_long", `A path parameter is longer than ${MAX_PARAM_LENGTH} characters.`);
      default:
        break;
    }
    const status = typeof fe.statusCode === "number" ? fe.statusCode : 500;
    if (status >= 400 && status < 500)
      return new HttpError(GENERIC_CODES[status] ?? "bad_request", sentence(fe.message ?? "The request is not valid."));
    // (a 4xx without a code of its own becomes 400: the status always is the code's)
  }
  return new HttpError("internal", INTERNAL_MESSAGE);
}

/**
 * Longest path parameter, characters as sent (percent-encoded): ids and topics
 * are at most 128 characters and message ids 200, each of which a client may
 * send as a three-character %XX escape.
 */
export const MAX_PARAM_LENGTH = 3 * 200;

export function errorBody(e: HttpError): ErrorBody {
  return { error: { code: e.code, message: e.message } };
}

const JSON_TYPE = "application/json; charset=utf-8";

/** Where error answers are sent from: counted, JSON, no stack traces. */
export interface ErrorSender {
  /** answers `e` on `reply` (logging server failures with their cause) */
  send(reply: FastifyReply, e: HttpError, cause?: unknown): void;
  /** counts an error answered outside fastify's reply (raw socket, /healthz) */
  count(code: HttpErrorCode): void;
}

export function createErrorSender(observer: HttpObserver | undefined): ErrorSender {
  const count = (code: HttpErrorCode): void => {
    try {
      observer?.httpError(code, HTTP_STATUS[code]);
    } catch {
      // metrics never fail an answer
    }
  };
  return {
    count,
    send(reply, e, cause) {
      count(e.code);
      if (e.status >= 500 && cause !== undefined) reply.request.log.error({ err: cause }, "request failed");
      void reply.code(e.status).headers(e.headers).type(JSON_TYPE).send(errorBody(e));
    },
  };
}

/**
 * Error handler (JSON error bodies, no stack traces), the 404 answer for
 * unknown routes, and the answers node:http would otherwise write itself
 * (malformed requests, oversized headers, timeouts, unknown Expect).
 */
export function installErrorHandling(
  app: FastifyInstance,
  o: { bodyLimitBytes: number; notFoundHook: (req: FastifyRequest, reply: FastifyReply) => Promise<void>; errors: ErrorSender },
): void {
  app.setErrorHandler((error, request, reply) => {
    // a route may have a limit of its own (the batch publish)
    o.errors.send(reply, toHttpError(error, request.routeOptions.bodyLimit ?? o.bodyLimitBytes), error);
  });
  app.setNotFoundHandler({ preHandler: o.notFoundHook }, (request, reply) => {
    const path = request.url.split("?")[0] ?? "";
    o.errors.send(reply, new HttpError("not_found", `There is no route ${request.method} ${truncate(path)}.`));
  });
  // node:http answers an Expect other than 100-continue with a bare 417 unless someone listens
  app.server.on("checkExpectation", (_req, res: ServerResponse) => {
    const e = new HttpError("expectation_failed", "The server supports no Expect header but 100-continue.");
    o.errors.count(e.code);
    const body = JSON.stringify(errorBody(e));
    res.writeHead(e.status, { "content-type": JSON_TYPE, "content-length": Buffer.byteLength(body), connection: "close" });
    res.end(body);
  });
}

/** fastify's frameworkErrors option: bad percent-encoding, over-long parameters. */
export function frameworkErrorHandler(errors: ErrorSender, bodyLimitBytes: number) {
  return (error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void => {
    errors.send(reply, toHttpError(error, bodyLimitBytes), error);
  };
}

/** Parser errors whose own words are worth a sentence (the rest is "not valid HTTP/1.1"). */
const PARSER_REASONS: Readonly<Record<string, string>> = {
  HPE_INVALID_METHOD: "its method is not an HTTP method (or bytes followed a body beyond its Content-Length)",
  HPE_INVALID_URL: "its request target is not valid",
  HPE_INVALID_VERSION: "its HTTP version is not valid",
  HPE_INVALID_HEADER_TOKEN: "a header name holds a character headers may not",
  HPE_INVALID_CONTENT_LENGTH: "its Content-Length is not valid",
  HPE_UNEXPECTED_CONTENT_LENGTH: "it has both Content-Length and Transfer-Encoding",
  HPE_INVALID_TRANSFER_ENCODING: "its Transfer-Encoding is not valid",
  HPE_INVALID_CHUNK_SIZE: "a chunk size of its chunked body is not valid",
  HPE_INVALID_EOF_STATE: "the connection ended before the request did (a body shorter than its Content-Length)",
  HPE_INVALID_CONSTANT: "it is not HTTP/1.1 (or more bytes followed the body than its Content-Length said)",
  HPE_CR_EXPECTED: "a line does not end with CRLF",
  HPE_LF_EXPECTED: "a line does not end with CRLF",
};

/** The error answer to a request node:http's parser refused, or undefined when no answer can be written. */
export function clientErrorAnswer(err: NodeJS.ErrnoException): HttpError | undefined {
  switch (err.code) {
    case "ECONNRESET":
    case "EPIPE":
      return undefined;
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return new HttpError("request_timeout", "The request did not arrive in full in time.");
    case "HPE_HEADER_OVERFLOW":
      return new HttpError("headers_too_large", "The request line and headers are larger than the server accepts (16 KiB).");
    default: {
      const reason = err.code === undefined ? undefined : PARSER_REASONS[err.code];
      return new HttpError(
        "malformed_request",
        reason === undefined ? "The request is not valid HTTP/1.1." : `The request is not valid HTTP/1.1: ${reason}.`,
      );
    }
  }
}

/**
 * fastify's clientErrorHandler: a request node:http could not parse gets the
 * API's JSON error on the raw socket (when nothing was written to it yet), and
 * the connection is closed.
 */
export function clientErrorHandler(errors: ErrorSender) {
  return (err: NodeJS.ErrnoException, socket: Socket): void => {
    const e = socket.destroyed ? undefined : clientErrorAnswer(err);
    if (e === undefined) {
      socket.destroy();
      return;
    }
    errors.count(e.code);
    // a response already begun on this connection (a pipelined request) cannot be followed by ours
    const pending = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (socket.writable && pending?.headersSent !== true) {
      const body = JSON.stringify(errorBody(e));
      socket.write(
        `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? "Error"}\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
    socket.destroy();
  };
}

function truncate(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

/** Messages end with a period (one sentence); lower-level messages sometimes do not (their case is kept: they may start with a field name). */
function sentence(m: string): string {
  const t = m.trim();
  if (t === "") return "The request failed.";
  return /[.!?]$/.test(t) ? t : `${t}.`;
}
