import type { ServerResponse, OutgoingHttpHeaders } from "node:http";
import type { FastifyInstance } from "fastify";
import type { PresenceEvent } from "../../messaging/delivery-engine.ts";
import type { Receipt, Store } from "../../store/types.ts";
import type { ClusterStore } from "../../store/cluster-types.ts";
import type { RouteContext } from "./context.ts";
import { HttpError } from "./errors.ts";
import { AUTH_ERRORS, BEARER_SECURITY, errorResponses, eventsHeaders, eventsQuery } from "./schemas.ts";
import { ReceiptFeed } from "./receipt-feed.ts";
import { presenceView, receiptEventView } from "./views.ts";

/** Which events a stream wants; an absent set matches everything. */
export interface EventFilter {
  readonly devices?: ReadonlySet<string> | undefined;
  readonly topics?: ReadonlySet<string> | undefined;
  readonly messages?: ReadonlySet<string> | undefined;
}

export interface EventHubOptions {
  readonly store: Pick<Store, "receiptsAfter">;
  /** one comment line to every stream this often; default 15 s */
  readonly heartbeatMs?: number;
  /** a stream whose unsent output exceeds this is disconnected (it can resume); default 1 MiB */
  readonly maxBufferedBytes?: number;
  /** receipts read from the store per replay step; default 500 */
  readonly replayPageSize?: number;
  /** live events held for a stream while it replays; more disconnects it; default 10000 */
  readonly maxPendingEvents?: number;
  /**
   * A shared store (cluster mode): the live receipts are then read from the
   * store after every commit of any node (ReceiptFeed), so a stream on this
   * node sees the receipts of every node; call `start()` before serving.
   */
  readonly cluster?: Pick<ClusterStore, "onClusterEvent">;
}

const DEFAULT_HEARTBEAT_MS = 15_000;
const DEFAULT_MAX_BUFFERED = 1 << 20;
const DEFAULT_PAGE = 500;
const DEFAULT_MAX_PENDING = 10_000;
/** during replay, the next page is read once the output buffer is below this */
const REPLAY_LOW_WATER = 64 * 1024;

export function matchesReceipt(f: EventFilter, r: Receipt): boolean {
  return (
    (f.devices === undefined || f.devices.has(r.device)) &&
    (f.topics === undefined || f.topics.has(r.topic)) &&
    (f.messages === undefined || f.messages.has(r.messageId))
  );
}

/** Presence has no topic or message: a stream filtered by topic or message gets none. */
export function matchesPresence(f: EventFilter, p: PresenceEvent): boolean {
  return f.topics === undefined && f.messages === undefined && (f.devices === undefined || f.devices.has(p.device));
}

export function receiptText(r: Receipt): string {
  return `id: ${r.id}\nevent: receipt\ndata: ${JSON.stringify(receiptEventView(r))}\n\n`;
}

export function presenceText(p: PresenceEvent): string {
  return `event: presence\ndata: ${JSON.stringify(presenceView(p))}\n\n`;
}

type Pending = { readonly id: number; readonly text: string } | { readonly id: undefined; readonly text: string };

class Stream {
  readonly res: ServerResponse;
  readonly filter: EventFilter;
  /** receipts with an id up to this were sent (or replayed, or are before the client's Last-Event-ID) */
  lastId: number;
  replaying = false;
  pending: Pending[] = [];
  ended = false;
  private readonly maxBuffered: number;

  constructor(res: ServerResponse, filter: EventFilter, lastId: number, maxBuffered: number) {
    this.res = res;
    this.filter = filter;
    this.lastId = lastId;
    this.maxBuffered = maxBuffered;
  }

  /** Writes, and disconnects a client that does not keep up. */
  write(text: string): void {
    if (this.ended) return;
    this.res.write(text);
    if (this.res.writableLength > this.maxBuffered) this.abort();
  }

  /** Ends the response (clean end of stream). */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.res.end();
  }

  /** Drops the connection (slow client, overflow): the client resumes with Last-Event-ID. */
  abort(): void {
    if (this.res.destroyed) return;
    this.ended = true;
    this.res.destroy();
  }
}

/**
 * The Server-Sent Events streams of receipts and presence: live events from
 * the engine, replay from the store after a Last-Event-ID, one heartbeat timer
 * for all streams, backpressure by disconnection.
 *
 * Replay reads `store.receiptsAfter` page by page; live receipts arriving
 * meanwhile are held and sent after the last page, minus those the replay
 * already covered. Ids are increasing, the store answers a read after every
 * commit called before it, and the engine emits a commit's receipts once it
 * is durable: a commit called before the last page's read is in that page
 * (its receipts, if emitted while the read was in flight, are held and
 * dropped as covered), one called after it is emitted after it (held, then
 * sent), so the final page and the held events meet with no gap and no
 * duplicate.
 *
 * On a shared store (cluster mode) the live receipts come from a
 * ReceiptFeed instead: `receipt` (this node's commits) and the other nodes'
 * "receipts" events only make the feed read the store on from its position,
 * and the feed hands each receipt of every node to the streams once, in id
 * order (receipt-feed.ts says why a read after an event has no gap). The
 * replay rule above holds the same way: a commit read by the last page is
 * dropped as covered when the feed brings it, a later one is sent after it.
 * Presence events stay node-local: a stream sees the devices whose sessions
 * come and go on the node it is connected to (docs/cluster.md).
 */
export class EventHub {
  private readonly store: Pick<Store, "receiptsAfter">;
  private readonly heartbeatMs: number;
  private readonly maxBuffered: number;
  private readonly pageSize: number;
  private readonly maxPending: number;
  private readonly streams = new Set<Stream>();
  private timer: NodeJS.Timeout | undefined;
  private isDraining = false;
  /** cluster mode: the receipts of every node, read from the store */
  readonly feed: ReceiptFeed | undefined;

  constructor(o: EventHubOptions) {
    this.store = o.store;
    this.heartbeatMs = o.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.maxBuffered = o.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED;
    this.pageSize = o.replayPageSize ?? DEFAULT_PAGE;
    this.maxPending = o.maxPendingEvents ?? DEFAULT_MAX_PENDING;
    this.feed =
      o.cluster === undefined
        ? undefined
        : new ReceiptFeed({
            store: o.store,
            onClusterEvent: (listener) => o.cluster?.onClusterEvent(listener) ?? (() => undefined),
            deliver: (r) => this.live(r),
            wanted: () => this.streams.size > 0,
            pageSize: this.pageSize,
          });
  }

  /** Cluster mode: listens to the other nodes and finds the newest stored receipt (live streams start after it). */
  async start(): Promise<void> {
    await this.feed?.start();
  }

  /** Open streams. */
  get size(): number {
    return this.streams.size;
  }

  get draining(): boolean {
    return this.isDraining;
  }

  /** A receipt the engine committed (cluster mode: a hint for the feed, which reads it back in id order). */
  receipt(r: Receipt): void {
    if (this.feed !== undefined) this.feed.signal(r.id);
    else this.live(r);
  }

  /** A receipt for the live streams, in id order. */
  private live(r: Receipt): void {
    let text: string | undefined;
    for (const s of this.streams) {
      if (r.id <= s.lastId || !matchesReceipt(s.filter, r)) continue;
      text ??= receiptText(r);
      if (s.replaying) {
        this.hold(s, { id: r.id, text });
      } else {
        s.lastId = r.id;
        s.write(text);
      }
    }
  }

  presence(p: PresenceEvent): void {
    let text: string | undefined;
    for (const s of this.streams) {
      if (!matchesPresence(s.filter, p)) continue;
      text ??= presenceText(p);
      if (s.replaying) this.hold(s, { id: undefined, text });
      else s.write(text);
    }
  }

  /**
   * Starts a stream on `res` (headers not yet sent): replays the stored
   * receipts after `lastEventId` when given, then goes live.
   */
  open(res: ServerResponse, filter: EventFilter, lastEventId: number | undefined, headers: OutgoingHttpHeaders = {}): void {
    res.writeHead(200, {
      ...headers,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      "x-accel-buffering": "no",
    });
    const s = new Stream(res, filter, lastEventId ?? 0, this.maxBuffered);
    this.streams.add(s);
    res.on("close", () => {
      s.ended = true;
      this.streams.delete(s);
      if (this.streams.size === 0) this.stopTimer();
    });
    this.startTimer();
    s.write("retry: 2000\n: connected\n\n");
    if (lastEventId === undefined) {
      // live only: receipts from now on (ids up to the current one are not wanted)
      s.lastId = this.feed?.position ?? 0;
      return;
    }
    s.replaying = true;
    void this.replay(s);
  }

  /** Ends every stream and refuses new ones (the daemon is shutting down). */
  drain(): void {
    this.isDraining = true;
    for (const s of [...this.streams]) s.end();
  }

  close(): void {
    this.drain();
    this.stopTimer();
    this.feed?.close();
  }

  private hold(s: Stream, p: Pending): void {
    if (s.pending.length >= this.maxPending) {
      s.abort();
      return;
    }
    s.pending.push(p);
  }

  private async replay(s: Stream): Promise<void> {
    try {
      for (;;) {
        if (s.ended) return;
        const page = await this.store.receiptsAfter(s.lastId, this.pageSize);
        for (const r of page) {
          s.lastId = r.id;
          if (matchesReceipt(s.filter, r)) s.write(receiptText(r));
        }
        if (page.length < this.pageSize) break;
        // a long backlog does not hold the event loop; a slow reader gets its pages as it reads
        if (s.res.writableLength > REPLAY_LOW_WATER) await drained(s.res);
        else await new Promise((resolve) => setImmediate(resolve));
      }
    } catch {
      // the store failed: the client reconnects and resumes
      s.abort();
      return;
    }
    // synchronous from the last page on: no live event can slip in between
    s.replaying = false;
    const held = s.pending;
    s.pending = [];
    for (const p of held) {
      if (p.id !== undefined) {
        if (p.id <= s.lastId) continue;
        s.lastId = p.id;
      }
      s.write(p.text);
    }
  }

  private startTimer(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => {
      for (const s of [...this.streams]) s.write(": heartbeat\n\n");
      // a lost event delays receipts until the next one: the heartbeat reads on as well
      this.feed?.poll();
    }, this.heartbeatMs);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }
}

function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

const MAX_FILTER_VALUES = 100;

/** "a,b" and ["a","b,c"] -> {a,b,c}; undefined when absent. */
export function filterSet(values: readonly string[] | undefined, name: string): Set<string> | undefined {
  if (values === undefined) return undefined;
  const out = new Set<string>();
  for (const v of values) {
    for (const part of v.split(",")) {
      const t = part.trim();
      if (t !== "") out.add(t);
    }
  }
  if (out.size > MAX_FILTER_VALUES) throw new HttpError("bad_request", `querystring.${name} lists more than ${MAX_FILTER_VALUES} values.`);
  return out.size === 0 ? undefined : out;
}

interface EventsQuery {
  device?: string[];
  topic?: string[];
  message?: string[];
  lastEventId?: string;
}

const LIST_PARAMS = ["device", "topic", "message"] as const;

/** GET /v1/events. */
export function registerEventRoutes(app: FastifyInstance, ctx: RouteContext, hub: EventHub): void {
  app.get(
    "/v1/events",
    {
      onRequest: ctx.guard.hook("publish"),
      // a HEAD would hold a stream open with nothing to say
      exposeHeadRoute: false,
      preValidation: async (request) => {
        // ?device=a is a list of one (the schema wants arrays for repeatable parameters)
        const q = request.query as Record<string, unknown>;
        for (const k of LIST_PARAMS) if (typeof q[k] === "string") q[k] = [q[k]];
      },
      schema: {
        summary: "Server-Sent Events: delivery receipts and device presence",
        description:
          "event: receipt (id: the receipt id, data: {eventId, messageId, device, topic, state, at, reason, seq}) and event: presence (no id, data: {device, online, at}). " +
          "With Last-Event-ID (or lastEventId) the stored receipts after it are replayed first, then live events follow with no gap and no duplicate. " +
          "On a cluster, receipts of every node (the same ids on every node, so a stream resumes on any node); presence of the sessions on this node. " +
          "A comment line every 15 s keeps the connection alive. A client that does not read (over about 1 MiB unsent) is disconnected and resumes with Last-Event-ID.",
        tags: ["events"],
        security: BEARER_SECURITY,
        querystring: eventsQuery,
        headers: eventsHeaders,
        response: {
          200: {
            description: "The event stream (until the client or the server ends it).",
            content: { "text/event-stream": { schema: { type: "string" } } },
          },
          ...errorResponses([400, ...AUTH_ERRORS, 503]),
        },
      },
    },
    async (request, reply) => {
      if (hub.draining) throw new HttpError("shutting_down", "The server is shutting down; reconnect later.");
      const q = request.query as EventsQuery;
      const filter: EventFilter = {
        devices: filterSet(q.device, "device"),
        topics: filterSet(q.topic, "topic"),
        messages: filterSet(q.message, "message"),
      };
      const header = request.headers["last-event-id"];
      const resumeFrom = typeof header === "string" && header !== "" ? header : q.lastEventId;
      const lastEventId = resumeFrom === undefined ? undefined : Number(resumeFrom);
      reply.hijack();
      hub.open(reply.raw, filter, lastEventId, reply.getHeaders() as OutgoingHttpHeaders);
      return reply;
    },
  );
}
