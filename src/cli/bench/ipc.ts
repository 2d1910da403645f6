/**
 * The messages between `dtlspush bench` and its device worker processes
 * (child_process IPC with the "advanced" serialization, so typed arrays cross
 * as bytes). Workers batch what they observe: one "stats" message per
 * interval, never one message per push.
 */

/** Where the simulated devices connect, and who they are. */
export interface WorkerInit {
  readonly t: "init";
  /** index of this worker, for messages */
  readonly worker: number;
  readonly host: string;
  readonly port: number;
  /** device ids are `${prefix}${index}` */
  readonly prefix: string;
  /** the device indexes this worker simulates */
  readonly indexes: readonly number[];
  /** local addresses the devices bind, device i the (i mod length)-th; empty: the system picks */
  readonly sourceAddresses: readonly string[];
  /** hex of the run's random seed; PSKs are derived from it and the device id */
  readonly seedHex: string;
  /** certificates instead of PSKs: the worker issues one per device at init */
  readonly cert: WorkerCertInit | undefined;
  /** verify push signatures (off: accepted unchecked) */
  readonly verify: boolean;
  /** remember the message ids each device received, to count duplicates (fanout) */
  readonly trackIds: boolean;
  /** how often stats are sent, ms */
  readonly statsIntervalMs: number;
  /** one DTLS handshake (and Hello/Welcome) may take this long, ms */
  readonly connectTimeoutMs: number;
}

/**
 * The CA the worker issues its devices' certificates with, and what they
 * trust for the server. Only over IPC: nothing is written to disk.
 */
export interface WorkerCertInit {
  /** the CA certificate and its PKCS#8 private key, PEM */
  readonly caCertPem: string;
  readonly caKeyPem: string;
  /** PEM CA certificate(s) the server's certificate must lead to */
  readonly trustPem: string;
  readonly curve: "p256" | "p384";
  /** certificates issued at a time in one worker */
  readonly concurrency: number;
}

/** Connect every device (DTLS handshake, then Hello until Welcome) and keep it connected. */
export interface ConnectCommand {
  readonly t: "connect";
  /** handshakes in flight in this worker */
  readonly concurrency: number;
}

/** Handshake churn: connect (DTLS only) and close again, over and over. */
export interface ChurnCommand {
  readonly t: "churn";
  readonly concurrency: number;
  readonly durationMs: number;
  /** stop after this many handshakes in this worker (undefined: duration only) */
  readonly maxHandshakes: number | undefined;
  /** each device offers the session of its previous handshake (resumption) */
  readonly resume: boolean;
}

/** Sends the stats gathered so far at once, then "flushed". */
export interface FlushCommand {
  readonly t: "flush";
  readonly id: number;
}

/** For the clock offset between the two processes: answer with the worker's time. */
export interface ClockCommand {
  readonly t: "clock";
  readonly sentAt: number;
}

/** Ends every session (Bye, close_notify), answers "closed" and exits. */
export interface CloseCommand {
  readonly t: "close";
}

export type ParentMessage = WorkerInit | ConnectCommand | ChurnCommand | FlushCommand | ClockCommand | CloseCommand;

/** Messages one device received for a message id (fanout), since the last stats. */
export interface IdCount {
  readonly id: string;
  /** devices that received it (each counted once) */
  readonly devices: number;
  /** deliveries beyond the first to the same device */
  readonly duplicates: number;
}

/** Devices set up; with certificates, how issuing them went. */
export interface WorkerReady {
  readonly t: "ready";
  /** certificates issued (0 without --cert) */
  readonly issued: number;
  /** the worker's wall time spent issuing them, ms */
  readonly issueMs: number;
}

/** Progress of issuing certificates at init (cumulative). */
export interface WorkerIssued {
  readonly t: "issued";
  readonly issued: number;
  readonly issueMs: number;
}

/** Progress of a connect or churn command (cumulative for the command). */
export interface WorkerProgress {
  readonly t: "progress";
  readonly ok: number;
  readonly failed: number;
}

/** The end of a connect or churn command. */
export interface WorkerDone {
  readonly t: "done";
  readonly ok: number;
  readonly failed: number;
  /** the first failures' messages, at most a few */
  readonly errors: readonly string[];
  /** time of each successful handshake (connect: until the Welcome), ms */
  readonly handshakeMs: Float64Array;
  /** churn: handshakes the server resumed (abbreviated) */
  readonly resumed: number;
}

/** What the devices saw since the previous stats message. */
export interface WorkerStats {
  readonly t: "stats";
  /** pushes handed over by the device sessions */
  readonly received: number;
  /** for each received push: worker clock at receipt minus the publisher's time stamp in the payload, ms */
  readonly latencyMs: Float64Array;
  /** pushes refused (bad signature or expired) */
  readonly rejected: number;
  /** sessions that ended without being asked to (server Bye, stale, DTLS close) */
  readonly lost: number;
  /** lost sessions by why they ended */
  readonly lostReasons: Readonly<Record<string, number>>;
  /** pushes whose payload held no time stamp */
  readonly unstamped: number;
  readonly ids: readonly IdCount[];
}

export interface WorkerFlushed {
  readonly t: "flushed";
  readonly id: number;
  /** CPU time (user + system) this worker used since it started, seconds */
  readonly cpuSeconds: number;
}

export interface WorkerClock {
  readonly t: "clock";
  readonly sentAt: number;
  readonly workerTime: number;
}

export interface WorkerClosed {
  readonly t: "closed";
}

export interface WorkerFailure {
  readonly t: "failure";
  readonly message: string;
}

export type WorkerMessage =
  WorkerReady | WorkerIssued | WorkerProgress | WorkerDone | WorkerStats | WorkerFlushed | WorkerClock | WorkerClosed | WorkerFailure;

/** The clock every bench process uses for latencies: wall-clock milliseconds with sub-ms resolution. */
export function benchNow(): number {
  return performance.timeOrigin + performance.now();
}
