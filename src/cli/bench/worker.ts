/**
 * Entry of a bench device worker process (forked by `dtlspush bench` with an
 * IPC channel). It simulates the devices it is given (see devices.ts), obeys
 * the parent's commands (ipc.ts) and reports in batches. It exits when the
 * parent says "close" or goes away.
 */
import { issueCertificateCredentials } from "./device-certs.ts";
import { DeviceFleet, type DeviceCredential, type DeviceIdentity } from "./devices.ts";
import { benchNow, type ParentMessage, type WorkerInit, type WorkerMessage } from "./ipc.ts";
import { benchDeviceId, deriveDeviceKey } from "./keys.ts";
import { sourceAddressOf } from "./source-addresses.ts";

/** Progress messages at most this often, ms. */
const PROGRESS_MS = 250;

function send(m: WorkerMessage): void {
  process.send?.(m);
}

let fleet: DeviceFleet | undefined;
let statsTimer: NodeJS.Timeout | undefined;
let busy: Promise<unknown> = Promise.resolve();

function sendStats(): void {
  if (fleet === undefined) return;
  const s = fleet.takeStats();
  if (s.received === 0 && s.rejected === 0 && s.lost === 0 && s.unstamped === 0 && s.ids.size === 0) return;
  send({
    t: "stats",
    received: s.received,
    latencyMs: Float64Array.from(s.latencies),
    rejected: s.rejected,
    lost: s.lost,
    lostReasons: s.lostReasons,
    unstamped: s.unstamped,
    ids: [...s.ids].map(([id, c]) => ({ id, devices: c.devices, duplicates: c.duplicates })),
  });
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function progressReporter(): (ok: number, failed: number) => void {
  let last = 0;
  return (ok, failed) => {
    const now = performance.now();
    if (now - last < PROGRESS_MS) return;
    last = now;
    send({ t: "progress", ok, failed });
  };
}

async function init(m: WorkerInit): Promise<void> {
  const ids = m.indexes.map((i) => benchDeviceId(i, m.prefix));
  let credentials: DeviceCredential[];
  let issued = 0;
  let issueMs = 0;
  if (m.cert !== undefined) {
    let last = 0;
    const r = await issueCertificateCredentials(m.cert, ids, (p) => {
      const now = performance.now();
      if (now - last < PROGRESS_MS && p.issued < ids.length) return;
      last = now;
      send({ t: "issued", issued: p.issued, issueMs: p.issueMs });
    });
    credentials = r.credentials;
    issued = credentials.length;
    issueMs = r.issueMs;
  } else {
    credentials = [];
    for (const id of ids) credentials.push({ kind: "psk", key: await deriveDeviceKey(m.seedHex, id) });
  }
  const identities: DeviceIdentity[] = ids.map((id, k) => ({
    id,
    credential: credentials[k] as DeviceCredential,
    localAddress: sourceAddressOf(m.sourceAddresses, m.indexes[k] as number),
  }));
  fleet = new DeviceFleet(identities, { host: m.host, port: m.port, verify: m.verify, trackIds: m.trackIds, connectTimeoutMs: m.connectTimeoutMs });
  statsTimer = setInterval(sendStats, m.statsIntervalMs);
  send({ t: "ready", issued, issueMs });
}

function close(): void {
  if (statsTimer !== undefined) clearInterval(statsTimer);
  fleet?.closeAll();
  sendStats();
  // let the close_notify datagrams and the IPC messages leave, then go
  setTimeout(() => process.exit(0), 1000).unref();
  process.send?.({ t: "closed" } satisfies WorkerMessage, () => {
    setTimeout(() => process.exit(0), 100).unref();
  });
}

function handle(m: ParentMessage): void {
  switch (m.t) {
    case "init":
      busy = busy.then(() => init(m));
      break;
    case "connect":
      busy = busy.then(async () => {
        const r = await (fleet as DeviceFleet).connectAll(m.concurrency, progressReporter());
        send({ t: "done", ok: r.ok, failed: r.failed, errors: r.errors, handshakeMs: Float64Array.from(r.handshakeMs), resumed: 0 });
      });
      break;
    case "churn":
      busy = busy.then(async () => {
        const r = await (fleet as DeviceFleet).churn(m.concurrency, m.durationMs, m.maxHandshakes, m.resume, progressReporter());
        send({ t: "done", ok: r.ok, failed: r.failed, errors: r.errors, handshakeMs: Float64Array.from(r.handshakeMs), resumed: r.resumed });
      });
      break;
    case "flush":
      // not queued behind a running command: the parent asks while devices receive
      sendStats();
      send({ t: "flushed", id: m.id, cpuSeconds: cpuSeconds() });
      break;
    case "clock":
      send({ t: "clock", sentAt: m.sentAt, workerTime: benchNow() });
      break;
    case "close":
      close();
      break;
  }
  busy = busy.catch((e: unknown) => {
    send({ t: "failure", message: e instanceof Error ? e.message : String(e) });
  });
}

process.on("message", (m: ParentMessage) => handle(m));
// the parent went away (killed, crashed): nothing left to do here
process.on("disconnect", () => {
  fleet?.closeAll();
  setTimeout(() => process.exit(0), 200).unref();
});
