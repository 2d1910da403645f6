/**
 * A lean keep-alive HTTP client for the bench: a bounded pool of persistent
 * connections to the daemon's API, JSON bodies, the bearer token, API errors
 * as ApiError. Lighter per request than fetch, so the publisher takes less of
 * the CPU the daemon under test competes for.
 */
import { Agent as HttpAgent, request as httpRequest } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { ApiError, ApiUnreachableError, apiErrorBody, formatApiUrl } from "../api-client.ts";

export interface JsonAnswer {
  readonly status: number;
  readonly body: unknown;
}

const REQUEST_TIMEOUT_MS = 30_000;

export class BenchHttpClient {
  private readonly base: URL;
  private readonly prefix: string;
  private readonly agent: HttpAgent;
  private readonly send: typeof httpRequest;
  private readonly auth: string;

  /** `connections`: most sockets kept open to the API. */
  constructor(base: URL, token: string, connections: number) {
    this.base = base;
    this.prefix = base.pathname.replace(/\/+$/, "");
    const https = base.protocol === "https:";
    this.agent = https
      ? new HttpsAgent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections })
      : new HttpAgent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });
    this.send = https ? httpsRequest : httpRequest;
    this.auth = `Bearer ${token}`;
  }

  /** One request; resolves with a 2xx answer, rejects with ApiError (other status) or ApiUnreachableError. */
  request(method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: string): Promise<JsonAnswer> {
    return this.raw(method, path, body).then(({ status, text }) => {
      let parsed: unknown;
      if (text !== "") {
        try {
          parsed = JSON.parse(text) as unknown;
        } catch {
          parsed = undefined;
        }
      }
      if (status >= 200 && status < 300) return { status, body: parsed };
      const e = apiErrorBody(parsed);
      throw e !== undefined ? new ApiError(status, e.code, e.message) : new ApiError(status, `http_${status}`, `the API answered ${status}`);
    });
  }

  /** One request; the status and body text, whatever the status. */
  raw(method: string, path: string, body?: string): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { authorization: this.auth, accept: "application/json" };
      if (body !== undefined) {
        headers["content-type"] = "application/json";
        headers["content-length"] = Buffer.byteLength(body);
      }
      const req = this.send(
        {
          protocol: this.base.protocol,
          hostname: this.base.hostname.replace(/^\[|\]$/g, ""),
          port: this.base.port === "" ? undefined : Number(this.base.port),
          method,
          path: this.prefix + path,
          headers,
          agent: this.agent,
          timeout: REQUEST_TIMEOUT_MS,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
          res.on("error", (e) => reject(new ApiUnreachableError(formatApiUrl(this.base), undefined, e.message)));
        },
      );
      req.on("timeout", () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)));
      req.on("error", (e: NodeJS.ErrnoException) => reject(new ApiUnreachableError(formatApiUrl(this.base), e.code, e.message)));
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
