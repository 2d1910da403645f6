/**
 * Restarts the devices do not notice, through the real daemon (`dtlspush
 * serve`, bin/dtlspush.js: `npm run build` first) and real SDK devices: on
 * SIGTERM the daemon saves its established sessions (dtls.keep_sessions_on_restart,
 * on by default) and the next start on the same data directory and port takes
 * them over: no handshake, no reconnect, pushes from before, across and after
 * the restart arrive exactly once and in order. A device revoked while the
 * daemon was down is not restored; the saved file is single-use; a file too
 * old, sealed with another key or damaged is refused and counted, and the
 * devices recover by resumption with nothing lost.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { connect, memoryStateStore, type ConnectOptions, type DtlspushClient, type LivenessOptions } from "../../src/client/index.ts";
import { run } from "../cli/cli-process.ts";
import { adminToken, api, cleanUpDaemons, serve as serveIn, tempDir, until, type Daemon } from "../client/daemon-process.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const KEY = Buffer.from(KEY_HEX, "hex");
const SNAPSHOT = "session-snapshot.bin";
const clients: DtlspushClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  cleanUpDaemons();
});

/** A metrics sample: the sum of every series of `name` whose labels contain `labels` (e.g. `cause="too_old"`). */
async function metric(d: Daemon, token: string, name: string, labels = ""): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${d.httpPort}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  let sum = 0;
  for (const line of (await res.text()).split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels !== "" && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

async function stop(d: Daemon, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  d.child.kill(signal);
  await d.exited;
}

interface Dev {
  readonly client: DtlspushClient;
  readonly got: string[];
  /** "connected" / "disconnected" events after the first Welcome */
  readonly events: string[];
}

async function device(options: ConnectOptions): Promise<Dev> {
  const client = await connect({ stateStore: memoryStateStore(), ...options });
  clients.push(client);
  const got: string[] = [];
  const events: string[] = [];
  client.on("message", (m) => got.push(m.id));
  client.on("connected", () => events.push("connected"));
  client.on("disconnected", (e) => events.push(`disconnected: ${String(e)}`));
  client.on("error", () => undefined);
  return { client, got, events };
}

/** Never probes during these tests: a device that notices nothing does nothing. */
const QUIET: LivenessOptions = { idleMs: 60_000 };
/** Probes soon and gives up fast: for the cases where the daemon has no session for the device any more. */
const QUICK: LivenessOptions = { idleMs: 500, probes: 1, minRtoMs: 300, maxRtoMs: 300 };

async function setUp(prefix: string) {
  const dir = tempDir(prefix);
  const data = join(dir, "data");
  const daemon = await serveIn(dir, data);
  const token = await adminToken(data);
  return { dir, data, daemon, token };
}

const psk = (port: number, identity: string, extra: Partial<ConnectOptions> = {}): ConnectOptions => ({
  host: "127.0.0.1",
  port,
  psk: { identity, key: KEY },
  liveness: QUIET,
  ...extra,
});

async function push(d: Daemon, token: string, device: string, id: string): Promise<void> {
  expect(await api(d, token, "POST", `/v1/devices/${device}/messages`, { id, payload: id })).toBe(202);
}

describe("a daemon restart with the sessions kept", () => {
  it(
    "PSK with and without a CID and a certificate device carry on: no handshake, pushes before, across and after arrive once, in order",
    { timeout: 40_000 },
    async () => {
      const { dir, data, daemon, token } = await setUp("dtlspush-restart-");
      for (const id of ["p-cid", "p-plain"]) expect(await api(daemon, token, "PUT", `/v1/devices/${id}`, { psk: { keyHex: KEY_HEX } })).toBe(201);
      const issued = await run(["certs", "device", "cam-1", "--dir", join(dir, "certs"), "--json"]);
      expect(issued.code).toBe(0);
      const files = JSON.parse(issued.stdout) as { cert: string; key: string };
      expect(await api(daemon, token, "PUT", "/v1/devices/cam-1", { certificate: { identity: "cam-1" } })).toBe(201);
      const devs: Record<string, Dev> = {
        "p-cid": await device(psk(daemon.dtlsPort, "p-cid")),
        "p-plain": await device(psk(daemon.dtlsPort, "p-plain", { connectionId: false })),
        "cam-1": await device({
          host: "127.0.0.1",
          port: daemon.dtlsPort,
          cert: readFileSync(files.cert),
          key: readFileSync(files.key),
          ca: readFileSync(join(dir, "certs", "ca.pem")),
          liveness: QUIET,
        }),
      };
      const ids = Object.keys(devs);
      for (const id of ids) await push(daemon, token, id, `${id}-1`);
      await until(
        () => ids.every((id) => devs[id]?.got.length === 1),
        10_000,
        () => "the first pushes",
      );
      for (const id of ids) await push(daemon, token, id, `${id}-2`); // just before the stop: 202 means durable
      await stop(daemon);
      expect(daemon.child.exitCode).toBe(0);
      expect(existsSync(join(data, SNAPSHOT))).toBe(true);

      const again = await serveIn(dir, data, daemon.dtlsPort);
      expect(existsSync(join(data, SNAPSHOT))).toBe(false); // read once, deleted before any session sent
      for (const id of ids) await push(again, token, id, `${id}-3`); // just after the start
      await until(
        () => ids.every((id) => devs[id]?.got.length === 3),
        10_000,
        () => `the pushes across the restart: ${JSON.stringify(Object.fromEntries(ids.map((id) => [id, devs[id]?.got])))}`,
      );
      for (const id of ids) await push(again, token, id, `${id}-4`);
      await until(
        () => ids.every((id) => devs[id]?.got.length === 4),
        10_000,
        () => "the pushes after the restart",
      );
      for (const id of ids) {
        expect(devs[id]?.got).toEqual([1, 2, 3, 4].map((n) => `${id}-${n}`));
        expect([id, devs[id]?.events]).toEqual([id, []]); // no disconnect, no new Welcome: the device noticed nothing
      }
      expect(await metric(again, token, "dtlspush_handshakes_total")).toBe(0);
      expect(await metric(again, token, "dtlspush_dtls_sessions_restored_total")).toBe(3);
      expect(await metric(again, token, "dtlspush_restored_sessions_links_total", 'outcome="bound"')).toBe(3);
    },
  );

  it("a device revoked or removed while the daemon was down is not restored; the saved file is never loaded twice", { timeout: 40_000 }, async () => {
    const { dir, data, daemon, token } = await setUp("dtlspush-restart-revoke-");
    for (const id of ["keep", "gone", "removed"])
      expect(await api(daemon, token, "PUT", `/v1/devices/${id}`, { psk: { keyHex: KEY_HEX } })).toBe(201);
    const keep = await device(psk(daemon.dtlsPort, "keep"));
    const gone = await device(psk(daemon.dtlsPort, "gone", { reconnect: false }));
    const removed = await device(psk(daemon.dtlsPort, "removed", { reconnect: false }));
    await stop(daemon);
    expect((await run(["device", "revoke", "gone", "--data-dir", data])).code).toBe(0);
    expect((await run(["device", "remove", "removed", "--data-dir", data])).code).toBe(0);

    const again = await serveIn(dir, data, daemon.dtlsPort);
    await until(
      () => gone.events.some((e) => e.startsWith("disconnected")) && removed.events.some((e) => e.startsWith("disconnected")),
      10_000,
      () => "the revoked and removed devices told Bye",
    );
    expect(await metric(again, token, "dtlspush_restored_sessions_links_total", 'outcome="device_revoked"')).toBe(1);
    expect(await metric(again, token, "dtlspush_restored_sessions_links_total", 'outcome="device_unknown"')).toBe(1);
    expect(await metric(again, token, "dtlspush_restored_sessions_links_total", 'outcome="bound"')).toBe(1);
    await push(again, token, "keep", "k1");
    await until(
      () => keep.got.length === 1,
      10_000,
      () => "the push to the kept device",
    );
    expect(keep.events).toEqual([]);

    // kill -9: nothing is saved, and the file the last start read is gone: nothing is restored twice
    await stop(again, "SIGKILL");
    const third = await serveIn(dir, data, daemon.dtlsPort);
    expect(await metric(third, token, "dtlspush_dtls_sessions_restored_total")).toBe(0);
    expect(await metric(third, token, "dtlspush_session_snapshots_refused_total")).toBe(0);
  });

  it(
    "a saved file sealed with another key, damaged, or too old is refused and counted; devices resume and nothing is lost",
    { timeout: 60_000 },
    async () => {
      const { dir, data, daemon, token } = await setUp("dtlspush-restart-refused-");
      expect(await api(daemon, token, "PUT", "/v1/devices/d1", { psk: { keyHex: KEY_HEX } })).toBe(201);
      const dev = await device(psk(daemon.dtlsPort, "d1", { liveness: QUICK }));
      await push(daemon, token, "d1", "m1");
      await until(
        () => dev.got.length === 1,
        10_000,
        () => "m1",
      );
      await stop(daemon);

      // another data directory (another key) given this one's file
      const other = tempDir("dtlspush-restart-other-");
      const otherData = join(other, "data");
      mkdirSync(otherData, { mode: 0o700 });
      copyFileSync(join(data, SNAPSHOT), join(otherData, SNAPSHOT));
      const foreign = await serveIn(other, otherData);
      const foreignToken = await adminToken(otherData);
      expect(await metric(foreign, foreignToken, "dtlspush_session_snapshots_refused_total", 'cause="other_key"')).toBe(1);
      expect(await metric(foreign, foreignToken, "dtlspush_dtls_sessions_restored_total")).toBe(0);
      expect(existsSync(join(otherData, SNAPSHOT))).toBe(false);
      await stop(foreign, "SIGKILL");

      // damaged: one bit of the sealed body flipped
      const file = readFileSync(join(data, SNAPSHOT));
      file[file.length - 20] = (file[file.length - 20] as number) ^ 1;
      writeFileSync(join(data, SNAPSHOT), file);
      const damaged = await serveIn(dir, data, daemon.dtlsPort);
      expect(await metric(damaged, token, "dtlspush_session_snapshots_refused_total", 'cause="damaged"')).toBe(1);
      await push(damaged, token, "d1", "m2");
      await until(
        () => dev.got.length === 2,
        15_000,
        () => "m2 after the device noticed and resumed",
      );
      expect(await metric(damaged, token, "dtlspush_dtls_handshakes_resumed_total")).toBe(1);
      await stop(damaged); // saves the resumed session

      // too old: a start with a maximum age shorter than the file's
      writeFileSync(join(dir, "dtlspush.toml"), "[dtls]\nsession_snapshot_max_age_seconds = 1\n");
      await new Promise((r) => setTimeout(r, 1100));
      const late = await serveIn(dir, data, daemon.dtlsPort);
      expect(await metric(late, token, "dtlspush_session_snapshots_refused_total", 'cause="too_old"')).toBe(1);
      await push(late, token, "d1", "m3");
      await until(
        () => dev.got.length === 3,
        15_000,
        () => "m3 after the device noticed and resumed",
      );
      expect(dev.got).toEqual(["m1", "m2", "m3"]);
    },
  );
});
