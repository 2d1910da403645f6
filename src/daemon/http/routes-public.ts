import type { FastifyInstance } from "fastify";
import type { RouteContext } from "./context.ts";
import { errorBody, HttpError, type ErrorSender } from "./errors.ts";
import { AUTH_ERRORS, BEARER_SECURITY, ERROR_FIELDS, errorResponses } from "./schemas.ts";

/** GET /healthz, GET /.well-known/jwks.json, GET /openapi.json and (with a metrics source) GET /metrics. */
export function registerPublicRoutes(
  app: FastifyInstance,
  ctx: RouteContext,
  o: {
    startedAt: number;
    isDraining: () => boolean;
    metrics?: { readonly contentType: string; text(): Promise<string> } | undefined;
    publicMetrics: boolean;
    errors: ErrorSender;
  },
): void {
  const { server } = ctx;

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
            },
          },
          503: {
            description: "Shutting down: take the instance out of rotation. Also carries the error of every error answer (shutting_down).",
            type: "object",
            required: ["status", "error"],
            properties: {
              status: { type: "string", enum: ["draining"] },
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
      return {
        status: "ok",
        sessions: server.dtls.sessions(),
        devicesOnline: server.engine.onlineCount(),
        uptimeSeconds: Math.max(0, Math.floor((ctx.clock.now() - o.startedAt) / 1000)),
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
