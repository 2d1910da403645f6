import { EventEmitter } from "node:events";
import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { connect } from "../../src/client/index.ts";
import { createLogger, logDaemonEvents } from "../../src/daemon/logger.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { connect as dtlsConnect, DtlsError } from "../../src/dtls/index.ts";
import { openMemoryStore } from "../../src/store/index.ts";

/** A destination that keeps what was written. */
function sink() {
  let raw = "";
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, done) {
      raw += chunk.toString();
      done();
    },
  });
  return {
    stream,
    get raw() {
      return raw;
    },
    lines: (): Record<string, unknown>[] =>
      raw
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const PSK_HEX = "5ec2e75ec2e75ec2e75ec2e75ec2e7aa";
const TOKEN = "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl";

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("createLogger", () => {
  it("writes JSON lines with an ISO time, the level's name and name dtlspush", () => {
    const out = sink();
    const log = createLogger({ level: "info", destination: out.stream });
    log.info({ device: "d1" }, "hello");
    log.warn("careful");
    log.debug("not at info");
    const [a, b, ...rest] = out.lines();
    expect(rest).toEqual([]);
    expect(a).toMatchObject({ level: "info", name: "dtlspush", device: "d1", msg: "hello" });
    expect(b).toMatchObject({ level: "warn", msg: "careful" });
    expect(a?.time).toMatch(ISO);
    expect(Math.abs(Date.parse(a?.time as string) - Date.now())).toBeLessThan(60_000);
  });

  it("redacts tokens, authorization headers, PSK keys and payloads wherever they are logged", () => {
    const out = sink();
    const log = createLogger({ level: "trace", destination: out.stream });
    log.info({ token: TOKEN, payload: "my secret payload" }, "top level");
    log.info({ req: { method: "POST", headers: { authorization: `Bearer ${TOKEN}`, cookie: "sid=abc" } } }, "request");
    log.info({ body: { psk: { identity: "d1", keyHex: PSK_HEX }, payloadBase64: "c2VjcmV0", token: TOKEN } }, "api body");
    log.info({ device: { id: "d1", psk: { identity: "d1", key: Buffer.from(PSK_HEX, "hex") } } }, "registry record");
    log.info({ update: { device: { psk: { keyHex: PSK_HEX } } } }, "nested");
    log.info({ keyHex: PSK_HEX, sessionToken: TOKEN }, "flat");
    const text = out.raw;
    for (const secret of [TOKEN, PSK_HEX, "my secret payload", "c2VjcmV0", "sid=abc", Buffer.from(PSK_HEX, "hex").toString("base64")]) {
      expect(text).not.toContain(secret);
    }
    // The fields stay, censored; what is not secret stays readable.
    const lines = out.lines();
    expect(lines).toHaveLength(6);
    expect(lines[1]).toMatchObject({ req: { method: "POST", headers: { authorization: "[redacted]" } } });
    expect(lines[2]).toMatchObject({ body: { psk: { identity: "d1", keyHex: "[redacted]" } } });
    expect(lines[3]).toMatchObject({ device: { id: "d1", psk: { identity: "d1", key: "[redacted]" } } });
    expect(lines[4]).toMatchObject({ update: { device: { psk: { keyHex: "[redacted]" } } } });
  });

  it("refuses an unknown level", () => {
    expect(() => createLogger({ level: "verbose", destination: sink().stream })).toThrow(/log level must be one of/);
  });
});

/** The two emitters logDaemonEvents listens to. */
function fakeServer(): { server: PushServer; dtls: EventEmitter; engine: EventEmitter } {
  const dtls = new EventEmitter();
  const engine = new EventEmitter();
  return { server: { dtls, engine } as unknown as PushServer, dtls, engine };
}

const failure = (port: number) => ({ peer: { address: "198.51.100.7", port }, error: new DtlsError("unknown_psk_identity", "unknown PSK identity") });

describe("logDaemonEvents", () => {
  it("rate-limits handshake failures to N a second and reports how many were left out", () => {
    const out = sink();
    const { server, dtls } = fakeServer();
    let now = 1_000_000;
    logDaemonEvents(server, createLogger({ level: "debug", destination: out.stream }), { handshakeFailuresPerSecond: 10, now: () => now });
    for (let i = 0; i < 500; i++) dtls.emit("handshakeError", failure(1000 + i));
    expect(out.lines()).toHaveLength(10);
    now += 1000;
    dtls.emit("handshakeError", failure(9));
    const lines = out.lines();
    expect(lines).toHaveLength(11);
    expect(lines[0]).toMatchObject({ level: "debug", event: "handshake_failed", peer: "198.51.100.7:1000", code: "unknown_psk_identity" });
    expect(lines[0]).not.toHaveProperty("suppressed");
    expect(lines[10]).toMatchObject({ peer: "198.51.100.7:9", suppressed: 490 });
  });

  it("logs nothing for handshake failures above debug, and stops when told", () => {
    const out = sink();
    const { server, dtls, engine } = fakeServer();
    const stop = logDaemonEvents(server, createLogger({ level: "info", destination: out.stream }));
    dtls.emit("handshakeError", failure(1));
    expect(out.raw).toBe("");
    stop();
    engine.emit("presence", { device: "d", online: true, at: 0, peer: "x" });
    expect(out.raw).toBe("");
    expect(dtls.listenerCount("handshakeError") + engine.listenerCount("presence") + engine.listenerCount("fatal")).toBe(0);
  });

  it("logs a stopped engine as fatal with the error", () => {
    const out = sink();
    const { server, engine } = fakeServer();
    logDaemonEvents(server, createLogger({ level: "info", destination: out.stream }));
    engine.emit("fatal", new Error("disk I/O error"));
    const [line] = out.lines();
    expect(line).toMatchObject({ level: "fatal", event: "engine_stopped", err: { message: "disk I/O error" } });
    expect(line?.msg).toMatch(/delivery engine stopped/);
  });

  describe("with a real push server", () => {
    let s: PushServer | undefined;
    afterEach(async () => {
      await s?.close();
      s = undefined;
    });

    it("logs presence at info and a failed PSK handshake at debug, without the key", async () => {
      const out = sink();
      s = await startPushServer({ store: openMemoryStore(), dtls: { host: "127.0.0.1", port: 0 } });
      logDaemonEvents(s, createLogger({ level: "debug", destination: out.stream }));
      const key = Buffer.from(PSK_HEX, "hex");
      await s.registry.add({ id: "sensor-1", psk: { identity: "sensor-1", key } });
      const port = s.address().port;
      const c = await connect({ host: "127.0.0.1", port, psk: { identity: "sensor-1", key } });
      await waitFor(() => out.lines().some((l) => l.event === "presence"));
      await c.close();
      await waitFor(() => out.lines().filter((l) => l.event === "presence").length === 2);
      await dtlsConnect({ host: "127.0.0.1", port, psk: { identity: "intruder", key }, timeoutMs: 5000 }).catch(() => undefined);
      await waitFor(() => out.lines().some((l) => l.event === "handshake_failed"));

      const lines = out.lines();
      const presence = lines.filter((l) => l.event === "presence");
      expect(presence[0]).toMatchObject({ level: "info", name: "dtlspush", device: "sensor-1", online: true, msg: "device online" });
      expect(presence[1]).toMatchObject({ level: "info", device: "sensor-1", online: false, msg: "device offline" });
      expect(presence[0]?.peer).toMatch(/^127\.0\.0\.1:\d+$/);
      const failed = lines.find((l) => l.event === "handshake_failed");
      expect(failed).toMatchObject({ level: "debug", code: "unknown_psk_identity" });
      expect(failed?.peer).toMatch(/^127\.0\.0\.1:\d+$/);
      for (const l of lines) expect(l.time).toMatch(ISO);
      expect(out.raw).not.toContain(PSK_HEX);
      expect(out.raw).not.toContain(key.toString("base64"));
    });
  });
});
