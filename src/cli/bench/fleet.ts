/**
 * The bench's side of the device workers: forks them (the same Node binary,
 * worker.ts/.js next to this file), hands out the devices round-robin, sends
 * commands, and adds up what they report. Latencies are corrected by each
 * worker's measured clock offset.
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { CliError } from "../errors.ts";
import { benchNow, type ParentMessage, type WorkerCertInit, type WorkerDone, type WorkerInit, type WorkerMessage, type WorkerStats } from "./ipc.ts";

/** Most devices one worker simulates: each has its own UDP socket, and a process has few file descriptors (ulimit -n). */
export const MAX_DEVICES_PER_WORKER = 15_000;
/** Most worker processes. */
export const MAX_WORKERS = 64;

export interface FleetOptions {
  readonly workers: number;
  /** device indexes; device i is `${prefix}${i}` */
  readonly indexes: readonly number[];
  readonly prefix: string;
  /** local addresses the devices bind, device i the (i mod length)-th; empty: the system picks */
  readonly sourceAddresses: readonly string[];
  readonly host: string;
  readonly port: number;
  readonly seedHex: string;
  /** certificates instead of PSKs: each worker issues its devices' at start */
  readonly cert: WorkerCertInit | undefined;
  readonly verify: boolean;
  readonly trackIds: boolean;
  readonly statsIntervalMs: number;
  readonly connectTimeoutMs: number;
}

/** What all workers reported so far. */
export interface FleetTotals {
  received: number;
  rejected: number;
  lost: number;
  /** lost sessions by why they ended ("bye:<ERROR_CODE>", "stale", "dtls:<code>") */
  lostReasons: Record<string, number>;
  unstamped: number;
  /** latency samples (clock-corrected), ms */
  latencies: number[];
  /** per message id (fanout): devices that received it, duplicate deliveries */
  ids: Map<string, { devices: number; duplicates: number }>;
}

export interface CommandResult {
  ok: number;
  failed: number;
  errors: string[];
  handshakeMs: number[];
  /** churn: handshakes the server resumed */
  resumed: number;
}

interface Worker {
  readonly index: number;
  readonly child: ChildProcess;
  /** worker clock minus our clock, ms */
  offset: number;
  /** the latest progress of the running command */
  ok: number;
  failed: number;
  exited: boolean;
  /** certificates issued at start so far, and the worker's time spent on it, ms */
  issued: number;
  issueMs: number;
}

/** How issuing the devices' certificates went, all workers together. */
export interface IssueSummary {
  readonly issued: number;
  /** the workers' issuing time per certificate, ms (each worker's time / its certificates, over all) */
  readonly msEach: number | null;
}

/** The worker entry next to this module, in the same form (.ts from the sources, .js when built). */
export function workerEntry(): string {
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  return fileURLToPath(new URL(`./worker${ext}`, import.meta.url));
}

export class Fleet {
  private readonly workers: Worker[] = [];
  private readonly waiters = new Map<string, ((m: WorkerMessage, w: Worker) => void)[]>();
  private flushId = 0;
  /** closing or killed: workers exiting is expected */
  private stopping = false;
  private closing: Promise<void> | undefined;
  readonly totals: FleetTotals = { received: 0, rejected: 0, lost: 0, lostReasons: {}, unstamped: 0, latencies: [], ids: new Map() };
  /** called on every stats message (after the totals were updated) */
  onStats: (() => void) | undefined;
  /** a worker died: the error */
  private failure: Error | undefined;
  /** every worker's "ready" */
  private readyAll: Promise<unknown> = Promise.resolve();

  private constructor() {}

  /**
   * Forks the workers and gives each its devices; `ready()` waits until they
   * have set them up (with --cert: issued their certificates) and measures the
   * clock offsets. In two steps so that the fleet can be closed meanwhile.
   */
  static launch(o: FleetOptions): Fleet {
    const fleet = new Fleet();
    try {
      fleet.spawn(o);
    } catch (e) {
      fleet.kill();
      throw e;
    }
    return fleet;
  }

  /** Resolves when every worker is ready and the clock offsets are measured; kills the workers when one failed. */
  async ready(): Promise<void> {
    try {
      await this.readyAll;
      await Promise.all(this.workers.map((w) => this.calibrate(w)));
    } catch (e) {
      this.kill();
      throw e;
    }
  }

  /** Certificates issued so far (final once `ready()` resolved). */
  certificates(): IssueSummary {
    let issued = 0;
    let workerMs = 0;
    for (const w of this.workers) {
      issued += w.issued;
      workerMs += w.issueMs;
    }
    return { issued, msEach: issued > 0 ? workerMs / issued : null };
  }

  get size(): number {
    return this.workers.length;
  }

  /** Clock offsets of the workers (worker minus bench), ms. */
  get clockOffsets(): number[] {
    return this.workers.map((w) => w.offset);
  }

  private spawn(o: FleetOptions): void {
    const entry = workerEntry();
    const n = Math.max(1, Math.min(o.workers, o.indexes.length));
    const shares: number[][] = Array.from({ length: n }, () => []);
    o.indexes.forEach((idx, i) => (shares[i % n] as number[]).push(idx));
    for (let k = 0; k < n; k++) {
      const child = fork(entry, [], {
        serialization: "advanced",
        execArgv: [],
        stdio: ["ignore", "ignore", "inherit", "ipc"],
      });
      const w: Worker = { index: k, child, offset: 0, ok: 0, failed: 0, exited: false, issued: 0, issueMs: 0 };
      this.workers.push(w);
      child.on("message", (m: WorkerMessage) => this.onMessage(w, m));
      child.on("exit", (code, signal) => {
        w.exited = true;
        if (!this.stopping) {
          this.failure = new CliError(`bench worker ${k} exited unexpectedly (${signal ?? `code ${code}`})`);
          this.wakeAll();
        } else {
          this.wakeWorker(w);
        }
      });
      child.on("error", (e) => {
        this.failure = new CliError(`bench worker ${k} failed: ${e.message}`);
        this.wakeAll();
      });
      const init: WorkerInit = {
        t: "init",
        worker: k,
        host: o.host,
        port: o.port,
        prefix: o.prefix,
        indexes: shares[k] as number[],
        sourceAddresses: o.sourceAddresses,
        seedHex: o.seedHex,
        cert: o.cert,
        verify: o.verify,
        trackIds: o.trackIds,
        statsIntervalMs: o.statsIntervalMs,
        connectTimeoutMs: o.connectTimeoutMs,
      };
      child.send(init);
    }
    // waited for from now on: a "ready" is not lost when ready() is called later
    this.readyAll = Promise.all(this.workers.map((w) => this.next(w, "ready")));
    this.readyAll.catch(() => undefined);
  }

  /** NTP-style: the sample with the shortest round trip gives the offset. */
  private async calibrate(w: Worker): Promise<void> {
    let best = Infinity;
    for (let i = 0; i < 10; i++) {
      const sentAt = benchNow();
      this.sendTo(w, { t: "clock", sentAt });
      const m = await this.next(w, "clock");
      if (m.t !== "clock") continue;
      const back = benchNow();
      const rtt = back - sentAt;
      if (rtt < best) {
        best = rtt;
        w.offset = m.workerTime - (sentAt + back) / 2;
      }
    }
  }

  private sendTo(w: Worker, m: ParentMessage): void {
    if (!w.exited && w.child.connected) w.child.send(m);
  }

  private onMessage(w: Worker, m: WorkerMessage): void {
    switch (m.t) {
      case "stats":
        this.addStats(w, m);
        this.onStats?.();
        break;
      case "progress":
        w.ok = m.ok;
        w.failed = m.failed;
        break;
      case "issued":
      case "ready":
        w.issued = m.issued;
        w.issueMs = m.issueMs;
        break;
      case "failure":
        this.failure = new CliError(`bench worker ${w.index}: ${m.message}`);
        this.wakeAll();
        return;
      default:
        break;
    }
    const key = `${w.index}:${m.t}`;
    const list = this.waiters.get(key);
    const first = list?.shift();
    if (list !== undefined && list.length === 0) this.waiters.delete(key);
    first?.(m, w);
  }

  private addStats(w: Worker, m: WorkerStats): void {
    const t = this.totals;
    t.received += m.received;
    t.rejected += m.rejected;
    t.lost += m.lost;
    for (const [why, n] of Object.entries(m.lostReasons)) t.lostReasons[why] = (t.lostReasons[why] ?? 0) + n;
    t.unstamped += m.unstamped;
    for (const v of m.latencyMs) t.latencies.push(v - w.offset);
    for (const c of m.ids) {
      const e = t.ids.get(c.id);
      if (e === undefined) t.ids.set(c.id, { devices: c.devices, duplicates: c.duplicates });
      else {
        e.devices += c.devices;
        e.duplicates += c.duplicates;
      }
    }
  }

  /** The next message of type `t` from worker `w`; rejects when a worker failed. */
  private next(w: Worker, t: WorkerMessage["t"]): Promise<WorkerMessage> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise<WorkerMessage>((resolve, reject) => {
      const key = `${w.index}:${t}`;
      const list = this.waiters.get(key) ?? [];
      list.push((m) => {
        if (m.t === "failure") reject(this.failure ?? new CliError(m.message));
        else resolve(m);
      });
      this.waiters.set(key, list);
    });
  }

  /** Rejects the waiters of a worker that exited while the fleet was stopping. */
  private wakeWorker(w: Worker): void {
    const stopped: WorkerMessage = { t: "failure", message: "the bench was stopped" };
    for (const [key, list] of [...this.waiters]) {
      if (!key.startsWith(`${w.index}:`)) continue;
      this.waiters.delete(key);
      for (const f of list) f(stopped, w);
    }
  }

  /** Rejects every waiter (a worker failed or exited). */
  private wakeAll(): void {
    const fail: WorkerMessage = { t: "failure", message: this.failure?.message ?? "failed" };
    const all = [...this.waiters.values()].flat();
    this.waiters.clear();
    for (const f of all) f(fail, this.workers[0] as Worker);
  }

  /** Progress of the running command, all workers. */
  progress(): { ok: number; failed: number } {
    let ok = 0;
    let failed = 0;
    for (const w of this.workers) {
      ok += w.ok;
      failed += w.failed;
    }
    return { ok, failed };
  }

  private async command(make: (w: Worker) => ParentMessage): Promise<CommandResult> {
    for (const w of this.workers) {
      w.ok = 0;
      w.failed = 0;
    }
    const waits = this.workers.map((w) => this.next(w, "done"));
    for (const w of this.workers) this.sendTo(w, make(w));
    const done = (await Promise.all(waits)) as WorkerDone[];
    const r: CommandResult = { ok: 0, failed: 0, errors: [], handshakeMs: [], resumed: 0 };
    done.forEach((d, i) => {
      const w = this.workers[i] as Worker;
      w.ok = d.ok;
      w.failed = d.failed;
      r.ok += d.ok;
      r.failed += d.failed;
      r.resumed += d.resumed;
      for (const e of d.errors) if (r.errors.length < 5) r.errors.push(e);
      for (const v of d.handshakeMs) r.handshakeMs.push(v);
    });
    return r;
  }

  /** Connects every device (DTLS + Hello/Welcome), `concurrency` handshakes in flight in all. */
  connectAll(concurrency: number): Promise<CommandResult> {
    const per = Math.max(1, Math.ceil(concurrency / this.workers.length));
    return this.command(() => ({ t: "connect", concurrency: per }));
  }

  /** Handshake churn for `durationMs` (or until `max` handshakes in all); with `resume` each device offers its last session. */
  churn(concurrency: number, durationMs: number, max: number | undefined, resume = false): Promise<CommandResult> {
    const n = this.workers.length;
    const per = Math.max(1, Math.ceil(concurrency / n));
    return this.command((w) => ({
      t: "churn",
      concurrency: per,
      durationMs,
      maxHandshakes: max === undefined ? undefined : Math.floor(max / n) + (w.index < max % n ? 1 : 0),
      resume,
    }));
  }

  /** Every worker sends what it has gathered; resolves when all of it arrived, with the workers' CPU seconds so far (all together). */
  async flush(): Promise<{ cpuSeconds: number }> {
    const id = ++this.flushId;
    const waits = this.workers.map((w) => this.next(w, "flushed"));
    for (const w of this.workers) this.sendTo(w, { t: "flush", id });
    const answers = await Promise.all(waits);
    let cpuSeconds = 0;
    for (const a of answers) if (a.t === "flushed") cpuSeconds += a.cpuSeconds;
    return { cpuSeconds };
  }

  /** Bye to every session, then the workers exit (killed when they take longer than `graceMs`). */
  close(graceMs = 5_000): Promise<void> {
    this.closing ??= this.shutdown(graceMs);
    return this.closing;
  }

  private async shutdown(graceMs: number): Promise<void> {
    this.stopping = true;
    const live = this.workers.filter((w) => !w.exited);
    const timer = setTimeout(() => this.kill(), graceMs);
    await Promise.all(
      live.map(async (w) => {
        const exited = new Promise<void>((resolve) => (w.exited ? resolve() : w.child.once("exit", () => resolve())));
        // the worker's last stats come before its "closed"
        const closed = this.next(w, "closed").catch(() => undefined);
        this.sendTo(w, { t: "close" });
        await Promise.race([closed, exited.then(() => new Promise((r) => setTimeout(r, 100)))]);
        await exited;
      }),
    );
    clearTimeout(timer);
  }

  /** Kills every worker at once (SIGKILL). */
  kill(): void {
    this.stopping = true;
    for (const w of this.workers) if (!w.exited) w.child.kill("SIGKILL");
  }

  /** A worker failure seen so far, if any. */
  get error(): Error | undefined {
    return this.failure;
  }
}
