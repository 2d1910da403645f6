/**
 * A device that speaks the device protocol byte by byte over a real DTLS
 * session (our client, PSK): it sends whatever bytes a test gives it, records
 * every frame the server sends, and can wait for one. For hostile-device tests.
 */
import { connect, type DtlsConnection } from "../../src/dtls/index.ts";
import { decodeFrame, encodeFrame, type FrameBody, type FrameInit, type UnknownFrameBody } from "../../src/wire/index.ts";

export type Received = FrameBody | UnknownFrameBody | { readonly kind: "undecodable"; readonly bytes: Uint8Array };

export class RawDevice {
  readonly received: Received[] = [];
  closed = false;
  private waiters: (() => void)[] = [];
  /** Ping times of the barriers: far from the small and edge values tests send (2^52 + n). */
  private pingTime = 2 ** 52;

  readonly conn: DtlsConnection;

  private constructor(conn: DtlsConnection) {
    this.conn = conn;
    conn.on("data", (d: Buffer) => {
      let f: Received;
      try {
        f = decodeFrame(d);
      } catch {
        f = { kind: "undecodable", bytes: new Uint8Array(d) };
      }
      this.received.push(f);
      this.wake();
    });
    conn.on("close", () => {
      this.closed = true;
      this.wake();
    });
    conn.on("error", () => undefined);
  }

  static async open(port: number, identity: string, key: Uint8Array): Promise<RawDevice> {
    const conn = await connect({ host: "127.0.0.1", port, psk: { identity, key }, timeoutMs: 5_000 });
    return new RawDevice(conn);
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(bytes: Uint8Array): void {
    this.conn.send(bytes);
  }

  sendFrame(frame: FrameInit): void {
    this.conn.send(encodeFrame(frame));
  }

  /** Waits until `done()` holds, the session closed, or `ms` passed; returns whether `done()` holds. */
  async until(done: () => boolean, ms = 3_000): Promise<boolean> {
    const end = Date.now() + ms;
    while (!done() && !this.closed) {
      const left = end - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return done();
  }

  /**
   * A barrier after the frames sent so far: sends a Ping and waits for its
   * Pong (the server answers in order). Returns the frames that arrived before
   * the Pong (from index `from`), or undefined when no Pong came (the session
   * closed, or it timed out).
   */
  async barrier(from: number, ms = 3_000): Promise<Received[] | undefined> {
    const time = this.pingTime++;
    this.sendFrame({ kind: "ping", ping: { time } });
    const at = (): number => this.received.findIndex((f, i) => i >= from && f.kind === "pong" && f.pong.time === time);
    if (!(await this.until(() => at() >= 0, ms))) return undefined;
    return this.received.slice(from, at());
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.conn.close();
    await this.until(() => false, 1_000);
  }
}
