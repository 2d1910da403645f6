/**
 * Fuzz: the HTTP API (the real fastify app on 127.0.0.1, real TCP) with
 * malformed paths, bodies and headers, sent as raw bytes. After every case:
 * no 5xx and no hang, every error answer is {"error":{"code","message"}} with
 * a code docs/http-api.md documents for that status, and the server answers
 * the next good request. Seeds: test/support/fuzz.ts, docs/fuzzing.md.
 */
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fcShared, fuzzAssert } from "../../support/fuzz.ts";
import { rawHttp, rawRequest, type RawExchange, type RawOptions, type RawResponse } from "../../support/raw-http.ts";
import { KEY, startHarness, type Harness } from "./harness.ts";

/** status -> the codes docs/http-api.md documents for it (every table row "| 4xx | `code`, ... |"). */
function documentedCodes(): Map<string, Set<number>> {
  const doc = readFileSync(new URL("../../../docs/http-api.md", import.meta.url), "utf8");
  const codes = new Map<string, Set<number>>();
  for (const line of doc.split("\n")) {
    const m = /^\|\s*(\d{3})\s*\|([^|]*)\|/.exec(line);
    if (m === null) continue;
    for (const c of m[2]!.matchAll(/`([a-z_]+)`/g)) {
      const set = codes.get(c[1]!) ?? new Set<number>();
      set.add(Number(m[1]));
      codes.set(c[1]!, set);
    }
  }
  return codes;
}

const DOC_CODES = documentedCodes();

/** What is wrong with one answer ("" when it is fine). `errorExpected`: only a 4xx is right. */
function judge(r: RawResponse, errorExpected: boolean): string {
  if (r.status >= 500) return `status ${r.status} (a server error for a client's input)`;
  if (r.status < 400) return errorExpected ? `status ${r.status}, expected a 4xx` : "";
  let body: unknown;
  try {
    body = JSON.parse(r.body);
  } catch {
    return `status ${r.status} with a body that is not JSON: ${JSON.stringify(r.body.slice(0, 200))}`;
  }
  const err = (body as { error?: unknown } | null)?.error as { code?: unknown; message?: unknown } | undefined;
  if (typeof err !== "object" || err === null || typeof err.code !== "string" || typeof err.message !== "string") {
    return `status ${r.status} with a body not in the documented error format: ${r.body.slice(0, 200)}`;
  }
  const statuses = DOC_CODES.get(err.code);
  if (statuses === undefined) return `status ${r.status} with undocumented code ${JSON.stringify(err.code)}`;
  if (!statuses.has(r.status)) return `code ${err.code} with status ${r.status}; docs/http-api.md gives ${[...statuses].join("/")}`;
  return "";
}

/**
 * Judges a whole exchange. `mayCloseSilently`: closing without an answer is
 * fine (the client cut its body short, or sent headers over the size limit
 * and got the connection reset with its bytes unread).
 */
function judgeExchange(x: RawExchange, errorExpected: boolean, mayCloseSilently: boolean): string {
  if (x.hung) return "no answer and no close within 5 s (a hang)";
  if (x.responses.length === 0)
    return mayCloseSilently ? "" : `connection closed without an answer${x.reset ? " (reset)" : ""} (${JSON.stringify(x.rest.slice(0, 200))})`;
  for (const r of x.responses) {
    const problem = judge(r, errorExpected);
    if (problem !== "") return problem;
  }
  return "";
}

let h: Harness;
let port = 0;
const DEVICE = "dev-ok";

beforeAll(async () => {
  h = await startHarness();
  port = h.api.address().port;
  await h.server.registry.add({ id: DEVICE, psk: { identity: DEVICE, key: KEY } });
});

afterAll(async () => {
  await h?.close();
});

/** The server still answers a good request. */
async function alive(): Promise<string> {
  const x = await rawHttp(port, rawRequest("GET", `/v1/devices/${DEVICE}`, { authorization: `Bearer ${h.admin}`, connection: "close" }));
  if (x.hung) return "the next good request hung";
  const r = x.responses[0];
  return r?.status === 200 ? "" : `the next good request got ${r?.status ?? "no answer"}: ${r?.body.slice(0, 200) ?? x.rest.slice(0, 200)}`;
}

interface AttackOptions extends RawOptions {
  readonly mayCloseSilently?: boolean;
}

/** Runs one raw request and checks the answer and that the server lives on. */
async function attack(req: Buffer, errorExpected: boolean, o: AttackOptions = {}): Promise<void> {
  const x = await rawHttp(port, req, o);
  const problem = judgeExchange(x, errorExpected, o.mayCloseSilently ?? false);
  const after = await alive();
  const what = JSON.stringify(req.toString("latin1").replaceAll(h.admin, "<admin token>").replaceAll(h.publisher, "<publish token>").slice(0, 300));
  expect(problem, `request ${what}: ${problem}`).toBe("");
  expect(after, `after request ${what}: ${after}`).toBe("");
}

// ---- generators ----

const BAD_ENCODINGS = ["%ff%fe", "%zz", "abc%", "%", "%%", "%e0%80", "%c3%28", "%ed%a0%80", "%2", "a%g1b", "%f0%9f%98"];
const ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_.";
/** printable ASCII a request line can carry (no space, no controls) */
const PATH_CHARS = "!\"$&'()*+,-./0123456789:;<=>@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

const idOf = (min: number, max: number): fc.Arbitrary<string> =>
  fc.array(fc.constantFrom(...ID_CHARS), { minLength: min, maxLength: max }).map((a) => `d${a.join("")}`.slice(0, max));

const undecodable = (s: string): boolean => {
  try {
    decodeURIComponent(s);
    return false;
  } catch {
    return true;
  }
};
/** Path segments that are not valid percent-encoded UTF-8. */
const badEncoding: fc.Arbitrary<string> = fc
  .oneof(
    fc.constantFrom(...BAD_ENCODINGS),
    fc.tuple(fc.constantFrom(...BAD_ENCODINGS), fc.string({ unit: fc.constantFrom(...ID_CHARS), maxLength: 20 })).map(([b, s]) => `${s}${b}${s}`),
    fc.string({ unit: fc.constantFrom(...PATH_CHARS, "%"), minLength: 1, maxLength: 40 }),
  )
  .filter(undecodable);
const overLong: fc.Arbitrary<string> = fc.integer({ min: 301, max: 2000 }).map((n) => `d${"x".repeat(n - 1)}`);

/** A request whose path parameter is `segment`: only a 4xx is right. */
const badPath = (segment: fc.Arbitrary<string>) =>
  fc
    .tuple(
      fc.constantFrom(
        { method: "GET", tpl: "/v1/devices/:p", scope: "admin" },
        { method: "DELETE", tpl: "/v1/devices/:p", scope: "admin" },
        { method: "PUT", tpl: "/v1/devices/:p", scope: "admin" },
        { method: "POST", tpl: "/v1/devices/:p/messages", scope: "publish" },
        { method: "POST", tpl: "/v1/topics/:p/messages", scope: "publish" },
        { method: "GET", tpl: "/v1/messages/:p", scope: "publish" },
      ),
      segment,
    )
    .map(([r, seg]) => ({ ...r, path: r.tpl.replace(":p", seg) }));

const wrongType = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 3 }), fc.integer(), { maxKeys: 2 }),
);
const notAString = wrongType.filter((v) => typeof v !== "string");
const notAnIntInRange = (min: number, max: number): fc.Arbitrary<unknown> =>
  fc.oneof(
    fc.string({ maxLength: 5 }),
    fc.double({ noNaN: true }).filter((d) => !Number.isInteger(d)),
    fc.integer({ max: min - 1 }),
    fc.integer({ min: max + 1 }),
    fc.boolean(),
    fc.constant(null),
  );

/** A publish body with one field of the wrong type or out of range (400). */
const wrongTypeBody = fc.oneof(
  notAString.map((v) => ({ payload: v })),
  notAString.map((v) => ({ payload: "x", contentType: v })),
  notAString.map((v) => ({ payload: "x", collapseKey: v })),
  notAString.map((v) => ({ payload: "x", id: v })),
  notAString.map((v) => ({ payloadBase64: v })),
  notAnIntInRange(0, 9).map((v) => ({ payload: "x", priority: v })),
  notAnIntInRange(1, 30 * 86400).map((v) => ({ payload: "x", ttlSeconds: v })),
  fc
    .string({ minLength: 1, maxLength: 8 })
    .filter((k) => !["payload", "payloadBase64", "contentType", "ttlSeconds", "priority", "collapseKey", "id"].includes(k))
    .map((k) => ({ payload: "x", [k]: 1 })),
  fc.constant({}),
  fc.constant({ payload: "x", payloadBase64: "eA==" }),
  fc.constantFrom([], "a string", 42, null, true),
);

const notJson = fc
  .oneof(
    fc.string({ maxLength: 200 }),
    fc.constantFrom("{", '{"payload":', '{"payload":"x"', "[1,2", "{'payload':'x'}", '{"payload":"x",}', "nul", '"\\u12"', '{"payload":"\\x41"}'),
    fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => Buffer.from(b).toString("latin1")),
  )
  .filter((s) => {
    try {
      JSON.parse(s);
      return false;
    } catch {
      return true;
    }
  });

/** Invalid UTF-8 sequences (lone continuation bytes, overlongs, surrogates, truncated, out of range). */
const INVALID_UTF8 = [
  [0xff],
  [0xfe],
  [0x80],
  [0xc0, 0xaf],
  [0xe0, 0x80, 0xaf],
  [0xed, 0xa0, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0xc3],
  [0xe2, 0x82],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
];
const invalidUtf8Body = fc
  .tuple(
    fc.constantFrom("payload", "contentType", "collapseKey", "id"),
    fc.constantFrom(...INVALID_UTF8),
    fc.string({ unit: fc.constantFrom(...ID_CHARS), maxLength: 10 }),
  )
  .map(([field, bad, s]) => {
    const pre = field === "payload" ? `{"payload":"` : `{"payload":"x","${field}":"`;
    return Buffer.concat([Buffer.from(pre + s), Buffer.from(bad), Buffer.from(`${s}"}`)]);
  });

const authValue = fc.oneof(
  fc.string({ unit: fc.constantFrom(...PATH_CHARS, " "), maxLength: 200 }),
  fc.string({ unit: fc.constantFrom(...PATH_CHARS), maxLength: 300 }).map((s) => `Bearer ${s}`),
  fc.constantFrom(
    "Bearer",
    "Bearer ",
    "bearer x",
    "Basic dXNlcjpwYXNz",
    "Bearer a.b.c",
    "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    "Token x",
    "Bearer  x",
  ),
);

describe("HTTP API under malformed requests", () => {
  const publishPath = `/v1/devices/${DEVICE}/messages`;

  it.each([
    ["bad percent-encoding", badEncoding, 100],
    ["over 300 characters", overLong, 30],
  ] as const)("path parameters with %s get a documented 4xx", async (_what, segment, runs) => {
    await fuzzAssert(
      fc.asyncProperty(badPath(segment), async (r) => {
        const token = r.scope === "admin" ? h.admin : h.publisher;
        const body = r.method === "GET" || r.method === "DELETE" ? undefined : r.method === "PUT" ? `{"psk":{"keyHex":"00"}}` : `{"payload":"x"}`;
        const headers: Record<string, string> = { authorization: `Bearer ${token}` };
        if (body !== undefined) headers["content-type"] = "application/json";
        await attack(rawRequest(r.method, r.path, headers, body), true);
      }),
      fcShared(runs, runs),
    );
  });

  it("valid ids over 100 characters are read, not refused", async () => {
    await fuzzAssert(
      fc.asyncProperty(fc.boolean(), idOf(101, 128), idOf(101, 200), async (device, devId, msgId) => {
        const path = device ? `/v1/devices/${devId}` : `/v1/messages/${msgId}`;
        const x = await rawHttp(port, rawRequest("GET", path, { authorization: `Bearer ${h.admin}` }));
        const r = x.responses[0];
        const want = device ? "device_unknown" : "message_unknown";
        expect(r?.status, `GET ${path}: ${r?.status} ${r?.body.slice(0, 200)}`).toBe(404);
        expect(JSON.parse(r!.body).error.code).toBe(want);
      }),
      fcShared(20, 2),
    );
    // the reported case: a 150-character message id is accepted, so its status must be readable
    const id = `m${"x".repeat(149)}`;
    const pub = await h.call("POST", `/v1/devices/${DEVICE}/messages`, { token: h.publisher, body: { payload: "x", id } });
    expect(pub.status).toBe(202);
    const status = await h.call("GET", `/v1/messages/${id}`, { token: h.publisher });
    expect(status.status, await status.clone().text()).toBe(200);
  });

  it("bodies that are not JSON, of the wrong type, not UTF-8 or too large get a documented 4xx", async () => {
    const body = fc.oneof(
      notJson.map((s) => ({ kind: "not json", bytes: Buffer.from(s, "latin1"), type: "application/json" })),
      wrongTypeBody.map((b) => ({ kind: "wrong type", bytes: Buffer.from(JSON.stringify(b)), type: "application/json" })),
      fc.integer({ min: 64 * 1024 + 1, max: 300_000 }).map((n) => ({ kind: "huge", bytes: Buffer.alloc(0), size: n, type: "application/json" })),
      fc
        .constantFrom(
          "text/plain",
          "application/x-www-form-urlencoded",
          "application/octet-stream",
          "multipart/form-data; boundary=x",
          "application/jso",
        )
        .map((t) => ({ kind: "content type", bytes: Buffer.from(`{"payload":"x"}`), type: t })),
    );
    await fuzzAssert(
      fc.asyncProperty(body, async (b) => {
        const bytes = b.kind === "huge" && "size" in b ? Buffer.from(`{"payload":"${"a".repeat(b.size)}"}`) : b.bytes;
        await attack(rawRequest("POST", publishPath, { authorization: `Bearer ${h.publisher}`, "content-type": b.type }, bytes), true);
      }),
      fcShared(150, 3),
    );
  });

  it("invalid UTF-8 in a string field of the body is refused with 400", async () => {
    await fuzzAssert(
      fc.asyncProperty(invalidUtf8Body, async (b) => {
        await attack(rawRequest("POST", publishPath, { authorization: `Bearer ${h.publisher}`, "content-type": "application/json" }, b), true);
      }),
      fcShared(40, 6),
    );
  });

  it("a Content-Length longer or shorter than the body gets a documented 4xx or a close, never a hang", async () => {
    await fuzzAssert(
      fc.asyncProperty(
        fc.string({ unit: fc.constantFrom(...ID_CHARS), minLength: 1, maxLength: 200 }),
        fc.boolean(),
        fc.integer({ min: 1, max: 5000 }),
        async (payload, longer, by) => {
          const bytes = Buffer.from(JSON.stringify({ payload }));
          const declared = longer ? bytes.length + by : Math.max(1, bytes.length - 1 - (by % (bytes.length - 1)));
          const req = rawRequest(
            "POST",
            publishPath,
            { authorization: `Bearer ${h.publisher}`, "content-type": "application/json", "content-length": String(declared) },
            bytes,
          );
          // A longer declaration: the server waits for the rest, so the client ends its stream and a 4xx or a
          // close is right. A shorter one: the rest of the bytes are a (malformed) second request to answer.
          await attack(req, true, longer ? { halfClose: true, mayCloseSilently: true } : { halfClose: true, responses: 2 });
        },
      ),
      fcShared(40, 4),
    );
  });

  it("bad Authorization headers get 401", async () => {
    await fuzzAssert(
      fc.asyncProperty(
        authValue,
        fc.constantFrom("GET /v1/devices", "GET /v1/messages/nope", `POST ${publishPath}`, "GET /metrics", "DELETE /v1/devices/x"),
        async (auth, route) => {
          const [method, path] = route.split(" ") as [string, string];
          const body = method === "POST" ? `{"payload":"x"}` : undefined;
          const hs: Record<string, string> = { authorization: auth };
          if (body !== undefined) hs["content-type"] = "application/json";
          const x = await rawHttp(port, rawRequest(method, path, hs, body));
          const r = x.responses[0];
          expect(r?.status, `${route} with Authorization ${JSON.stringify(auth)}: ${r?.status} ${r?.body.slice(0, 200)}`).toBe(401);
          expect(judge(r!, true)).toBe("");
        },
      ),
      fcShared(100, 7),
    );
  });

  it("huge headers get a documented 4xx (or a reset)", async () => {
    const headers = fc.oneof(
      fc.integer({ min: 17 * 1024, max: 100 * 1024 }).map((n) => ({ kind: "huge header", auth: "", big: n })),
      fc.integer({ min: 17 * 1024, max: 60 * 1024 }).map((n) => ({ kind: "huge authorization", auth: "", big: n })),
    );
    await fuzzAssert(
      fc.asyncProperty(headers, fc.constantFrom("GET /v1/devices", `GET /v1/messages/nope`, `POST ${publishPath}`), async (c, route) => {
        const [method, path] = route.split(" ") as [string, string];
        const body = method === "POST" ? `{"payload":"x"}` : undefined;
        const auth = c.kind === "huge header" ? `Bearer ${h.publisher}` : c.kind === "huge authorization" ? `Bearer ${"a".repeat(c.big)}` : c.auth;
        const hs: Record<string, string> = { authorization: auth };
        if (body !== undefined) hs["content-type"] = "application/json";
        if (c.kind === "huge header") hs["x-big"] = "a".repeat(c.big);
        const huge = c.kind.startsWith("huge");
        await attack(rawRequest(method, path, hs, body), true, { mayCloseSilently: huge });
      }),
      fcShared(100, 5),
    );
  });

  it("a malformed Last-Event-ID on the event stream gets 400 bad_request", async () => {
    const bad = fc.oneof(
      fc.string({ unit: fc.constantFrom(...PATH_CHARS), minLength: 1, maxLength: 30 }).filter((v) => !/^[0-9]{1,15}$/.test(v)),
      fc.integer({ min: 16, max: 200 }).map((n) => "9".repeat(n)),
      fc.constantFrom("-1", "1e3", "0x10", "1.5", "1 2", "１２"),
    );
    await fuzzAssert(
      fc.asyncProperty(bad, fc.boolean(), async (id, asHeader) => {
        const path = asHeader ? "/v1/events" : `/v1/events?lastEventId=${encodeURIComponent(id)}`;
        const headers: Record<string, string> = { authorization: `Bearer ${h.publisher}`, accept: "text/event-stream" };
        if (asHeader) headers["last-event-id"] = Buffer.from(id, "utf8").toString("latin1");
        const x = await rawHttp(port, rawRequest("GET", path, headers));
        const r = x.responses[0];
        expect(
          r?.status,
          `Last-Event-ID ${JSON.stringify(id)} (${asHeader ? "header" : "query"}): ${r?.status ?? (x.hung ? "hang" : "closed")} ${r?.body.slice(0, 200) ?? ""}`,
        ).toBe(400);
        expect(judge(r!, true)).toBe("");
        expect(await alive()).toBe("");
      }),
      fcShared(40, 8),
    );
  });

  it("malformed request framing (request line, headers, Transfer-Encoding, Content-Length) gets a documented 4xx", async () => {
    const pub = (): string => `authorization: Bearer ${h.publisher}\r\ncontent-type: application/json\r\n`;
    const framing = fc.oneof(
      fc.constantFrom(
        "GET /healthz HTTP/9.9\r\nhost: x\r\n\r\n",
        "BREW /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n\r\n", // no Host
        "GET /healthz HTTP/1.1\nhost: x\n\n", // bare LF
        "GET /v1/devices/a b HTTP/1.1\r\nhost: x\r\n\r\n",
        "GET /v1/devices/a\u0000b HTTP/1.1\r\nhost: x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-a\u0001: b\r\n\r\n",
        "<PUB>content-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "<PUB>transfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        "<PUB>content-length: 2\r\ncontent-length: 3\r\n\r\n{}",
        "<PUB>content-length: -1\r\n\r\n{}",
        "<PUB>content-length: 1e3\r\n\r\n{}",
      ),
      // a request line of random tokens
      fc
        .tuple(
          fc.string({ unit: fc.constantFrom(..."ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"), minLength: 1, maxLength: 10 }),
          fc.string({ unit: fc.constantFrom(...PATH_CHARS, " "), maxLength: 40 }),
          fc.constantFrom("HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1x", "", "FOO"),
        )
        .filter(([m]) => !["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"].includes(m))
        .map(([m, path, v]) => `${m} /${path} ${v}\r\nhost: x\r\n\r\n`),
    );
    await fuzzAssert(
      fc.asyncProperty(framing, async (raw) => {
        const req = Buffer.from(
          raw.startsWith("<PUB>") ? `POST /v1/devices/${DEVICE}/messages HTTP/1.1\r\nhost: x\r\n${pub()}${raw.slice(5)}` : raw,
          "latin1",
        );
        await attack(req, true);
      }),
      fcShared(40, 9),
    );
  });
});
