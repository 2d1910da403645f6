import type { AddressInfo } from "node:net";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from "fastify";
import rateLimit from "@fastify/rate-limit";
import { createGuard, type RateCheck } from "./auth.ts";
import type { RouteContext } from "./context.ts";
import { clientErrorHandler, createErrorSender, frameworkErrorHandler, HttpError, installErrorHandling, MAX_PARAM_LENGTH } from "./errors.ts";
import { EventHub, registerEventRoutes } from "./events-sse.ts";
import { registerOpenApi } from "./openapi.ts";
import { registerDeviceRoutes } from "./routes-devices.ts";
import { registerBatchRoutes } from "./routes-batch.ts";
import { registerMessageRoutes } from "./routes-messages.ts";
import { registerPublicRoutes } from "./routes-public.ts";
import { addSharedSchemas } from "./schemas.ts";
import { installJsonParser } from "./json-body.ts";
import {
  DEFAULT_BATCH_BODY_LIMIT_BYTES,
  DEFAULT_BODY_LIMIT_BYTES,
  DEFAULT_RATE_LIMIT_PER_MINUTE,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type HttpApi,
  type HttpApiDeps,
} from "./types.ts";

const wallClock = { now: () => Date.now() };
/** How long close() lets open connections finish before cutting them. */
const CLOSE_GRACE_MS = 3000;

interface Controls {
  readonly hub: EventHub;
  draining: boolean;
  /** app.close() has begun */
  closing: boolean;
}

/** What startHttpApi needs of an app createHttpApi built. */
const controls = new WeakMap<FastifyInstance, Controls>();

/**
 * Builds the HTTP API on fastify: every route of docs/http-api.md registered,
 * the OpenAPI document ready, the event hub wired to the engine. Not
 * listening; `app.inject` works, `app.listen` serves. Closing the app ends the
 * event streams and detaches from the engine.
 */
export async function createHttpApi(deps: HttpApiDeps): Promise<FastifyInstance> {
  const clock = deps.clock ?? wallClock;
  const bodyLimitBytes = deps.limits?.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES;
  const batchBodyLimitBytes = deps.limits?.batchBodyLimitBytes ?? DEFAULT_BATCH_BODY_LIMIT_BYTES;
  const perMinute = deps.limits?.rateLimitPerMinute ?? DEFAULT_RATE_LIMIT_PER_MINUTE;
  const requestTimeoutMs = deps.limits?.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const errors = createErrorSender(deps.observer);
  const startedAt = deps.startedAt ?? clock.now();
  const { server, store } = deps;

  // one line per request only when the daemon logs at debug: at info a busy API would drown the log
  const logger: FastifyBaseLogger | undefined =
    deps.logger === undefined
      ? undefined
      : deps.logger.child({ component: "http" }, { level: deps.logger.isLevelEnabled("debug") ? deps.logger.level : "warn" });
  const app = Fastify({
    ...(logger !== undefined ? { loggerInstance: logger } : { logger: false }),
    bodyLimit: bodyLimitBytes,
    // request bodies are taken as sent: no type coercion, unknown fields refused
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
    // requests arriving while closing get our own 503 (below), in the API's error format
    return503OnClosing: false,
    // ids and topics up to 128 characters and message ids up to 200 are valid in paths, percent-encoded too
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // a request not in full after this long is answered 408 (a body shorter than its Content-Length, a slow sender)
    requestTimeout: requestTimeoutMs,
    http: {
      // a missing Host is answered by our hook below (node:http would send a bare 400)
      requireHostHeader: false,
      // node:http checks no timeout at all while headersTimeout (default 60 s) is above requestTimeout
      headersTimeout: Math.min(60_000, requestTimeoutMs),
      connectionsCheckingInterval: Math.min(30_000, Math.max(100, Math.floor(requestTimeoutMs / 4))),
    },
    // bad percent-encoding and over-long parameters, and what node:http's parser refuses, get the API's JSON errors
    frameworkErrors: frameworkErrorHandler(errors, bodyLimitBytes),
    clientErrorHandler: clientErrorHandler(errors),
  });

  // JSON only: a text/plain body is 415, not a string the schema then refuses
  app.removeContentTypeParser("text/plain");
  installJsonParser(app);
  await registerOpenApi(app);
  addSharedSchemas(app);

  let limit: ((request: FastifyRequest) => Promise<RateCheck>) | undefined;
  if (perMinute > 0) {
    await app.register(rateLimit, { global: false });
    limit = app.createRateLimit({ max: perMinute, timeWindow: 60_000, keyGenerator: (request) => guard.rateKey(request) });
  }
  const guard = createGuard({ keys: server.publisherKeys, clock, limit });
  const ctx: RouteContext = { server, store, guard, clock, cluster: deps.cluster };

  const hub = new EventHub({ store, ...(deps.cluster === undefined ? {} : { cluster: deps.cluster }) });
  await hub.start();
  const state: Controls = { hub, draining: false, closing: false };
  controls.set(app, state);
  app.addHook("onRequest", async (request, reply) => {
    if (state.closing) {
      void reply.header("connection", "close");
      throw new HttpError("shutting_down", "The server is shutting down; retry on another instance or later.");
    }
    if (request.raw.httpVersion === "1.1" && request.headers.host === undefined) {
      void reply.header("connection", "close");
      throw new HttpError("bad_request", "An HTTP/1.1 request needs a Host header.");
    }
  });
  const onReceipt = hub.receipt.bind(hub);
  const onPresence = hub.presence.bind(hub);
  server.engine.on("receipt", onReceipt);
  server.engine.on("presence", onPresence);
  app.addHook("preClose", async () => {
    state.closing = true;
    hub.close();
  });
  app.addHook("onClose", async () => {
    server.engine.off("receipt", onReceipt);
    server.engine.off("presence", onPresence);
  });

  try {
    installErrorHandling(app, { bodyLimitBytes, notFoundHook: guard.hook(), errors });
    registerPublicRoutes(app, ctx, {
      startedAt,
      isDraining: () => state.draining,
      storeHealth: deps.storeHealth,
      node: deps.node,
      metrics: deps.metrics,
      publicMetrics: deps.limits?.publicMetrics ?? false,
      errors,
    });
    registerMessageRoutes(app, ctx);
    const batchEntries = deps.observer?.batchEntries?.bind(deps.observer);
    registerBatchRoutes(app, ctx, { bodyLimitBytes: batchBodyLimitBytes, observer: batchEntries === undefined ? undefined : { batchEntries } });
    registerEventRoutes(app, ctx, hub);
    registerDeviceRoutes(app, ctx);
    await app.ready();
  } catch (e) {
    // detaches from the engine
    await app.close().catch(() => undefined);
    throw e;
  }
  return app;
}

/** createHttpApi, listening on `listen` (port 0: any free port; reusePort: shared with other processes, SO_REUSEPORT). */
export async function startHttpApi(deps: HttpApiDeps, listen: { host: string; port: number; reusePort?: boolean }): Promise<HttpApi> {
  const app = await createHttpApi(deps);
  const state = controls.get(app);
  if (state === undefined) throw new Error("createHttpApi did not register the app's controls");
  try {
    // fastify hands its listen options to net.Server.listen, which takes reusePort (Node >= 22.12)
    await app.listen({ host: listen.host, port: listen.port, ...(listen.reusePort === true ? ({ reusePort: true } as object) : {}) });
  } catch (e) {
    await app.close();
    throw e;
  }
  return {
    app,
    address() {
      const a = app.server.address() as AddressInfo;
      return { host: a.address, port: a.port };
    },
    draining() {
      state.draining = true;
      state.hub.drain();
    },
    async close() {
      // requests in progress are answered; a keep-alive connection that still has not finished
      // after CLOSE_GRACE_MS (e.g. a request that raced the close) is cut
      const timer = setTimeout(() => app.server.closeAllConnections(), CLOSE_GRACE_MS);
      try {
        await app.close();
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
