/**
 * Interop harness: spawn and control real DTLS peers (OpenSSL s_server/s_client,
 * GnuTLS gnutls-serv/gnutls-cli) with bounded waits and clean teardown.
 *
 * Rules this module enforces:
 * - traffic only over loopback, 127.0.0.1 or ::1 (gnutls-serv binds every
 *   interface; we only ever connect to it on 127.0.0.1);
 * - every spawned process is tracked and killed by PID in `killAllPeers()`
 *   (call it from afterEach), with a synchronous SIGKILL safety net on exit;
 * - every wait has a timeout and its error carries the command line and the
 *   tail of the peer's output.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync, accessSync, constants as fsConstants } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

// ---------------------------------------------------------------------------
// Suites (IANA name <-> each peer's spelling)

export type PskSuiteName =
  | "TLS_PSK_WITH_AES_128_CCM_8"
  | "TLS_PSK_WITH_AES_128_CCM"
  | "TLS_PSK_WITH_AES_128_GCM_SHA256"
  | "TLS_PSK_WITH_AES_256_GCM_SHA384"
  | "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256";

export interface PskSuiteInfo {
  /** IANA code point */
  readonly id: number;
  /** OpenSSL cipher name (for -cipher, and printed as "Cipher is ..."). */
  readonly openssl: string;
  /** GnuTLS cipher name (for +CIPHER in a priority string, printed in "- Description"). */
  readonly gnutls: string;
}

export const PSK_SUITES: Readonly<Record<PskSuiteName, PskSuiteInfo>> = {
  TLS_PSK_WITH_AES_128_CCM_8: { id: 0xc0a8, openssl: "PSK-AES128-CCM8", gnutls: "AES-128-CCM-8" },
  TLS_PSK_WITH_AES_128_CCM: { id: 0xc0a4, openssl: "PSK-AES128-CCM", gnutls: "AES-128-CCM" },
  TLS_PSK_WITH_AES_128_GCM_SHA256: { id: 0x00a8, openssl: "PSK-AES128-GCM-SHA256", gnutls: "AES-128-GCM" },
  TLS_PSK_WITH_AES_256_GCM_SHA384: { id: 0x00a9, openssl: "PSK-AES256-GCM-SHA384", gnutls: "AES-256-GCM" },
  TLS_PSK_WITH_CHACHA20_POLY1305_SHA256: {
    id: 0xccab,
    openssl: "PSK-CHACHA20-POLY1305",
    gnutls: "CHACHA20-POLY1305",
  },
};

export const PSK_SUITE_NAMES = Object.keys(PSK_SUITES) as PskSuiteName[];

export function suiteFromOpenssl(name: string): PskSuiteName | undefined {
  return PSK_SUITE_NAMES.find((s) => PSK_SUITES[s].openssl === name);
}

export function suiteFromGnutls(cipher: string): PskSuiteName | undefined {
  return PSK_SUITE_NAMES.find((s) => PSK_SUITES[s].gnutls === cipher);
}

export function suiteFromId(id: number): PskSuiteName | undefined {
  return PSK_SUITE_NAMES.find((s) => PSK_SUITES[s].id === id);
}

/**
 * A GnuTLS priority string for DTLS 1.2 plain PSK limited to the given suites,
 * in that order (the list order is the preference order).
 */
export function gnutlsPskPriority(suites: readonly PskSuiteName[]): string {
  const ciphers = suites.map((s) => `+${PSK_SUITES[s].gnutls}`).join(":");
  return `NORMAL:-VERS-ALL:+VERS-DTLS1.2:-KX-ALL:+PSK:-CIPHER-ALL:${ciphers}`;
}

/** An OpenSSL cipher list for the given suites, in order. */
export function opensslCipherList(suites: readonly PskSuiteName[]): string {
  return suites.map((s) => PSK_SUITES[s].openssl).join(":");
}

export interface PskCreds {
  identity: string;
  key: Buffer;
}

// ---------------------------------------------------------------------------
// Availability

export type PeerName = "openssl" | "gnutls";

const BINARIES: Record<PeerName, string[]> = {
  openssl: ["openssl"],
  gnutls: ["gnutls-cli", "gnutls-serv"],
};

function onPath(bin: string): string | undefined {
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, bin);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

const availability = new Map<PeerName, { ok: boolean; reason: string }>();

function probe(name: PeerName): { ok: boolean; reason: string } {
  const cached = availability.get(name);
  if (cached) return cached;
  let result = { ok: true, reason: "" };
  for (const bin of BINARIES[name]) {
    if (!onPath(bin)) {
      result = { ok: false, reason: `'${bin}' is not on PATH` };
      break;
    }
    const args = bin === "openssl" ? ["version"] : ["--version"];
    const r = spawnSync(bin, args, { timeout: 10_000, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
    if (r.error || r.status !== 0) {
      result = { ok: false, reason: `'${bin} ${args.join(" ")}' failed: ${r.error?.message ?? `exit ${r.status}`}` };
      break;
    }
  }
  if (result.ok && name === "openssl") {
    // DTLS 1.2 + PSK support: the PSK cipher list must resolve.
    const r = spawnSync("openssl", ["ciphers", "PSK-AES128-GCM-SHA256"], {
      timeout: 10_000,
      stdio: ["ignore", "pipe", "pipe"],
      encoding: "utf8",
    });
    if (r.status !== 0) result = { ok: false, reason: "this openssl has no PSK cipher suites" };
  }
  availability.set(name, result);
  return result;
}

const warned = new Set<PeerName>();

/**
 * True when the peer's binaries are installed and usable. When they are not,
 * prints (once per process) a loud warning saying which tests are skipped and why.
 */
export function peerAvailable(name: PeerName): boolean {
  const { ok, reason } = probe(name);
  if (!ok && !warned.has(name)) {
    warned.add(name);
    const pkg = name === "openssl" ? "openssl" : "gnutls-bin";
    console.warn(
      `\n*** WARNING: interop tests against ${name} are SKIPPED: ${reason}. ` +
        `Install the '${pkg}' package (npm test runs scripts/ensure-peers.mjs, which does this on Debian as root). ***\n`,
    );
  }
  return ok;
}

// ---------------------------------------------------------------------------
// Processes

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Waiter {
  pattern: RegExp;
  from: number;
  resolve: (m: RegExpExecArray) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

const live = new Set<PeerProcess>();

export class PeerProcess {
  readonly command: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** stdout and stderr interleaved in arrival order */
  output = "";
  stdout = "";
  stderr = "";
  exit: ExitInfo | undefined;
  readonly exited: Promise<ExitInfo>;
  private waiters = new Set<Waiter>();
  private cleanups: Array<() => void> = [];

  constructor(bin: string, args: readonly string[]) {
    this.command = [bin, ...args].join(" ");
    this.child = spawn(bin, args, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, LC_ALL: "C" } });
    if (this.child.pid === undefined) {
      // spawn failure is reported through the 'error' event below; keep a sentinel.
      this.pid = -1;
    } else {
      this.pid = this.child.pid;
    }
    live.add(this);
    this.child.stdout?.setEncoding("utf8");
    this.child.stderr?.setEncoding("utf8");
    this.child.stdout?.on("data", (d: string) => {
      this.stdout += d;
      this.append(d);
    });
    this.child.stderr?.on("data", (d: string) => {
      this.stderr += d;
      this.append(d);
    });
    // Writes to a dead peer's stdin must not crash the test run.
    this.child.stdin?.on("error", () => {});
    this.exited = new Promise<ExitInfo>((resolve) => {
      this.child.once("error", (e) => {
        this.append(`\n[spawn error: ${e.message}]\n`);
        this.exit ??= { code: -1, signal: null };
        this.finish();
        resolve(this.exit);
      });
      this.child.once("close", (code, signal) => {
        this.exit ??= { code, signal };
        this.finish();
        resolve(this.exit);
      });
    });
  }

  /** Register a cleanup (temp files) to run when the process is gone. */
  onCleanup(fn: () => void): void {
    this.cleanups.push(fn);
  }

  private append(d: string): void {
    this.output += d;
    for (const w of this.waiters) {
      w.pattern.lastIndex = 0;
      const m = w.pattern.exec(this.output.slice(w.from));
      if (m) {
        this.waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(m);
      }
    }
  }

  private finish(): void {
    live.delete(this);
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(this.failure(`exited (${this.describeExit()}) before printing ${w.pattern}`));
    }
    this.waiters.clear();
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch {
        // best effort
      }
    }
  }

  describeExit(): string {
    if (!this.exit) return "running";
    return this.exit.signal ? `signal ${this.exit.signal}` : `code ${this.exit.code}`;
  }

  /** Error with the command line and the tail of the output, for diagnostics. */
  failure(what: string): Error {
    const tail = this.output.length > 3000 ? `...${this.output.slice(-3000)}` : this.output;
    return new Error(`${this.command}: ${what}\n--- output ---\n${tail}\n--------------`);
  }

  /** Current length of the combined output; pass as `from` to wait for something new. */
  mark(): number {
    return this.output.length;
  }

  /**
   * Wait until the combined output (from offset `from`) matches `pattern`.
   * Rejects on timeout or when the process exits without printing it.
   */
  waitFor(pattern: RegExp | string, timeoutMs = 10_000, from = 0): Promise<RegExpExecArray> {
    const re = typeof pattern === "string" ? new RegExp(escapeRegExp(pattern)) : pattern;
    const m = re.exec(this.output.slice(from));
    if (m) return Promise.resolve(m);
    if (this.exit) return Promise.reject(this.failure(`exited (${this.describeExit()}) before printing ${re}`));
    return new Promise<RegExpExecArray>((resolve, reject) => {
      const w: Waiter = {
        pattern: re,
        from,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          reject(this.failure(`timed out after ${timeoutMs} ms waiting for ${re}`));
        }, timeoutMs),
      };
      this.waiters.add(w);
    });
  }

  write(text: string | Buffer): void {
    if (this.exit) throw this.failure("cannot write: process has exited");
    this.child.stdin?.write(text);
  }

  /** Close the peer's stdin (s_client/gnutls-cli then send close_notify and exit). */
  endInput(): void {
    this.child.stdin?.end();
  }

  /** Wait for the process to exit; rejects after timeoutMs (the process keeps running). */
  waitExit(timeoutMs = 10_000): Promise<ExitInfo> {
    if (this.exit) return Promise.resolve(this.exit);
    return new Promise<ExitInfo>((resolve, reject) => {
      const timer = setTimeout(() => reject(this.failure(`did not exit within ${timeoutMs} ms`)), timeoutMs);
      void this.exited.then((e) => {
        clearTimeout(timer);
        resolve(e);
      });
    });
  }

  /** SIGTERM by PID, SIGKILL after graceMs; resolves when the process is gone (bounded). */
  async kill(graceMs = 2_000): Promise<void> {
    if (this.exit || this.pid < 0) {
      this.finish();
      return;
    }
    signal(this.pid, "SIGTERM");
    const gone = await Promise.race([this.exited.then(() => true), delay(graceMs).then(() => false)]);
    if (!gone) {
      signal(this.pid, "SIGKILL");
      await Promise.race([this.exited, delay(graceMs)]);
    }
    this.finish();
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function spawnPeer(bin: string, args: readonly string[]): PeerProcess {
  return new PeerProcess(bin, args);
}

/** Kill every peer process still alive (by PID). Call from afterEach/afterAll. */
export async function killAllPeers(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill()));
}

export function livePeerCount(): number {
  return live.size;
}

// Safety net: never leave processes behind, even if a test run is aborted.
process.once("exit", () => {
  for (const p of live) {
    if (p.pid > 0) signal(p.pid, "SIGKILL");
  }
});

// ---------------------------------------------------------------------------
// Ports

/**
 * A UDP port that is free right now on all IPv4 interfaces (so also on
 * 127.0.0.1). There is a small race until the peer binds it; the start*
 * helpers retry with a fresh port when the peer fails to bind.
 */
export async function freeUdpPort(family: "udp4" | "udp6" = "udp4"): Promise<number> {
  const sock = dgram.createSocket(family);
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind(0, family === "udp6" ? "::" : "0.0.0.0", () => resolve());
    });
    return sock.address().port;
  } finally {
    sock.close();
  }
}

async function withPortRetries<T>(start: (port: number) => Promise<T>, family: "udp4" | "udp6" = "udp4", attempts = 3): Promise<T> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    const port = await freeUdpPort(family);
    try {
      return await start(port);
    } catch (e) {
      last = e;
    }
  }
  throw last;
}

/** Whether ::1 can be bound here (IPv6 loopback cases skip otherwise). */
export async function loopbackV6Available(): Promise<boolean> {
  const sock = dgram.createSocket("udp6");
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.bind(0, "::1", () => resolve());
    });
    return true;
  } catch {
    return false;
  } finally {
    try {
      sock.close();
    } catch {
      // never bound
    }
  }
}

/** Peers only ever talk over loopback. */
export type LoopbackHost = "127.0.0.1" | "::1";

function hostPort(host: LoopbackHost, port: number): string {
  if (host !== "127.0.0.1" && host !== "::1") throw new Error(`interop peers use loopback only, not ${String(host)}`);
  return host === "::1" ? `[::1]:${port}` : `127.0.0.1:${port}`;
}

// ---------------------------------------------------------------------------
// OpenSSL

export interface OpensslServerOptions {
  /** default 127.0.0.1 */
  host?: LoopbackHost;
  psk: PskCreds;
  /** OpenSSL cipher list, e.g. "PSK-AES128-CCM8" or opensslCipherList([...]) */
  cipher: string;
  mtu?: number;
  extraArgs?: readonly string[];
  readyTimeoutMs?: number;
}

export interface RunningServer {
  proc: PeerProcess;
  port: number;
}

/**
 * `openssl s_server -dtls1_2 -accept 127.0.0.1:PORT (or [::1]:PORT) -nocert -psk HEX -psk_identity ID -cipher C`.
 * Ready when it prints "ACCEPT". After a handshake it prints "CIPHER is <openssl name>";
 * received application data is printed raw on stdout; lines written to its stdin
 * (longer than one character: single letters are commands) are sent to the client.
 * On the client's close_notify it prints "DONE" and accepts again.
 */
export async function startOpensslServer(o: OpensslServerOptions): Promise<RunningServer> {
  const host = o.host ?? "127.0.0.1";
  return withPortRetries(
    async (port) => {
      const args = [
        "s_server",
        "-dtls1_2",
        "-accept",
        hostPort(host, port),
        "-nocert",
        "-psk",
        o.psk.key.toString("hex"),
        "-psk_identity",
        o.psk.identity,
        "-cipher",
        o.cipher,
        ...(o.mtu !== undefined ? ["-mtu", String(o.mtu)] : []),
        ...(o.extraArgs ?? []),
      ];
      const proc = spawnPeer("openssl", args);
      try {
        await proc.waitFor(/^ACCEPT$/m, o.readyTimeoutMs ?? 10_000);
      } catch (e) {
        await proc.kill();
        throw e;
      }
      return { proc, port };
    },
    host === "::1" ? "udp6" : "udp4",
  );
}

export interface OpensslClientOptions {
  /** default 127.0.0.1 */
  host?: LoopbackHost;
  port: number;
  psk: PskCreds;
  /** OpenSSL cipher list; omitted = s_client's default list */
  cipher?: string;
  mtu?: number;
  extraArgs?: readonly string[];
}

/**
 * `openssl s_client -dtls1_2 -connect 127.0.0.1:PORT -psk HEX -psk_identity ID -nocommands -noservername [-cipher C]`.
 * Not -quiet (that implies -ign_eof): closing its stdin makes it send close_notify,
 * print "DONE" and exit 0. After the handshake it prints "Cipher is <openssl name>".
 * Received application data is printed raw on stdout.
 */
export function startOpensslClient(o: OpensslClientOptions): PeerProcess {
  const args = [
    "s_client",
    "-dtls1_2",
    "-connect",
    hostPort(o.host ?? "127.0.0.1", o.port),
    "-psk",
    o.psk.key.toString("hex"),
    "-psk_identity",
    o.psk.identity,
    "-nocommands",
    "-noservername",
    ...(o.cipher !== undefined ? ["-cipher", o.cipher] : []),
    ...(o.mtu !== undefined ? ["-mtu", String(o.mtu)] : []),
    ...(o.extraArgs ?? []),
  ];
  return spawnPeer("openssl", args);
}

/** Waits for s_client's handshake summary; returns the IANA suite it printed. */
export async function opensslClientHandshake(proc: PeerProcess, timeoutMs = 10_000): Promise<PskSuiteName> {
  const m = await proc.waitFor(/Cipher is (\S+)/, timeoutMs);
  const suite = suiteFromOpenssl(m[1] ?? "");
  if (!suite) throw proc.failure(`unexpected cipher ${m[1]}`);
  return suite;
}

/** Waits for s_server's "CIPHER is X" (from offset `from`); returns the IANA suite. */
export async function opensslServerHandshake(proc: PeerProcess, timeoutMs = 10_000, from = 0): Promise<PskSuiteName> {
  const m = await proc.waitFor(/CIPHER is (\S+)/, timeoutMs, from);
  const suite = suiteFromOpenssl(m[1] ?? "");
  if (!suite) throw proc.failure(`unexpected cipher ${m[1]}`);
  return suite;
}

// ---------------------------------------------------------------------------
// GnuTLS

function pskFile(psk: PskCreds): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), "dtlspush-gnutls-"));
  const file = join(dir, "psk.passwd");
  writeFileSync(file, `${psk.identity}:${psk.key.toString("hex")}\n`, { mode: 0o600 });
  return { dir, file };
}

export interface GnutlsServerOptions {
  psk: PskCreds;
  /** priority string, e.g. gnutlsPskPriority([...]) */
  priority: string;
  mtu?: number;
  extraArgs?: readonly string[];
  readyTimeoutMs?: number;
}

/**
 * `gnutls-serv --udp --echo -a --pskpasswd FILE --port PORT --priority P`.
 * Binds 0.0.0.0 and :: (no option to restrict it); we only connect on 127.0.0.1.
 * It echoes every record back and logs "*** Processing N bytes command: <data>".
 * It prints nothing about the negotiated suite.
 */
export async function startGnutlsServer(o: GnutlsServerOptions): Promise<RunningServer> {
  return withPortRetries(async (port) => {
    const { dir, file } = pskFile(o.psk);
    const args = [
      "--udp",
      "--echo",
      "-a",
      "--pskpasswd",
      file,
      "--port",
      String(port),
      "--priority",
      o.priority,
      ...(o.mtu !== undefined ? ["--mtu", String(o.mtu)] : []),
      ...(o.extraArgs ?? []),
    ];
    const proc = spawnPeer("gnutls-serv", args);
    proc.onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    try {
      await proc.waitFor(/listening on IPv4 \S+ port \d+\.\.\.done/, o.readyTimeoutMs ?? 10_000);
    } catch (e) {
      await proc.kill();
      throw e;
    }
    return { proc, port };
  });
}

export interface GnutlsClientOptions {
  port: number;
  psk: PskCreds;
  priority: string;
  mtu?: number;
  extraArgs?: readonly string[];
}

/**
 * `gnutls-cli --udp --pskusername ID --pskkey HEX -p PORT --priority P 127.0.0.1`.
 * Prints "- Description: (DTLS1.2-X.509)-(PSK)-(<cipher>)" and "- Handshake was completed";
 * on stdin EOF it sends close_notify, waits for ours ("- Peer has closed the GnuTLS
 * connection") and exits 0. On failure: "*** Handshake has failed" / "*** Fatal error".
 */
export function startGnutlsClient(o: GnutlsClientOptions): PeerProcess {
  const args = [
    "--udp",
    "--pskusername",
    o.psk.identity,
    "--pskkey",
    o.psk.key.toString("hex"),
    "-p",
    String(o.port),
    "--priority",
    o.priority,
    ...(o.mtu !== undefined ? ["--mtu", String(o.mtu)] : []),
    ...(o.extraArgs ?? []),
    "127.0.0.1",
  ];
  return spawnPeer("gnutls-cli", args);
}

/** Waits for gnutls-cli's handshake; returns the IANA suite from its "- Description" line. */
export async function gnutlsClientHandshake(proc: PeerProcess, timeoutMs = 10_000): Promise<PskSuiteName> {
  await proc.waitFor(/- Handshake was completed/, timeoutMs);
  const m = /- Description: \(DTLS1\.2[^)]*\)-\(PSK\)-\(([^)]+)\)/.exec(proc.output);
  const suite = suiteFromGnutls(m?.[1] ?? "");
  if (!suite) throw proc.failure(`cannot parse the negotiated suite`);
  return suite;
}
