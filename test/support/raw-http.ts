/**
 * HTTP/1.1 over a plain TCP socket, for requests no HTTP client would send
 * (bad percent-encoding, a Content-Length that lies, invalid UTF-8, huge
 * headers). The request bytes are written as given, the write side is then
 * closed, and everything the server sends until it closes the connection is
 * parsed into responses (several, when the bytes held several requests).
 */
import { connect } from "node:net";

export interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

export interface RawExchange {
  readonly responses: RawResponse[];
  /** bytes after the last complete response (a truncated or unparsable answer) */
  readonly rest: string;
  /** the server did not answer (or close) within the time limit */
  readonly hung: boolean;
  /** the server reset the connection (e.g. closing it with request bytes still unread) */
  readonly reset: boolean;
}

export interface RawOptions {
  /** close our write side after the request (the server then sees the end of the stream). Default false. */
  readonly halfClose?: boolean;
  /** done once this many responses arrived (else when the server closes). Default 1. */
  readonly responses?: number;
  /** time limit, ms. Default 5000. */
  readonly ms?: number;
}

/**
 * Sends `request` to 127.0.0.1:port and reads until `responses` answers
 * arrived, the server closed the connection, or the time limit passed.
 */
export function rawHttp(port: number, request: Uint8Array | string, o: RawOptions = {}): Promise<RawExchange> {
  const want = o.responses ?? 1;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    let hung = false;
    let reset = false;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...parseResponses(Buffer.concat(chunks)), hung, reset });
    };
    const timer = setTimeout(() => {
      hung = true;
      finish();
    }, o.ms ?? 5_000);
    socket.on("connect", () => {
      const bytes = typeof request === "string" ? Buffer.from(request, "latin1") : request;
      if (o.halfClose === true) socket.end(bytes);
      else socket.write(bytes);
    });
    socket.on("data", (d) => {
      chunks.push(d);
      if (parseResponses(Buffer.concat(chunks)).responses.length >= want) finish();
    });
    socket.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "ECONNRESET" || e.code === "EPIPE") reset = true;
      else if (!done) {
        done = true;
        clearTimeout(timer);
        reject(e);
      }
    });
    socket.on("close", finish);
  });
}

function parseResponses(all: Buffer): { responses: RawResponse[]; rest: string } {
  const responses: RawResponse[] = [];
  let at = 0;
  for (;;) {
    const end = all.indexOf("\r\n\r\n", at);
    if (end < 0) break;
    const head = all.subarray(at, end).toString("latin1").split("\r\n");
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? "");
    if (m === null) break;
    const headers: Record<string, string> = {};
    for (const line of head.slice(1)) {
      const i = line.indexOf(":");
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    let bodyStart = end + 4;
    let body: Buffer;
    if (headers["transfer-encoding"]?.toLowerCase() === "chunked") {
      const parts: Buffer[] = [];
      let p = bodyStart;
      for (;;) {
        const lineEnd = all.indexOf("\r\n", p);
        if (lineEnd < 0) return { responses, rest: all.subarray(at).toString("latin1") };
        const size = parseInt(all.subarray(p, lineEnd).toString("latin1"), 16);
        if (!Number.isFinite(size)) return { responses, rest: all.subarray(at).toString("latin1") };
        p = lineEnd + 2;
        if (size === 0) {
          p += 2;
          break;
        }
        parts.push(all.subarray(p, p + size));
        p += size + 2;
      }
      body = Buffer.concat(parts);
      bodyStart = p;
      at = p;
    } else {
      const len = Number(headers["content-length"] ?? "0");
      if (bodyStart + len > all.length) break;
      body = all.subarray(bodyStart, bodyStart + len);
      at = bodyStart + len;
    }
    responses.push({ status: Number(m[1]), headers, body: body.toString("utf8") });
  }
  return { responses, rest: all.subarray(at).toString("latin1") };
}

/** A request: method, path (sent as is), headers, and a body (Content-Length added unless given). */
export function rawRequest(method: string, path: string, headers: Record<string, string> = {}, body?: Uint8Array | string): Buffer {
  const b = body === undefined ? undefined : typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body);
  const h: Record<string, string> = { host: "127.0.0.1", ...headers };
  if (b !== undefined && !Object.keys(h).some((k) => k.toLowerCase() === "content-length")) h["content-length"] = String(b.length);
  const head = `${method} ${path} HTTP/1.1\r\n${Object.entries(h)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join("")}\r\n`;
  return Buffer.concat([Buffer.from(head, "latin1"), b ?? Buffer.alloc(0)]);
}
