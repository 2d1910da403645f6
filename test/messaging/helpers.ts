/** Shared helpers of the delivery tests: captured frames, publishing, waiting. */
import { decodeFrame, type FrameBody, type UnknownFrameBody } from "../../src/wire/index.ts";
import type { PublishRequest, PublishResult } from "../../src/messaging/delivery-engine.ts";
import type { SimDevice, World } from "./world.ts";

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

let captureOrder = 0;

/** One record on the wire, as a test sees it. */
export interface Captured {
  /** simulated time, ms */
  readonly at: number;
  /** increases with every record captured (orders records of the same ms across captures) */
  readonly order: number;
  readonly device: string;
  /** the link's peer name (one per DTLS session) */
  readonly peer: string;
  readonly bytes: Uint8Array;
  readonly frame: FrameBody | UnknownFrameBody;
}

/** Everything the server sends from now on (a record per element; close_notify excluded). */
export function captureServerSends(w: World): Captured[] {
  const out: Captured[] = [];
  w.onServerSend = (link, records) => {
    for (const r of records) {
      if (r.byteLength === 0) continue;
      out.push({ at: w.clock.now(), order: ++captureOrder, device: link.deviceId, peer: link.peer, bytes: new Uint8Array(r), frame: decodeFrame(r) });
    }
  };
  return out;
}

/** Everything that reaches the server from now on. */
export function captureServerReceives(w: World): Captured[] {
  const out: Captured[] = [];
  w.onServerReceive = (link, r) => {
    out.push({ at: w.clock.now(), order: ++captureOrder, device: link.deviceId, peer: link.peer, bytes: new Uint8Array(r), frame: decodeFrame(r) });
  };
  return out;
}

/** The Push frames among captured records, optionally of one device. */
export function pushes(records: readonly Captured[], device?: string): (Captured & { frame: Extract<FrameBody, { kind: "push" }> })[] {
  return records.filter(
    (c): c is Captured & { frame: Extract<FrameBody, { kind: "push" }> } => c.frame.kind === "push" && (device === undefined || c.device === device),
  );
}

/** Connects the device and runs until its Welcome arrives. */
export async function connected(w: World, d: SimDevice, options: { useToken?: boolean; token?: string } = {}): Promise<void> {
  const before = d.welcomes.length;
  d.connect(options);
  await w.run(60_000, () => d.welcomes.length > before);
  if (d.welcomes.length === before) throw new Error(`device ${d.id} got no Welcome`);
}

/** Publishes a direct message with payload `text` (and returns its id). */
export async function publishTo(w: World, device: string, text: string, extra: Partial<PublishRequest> = {}): Promise<PublishResult> {
  return w.publish({ target: { device }, payload: enc(text), publisher: "test", ...extra });
}

/** Runs until the device's application has `n` messages (fails the test with a clear message otherwise). */
export async function untilDelivered(w: World, d: SimDevice, n: number, ms = 600_000): Promise<void> {
  await w.run(ms, () => d.delivered.length >= n);
  if (d.delivered.length < n) throw new Error(`device ${d.id} has ${d.delivered.length} of ${n} messages after ${ms} ms`);
}

/** The receipts of a message as "state/reason@seq" strings, in order. */
export function receiptTrail(w: World, messageId: string, device?: string): string[] {
  return w
    .receiptsOf(messageId)
    .filter((r) => device === undefined || r.device === device)
    .map((r) => `${r.state}${r.reason === "" ? "" : `/${r.reason}`}@${r.seq}`);
}

/** Runs the world until `p` (a device request) settles, and returns its outcome. */
export async function answered<T>(w: World, p: Promise<T>, ms = 120_000): Promise<T> {
  let done = false;
  const tracked = p.finally(() => {
    done = true;
  });
  tracked.catch(() => undefined);
  await w.run(ms, () => done);
  if (!done) throw new Error(`no answer within ${ms} ms`);
  return tracked;
}
