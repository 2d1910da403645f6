/**
 * A daemon whose store is restored from an older backup: `dtlspush serve`
 * (bin/dtlspush.js, needs `npm run build`) is stopped, its data directory
 * replaced by a copy taken before the device received its messages (SQLite
 * file with -wal/-shm, copied while the daemon was stopped), and started
 * again on the same ports. The device's persisted high-water mark is now
 * above the last seq the server knows: its Hello is refused with SEQ_AHEAD.
 * The SDK must reset the mark to 0 (persisted, "warning" seq_reset), say
 * Hello again, and receive what is published now, whose seq it had already
 * seen before the restore.
 */
import { cpSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { connect, memoryStateStore, type ClientWarning, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { adminToken, api, cleanUpDaemons, serve, tempDir, until, type Daemon } from "./daemon-process.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const clients: DtlspushClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  cleanUpDaemons();
});

/** SIGTERM (the drain), then the process is gone and its files are closed. */
async function stop(d: Daemon): Promise<void> {
  d.child.kill("SIGTERM");
  await d.exited;
  expect(d.child.exitCode).toBe(0);
}

describe("a store restored from an older backup", () => {
  it("the device resets its high-water mark (seq_reset), says Hello again and receives the new message", { timeout: 60_000 }, async () => {
    const dir = tempDir("dtlspush-restore-");
    const data = join(dir, "data");
    // the drain that says Bye (the sessions are not kept over the restart: what this test watches is the Hello after it)
    writeFileSync(join(dir, "dtlspush.toml"), "[dtls]\nkeep_sessions_on_restart = false\n");
    const backup = join(dir, "backup");

    // the backup: the device is registered, nothing was published to it yet
    const first = await serve(dir, data);
    const token = await adminToken(data);
    expect(await api(first, token, "PUT", "/v1/devices/d1", { psk: { keyHex: KEY_HEX } })).toBe(201);
    await stop(first);
    cpSync(data, backup, { recursive: true });

    const second = await serve(dir, data, first.dtlsPort, first.httpPort);
    const state = memoryStateStore();
    const client = await connect({
      host: "127.0.0.1",
      port: second.dtlsPort,
      psk: { identity: "d1", key: Buffer.from(KEY_HEX, "hex") },
      stateStore: state,
      reconnect: { initialDelayMs: 100, maxDelayMs: 400 },
      liveness: { idleMs: 500 },
    });
    clients.push(client);
    const got: ReceivedMessage[] = [];
    const warnings: ClientWarning[] = [];
    const errors: string[] = [];
    const downs: string[] = [];
    client.on("disconnected", (e) => downs.push((e as { code?: string } | undefined)?.code ?? "clean"));
    client.on("message", (m) => got.push(m));
    client.on("warning", (w) => warnings.push(w));
    client.on("error", (e) => errors.push(`${(e as { code?: string }).code ?? ""}: ${e.message}`));
    for (const id of ["m1", "m2", "m3"]) expect(await api(second, token, "POST", "/v1/devices/d1/messages", { id, payload: id })).toBe(202);
    await until(
      () => got.length === 3 && state.state?.hwm === 3,
      10_000,
      () => `three messages (got ${got.length}, hwm ${state.state?.hwm})`,
    );
    await stop(second);
    // the drain's Bye reached the device (not only its liveness probes)
    await until(
      () => downs.length > 0,
      1000,
      () => "disconnected after SIGTERM",
    );
    expect(downs[0]).toBe("shutting_down");

    // the operator restores the backup: the server's store knows no seq for d1
    rmSync(data, { recursive: true, force: true });
    cpSync(backup, data, { recursive: true });
    const third = await serve(dir, data, first.dtlsPort, first.httpPort);
    expect(await api(third, token, "POST", "/v1/devices/d1/messages", { id: "after", payload: "after the restore" })).toBe(202);

    await until(
      () => got.length === 4,
      15_000,
      () =>
        `the message published after the restore (got ${JSON.stringify(got.map((m) => m.id))}; warnings ${JSON.stringify(warnings)}; errors ${JSON.stringify(errors.slice(-3))})`,
    );
    // its seq (1) is one the device had seen before the restore: handed over all the same
    expect(got.map((m) => [m.id, m.seq])).toEqual([
      ["m1", 1],
      ["m2", 2],
      ["m3", 3],
      ["after", 1],
    ]);
    expect(warnings).toEqual([{ code: "seq_reset", message: expect.stringContaining("high-water mark 3"), previousHwm: 3, hwm: 0 }]);
    expect(warnings[0]?.message).toContain("above the last seq this server sent device d1 (0)");
    expect(client.connected).toBe(true);
    await until(
      () => state.state?.hwm === 1,
      2000,
      () => `hwm 1 persisted (is ${state.state?.hwm})`,
    );
    // the server saw its message acknowledged
    const res = await fetch(`http://127.0.0.1:${third.httpPort}/v1/messages/after`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(JSON.stringify(await res.json())).toContain("delivered");
    await stop(third);
  });
});
