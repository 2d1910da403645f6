import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AuthError } from "../../auth/index.ts";
import { MessagingError, type MessagingErrorCode } from "../../messaging/errors.ts";
import { DtlspushError } from "../../util/errors.ts";

/** An answer of the HTTP API other than success: status, stable code, one-sentence message, extra headers. */
export class HttpError extends DtlspushError {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  constructor(status: number, code: string, message: string, headers: Readonly<Record<string, string>> = {}) {
    super(code, message);
    this.name = "HttpError";
    this.status = status;
    this.headers = headers;
  }
}

/** The JSON body of every error answer. */
export interface ErrorBody {
  error: { code: string; message: string };
}

/**
 * HTTP status of each MessagingError code (contract of issue 5). A Record over the closed union, so a
 * new code without a status fails to compile. The codes below "internal" only come from device
 * sessions (answers of a server to a device), never from a publish: they would be a server fault.
 */
export const MESSAGING_STATUS: Readonly<Record<MessagingErrorCode, number>> = {
  payload_too_large: 413,
  queue_full: 429,
  device_unknown: 404,
  device_revoked: 409,
  bad_request: 400,
  bad_topic: 400,
  too_many_topics: 400,
  duplicate_message: 409,
  sequence_exhausted: 409,
  shutting_down: 503,
  bad_option: 500,
  internal: 500,
  bad_frame: 500,
  unsupported_version: 500,
  hello_required: 500,
  token_invalid: 500,
  token_expired: 500,
  token_identity_mismatch: 500,
  rate_limited: 429,
  session_replaced: 500,
};

/** HTTP status of the AuthError codes a route can meet (token codes are mapped by the auth hook, with its headers). */
export const AUTH_STATUS: Readonly<Record<string, number>> = {
  token_missing: 401,
  token_invalid: 401,
  token_expired: 401,
  insufficient_scope: 403,
  bad_device: 400,
  bad_topic: 400,
  device_exists: 409,
  device_unknown: 404,
};

const GENERIC_CODES: Readonly<Record<number, string>> = {
  400: "bad_request",
  404: "not_found",
  405: "method_not_allowed",
  406: "not_acceptable",
  411: "length_required",
  413: "body_too_large",
  414: "uri_too_long",
  415: "unsupported_media_type",
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
    const status = MESSAGING_STATUS[e.code] ?? 500;
    if (status >= 500 && e.code !== "shutting_down") return new HttpError(500, "internal", INTERNAL_MESSAGE);
    return new HttpError(status, e.code, sentence(e.message));
  }
  if (e instanceof AuthError) {
    const status = AUTH_STATUS[e.code];
    if (status === undefined) return new HttpError(500, "internal", INTERNAL_MESSAGE);
    return new HttpError(status, e.code, sentence(e.message));
  }
  const fe = e as Partial<FastifyError> | undefined;
  if (fe !== undefined && fe !== null && typeof fe === "object") {
    if (Array.isArray(fe.validation)) return new HttpError(400, "bad_request", validationMessage(fe.validation, fe.validationContext));
    switch (fe.code) {
      case "FST_ERR_CTP_BODY_TOO_LARGE":
        return new HttpError(413, "body_too_large", `The request body is larger than ${bodyLimitBytes} bytes.`);
      case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
        return new HttpError(415, "unsupported_media_type", "The request body must be JSON (Content-Type: application/json).");
      case "FST_ERR_CTP_INVALID_JSON_BODY":
        return new HttpError(400, "bad_request", "The request body is not valid JSON.");
      case "FST_ERR_CTP_EMPTY_JSON_BODY":
        return new HttpError(400, "bad_request", "The request body is empty; send a JSON object.");
      default:
        break;
    }
    const status = typeof fe.statusCode === "number" ? fe.statusCode : 500;
    if (status >= 400 && status < 500) {
      return new HttpError(status, GENERIC_CODES[status] ?? "bad_request", sentence(fe.message ?? "The request is not valid."));
    }
  }
  return new HttpError(500, "internal", INTERNAL_MESSAGE);
}

export function errorBody(e: HttpError): ErrorBody {
  return { error: { code: e.code, message: e.message } };
}

/** Error handler (JSON error bodies, no stack traces) and the 404 answer for unknown routes. */
export function installErrorHandling(
  app: FastifyInstance,
  o: { bodyLimitBytes: number; notFoundHook: (req: FastifyRequest, reply: FastifyReply) => Promise<void> },
): void {
  app.setErrorHandler((error, request, reply) => {
    const he = toHttpError(error, o.bodyLimitBytes);
    if (he.status >= 500) request.log.error({ err: error }, "request failed");
    void reply.code(he.status).headers(he.headers).type("application/json; charset=utf-8").send(errorBody(he));
  });
  app.setNotFoundHandler({ preHandler: o.notFoundHook }, (request, reply) => {
    const path = request.url.split("?")[0] ?? "";
    const he = new HttpError(404, "not_found", `There is no route ${request.method} ${truncate(path)}.`);
    void reply.code(404).type("application/json; charset=utf-8").send(errorBody(he));
  });
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
