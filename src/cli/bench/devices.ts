/**
 * The simulated devices of one worker process: each is our DTLS client plus a
 * DeviceSession (the device protocol core the SDK drives), kept small: no
 * state store, no reconnect, pushes acknowledged as soon as they are handed
 * over. Sends of all devices are flushed together once per event-loop turn,
 * and one coarse timer serves every session's deadlines.
 */
import { connect, type ConnectOptions, type DtlsConnection } from "../../dtls/index.ts";
import { DeviceSession, type PushVerdict } from "../../messaging/device-session.ts";
import { createPushVerifier } from "../../messaging/push-verifier.ts";
import { errorCodeName, type Push } from "../../wire/index.ts";
import { benchNow } from "./ipc.ts";
import { readStamp } from "./stamp.ts";

/**
 * How a device authenticates: a PSK (identity = device id), or its own
 * certificate and key (PEM) with the CA certificate(s) it trusts for the
 * server's; then only the certificate suites are offered.
 */
export type DeviceCredential =
  | { readonly kind: "psk"; readonly key: Uint8Array }
  | { readonly kind: "certificate"; readonly cert: string; readonly key: string; readonly ca: string };

export interface DeviceIdentity {
  readonly id: string;
  readonly credential: DeviceCredential;
  /** the local address its socket binds (undefined: the system picks) */
  readonly localAddress?: string | undefined;
}

export interface DeviceFleetOptions {
  readonly host: string;
  readonly port: number;
  readonly verify: boolean;
  /** remember message ids per device (duplicates are then counted) */
  readonly trackIds: boolean;
  readonly connectTimeoutMs: number;
}

/** What the fleet observed since the last `takeStats()`. */
export interface FleetStats {
  received: number;
  latencies: number[];
  rejected: number;
  lost: number;
  /** lost sessions by why they ended: "bye:<ERROR_CODE>", "stale", "dtls:<code>" */
  lostReasons: Record<string, number>;
  unstamped: number;
  ids: Map<string, { devices: number; duplicates: number }>;
}

interface SimDevice {
  readonly identity: DeviceIdentity;
  conn: DtlsConnection | undefined;
  session: DeviceSession | undefined;
  /** the session's next deadline (0: none), refreshed at every flush */
  deadline: number;
  /** closing on purpose: the end is not a loss */
  closing: boolean;
  /** handshake churn: the session of its last handshake, offered by the next one with resume */
  saved: Uint8Array | undefined;
  seen: Set<string> | undefined;
}

/** How often session deadlines (heartbeats, Hello retries) are checked, ms. */
const TICK_MS = 200;

const acceptAll = (): Promise<PushVerdict> => Promise.resolve(true);

function newStats(): FleetStats {
  return { received: 0, latencies: [], rejected: 0, lost: 0, lostReasons: {}, unstamped: 0, ids: new Map() };
}

export class DeviceFleet {
  private readonly o: DeviceFleetOptions;
  private readonly verify: (push: Push, jwks: string) => Promise<PushVerdict>;
  private readonly devices: SimDevice[];
  private readonly dirty = new Set<SimDevice>();
  private flushQueued = false;
  private stats = newStats();
  private readonly ticker: NodeJS.Timeout;

  constructor(identities: readonly DeviceIdentity[], o: DeviceFleetOptions) {
    this.o = o;
    this.verify = o.verify ? createPushVerifier() : acceptAll;
    this.devices = identities.map((identity) => ({
      identity,
      conn: undefined,
      session: undefined,
      deadline: 0,
      closing: false,
      saved: undefined,
      seen: undefined,
    }));
    this.ticker = setInterval(() => this.tick(), TICK_MS);
  }

  get size(): number {
    return this.devices.length;
  }

  /** Stats since the previous call. */
  takeStats(): FleetStats {
    const s = this.stats;
    this.stats = newStats();
    return s;
  }

  /**
   * Connects every device: DTLS handshake, then Hello until the Welcome;
   * `concurrency` at a time. Resolves with the time of each success (ms) and
   * the failures.
   */
  async connectAll(
    concurrency: number,
    progress: (ok: number, failed: number) => void,
  ): Promise<{ ok: number; failed: number; errors: string[]; handshakeMs: number[] }> {
    const result = { ok: 0, failed: 0, errors: [] as string[], handshakeMs: [] as number[] };
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < this.devices.length) {
        const d = this.devices[next++] as SimDevice;
        const t0 = performance.now();
        try {
          await this.open(d);
          result.ok++;
          result.handshakeMs.push(performance.now() - t0);
        } catch (e) {
          result.failed++;
          if (result.errors.length < 5) result.errors.push(`${d.identity.id}: ${(e as Error).message}`);
        }
        progress(result.ok, result.failed);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, this.devices.length)) }, lane));
    return result;
  }

  /**
   * Handshake churn: each lane takes its own devices in turn, connects (DTLS
   * only) and closes at once, until `durationMs` passed or `max` handshakes
   * were done. No device has two connections at a time. Each device keeps the
   * session of its last handshake; with `resume` it offers it.
   */
  async churn(
    concurrency: number,
    durationMs: number,
    max: number | undefined,
    resume: boolean,
    progress: (ok: number, failed: number) => void,
  ): Promise<{ ok: number; failed: number; errors: string[]; handshakeMs: number[]; resumed: number }> {
    const result = { ok: 0, failed: 0, errors: [] as string[], handshakeMs: [] as number[], resumed: 0 };
    const end = performance.now() + durationMs;
    const lanes = Math.max(1, Math.min(concurrency, this.devices.length));
    let started = 0;
    const lane = async (k: number): Promise<void> => {
      for (let i = k; performance.now() < end && (max === undefined || started < max); i += lanes) {
        const d = this.devices[i % this.devices.length] as SimDevice;
        started++;
        const t0 = performance.now();
        try {
          const offered = resume ? d.saved : undefined;
          const conn = await connect(offered === undefined ? this.connectOptions(d) : { ...this.connectOptions(d), session: offered });
          result.handshakeMs.push(performance.now() - t0);
          result.ok++;
          if (conn.info.resumed) result.resumed++;
          d.saved = conn.session ?? offered;
          conn.on("error", () => undefined);
          conn.close();
        } catch (e) {
          result.failed++;
          if (result.errors.length < 5) result.errors.push(`${d.identity.id}: ${(e as Error).message}`);
        }
        progress(result.ok, result.failed);
      }
    };
    await Promise.all(Array.from({ length: lanes }, (_, k) => lane(k)));
    return result;
  }

  private connectOptions(d: SimDevice): ConnectOptions {
    const c = d.identity.credential;
    const base = { host: this.o.host, port: this.o.port, localAddress: d.identity.localAddress, timeoutMs: this.o.connectTimeoutMs };
    return c.kind === "psk" ? { ...base, psk: { identity: d.identity.id, key: c.key } } : { ...base, cert: c.cert, key: c.key, ca: c.ca };
  }

  /** One session: DTLS, then Hello; resolves at the Welcome. */
  private async open(d: SimDevice): Promise<void> {
    const conn = await connect(this.connectOptions(d));
    const session = new DeviceSession({
      hwm: 0,
      verify: this.verify,
      client: "dtlspush-bench",
      helloTimeoutMs: this.o.connectTimeoutMs,
      // a push is never "late" for the bench: its latency is what is measured
      expiryGraceMs: Infinity,
    });
    d.conn = conn;
    d.session = session;
    d.closing = false;
    if (this.o.trackIds) d.seen = new Set();
    await new Promise<void>((resolve, reject) => {
      let welcomed = false;
      const fail = (why: string, category: string): void => {
        if (!welcomed) {
          // a connect that failed is counted as such, not as a lost session
          welcomed = true;
          d.closing = true;
          reject(new Error(why));
        }
        this.ended(d, category);
      };
      session.on("wake", () => this.markDirty(d));
      session.on("welcome", () => {
        if (welcomed) return;
        welcomed = true;
        resolve();
      });
      session.on("message", (push) => this.onMessage(d, session, push));
      session.on("rejected", () => {
        this.stats.rejected++;
      });
      session.on("bye", (reason) =>
        fail(
          `the server ended the session${reason !== undefined && reason.message !== "" ? `: ${reason.message}` : ""}`,
          `bye:${errorCodeName(reason?.code ?? 0)}`,
        ),
      );
      session.on("stale", () => fail(welcomed ? "no word from the server for several heartbeats" : "the server did not answer the Hello", "stale"));
      conn.on("data", (data) => session.receive(data, Date.now()));
      conn.on("error", () => undefined);
      conn.on("close", (reason) => fail(`the DTLS session closed (${reason.code})`, `dtls:${reason.code}`));
      session.start(Date.now());
    });
  }

  private onMessage(d: SimDevice, session: DeviceSession, push: Push): void {
    const at = benchNow();
    const s = this.stats;
    s.received++;
    const stamp = readStamp(push.payload);
    if (Number.isNaN(stamp)) s.unstamped++;
    else s.latencies.push(at - stamp);
    if (d.seen !== undefined) {
      let entry = s.ids.get(push.messageId);
      if (entry === undefined) s.ids.set(push.messageId, (entry = { devices: 0, duplicates: 0 }));
      if (d.seen.has(push.messageId)) entry.duplicates++;
      else {
        d.seen.add(push.messageId);
        entry.devices++;
      }
    }
    // processed and "persisted" at once: the ack goes out with the next flush
    session.processed(push.seq);
    session.persisted(session.receiver.hwm);
  }

  /** A session that ended by itself (not by `closeAll`) is a loss. */
  private ended(d: SimDevice, why = "closed"): void {
    if (d.conn === undefined) return;
    const conn = d.conn;
    d.conn = undefined;
    d.session = undefined;
    d.deadline = 0;
    this.dirty.delete(d);
    if (!d.closing) {
      this.stats.lost++;
      this.stats.lostReasons[why] = (this.stats.lostReasons[why] ?? 0) + 1;
    }
    if (!conn.closed) conn.close();
  }

  private markDirty(d: SimDevice): void {
    this.dirty.add(d);
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushQueued = false;
    const now = Date.now();
    for (const d of this.dirty) {
      const s = d.session;
      const c = d.conn;
      if (s === undefined || c === undefined) continue;
      const records = s.takeRecords(now);
      if (records.length > 0 && !c.closed) {
        try {
          if (records.length === 1) c.send(records[0] as Uint8Array);
          else c.sendBatch(records);
        } catch {
          // closing: its "close" event ends the device
        }
      }
      d.deadline = s.nextDeadline() ?? 0;
    }
    this.dirty.clear();
  }

  private tick(): void {
    const now = Date.now();
    for (const d of this.devices) {
      if (d.deadline > 0 && d.deadline <= now && d.session !== undefined) {
        d.deadline = 0;
        d.session.onTimer(now);
      }
    }
  }

  /** Bye and close_notify on every session; stops the timer. */
  closeAll(): void {
    clearInterval(this.ticker);
    const now = Date.now();
    for (const d of this.devices) {
      const s = d.session;
      const c = d.conn;
      if (s === undefined || c === undefined) continue;
      d.closing = true;
      s.bye(now);
      try {
        if (!c.closed) c.sendBatch(s.takeRecords(now));
      } catch {
        // already closing
      }
      this.ended(d);
    }
  }
}
