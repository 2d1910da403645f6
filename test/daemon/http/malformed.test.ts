/**
 * Malformed requests over raw TCP against the real server: every answer is
 * the API's JSON error ({"error":{"code","message"}}) with a documented code,
 * whether fastify's router, its body parser or node:http's parser refused the
 * request, and each is counted by code. The server keeps serving.
 */
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { HTTP_ERROR_CODES, HTTP_STATUS, HttpError, type HttpErrorCode } from "../../../src/daemon/http/index.ts";
import { KEY, startHarness, type Harness } from "./harness.ts";
import { rawRequest, type RawResponse } from "./raw-http.ts";

const harnesses: Harness[] = [];
afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.close();
});

const DOC = readFileSync(new URL("../../../docs/http-api.md", import.meta.url), "utf8");

/** The codes of the error table of docs/http-api.md. */
function documentedCodes(): Map<string, number> {
  const out = new Map<string, number>();
  const section = DOC.slice(DOC.indexOf("## Errors"), DOC.indexOf("## Publishing"));
  for (const m of section.matchAll(/^\| (\d{3}) \| ([^|]+) \|/gm)) {
    for (const c of (m[2] as string).matchAll(/`([a-z_]+)`/g)) out.set(c[1] as string, Number(m[1]));
  }
  return out;
}

function expectApiError(r: RawResponse, status: number, code: HttpErrorCode): void {
  expect(r.headers["content-type"]).toBe("application/json; charset=utf-8");
  const body = JSON.parse(r.body) as unknown;
  expect({ status: r.status, body }).toEqual({ status, body: { error: { code, message: expect.stringMatching(/^\S.*\.$/) } } });
  expect(documentedCodes().get(code), `${code} is in the error table of docs/http-api.md`).toBe(status);
  expect(r.body).not.toMatch(/FST_|statusCode|stack|\.ts:\d+/);
}

async function harness(o: Parameters<typeof startHarness>[0] = {}): Promise<{ h: Harness; counted: Map<string, number> }> {
  const counted = new Map<string, number>();
  const h = await startHarness({
    ...o,
    observer: { httpError: (code, status) => void counted.set(`${status} ${code}`, (counted.get(`${status} ${code}`) ?? 0) + 1) },
  });
  harnesses.push(h);
  await h.server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
  return { h, counted };
}

const json = (s: string): string => `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(s)}\r\n\r\n${s}`;

describe("malformed requests get the API's JSON errors", () => {
  it("each case: status, JSON body, documented code; counted; the server keeps serving", async () => {
    const { h, counted } = await harness();
    const port = h.api.address().port;
    const auth = `Authorization: Bearer ${h.publisher}\r\n`;
    const post = `POST /v1/devices/d1/messages HTTP/1.1\r\nHost: x\r\n${auth}`;
    const cases: { name: string; request: string | Buffer; status: number; code: HttpErrorCode; halfClose?: boolean }[] = [
      {
        name: "%ff%fe in the path (not UTF-8)",
        request: `GET /v1/messages/%ff%fe HTTP/1.1\r\nHost: x\r\n${auth}\r\n`,
        status: 400,
        code: "bad_request",
      },
      { name: "%zz in the path", request: `GET /v1/messages/%zz HTTP/1.1\r\nHost: x\r\n${auth}\r\n`, status: 400, code: "bad_request" },
      { name: "a trailing %", request: `GET /v1/devices/abc% HTTP/1.1\r\nHost: x\r\n${auth}\r\n`, status: 400, code: "bad_request" },
      {
        name: "a parameter longer than any name",
        request: `GET /v1/messages/${"a".repeat(700)} HTTP/1.1\r\nHost: x\r\n${auth}\r\n`,
        status: 414,
        code: "uri_too_long",
      },
      {
        name: "a body longer than its Content-Length",
        request: `${post}Content-Type: application/json\r\nContent-Length: 5\r\n\r\n{"payload":"x"}`,
        status: 400,
        code: "malformed_request",
      },
      {
        name: "a body shorter than its Content-Length, then EOF",
        request: `${post}Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{"payload":"x"}`,
        status: 400,
        code: "malformed_request",
        halfClose: true,
      },
      { name: "invalid JSON", request: `${post}${json('{"payload":')}`, status: 400, code: "bad_request" },
      { name: "an empty JSON body", request: `${post}${json("")}`, status: 400, code: "bad_request" },
      { name: "prototype poisoning", request: `${post}${json('{"payload":"x","__proto__":{"a":1}}')}`, status: 400, code: "bad_request" },
      {
        name: "a body that is not JSON",
        request: `${post}Content-Type: text/xml\r\nContent-Length: 4\r\n\r\n<a/>`,
        status: 415,
        code: "unsupported_media_type",
      },
      { name: "a body without a content type", request: `${post}Content-Length: 2\r\n\r\n{}`, status: 415, code: "unsupported_media_type" },
      { name: "a body over the limit", request: `${post}${json(`{"payload":"${"x".repeat(70_000)}"}`)}`, status: 413, code: "body_too_large" },
      {
        name: "20 KB of headers",
        request: `GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ${"a".repeat(20_000)}\r\n\r\n`,
        status: 431,
        code: "headers_too_large",
      },
      { name: "a 70 KB URL", request: `GET /${"a".repeat(70_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, status: 431, code: "headers_too_large" },
      { name: "an unknown route", request: `GET /nope HTTP/1.1\r\nHost: x\r\n\r\n`, status: 404, code: "not_found" },
      {
        name: "a method the route does not have",
        request: `PATCH /v1/devices/d1 HTTP/1.1\r\nHost: x\r\n${auth}\r\n`,
        status: 404,
        code: "not_found",
      },
      { name: "a method fastify does not route", request: `PROPFIND / HTTP/1.1\r\nHost: x\r\n\r\n`, status: 404, code: "not_found" },
      { name: "a method that is not HTTP", request: `FOO / HTTP/1.1\r\nHost: x\r\n\r\n`, status: 400, code: "malformed_request" },
      { name: "binary garbage", request: Buffer.from([0, 1, 2, 0xff, 13, 10, 13, 10]), status: 400, code: "malformed_request" },
      { name: "the HTTP/2 preface", request: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, status: 400, code: "malformed_request" },
      {
        name: "Content-Length and Transfer-Encoding both",
        request: `${post}Content-Type: application/json\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
        status: 400,
        code: "malformed_request",
      },
      {
        name: "a bad chunk size",
        request: `${post}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`,
        status: 400,
        code: "malformed_request",
      },
      { name: "HTTP/1.1 without Host", request: `GET /healthz HTTP/1.1\r\n\r\n`, status: 400, code: "bad_request" },
      {
        name: "an Expect the server cannot meet",
        request: `GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n`,
        status: 417,
        code: "expectation_failed",
      },
    ];
    const expected = new Map<string, number>();
    for (const c of cases) {
      const r = await rawRequest(port, c.request, { halfClose: c.halfClose === true });
      try {
        expectApiError(r, c.status, c.code);
      } catch (e) {
        throw new Error(`${c.name}: ${(e as Error).message}\n${r.raw.slice(0, 500)}`);
      }
      expected.set(`${c.status} ${c.code}`, (expected.get(`${c.status} ${c.code}`) ?? 0) + 1);
    }
    // each answer counted under its code (a pipelined request cut off by the parser error may add one of its own)
    for (const [key, n] of expected) expect(counted.get(key) ?? 0, key).toBeGreaterThanOrEqual(n);
    expect([...counted.keys()].filter((k) => !expected.has(k))).toEqual([]);
    const ok = await rawRequest(port, `GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(ok.status).toBe(200);
  });

  it("a body that does not arrive in full in time is 408 request_timeout", async () => {
    const { h } = await harness({ limits: { requestTimeoutMs: 300 } });
    const port = h.api.address().port;
    const started = Date.now();
    const r = await rawRequest(
      port,
      `POST /v1/devices/d1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${h.publisher}\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"pay`,
      { ms: 5000 },
    );
    expectApiError(r, 408, "request_timeout");
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  it("every code has a status, is documented with it, and is in the OpenAPI Error schema", async () => {
    const documented = documentedCodes();
    for (const code of HTTP_ERROR_CODES) expect([code, documented.get(code)]).toEqual([code, HTTP_STATUS[code]]);
    expect([...documented.keys()].sort()).toEqual([...HTTP_ERROR_CODES].sort());
    const doc = JSON.parse(readFileSync(new URL("../../../docs/openapi.json", import.meta.url), "utf8")) as {
      components: { schemas: { Error: { properties: { error: { properties: { code: { enum: string[] } } } } } } };
    };
    expect(doc.components.schemas.Error.properties.error.properties.code.enum).toEqual([...HTTP_ERROR_CODES]);
    // the codes are a closed union: a code nobody gave a status (and documented) does not compile
    // @ts-expect-error "no_such_code" is not an HttpErrorCode
    const unmapped = (): HttpError => new HttpError("no_such_code", "Never built.");
    expect(typeof unmapped).toBe("function");
  });
});

describe("text payloads must be UTF-8", () => {
  it("invalid UTF-8 in a text payload is 400 bad_request, not a payload with U+FFFD", async () => {
    const { h } = await harness();
    const port = h.api.address().port;
    for (const bad of [[0xff, 0xfe], [0xc3], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]]) {
      const body = Buffer.concat([Buffer.from('{"payload":"ok '), Buffer.from(bad), Buffer.from(' end","id":"bad-utf8"}')]);
      const r = await rawRequest(
        port,
        Buffer.concat([
          Buffer.from(
            `POST /v1/devices/d1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${h.publisher}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
          ),
          body,
        ]),
      );
      expectApiError(r, 400, "bad_request");
      expect(JSON.parse(r.body).error.message).toMatch(/UTF-8/);
    }
    // valid JSON, but an unpaired surrogate escape is no UTF-8 text either
    for (const field of ["payload", "contentType", "collapseKey"]) {
      for (const escape of ["\\ud800", "\\udfff", "x\\ud83d", "\\ude00x"]) {
        const body = `{"payload":"p","${field}":"${escape}","id":"bad-utf8"}`.replace('"payload":"p","payload"', '"payload"');
        const r = await rawRequest(
          port,
          `POST /v1/devices/d1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${h.publisher}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        );
        expectApiError(r, 400, "bad_request");
        expect(JSON.parse(r.body).error.message).toContain(`body.${field} holds an unpaired surrogate`);
      }
    }
    expect(await h.store.getMessage("bad-utf8")).toBeUndefined();
    const pairBody = '{"payload":"\\ud83d\\ude00","id":"pair-utf8"}';
    const pair = await rawRequest(
      port,
      `POST /v1/devices/d1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${h.publisher}\r\nContent-Type: application/json\r\nContent-Length: ${pairBody.length}\r\n\r\n${pairBody}`,
    );
    expect(pair.status).toBe(202);
    expect(new TextDecoder().decode((await h.store.getMessage("pair-utf8"))?.payload)).toBe("\u{1F600}");
    // valid UTF-8 (and a U+FFFD sent on purpose) is published as sent
    const text = "ok ü € 𝄞 \ufffd end";
    const res = await h.call("POST", "/v1/devices/d1/messages", { token: h.publisher, body: { payload: text, id: "good-utf8" } });
    expect(res.status).toBe(202);
    expect(new TextDecoder().decode((await h.store.getMessage("good-utf8"))?.payload)).toBe(text);
  });
});
