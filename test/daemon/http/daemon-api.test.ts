/**
 * The HTTP API of the real daemon (startDaemon with its configuration
 * defaults, SQLite store in a temp data dir, ports 0): refused requests are
 * counted per code in /metrics; the default payload limit fits the default
 * MTU, and a refusal states the real limit in bytes.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { issuePublisherToken } from "../../../src/auth/index.ts";
import { connect, type DtlspushClient, type ReceivedMessage } from "../../../src/client/index.ts";
import { loadConfig } from "../../../src/daemon/config/index.ts";
import { startDaemon, type Daemon } from "../../../src/daemon/daemon.ts";
import { createLogger } from "../../../src/daemon/logger.ts";
import { rawRequest } from "./raw-http.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const daemons: Daemon[] = [];
const dirs: string[] = [];
const clients: DtlspushClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close().catch(() => undefined);
  for (const d of daemons.splice(0)) await d.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface ErrorJson {
  error: { code: string; message: string };
}

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function daemon(env: Record<string, string> = {}): Promise<{ d: Daemon; base: string; port: number; admin: string }> {
  const dir = mkdtempSync(join(tmpdir(), "dtlspush-http-"));
  dirs.push(dir);
  const config = await loadConfig({
    env: { DTLSPUSH_DTLS_LISTEN: "127.0.0.1:0", DTLSPUSH_HTTP_LISTEN: "127.0.0.1:0", DTLSPUSH_LOG_LEVEL: "silent", ...env },
    cwd: dir,
  });
  const d = await startDaemon(config, { logger: createLogger({ level: "silent" }) });
  daemons.push(d);
  const port = d.http.address().port;
  const { token } = await issuePublisherToken(d.push.publisherKeys, { subject: "ops", scopes: ["admin"], now: Date.now(), ttlSeconds: 600 });
  return { d, base: `http://127.0.0.1:${port}`, port, admin: token };
}

function sample(text: string, series: string): number {
  for (const line of text.split("\n")) if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  return 0;
}

it("refused requests are counted per code in dtlspush_http_errors_total", async () => {
  const { base, port, admin } = await daemon();
  const metrics = async (): Promise<string> => (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${admin}` } })).text();
  for (let i = 0; i < 3; i++) await rawRequest(port, "GET /v1/messages/%zz HTTP/1.1\r\nHost: x\r\n\r\n");
  for (let i = 0; i < 2; i++) await rawRequest(port, "FOO / HTTP/1.1\r\nHost: x\r\n\r\n");
  await fetch(`${base}/v1/devices`);
  const text = await metrics();
  expect(sample(text, 'dtlspush_http_errors_total{code="bad_request",status="400"}')).toBe(3);
  expect(sample(text, 'dtlspush_http_errors_total{code="malformed_request",status="400"}')).toBe(2);
  expect(sample(text, 'dtlspush_http_errors_total{code="token_missing",status="401"}')).toBe(1);
});

describe("payload limits with the configuration defaults", () => {
  it("a payload of delivery.max_payload_bytes fits the default MTU beside ordinary names and reaches the device", async () => {
    const { d, base } = await daemon();
    expect(d.config.dtls.mtu).toBe(1200);
    const max = d.config.delivery.maxPayloadBytes;
    const { token } = await issuePublisherToken(d.push.publisherKeys, {
      subject: "p".repeat(32),
      scopes: ["admin"],
      now: Date.now(),
      ttlSeconds: 600,
    });
    const call = (method: string, path: string, body?: unknown): Promise<Response> =>
      fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const id = `sensor-${"x".repeat(57)}`;
    expect(id).toHaveLength(64);
    expect((await call("PUT", `/v1/devices/${id}`, { psk: { keyHex: KEY_HEX } })).status).toBe(201);
    const client = await connect({
      host: "127.0.0.1",
      port: d.push.address().port,
      psk: { identity: id, key: Buffer.from(KEY_HEX, "hex") },
      reconnect: false,
    });
    clients.push(client);
    const received: ReceivedMessage[] = [];
    client.on("message", (m) => received.push(m));
    const res = await call("POST", `/v1/devices/${id}/messages`, { payload: "a".repeat(max), contentType: "application/json" });
    expect(res.status).toBe(202);
    await until(() => received.length === 1, 10_000);
    expect(received[0]?.payload.byteLength).toBe(max);

    const over = await call("POST", `/v1/devices/${id}/messages`, { payload: "a".repeat(max + 1) });
    expect(over.status).toBe(413);
    expect(((await over.json()) as ErrorJson).error).toEqual({
      code: "payload_too_large",
      message: `payload is ${max + 1} bytes; at most ${max} bytes are accepted (the payload limit).`,
    });
  });

  it("a publish whose long names leave less room is refused stating the real limit in bytes, and that many bytes are accepted", async () => {
    const { d, base, admin } = await daemon();
    const call = (method: string, path: string, body?: unknown): Promise<Response> =>
      fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${admin}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const device = `D${"d".repeat(127)}`;
    expect((await call("PUT", `/v1/devices/${device}`, { psk: { keyHex: KEY_HEX } })).status).toBe(201);
    const names = (n: number) => ({ id: `M${String(n).padStart(199, "m")}`, contentType: "c".repeat(128), collapseKey: `k${n}`.padEnd(128, "k") });
    const refused = await call("POST", `/v1/devices/${device}/messages`, { payload: "a".repeat(d.config.delivery.maxPayloadBytes), ...names(1) });
    expect(refused.status).toBe(413);
    const message = ((await refused.json()) as ErrorJson).error.message;
    const m = /at most (\d+) bytes fit one DTLS record/.exec(message);
    expect(m, message).not.toBeNull();
    const fits = Number(m?.[1]);
    expect(fits).toBeLessThan(d.config.delivery.maxPayloadBytes);
    expect(fits).toBeGreaterThan(0);
    expect((await call("POST", `/v1/devices/${device}/messages`, { payload: "a".repeat(fits), ...names(2) })).status).toBe(202);
    const oneMore = await call("POST", `/v1/devices/${device}/messages`, { payload: "a".repeat(fits + 1), ...names(3) });
    expect(oneMore.status).toBe(413);
    expect(((await oneMore.json()) as ErrorJson).error.message).toContain(`at most ${fits} bytes fit`);
  });
});
