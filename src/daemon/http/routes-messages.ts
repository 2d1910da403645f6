import type { FastifyInstance, FastifyRequest } from "fastify";
import type { PublishRequest, PublishTarget } from "../../messaging/delivery-engine.ts";
import type { RouteContext } from "./context.ts";
import { HttpError } from "./errors.ts";
import { AUTH_ERRORS, BEARER_SECURITY, deviceIdParams, errorResponses, messageIdParams, publishBody, topicParams } from "./schemas.ts";
import { messageStatusView, publishResultView, type PublishResultView } from "./views.ts";

export interface PublishBody {
  payload?: string;
  payloadBase64?: string;
  contentType?: string;
  ttlSeconds?: number;
  priority?: number;
  collapseKey?: string;
  id?: string;
}

const utf8 = new TextEncoder();
/** With the u flag a surrogate pair is one code point: this matches only unpaired surrogates, which UTF-8 cannot carry. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

const publishResponses = {
  202: { description: "Accepted: the message is stored and queued (durable).", $ref: "PublishResult#" },
  ...errorResponses([400, ...AUTH_ERRORS, 404, 409, 413, 415, 503], {
    404: "No such device (device_unknown).",
    409: "The device is revoked (device_revoked), or a message with this id exists (duplicate_message).",
    429: "Too many requests (rate_limited), or the device's queue is full (queue_full).",
  }),
};

/**
 * The engine's request for the fields of one publish (a single publish's body,
 * or an entry of a batch) after the route's schema check: checks what a schema
 * cannot (one payload, UTF-8 text). Throws HttpError.
 */
export function publishRequestOf(
  publisher: string,
  body: PublishBody,
  target: PublishTarget,
  /** where the fields are in the request, for error messages */
  where = "body",
): PublishRequest {
  const payload = payloadOf(body, where);
  for (const field of ["contentType", "collapseKey"] as const) checkText(`${where}.${field}`, body[field]);
  return {
    target,
    payload,
    contentType: body.contentType,
    ttlSeconds: body.ttlSeconds,
    priority: body.priority,
    collapseKey: body.collapseKey,
    publisher,
    id: body.id,
  };
}

/** Publishes one message; throws what the route answers (HttpError, MessagingError). */
async function publishFields(ctx: RouteContext, publisher: string, body: PublishBody, target: PublishTarget): Promise<PublishResultView> {
  return publishResultView(await ctx.server.engine.publish(publishRequestOf(publisher, body, target)));
}

/** The verified publisher of a request that passed a scoped guard hook. */
export function publisherOf(ctx: RouteContext, request: FastifyRequest): string {
  const claims = ctx.guard.claims(request);
  if (claims === undefined) throw new Error("publish route reached without verified claims");
  return claims.subject;
}

/** POST /v1/devices/{id}/messages, POST /v1/topics/{topic}/messages, GET /v1/messages/{id}. */
export function registerMessageRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const publish = (request: FastifyRequest, target: PublishTarget): Promise<PublishResultView> =>
    publishFields(ctx, publisherOf(ctx, request), request.body as PublishBody, target);

  app.post(
    "/v1/devices/:id/messages",
    {
      onRequest: ctx.guard.hook("publish"),
      schema: {
        summary: "Publish a message to one device",
        tags: ["messages"],
        security: BEARER_SECURITY,
        params: deviceIdParams,
        body: publishBody,
        response: publishResponses,
      },
    },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      const view = await publish(request, { device: id });
      return reply.code(202).send(view);
    },
  );

  app.post(
    "/v1/topics/:topic/messages",
    {
      onRequest: ctx.guard.hook("publish"),
      schema: {
        summary: "Publish a message to every device of a topic",
        description: "Queued for each enabled device subscribed to the topic or assigned it; recipients whose queue is full are listed in rejected.",
        tags: ["messages"],
        security: BEARER_SECURITY,
        params: topicParams,
        body: publishBody,
        response: publishResponses,
      },
    },
    async (request, reply) => {
      const { topic } = request.params as { topic: string };
      const view = await publish(request, { topic });
      return reply.code(202).send(view);
    },
  );

  app.get(
    "/v1/messages/:id",
    {
      onRequest: ctx.guard.hook("publish"),
      schema: {
        summary: "A message and its delivery receipts",
        tags: ["messages"],
        security: BEARER_SECURITY,
        params: messageIdParams,
        response: {
          200: { description: "The message (without its payload) and its receipts, oldest first.", $ref: "MessageStatus#" },
          ...errorResponses([...AUTH_ERRORS, 404], { 404: "No such message (message_unknown); it may have been pruned." }),
        },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const status = await ctx.server.engine.messageStatus(id);
      if (status === undefined) throw new HttpError("message_unknown", `No message ${JSON.stringify(id)} is stored.`);
      return messageStatusView(status.message, status.receipts);
    },
  );
}

function payloadOf(body: PublishBody, where: string): Uint8Array {
  const text = body.payload;
  const b64 = body.payloadBase64;
  if ((text === undefined) === (b64 === undefined)) {
    throw new HttpError("bad_request", `Give exactly one of ${where}.payload and ${where}.payloadBase64.`);
  }
  if (text !== undefined) {
    checkText(`${where}.payload`, text);
    return utf8.encode(text);
  }
  // a copy: Buffer.from may hand out a view of its shared pool
  return new Uint8Array(Buffer.from(b64 as string, "base64"));
}

/**
 * A JSON escape of a lone surrogate (e.g. "\ud800") is valid JSON but not
 * text UTF-8 can carry: encoding it would silently put U+FFFD in its place.
 */
function checkText(field: string, value: string | undefined): void {
  if (value !== undefined && LONE_SURROGATE.test(value)) {
    throw new HttpError(
      "bad_request",
      `${field} holds an unpaired surrogate (a \\uD800-\\uDFFF escape without its pair), which is not UTF-8 text; send binary payloads as payloadBase64.`,
    );
  }
}
