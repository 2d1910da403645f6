/**
 * Kill -9 end to end: the push daemon (fixtures/push-daemon.ts, a child
 * process on a SQLite file) is SIGKILLed mid-stream and started again on the
 * same port and file, while real SDK devices in this process keep receiving.
 * Every device must see each of its messages exactly once, in order, with
 * contiguous seqs, and the store must end with nothing queued.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { connect, memoryStateStore, type DtlspushClient } from "../../src/client/index.ts";
import { openSqliteStore } from "../../src/store/index.ts";
import { deviceId, deviceKey, fleetDaemonArgv, messageId, payloadText, type FleetDaemonArgs } from "./fixtures/fleet.ts";

const FIXTURE = fileURLToPath(new URL("./fixtures/push-daemon.ts", import.meta.url));
const HEARTBEAT_MS = 1000;

interface Daemon {
  readonly child: ChildProcessWithoutNullStreams;
  /** complete stdout lines so far */
  readonly lines: string[];
  stderr: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const daemons = new Set<Daemon>();
const clients: DtlspushClient[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const d of daemons) {
    if (d.child.exitCode === null && d.child.signalCode === null) d.child.kill("SIGKILL");
    await d.exited;
  }
  daemons.clear();
  for (const c of clients.splice(0)) await c.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what()}`);
    await sleep(10);
  }
}

/** A UDP port on 127.0.0.1 that was free a moment ago. */
async function freeUdpPort(): Promise<number> {
  const s = createSocket("udp4");
  await new Promise<void>((resolve, reject) => {
    s.once("error", reject);
    s.bind(0, "127.0.0.1", () => resolve());
  });
  const { port } = s.address();
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

function tempDb(): string {
  const dir = mkdtempSync(join(tmpdir(), "dtlspush-kill-"));
  dirs.push(dir);
  return join(dir, "push.db");
}

function describeDaemon(d: Daemon): string {
  return `daemon output:\n${d.lines.join("\n")}\nstderr:\n${d.stderr}`;
}

/** Starts the fixture daemon and resolves once it prints "ready". */
async function startDaemon(args: FleetDaemonArgs, onLine?: (line: string, d: Daemon) => void): Promise<Daemon> {
  const child = spawn(process.execPath, [FIXTURE, ...fleetDaemonArgv(args)], { stdio: ["pipe", "pipe", "pipe"] });
  const lines: string[] = [];
  let partial = "";
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", (code, signal) => resolve({ code, signal }));
  });
  const d: Daemon = { child, lines, stderr: "", exited };
  daemons.add(d);
  child.stdout.setEncoding("utf8").on("data", (s: string) => {
    partial += s;
    let nl = partial.indexOf("\n");
    while (nl >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      lines.push(line);
      onLine?.(line, d);
      nl = partial.indexOf("\n");
    }
  });
  child.stderr.setEncoding("utf8").on("data", (s: string) => (d.stderr += s));
  let exitedEarly = false;
  void exited.then(() => (exitedEarly = true));
  await waitFor(
    () => exitedEarly || lines.some((l) => l.startsWith("ready ")),
    15_000,
    () => `"ready"\n${describeDaemon(d)}`,
  );
  if (exitedEarly && !lines.some((l) => l.startsWith("ready "))) throw new Error(`the daemon exited before "ready"\n${describeDaemon(d)}`);
  return d;
}

async function kill9(d: Daemon): Promise<void> {
  d.child.kill("SIGKILL");
  const r = await d.exited;
  expect(r.signal).toBe("SIGKILL");
}

/** SIGTERM, then the "status" lines the daemon prints after closing, by device id. */
async function stopDaemon(d: Daemon): Promise<Map<string, { lastSeq: number; ackedSeq: number; depth: number }>> {
  d.child.kill("SIGTERM");
  const r = await d.exited;
  expect(r.code, describeDaemon(d)).toBe(0);
  expect(d.lines.at(-1)).toBe("closed");
  const status = new Map<string, { lastSeq: number; ackedSeq: number; depth: number }>();
  for (const line of d.lines) {
    const m = /^status (\S+) lastSeq=(\d+) ackedSeq=(\d+) depth=(\d+)$/.exec(line);
    if (m !== null) status.set(m[1] as string, { lastSeq: Number(m[2]), ackedSeq: Number(m[3]), depth: Number(m[4]) });
  }
  return status;
}

interface Got {
  readonly text: string;
  readonly seq: number;
  readonly id: string;
}

/** Connects device n with its own in-memory state store (kept for the whole test: the device's persisted state). */
async function device(
  n: number,
  port: number,
  got: Got[],
  onMessage?: () => void,
  extra: { retryMs?: number } = {},
): Promise<{ client: DtlspushClient; state: ReturnType<typeof memoryStateStore> }> {
  const state = memoryStateStore();
  const client = await connect({
    host: "127.0.0.1",
    port,
    psk: { identity: deviceId(n), key: deviceKey(n) },
    stateStore: state,
    reconnect: { initialDelayMs: 100, maxDelayMs: 1000 },
    timeoutMs: 5000,
    ...extra,
  });
  clients.push(client);
  client.on("message", (m) => {
    got.push({ text: m.text(), seq: m.seq, id: m.id });
    onMessage?.();
  });
  client.on("error", () => undefined); // reconnect failures while the daemon is down are expected
  return { client, state };
}

function expected(d: number, m: number): Got[] {
  return Array.from({ length: m }, (_, i) => ({ text: payloadText(d, i + 1), seq: i + 1, id: messageId(d, i + 1) }));
}

/** The store after the last daemon exited: nothing queued, every seq assigned and acked, each message stored once and delivered once. */
function checkStore(db: string, devices: number, messages: number): void {
  const store = openSqliteStore(db);
  try {
    const state = store.loadDeliveryState();
    expect(state.deliveries).toEqual([]);
    const counters = new Map(state.counters.map((c) => [c.device, c]));
    for (let d = 1; d <= devices; d++) {
      expect(counters.get(deviceId(d))).toEqual({ device: deviceId(d), lastSeq: messages, ackedSeq: messages });
      for (let k = 1; k <= messages; k++) {
        const id = messageId(d, k);
        expect(new TextDecoder().decode(store.getMessage(id)?.payload)).toBe(payloadText(d, k));
        const receipts = store.receiptsForMessage(id).filter((r) => r.device === deviceId(d));
        expect(receipts.filter((r) => r.state === "queued").length, `queued receipts of ${id}`).toBe(1);
        expect(
          receipts.filter((r) => r.state === "delivered").map((r) => r.seq),
          `delivered receipts of ${id}`,
        ).toEqual([k]);
      }
    }
  } finally {
    store.close();
  }
}

describe("the push daemon killed with SIGKILL and started again", () => {
  it("loses and duplicates nothing across three kills mid-stream", { timeout: 60_000 }, async () => {
    const DEVICES = 5;
    const MESSAGES = 40;
    const TOTAL = DEVICES * MESSAGES;
    const args: FleetDaemonArgs = {
      db: tempDb(),
      port: await freeUdpPort(),
      devices: DEVICES,
      messages: MESSAGES,
      paceMs: 40,
      heartbeatMs: HEARTBEAT_MS,
    };

    // ids each run reported as newly published (a kill may fall between the commit and the line)
    const publishedIds: string[] = [];
    let killOnNextPublish = false;
    const onLine = (line: string, d: Daemon): void => {
      const m = /^published \d+ (\S+)$/.exec(line);
      if (m === null) return;
      publishedIds.push(m[1] as string);
      if (killOnNextPublish) {
        killOnNextPublish = false;
        d.child.kill("SIGKILL");
      }
    };

    let daemon = await startDaemon(args, onLine);
    const got: Got[][] = Array.from({ length: DEVICES }, () => []);
    const total = (): number => got.reduce((n, g) => n + g.length, 0);
    let killOnReceived: number | undefined;
    const states: ReturnType<typeof memoryStateStore>[] = [];
    for (let n = 1; n <= DEVICES; n++) {
      const g = got[n - 1] as Got[];
      const { state } = await device(n, args.port, g, () => {
        if (killOnReceived !== undefined && total() >= killOnReceived) {
          killOnReceived = undefined;
          daemon.child.kill("SIGKILL");
        }
      });
      states.push(state);
    }
    const progress = (): string => `${total()}/${TOTAL} received; per device ${got.map((g) => g.length).join(",")}\n${describeDaemon(daemon)}`;
    const publishing = (): boolean => !daemon.lines.some((l) => l.startsWith("all-published "));

    // 1: killed inside an app's message handler (that message not yet acked); down 50 ms
    killOnReceived = Math.floor(TOTAL * 0.2);
    await waitFor(() => daemon.child.signalCode !== null, 30_000, progress);
    expect(await daemon.exited).toEqual({ code: null, signal: "SIGKILL" });
    expect(total()).toBeLessThan(TOTAL);
    await sleep(50);
    daemon = await startDaemon(args, onLine);

    // 2: once the devices are receiving from this run, killed right after the next publish commits
    // (before its Push can have gone out); down 300 ms
    const received2 = total();
    await waitFor(() => total() >= Math.max(TOTAL * 0.35, received2 + 10), 30_000, progress);
    expect(publishing()).toBe(true); // the kill falls mid-publish
    killOnNextPublish = true;
    await waitFor(() => daemon.child.signalCode !== null, 5_000, progress);
    expect(await daemon.exited).toEqual({ code: null, signal: "SIGKILL" });
    await sleep(300);
    daemon = await startDaemon(args, onLine);

    // 3: killed at an arbitrary moment once 75 % arrived; down 1.5 s (the devices find the port closed and back off)
    await waitFor(() => total() >= TOTAL * 0.75, 30_000, progress);
    await kill9(daemon);
    expect(total()).toBeLessThan(TOTAL);
    await sleep(1500);
    daemon = await startDaemon(args, onLine);

    await waitFor(() => got.every((g) => g.length >= MESSAGES), 40_000, progress);
    await waitFor(() => daemon.lines.includes("drained"), 15_000, progress);
    await sleep(200); // a duplicate would arrive now, if at all
    for (let d = 1; d <= DEVICES; d++) {
      expect(got[d - 1], `messages of ${deviceId(d)}`).toEqual(expected(d, MESSAGES));
      expect(states[d - 1]?.state?.hwm).toBe(MESSAGES);
    }
    // no run published an id another run had published
    expect(new Set(publishedIds).size).toBe(publishedIds.length);

    const status = await stopDaemon(daemon);
    for (let d = 1; d <= DEVICES; d++) expect(status.get(deviceId(d))).toEqual({ lastSeq: MESSAGES, ackedSeq: MESSAGES, depth: 0 });
    for (const c of clients.splice(0)) await c.close();
    checkStore(args.db, DEVICES, MESSAGES);
  });

  it("a message stored while its device is offline survives a kill -9 and is delivered once the device connects", { timeout: 30_000 }, async () => {
    const MESSAGES = 3;
    const args: FleetDaemonArgs = { db: tempDb(), port: await freeUdpPort(), devices: 1, messages: MESSAGES, paceMs: 0, heartbeatMs: HEARTBEAT_MS };
    const first = await startDaemon(args);
    await waitFor(
      () => first.lines.includes(`all-published ${MESSAGES}`),
      10_000,
      () => describeDaemon(first),
    );
    await kill9(first);

    const second = await startDaemon(args);
    expect(second.lines[0]).toBe(`resume stored=${MESSAGES}`);
    const got: Got[] = [];
    const { state } = await device(1, args.port, got);
    await waitFor(
      () => got.length >= MESSAGES && second.lines.includes("drained"),
      10_000,
      () => `${got.length} received\n${describeDaemon(second)}`,
    );
    await sleep(200);
    expect(got).toEqual(expected(1, MESSAGES));
    expect(state.state?.hwm).toBe(MESSAGES);
    // the second run published nothing: all of it came from the store
    expect(second.lines.filter((l) => l.startsWith("published "))).toEqual([]);

    const status = await stopDaemon(second);
    expect(status.get(deviceId(1))).toEqual({ lastSeq: MESSAGES, ackedSeq: MESSAGES, depth: 0 });
    for (const c of clients.splice(0)) await c.close();
    checkStore(args.db, 1, MESSAGES);
  });
});

/**
 * A daemon killed while a device's session is being set up: the DTLS handshake
 * is done and the daemon has taken the device's Hello, but dies before its
 * Welcome. The restarted daemon knows nothing of that DTLS session and drops
 * its records silently.
 */
describe("the push daemon killed between a device's Hello and its Welcome", () => {
  it("a reconnecting device whose Hello died with the daemon still reaches the restarted daemon", { timeout: 40_000 }, async () => {
    const args: FleetDaemonArgs = { db: tempDb(), port: await freeUdpPort(), devices: 1, messages: 3, paceMs: 0, heartbeatMs: HEARTBEAT_MS };
    const first = await startDaemon(args);
    const got: Got[] = [];
    // Hello retransmitted after 3 s: the restarted daemon is up by then, so the repeat reaches it (not a closed port)
    const { client } = await device(1, args.port, got, undefined, { retryMs: 3000 });
    await waitFor(
      () => first.lines.includes("drained"),
      10_000,
      () => describeDaemon(first),
    );
    expect(got).toEqual(expected(1, 3));
    const welcomes: number[] = [];
    client.on("connected", () => welcomes.push(Date.now()));
    await kill9(first);

    // the device reconnects: handshake done, Hello taken, the daemon dies before its Welcome
    const dying = await startDaemon({ ...args, dieOnHello: true });
    await waitFor(
      () => dying.child.signalCode !== null,
      15_000,
      () => describeDaemon(dying),
    );
    expect(welcomes).toEqual([]);

    // back at once with three more messages
    const back = await startDaemon({ ...args, messages: 6 });
    await waitFor(
      () => got.length >= 6,
      25_000,
      () =>
        `the device's messages 4..6 (${welcomes.length} Welcomes since the kill; client ${client.connected ? "connected" : "not connected"})\n${describeDaemon(back)}`,
    );
    expect(got).toEqual(expected(1, 6));
    // one session, kept: no second reconnect left pending that replaces it
    await sleep(2000);
    expect(
      back.lines.filter((l) => l === "online dev-1"),
      describeDaemon(back),
    ).toEqual(["online dev-1"]);
    expect(client.connected).toBe(true);
  });

  it("a connect() that failed because the daemon died leaves nothing behind that takes the device's messages", { timeout: 30_000 }, async () => {
    const MESSAGES = 3;
    const args: FleetDaemonArgs = { db: tempDb(), port: await freeUdpPort(), devices: 1, messages: MESSAGES, paceMs: 0, heartbeatMs: HEARTBEAT_MS };
    const dying = await startDaemon({ ...args, dieOnHello: true });
    await waitFor(
      () => dying.lines.includes(`all-published ${MESSAGES}`),
      10_000,
      () => describeDaemon(dying),
    );
    const state = memoryStateStore(); // the device's persisted state, used again by its next attempt
    const options = {
      host: "127.0.0.1",
      port: args.port,
      psk: { identity: deviceId(1), key: deviceKey(1) },
      stateStore: state,
      reconnect: { initialDelayMs: 100, maxDelayMs: 1000 },
      timeoutMs: 5000,
    };
    await expect(connect(options)).rejects.toThrow();
    expect(dying.child.signalCode).toBe("SIGKILL");

    const back = await startDaemon(args);
    await sleep(3000); // a client left reconnecting in the background would be online by now
    expect(
      back.lines.filter((l) => l.startsWith("online ")),
      describeDaemon(back),
    ).toEqual([]);

    // the application tries again, with the same persisted state, and gets every message
    const got: Got[] = [];
    const client = await connect(options);
    clients.push(client);
    client.on("message", (m) => got.push({ text: m.text(), seq: m.seq, id: m.id }));
    await waitFor(
      () => got.length >= MESSAGES,
      10_000,
      () => `${got.length} received; hwm ${state.state?.hwm}\n${describeDaemon(back)}`,
    );
    expect(got).toEqual(expected(1, MESSAGES));
    await sleep(1000);
    expect(
      back.lines.filter((l) => l === "online dev-1"),
      describeDaemon(back),
    ).toEqual(["online dev-1"]);
  });
});
