/**
 * Session resumption through the real daemon (`dtlspush serve`, bin/dtlspush.js:
 * `npm run build` first) and the real device SDK: a device resumes on reconnect,
 * after a restart of the device (its state file), and after the daemon was
 * killed with SIGKILL and started again (the ticket opened with the key from
 * the store); pushes go on, nothing lost or repeated. A revoked or removed
 * device cannot resume: its offered session leads to a full handshake, which
 * is refused with the documented alert.
 */
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  connect,
  fileStateStore,
  memoryStateStore,
  openTransport,
  TransportError,
  type ClientStateStore,
  type DtlspushClient,
  type LivenessOptions,
  type ReceivedMessage,
} from "../../src/client/index.ts";
import { DtlsError } from "../../src/dtls/index.ts";
import { run } from "../cli/cli-process.ts";
import { adminToken, api, cleanUpDaemons, serve as serveIn, tempDir, until, type Daemon } from "../client/daemon-process.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const KEY = Buffer.from(KEY_HEX, "hex");
const clients: DtlspushClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  cleanUpDaemons();
});

const serve = (dir: string, dtlsPort = 0, httpPort = 0): Promise<Daemon> => serveIn(dir, join(dir, "data"), dtlsPort, httpPort);

/** One sample of the daemon's metrics, by its full name with labels (`name{label="v"}`). */
async function metric(d: Daemon, token: string, name: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${d.httpPort}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

const RESUMED = "dtlspush_dtls_handshakes_resumed_total";
/** probes soon and gives up fast: the restarted daemon has no session for the device, which must notice */
const QUICK: LivenessOptions = { idleMs: 500, probes: 1, minRtoMs: 300, maxRtoMs: 300 };

async function setUp() {
  const dir = tempDir("dtlspush-resume-");
  const daemon = await serve(dir);
  const token = await adminToken(join(dir, "data"));
  expect(await api(daemon, token, "PUT", "/v1/devices/d1", { psk: { keyHex: KEY_HEX } })).toBe(201);
  return { dir, daemon, token };
}

function device(port: number, stateStore: ClientStateStore = memoryStateStore(), liveness: LivenessOptions = { idleMs: 60_000 }) {
  return { host: "127.0.0.1", port, psk: { identity: "d1", key: KEY }, stateStore, liveness };
}

describe("a device resumes its DTLS session", () => {
  it(
    "on reconnect, and after the daemon was killed (-9) and restarted: abbreviated handshakes, pushes continue, nothing lost or repeated",
    { timeout: 40_000 },
    async () => {
      const { dir, daemon, token } = await setUp();
      const state = memoryStateStore();
      const got: ReceivedMessage[] = [];
      const first = await connect(device(daemon.dtlsPort, state, QUICK));
      clients.push(first);
      first.on("message", (m) => got.push(m));
      first.on("error", () => undefined);
      expect(first.resumed).toBe(false);
      await until(
        () => state.state?.dtlsSession !== undefined,
        5000,
        () => "the DTLS session saved with the device state",
      );
      expect(await api(daemon, token, "POST", "/v1/devices/d1/messages", { id: "m1", payload: "one" })).toBe(202);
      await until(
        () => got.length === 1 && state.state?.hwm === 1,
        10_000,
        () => `m1 (got ${got.length})`,
      );
      expect(await metric(daemon, token, RESUMED)).toBe(0);

      // a reconnect: the same device state, a new DTLS connection
      await first.close();
      const second = await connect(device(daemon.dtlsPort, state, QUICK));
      clients.push(second);
      second.on("message", (m) => got.push(m));
      second.on("error", () => undefined);
      expect(second.resumed).toBe(true);
      expect(await metric(daemon, token, RESUMED)).toBe(1);
      expect(await api(daemon, token, "POST", "/v1/devices/d1/messages", { id: "m2", payload: "two" })).toBe(202);
      await until(
        () => got.length === 2 && state.state?.hwm === 2,
        10_000,
        () => `m2 (got ${got.length})`,
      );

      // kill -9: nothing saved but the ticket keys in the store; the SDK notices by its probes and resumes
      daemon.child.kill("SIGKILL");
      await daemon.exited;
      const restarted = await serve(dir, daemon.dtlsPort, daemon.httpPort);
      expect(await api(restarted, token, "POST", "/v1/devices/d1/messages", { id: "m3", payload: "three" })).toBe(202);
      await until(
        () => got.length === 3,
        15_000,
        () => `m3 after the restart (got ${got.map((m) => m.id).join(",")})`,
      );
      expect(second.resumed).toBe(true);
      expect(await metric(restarted, token, RESUMED)).toBe(1);
      await new Promise((r) => setTimeout(r, 300)); // a repeat would arrive now, if at all
      expect(got.map((m) => [m.id, m.seq])).toEqual([
        ["m1", 1],
        ["m2", 2],
        ["m3", 3],
      ]);
    },
  );

  it("after a restart of the device, from its state file (mode 0600)", { timeout: 30_000 }, async () => {
    const { dir, daemon, token } = await setUp();
    const file = join(dir, "device", "state.json");
    const got: string[] = [];
    const before = await connect(device(daemon.dtlsPort, fileStateStore(file)));
    clients.push(before);
    before.on("message", (m) => got.push(m.id));
    expect(before.resumed).toBe(false);
    expect(await api(daemon, token, "POST", "/v1/devices/d1/messages", { id: "m1", payload: "one" })).toBe(202);
    await until(
      () => got.length === 1,
      10_000,
      () => "m1",
    );
    await before.close();
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(fileStateStore(file).load()).toMatchObject({ hwm: 1, dtlsSession: expect.any(String) });

    const after = await connect(device(daemon.dtlsPort, fileStateStore(file)));
    clients.push(after);
    after.on("message", (m) => got.push(m.id));
    expect(after.resumed).toBe(true);
    expect(await metric(daemon, token, RESUMED)).toBe(1);
    expect(await api(daemon, token, "POST", "/v1/devices/d1/messages", { id: "m2", payload: "two" })).toBe(202);
    await until(
      () => got.length === 2,
      10_000,
      () => "m2",
    );
    expect(got).toEqual(["m1", "m2"]);
  });
});

describe("a device the registry no longer accepts cannot resume", () => {
  /** Connects once (a full handshake), keeps the session the daemon gave; closes the client. */
  async function savedSession(port: number): Promise<Uint8Array> {
    const state = memoryStateStore();
    const c = await connect(device(port, state));
    await until(
      () => state.state?.dtlsSession !== undefined,
      5000,
      () => "the DTLS session saved",
    );
    await c.close();
    return new Uint8Array(Buffer.from(state.state?.dtlsSession ?? "", "base64"));
  }

  /** The DTLS handshake offering `session` is refused; resolves to the engine's error. */
  async function refused(port: number, session: Uint8Array): Promise<DtlsError> {
    const e = await openTransport("dtlspush", { host: "127.0.0.1", port, psk: { identity: "d1", key: KEY }, session, timeoutMs: 5000 }).then(
      async (t) => {
        await t.close();
        throw new Error(`the handshake succeeded (resumed: ${String(t.resumed)})`);
      },
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(TransportError);
    expect((e as TransportError).code).toBe("connect_failed");
    const cause = (e as TransportError).cause;
    expect(cause).toBeInstanceOf(DtlsError);
    return cause as DtlsError;
  }

  for (const [what, change] of [
    ["revoked", (d: Daemon, token: string) => api(d, token, "PUT", "/v1/devices/d1", { revoked: true })],
    [
      "removed",
      async (d: Daemon, token: string) => {
        const res = await fetch(`http://127.0.0.1:${d.httpPort}/v1/devices/d1`, { method: "DELETE", headers: { authorization: `Bearer ${token}` } });
        await res.arrayBuffer();
        return res.status;
      },
    ],
  ] as const) {
    it(`a ${what} device: its session leads to a full handshake, refused with unknown_psk_identity`, { timeout: 30_000 }, async () => {
      const { daemon, token } = await setUp();
      const session = await savedSession(daemon.dtlsPort);
      // the session resumes while the device is registered...
      const ok = await openTransport("dtlspush", { host: "127.0.0.1", port: daemon.dtlsPort, psk: { identity: "d1", key: KEY }, session });
      expect(ok.resumed).toBe(true);
      await ok.close();
      // ...and not once it is not
      expect(await change(daemon, token)).toBeLessThan(300);
      const e = await refused(daemon.dtlsPort, session);
      expect(e.message).toMatch(/unknown_psk_identity/);
      expect(await metric(daemon, token, RESUMED)).toBe(1);
      expect(await metric(daemon, token, 'dtlspush_dtls_resumptions_refused_total{cause="psk_unknown"}')).toBe(1);
    });
  }

  it("a revoked certificate device: its session leads to a full handshake, refused with certificate_revoked", { timeout: 30_000 }, async () => {
    const { dir, daemon, token } = await setUp();
    // a device certificate from the daemon's development CA (CN = the device id: its identity)
    const issued = await run(["certs", "device", "cam-1", "--dir", join(dir, "certs"), "--json"]);
    expect(issued.code).toBe(0);
    const files = JSON.parse(issued.stdout) as { cert: string; key: string };
    expect(await api(daemon, token, "PUT", "/v1/devices/cam-1", { certificate: { identity: "cam-1" } })).toBe(201);
    const options = {
      host: "127.0.0.1",
      port: daemon.dtlsPort,
      cert: readFileSync(files.cert),
      key: readFileSync(files.key),
      ca: readFileSync(join(dir, "certs", "ca.pem")),
      timeoutMs: 5000,
    };
    // through the SDK: the resumed session keeps its certificate identity, so the daemon knows the device
    const state = memoryStateStore();
    const full = await connect({ ...options, stateStore: state });
    expect(full.resumed).toBe(false);
    await full.close();
    const resumed = await connect({ ...options, stateStore: state });
    clients.push(resumed);
    expect(resumed.resumed).toBe(true);
    expect(resumed.deviceId).toBe("cam-1");
    const got: string[] = [];
    resumed.on("message", (m) => got.push(m.id));
    expect(await api(daemon, token, "POST", "/v1/devices/cam-1/messages", { id: "c1", payload: "to the camera" })).toBe(202);
    await until(
      () => got.length === 1,
      10_000,
      () => "the push to the resumed certificate session",
    );
    await resumed.close();
    const session = new Uint8Array(Buffer.from(state.state?.dtlsSession ?? "", "base64"));

    expect(await api(daemon, token, "PUT", "/v1/devices/cam-1", { revoked: true })).toBe(200);
    const e = await openTransport("dtlspush", { ...options, session }).then(
      async (t) => {
        await t.close();
        throw new Error(`the handshake succeeded (resumed: ${String(t.resumed)})`);
      },
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(TransportError);
    expect((e as TransportError).message).toMatch(/certificate_revoked/);
    expect(await metric(daemon, token, 'dtlspush_dtls_resumptions_refused_total{cause="client_refused"}')).toBe(1);
  });
});
