/**
 * The HTTP API of the real daemon (startDaemon with its configuration
 * defaults, SQLite store in a temp data dir, ports 0): refused requests are
 * counted per code in /metrics.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, expect, it } from "vitest";
import { issuePublisherToken } from "../../../src/auth/index.ts";
import { loadConfig } from "../../../src/daemon/config/index.ts";
import { startDaemon, type Daemon } from "../../../src/daemon/daemon.ts";
import { createLogger } from "../../../src/daemon/logger.ts";
import { rawRequest } from "./raw-http.ts";

const daemons: Daemon[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

export async function daemon(env: Record<string, string> = {}): Promise<{ d: Daemon; base: string; port: number; admin: string }> {
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
