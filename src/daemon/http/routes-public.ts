import type { FastifyInstance } from "fastify";
import type { RouteContext } from "./context.ts";
import type { StoreHealth } from "./types.ts";
import { errorBody, HttpError, type ErrorSender } from "./errors.ts";
import { AUTH_ERRORS, BEARER_SECURITY, ERROR_FIELDS, errorResponses } from "./schemas.ts";

/** GET /healthz, GET /.well-known/jwks.json, GET /openapi.json and (with a metrics source) GET /metrics. */
export function registerPublicRoutes(
  app: FastifyInstance,
  ctx: RouteContext,
  o: {
    startedAt: number;
    isDraining: () => boolean;
    storeHealth?: (() => StoreHealth) | undefined;
    node?: string | undefined;
    metrics?: { readonly contentType: string; text(): Promise<string> } | undefined;
    publicMetrics: boolean;
    errors: ErrorSender;
  },
): void {
  const { server } = ctx;
  const storeSchema = {
    type: "object",
    description: "The shared store (only with cluster.redis_url): Redis as this node's own PING, every second, sees it.",
    required: ["kind", "reachable", "checkedAt"],
    properties: {
      kind: { type: "string", enum: ["redis"] },
      reachable: { type: "boolean" },
      latencyMs: { type: "number", description: "Round trip of the last PING, ms." },
      checkedAt: { type: "string", format: "date-time" },
      error: { type: "string", description: "Why Redis is unreachable." },
    },
  };
  const storeView = (h: StoreHealth): Record<string, unknown> => ({
    kind: h.kind,
    reachable: h.reachable,
    ...(h.latencyMs === undefined ? {} : { latencyMs: Math.round(h.latencyMs * 100) / 100 }),
    checkedAt: new Date(h.checkedAt).toISOString(),
    ...(h.error === undefined ? {} : { error: h.error }),
  });

  app.get(
    "/healthz",
    {
      onRequest: ctx.guard.hook(),
      schema: {
        summary: "Liveness and readiness",
        tags: ["operations"],
        response: {
          200: {
            description: "Serving.",
            type: "object",
            required: ["status", "sessions", "devicesOnline", "uptimeSeconds"],
            properties: {
              status: { type: "string", enum: ["ok"] },
              sessions: { type: "integer", description: "Established DTLS sessions." },
              devicesOnline: { type: "integer", description: "Devices with a session bound to them." },
              uptimeSeconds: { type: "integer" },
              node: {
                type: "string",
                description: "The node that answered (cluster.node_id; -w<k> for a worker of serve --workers). Only with cluster.redis_url.",
              },
              store: storeSchema,
            },
          },
          503: {
            description:
              "Shutting down (draining, shutting_down), or the shared store is unreachable (store_unreachable, store_unavailable: publishes cannot be stored): take the instance out of rotation.",
            type: "object",
            required: ["status", "error"],
            properties: {
              status: { type: "string", enum: ["draining", "store_unreachable"] },
              store: storeSchema,
              error: ERROR_FIELDS,
            },
          },
          ...errorResponses([429]),
        },
      },
    },
    async (_request, reply) => {
      if (o.isDraining()) {
        const e = new HttpError("shutting_down", "The server is shutting down; take it out of rotation.");
        o.errors.count(e.code);
        return reply.code(503).send({ status: "draining", ...errorBody(e) });
      }
      const store = o.storeHealth?.();
      if (store !== undefined && !store.reachable) {
        const e = new HttpError("store_unavailable", `The shared store (Redis) is unreachable: ${store.error ?? "no answer"}.`);
        o.errors.count(e.code);
        return reply.code(503).send({ status: "store_unreachable", store: storeView(store), ...errorBody(e) });
      }
      return {
        status: "ok",
        sessions: server.dtls.sessions(),
        devicesOnline: server.engine.onlineCount(),
        uptimeSeconds: Math.max(0, Math.floor((ctx.clock.now() - o.startedAt) / 1000)),
        ...(o.node === undefined ? {} : { node: o.node }),
        ...(store === undefined ? {} : { store: storeView(store) }),
      };
    },
  );

  app.get(
    "/.well-known/jwks.json",
    {
      onRequest: ctx.guard.hook(),
      schema: {
        summary: "Public keys that sign pushed content",
        description: "The JWK Set (RFC 7517) of the content-signing keys: what devices get in Welcome.jwks, for verifying a message's detached JWS.",
        tags: ["operations"],
        response: {
          200: {
            description: "JWK Set.",
            type: "object",
            required: ["keys"],
            properties: { keys: { type: "array", items: { type: "object", additionalProperties: true } } },
          },
          ...errorResponses([429]),
        },
      },
    },
    async (_request, reply) => reply.header("cache-control", "public, max-age=300").send(server.contentKeys.jwks()),
  );

  app.get(
    "/openapi.json",
    {
      onRequest: ctx.guard.hook(),
      schema: {
        summary: "This API's OpenAPI 3.1 document",
        tags: ["operations"],
        response: {
          200: { description: "OpenAPI document.", type: "object", additionalProperties: true },
          ...errorResponses([429]),
        },
      },
    },
    async () => app.swagger(),
  );

  // always routed, so the OpenAPI document does not depend on the configuration
  app.get(
    "/metrics",
    {
      onRequest: ctx.guard.hook(o.publicMetrics ? undefined : "admin"),
      schema: {
        summary: "Prometheus metrics",
        description: "Needs an admin token unless http.public_metrics is set (then no token is needed).",
        tags: ["operations"],
        security: BEARER_SECURITY,
        response: {
          200: { description: "Prometheus text exposition format.", content: { "text/plain": { schema: { type: "string" } } } },
          ...errorResponses([...AUTH_ERRORS, 404], { 404: "This server exports no metrics (not_found)." }),
        },
      },
    },
    async (_request, reply) => {
      const metrics = o.metrics;
      if (metrics === undefined) throw new HttpError("not_found", "This server exports no metrics.");
      return reply.type(metrics.contentType).send(await metrics.text());
    },
  );
}
