/**
 * Raw HTTP/1.1 over node:net for requests fetch() will not send: bad
 * percent-encoding, lying Content-Length, oversized headers, unknown methods.
 */
import { connect } from "node:net";

export interface RawResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  /** all bytes the server sent before closing (or before the response was complete) */
  readonly raw: string;
}

/**
 * Sends `request` as is to 127.0.0.1:port and returns the first response.
 * `halfClose`: end our side after sending (the server sees EOF). Rejects when
 * no complete response arrives within `ms`.
 */
export function rawRequest(port: number, request: string | Buffer, o: { halfClose?: boolean; ms?: number } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (e?: Error): void => {
      if (done) return;
      const all = Buffer.concat(chunks).toString("latin1");
      const r = parse(all);
      if (r === undefined && e === undefined) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (r !== undefined) resolve(r);
      else reject(new Error(`no complete response (${e?.message}); got ${JSON.stringify(all.slice(0, 300))}`));
    };
    const timer = setTimeout(() => finish(new Error(`timed out after ${o.ms ?? 5000} ms`)), o.ms ?? 5000);
    socket.on("data", (d: Buffer) => {
      chunks.push(d);
      finish();
    });
    socket.on("end", () => finish(new Error("the server closed the connection")));
    socket.on("close", () => finish(new Error("the connection closed")));
    socket.on("error", (e) => finish(e));
    socket.on("connect", () => {
      socket.write(request);
      if (o.halfClose === true) socket.end();
    });
  });
}

/** The first complete response in `text` (Content-Length framed, or chunked), or undefined while incomplete. */
function parse(text: string): RawResponse | undefined {
  const headEnd = text.indexOf("\r\n\r\n");
  if (headEnd < 0) return undefined;
  const [statusLine = "", ...lines] = text.slice(0, headEnd).split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (m === null) throw new Error(`not an HTTP response: ${JSON.stringify(statusLine)}`);
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(":");
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  const rest = Buffer.from(text.slice(headEnd + 4), "latin1");
  let body: Buffer;
  if (headers["transfer-encoding"] === "chunked") {
    const parts: Buffer[] = [];
    let pos = 0;
    for (;;) {
      const eol = rest.indexOf("\r\n", pos);
      if (eol < 0) return undefined;
      const size = Number.parseInt(rest.subarray(pos, eol).toString("latin1"), 16);
      if (Number.isNaN(size)) throw new Error("bad chunk size");
      if (size === 0) break;
      if (rest.length < eol + 2 + size + 2) return undefined;
      parts.push(rest.subarray(eol + 2, eol + 2 + size));
      pos = eol + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else {
    const length = Number(headers["content-length"] ?? "0");
    if (rest.length < length) return undefined;
    body = rest.subarray(0, length);
  }
  return { status: Number(m[1]), headers, body: body.toString("utf8"), raw: text };
}
