/**
 * A push server on a memory store with the HTTP API listening on 127.0.0.1
 * port 0, publisher tokens, an SSE reader and SDK devices for the HTTP tests.
 */
import { afterEach, expect } from "vitest";
import { openMemoryStore } from "../../../src/store/index.ts";
import type { Store } from "../../../src/store/types.ts";
import { startPushServer, type PushServer } from "../../../src/daemon/push-server.ts";
import { startHttpApi, type HttpApi, type HttpApiDeps } from "../../../src/daemon/http/index.ts";
import { issuePublisherToken, type Scope } from "../../../src/auth/index.ts";
import { connect, type DtlspushClient, type ReceivedMessage } from "../../../src/client/index.ts";
import type { DeliveryOptions } from "../../../src/messaging/options.ts";

export interface Harness {
  readonly server: PushServer;
  readonly store: Store;
  readonly api: HttpApi;
  readonly base: string;
  /** ms added to the wall clock the API checks tokens with */
  offset: number;
  /** an admin token (subject "ops") and a publish token (subject "backend") */
  readonly admin: string;
  readonly publisher: string;
  token(scopes: Scope[], o?: { subject?: string; ttlSeconds?: number }): Promise<string>;
  /** fetch against the API with a bearer token and a JSON body */
  call(method: string, path: string, o?: { token?: string | undefined; body?: unknown; headers?: Record<string, string> }): Promise<Response>;
  /** an SDK device (registered by the caller) */
  device(id: string, key: Uint8Array): Promise<Device>;
  close(): Promise<void>;
}

export interface Device {
  readonly client: DtlspushClient;
  readonly received: ReceivedMessage[];
}

export const KEY = new TextEncoder().encode("0123456789abcdef");
export const KEY_HEX = Buffer.from(KEY).toString("hex");

export async function startHarness(
  o: {
    limits?: HttpApiDeps["limits"];
    delivery?: Partial<DeliveryOptions>;
    metrics?: HttpApiDeps["metrics"];
    logger?: HttpApiDeps["logger"];
    observer?: HttpApiDeps["observer"];
    /** default a new memory store */
    store?: Store;
    /** content-signing worker threads (default 0: the main thread signs) */
    signingWorkers?: number;
  } = {},
): Promise<Harness> {
  const store = o.store ?? openMemoryStore();
  const server = await startPushServer({
    store,
    dtls: { host: "127.0.0.1", port: 0 },
    ...(o.delivery ? { delivery: o.delivery } : {}),
    ...(o.signingWorkers !== undefined ? { signingWorkers: o.signingWorkers } : {}),
  });
  const clients: DtlspushClient[] = [];
  const h: Harness = {
    server,
    store,
    api: undefined as unknown as HttpApi, // set below, before anyone can use it
    base: "",
    offset: 0,
    admin: "",
    publisher: "",
    async token(scopes, t = {}) {
      const r = await issuePublisherToken(server.publisherKeys, {
        subject: t.subject ?? "tester",
        scopes,
        now: Date.now(),
        ttlSeconds: t.ttlSeconds ?? 600,
      });
      return r.token;
    },
    async call(method, path, c = {}) {
      const headers: Record<string, string> = { ...c.headers };
      if (c.token !== undefined) headers["authorization"] = `Bearer ${c.token}`;
      let body: string | undefined;
      if (c.body !== undefined) {
        headers["content-type"] ??= "application/json";
        body = typeof c.body === "string" ? c.body : JSON.stringify(c.body);
      }
      return fetch(`${h.base}${path}`, { method, headers, body });
    },
    async device(id, key) {
      const client = await connect({ host: "127.0.0.1", port: server.address().port, psk: { identity: id, key }, reconnect: false });
      clients.push(client);
      const received: ReceivedMessage[] = [];
      client.on("message", (m) => received.push(m));
      client.on("error", () => undefined);
      return { client, received };
    },
    async close() {
      for (const c of clients.splice(0)) await c.close().catch(() => undefined);
      await h.api.close();
      await server.close();
    },
  };
  const api = await startHttpApi(
    {
      server,
      store,
      clock: { now: () => Date.now() + h.offset },
      ...(o.limits ? { limits: o.limits } : {}),
      ...(o.metrics ? { metrics: o.metrics } : {}),
      ...(o.logger ? { logger: o.logger } : {}),
      ...(o.observer ? { observer: o.observer } : {}),
    },
    { host: "127.0.0.1", port: 0 },
  );
  Object.assign(h, {
    api,
    base: `http://127.0.0.1:${api.address().port}`,
    admin: await h.token(["admin"], { subject: "ops" }),
    publisher: await h.token(["publish"], { subject: "backend" }),
  });
  return h;
}

export async function waitFor(cond: () => boolean | Promise<boolean>, ms = 10_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface SseEvent {
  readonly id: string | undefined;
  readonly event: string;
  readonly data: string;
}

/** An open event stream: parsed events as they arrive. */
export interface SseReader {
  readonly status: number;
  readonly headers: Headers;
  readonly events: SseEvent[];
  /** comment lines (": heartbeat") */
  readonly comments: string[];
  /** resolves when the server ended the stream */
  readonly ended: Promise<void>;
  isEnded(): boolean;
  /** waits until at least n events (of `event` type when given) have arrived */
  waitFor(n: number, event?: string, ms?: number): Promise<SseEvent[]>;
  close(): void;
}

export async function openEvents(base: string, token: string, o: { query?: string; lastEventId?: string } = {}): Promise<SseReader> {
  const ac = new AbortController();
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: "text/event-stream" };
  if (o.lastEventId !== undefined) headers["last-event-id"] = o.lastEventId;
  const res = await fetch(`${base}/v1/events${o.query ? `?${o.query}` : ""}`, { headers, signal: ac.signal });
  const events: SseEvent[] = [];
  const comments: string[] = [];
  let endedFlag = false;
  const ended = (async () => {
    if (res.body === null) return;
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for await (const chunk of res.body) {
        buf += decoder.decode(chunk, { stream: true });
        let i: number;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let id: string | undefined;
          let event = "message";
          const data: string[] = [];
          let isEvent = false;
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) comments.push(line.slice(1).trim());
            else if (line.startsWith("id: ")) id = line.slice(4);
            else if (line.startsWith("event: ")) event = line.slice(7);
            else if (line.startsWith("data: ")) {
              data.push(line.slice(6));
              isEvent = true;
            }
          }
          if (isEvent) events.push({ id, event, data: data.join("\n") });
        }
      }
    } catch {
      // aborted by close(), or the server dropped the connection
    } finally {
      endedFlag = true;
    }
  })();
  return {
    status: res.status,
    headers: res.headers,
    events,
    comments,
    ended,
    isEnded: () => endedFlag,
    async waitFor(n, event, ms = 10_000) {
      const pick = (): SseEvent[] => (event === undefined ? events : events.filter((e) => e.event === event));
      await waitFor(() => pick().length >= n, ms, `${n} ${event ?? ""} events (have ${pick().length})`);
      return pick();
    },
    close: () => ac.abort(),
  };
}

/** The receipt events' data, parsed. */
export function receipts(
  events: readonly SseEvent[],
): { eventId: number; messageId: string; device: string; topic: string | null; state: string; seq: number | null }[] {
  return events.filter((e) => e.event === "receipt").map((e) => JSON.parse(e.data));
}

/** startHarness for a test file: every harness it starts is closed after each test. */
export function harnessPerTest(): (o?: Parameters<typeof startHarness>[0]) => Promise<Harness> {
  const open: Harness[] = [];
  afterEach(async () => {
    for (const h of open.splice(0)) await h.close();
  });
  return async (o = {}) => {
    const h = await startHarness(o);
    open.push(h);
    return h;
  };
}

export interface ErrorJson {
  error: { code: string; message: string };
}

/** Checks an error answer: its status and code, a message, no stack trace. */
export async function expectError(res: Response, status: number, code: string): Promise<ErrorJson> {
  const body = (await res.json()) as ErrorJson;
  expect({ status: res.status, code: body.error.code }).toEqual({ status, code });
  expect(typeof body.error.message).toBe("string");
  expect(JSON.stringify(body)).not.toMatch(/ at .*\.ts:\d+|stack/);
  return body;
}
