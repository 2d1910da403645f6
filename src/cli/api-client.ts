/**
 * A small client of the daemon's HTTP API for the CLI: JSON requests with a
 * bearer token, API errors (`{"error": {"code", "message"}}`) as `ApiError`,
 * and a connection that cannot be made as `ApiUnreachableError` (so commands
 * can fall back to the local data directory when it was refused).
 */
import { isIP } from "node:net";
import { UsageError, errorCode } from "./errors.ts";

/** Where the API is when nothing says otherwise (the default `http.listen`). */
export const DEFAULT_API_URL = "http://127.0.0.1:8080";
/** How long one request may take before the CLI gives up. */
export const REQUEST_TIMEOUT_MS = 30_000;

/** An answer of the API that is not a success: its error code and message, or a stand-in. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  readonly code: string;
  readonly status: number;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The request never got an answer: connection refused, unknown host, timeout. */
export class ApiUnreachableError extends Error {
  override readonly name = "ApiUnreachableError";
  /** The system error code when there is one (ECONNREFUSED, ENOTFOUND, …) or "timeout". */
  readonly code: string | undefined;
  readonly url: string;

  constructor(url: string, code: string | undefined, reason: string) {
    super(`cannot reach the API at ${url}: ${reason}`);
    this.url = url;
    this.code = code;
  }

  /** True when the host answered that nothing listens there (the daemon is not running). */
  get refused(): boolean {
    return this.code === "ECONNREFUSED";
  }
}

export interface ApiResponse {
  readonly status: number;
  /** The parsed JSON body; undefined for an empty body (204). */
  readonly body: unknown;
}

export interface ApiRequest {
  readonly method: "GET" | "POST" | "PUT" | "DELETE";
  /** Path below the base URL, already encoded, e.g. `/v1/devices/sensor-1`. */
  readonly path: string;
  readonly token?: string | undefined;
  /** Sent as JSON. */
  readonly body?: unknown;
  readonly timeoutMs?: number;
}

/**
 * Parses an API base URL (`--api` or DTLSPUSH_API): http or https, no query
 * or fragment. `label` names where it came from in the error message.
 */
export function parseApiUrl(text: string, label: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`${label}: expected a URL such as ${DEFAULT_API_URL}, got ${JSON.stringify(text)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`${label}: expected an http:// or https:// URL, got ${JSON.stringify(text)}`);
  }
  if (url.search !== "" || url.hash !== "") throw new UsageError(`${label}: the URL must not have a query or fragment`);
  if (url.username !== "" || url.password !== "") throw new UsageError(`${label}: put no credentials in the URL (use --token)`);
  return url;
}

/** The URL of an API listening on `host:port`; wildcard addresses are reached over loopback. */
export function apiUrlForListen(host: string, port: number): URL {
  const reach = host === "0.0.0.0" || host === "" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return new URL(`http://${reach.includes(":") ? `[${reach}]` : reach}:${port}`);
}

/** True when the URL names this machine: localhost, 127.0.0.0/8 or ::1. */
export function isLoopbackUrl(url: URL): boolean {
  const host = url.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1" || /^::ffff:127\./.test(host);
  return false;
}

/** The base URL without a trailing slash, for messages. */
export function formatApiUrl(url: URL): string {
  return url.href.replace(/\/+$/, "");
}

/**
 * Sends one request and returns a 2xx answer. Any other status is an
 * ApiError carrying the API's code and message; no answer at all is an
 * ApiUnreachableError.
 */
export async function apiRequest(base: URL, request: ApiRequest): Promise<ApiResponse> {
  const url = new URL(base.pathname.replace(/\/+$/, "") + request.path, base);
  const headers: Record<string, string> = { accept: "application/json" };
  if (request.token !== undefined) headers["authorization"] = `Bearer ${request.token}`;
  if (request.body !== undefined) headers["content-type"] = "application/json";
  const where = formatApiUrl(base);
  let response: Response;
  try {
    response = await fetch(url, {
      method: request.method,
      headers,
      ...(request.body !== undefined ? { body: JSON.stringify(request.body) } : {}),
      signal: AbortSignal.timeout(request.timeoutMs ?? REQUEST_TIMEOUT_MS),
      redirect: "error",
    });
  } catch (e) {
    throw unreachable(where, e, request.timeoutMs ?? REQUEST_TIMEOUT_MS);
  }
  let text: string;
  try {
    text = await response.text();
  } catch (e) {
    throw unreachable(where, e, request.timeoutMs ?? REQUEST_TIMEOUT_MS);
  }
  const body = parseJson(text);
  if (response.ok) {
    if (text !== "" && body === undefined) {
      throw new ApiError(response.status, "bad_response", `the API at ${where} answered ${response.status} with a body that is not JSON`);
    }
    return { status: response.status, body };
  }
  const error = apiErrorBody(body);
  if (error !== undefined) throw new ApiError(response.status, error.code, error.message);
  const status = `${response.status}${response.statusText !== "" ? ` ${response.statusText}` : ""}`;
  throw new ApiError(response.status, `http_${response.status}`, `the API at ${where} answered ${status}`);
}

function parseJson(text: string): unknown {
  if (text === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** `{"error": {"code": "…", "message": "…"}}`, or undefined when the body is not that. */
export function apiErrorBody(body: unknown): { code: string; message: string } | undefined {
  if (typeof body !== "object" || body === null || !("error" in body)) return undefined;
  const error = (body as { error: unknown }).error;
  if (typeof error !== "object" || error === null) return undefined;
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code !== "string" || code === "") return undefined;
  return { code, message: typeof message === "string" && message !== "" ? message : code };
}

const REASONS: Readonly<Record<string, string>> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "temporary failure in name resolution",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "connection timed out",
  UND_ERR_SOCKET: "the connection was closed",
  UND_ERR_CONNECT_TIMEOUT: "connection timed out",
};

/** fetch rejects with TypeError("fetch failed") whose cause (or the cause's errors) hold the system error. */
function unreachable(where: string, e: unknown, timeoutMs: number): ApiUnreachableError {
  if (e instanceof Error && (e.name === "TimeoutError" || e.name === "AbortError")) {
    return new ApiUnreachableError(where, "timeout", `no answer within ${timeoutMs / 1000} s`);
  }
  const code = systemCode(e);
  let reason = (code !== undefined ? REASONS[code] : undefined) ?? describeCause(e);
  // fetch refuses a list of well-known ports (1, 22, 25, …) before connecting
  if (reason === "bad port") reason = "fetch does not connect to this port (a reserved port number); use another";
  return new ApiUnreachableError(where, code, reason);
}

function systemCode(e: unknown, depth = 0): string | undefined {
  if (depth > 4 || typeof e !== "object" || e === null) return undefined;
  const own = errorCode(e);
  if (own !== undefined && /^(E[A-Z]+|UND_ERR_[A-Z_]+)$/.test(own)) return own;
  const errors = (e as { errors?: unknown }).errors;
  if (Array.isArray(errors)) {
    for (const inner of errors) {
      const c = systemCode(inner, depth + 1);
      if (c !== undefined) return c;
    }
  }
  return systemCode((e as { cause?: unknown }).cause, depth + 1);
}

function describeCause(e: unknown): string {
  const cause = typeof e === "object" && e !== null ? (e as { cause?: unknown }).cause : undefined;
  const inner = cause instanceof Error ? cause : e;
  const message = inner instanceof Error ? inner.message : String(inner);
  const nl = message.indexOf("\n");
  return (nl === -1 ? message : message.slice(0, nl)).trim() || "the request failed";
}

/**
 * The one line a command prints for a refusal: `dtlspush send: <message> (<code>)`
 * for API errors and coded errors of the local store, `dtlspush send: <message>`
 * when the API could not be reached. Undefined for other errors (the
 * dispatcher reports those).
 */
export function formatCommandFailure(command: string, e: unknown): string | undefined {
  if (e instanceof ApiUnreachableError) return `${command}: ${e.message}`;
  const code = errorCode(e);
  // ApiError, and the project's own errors (AuthError, StoreError, …): lower-case snake_case codes, not system errors (ENOENT)
  if (e instanceof Error && code !== undefined && /^[a-z][a-z0-9_]*$/.test(code)) {
    return `${command}: ${oneLine(e.message).replace(/\.$/, "")} (${code})`;
  }
  return undefined;
}

function oneLine(text: string): string {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .join(", ");
}
