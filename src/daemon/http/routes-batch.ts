/**
 * POST /v1/messages: up to 1000 publishes in one request, each to a device or
 * a topic, answered entry by entry. The entries are handed to the engine
 * together (publishMany): signed together, queued in one turn, stored by one
 * commit and answered after it.
 */
import type { FastifyInstance } from "fastify";
import type { PublishRequest, PublishResult, PublishTarget } from "../../messaging/delivery-engine.ts";
import type { RouteContext } from "./context.ts";
import { errorBody, HttpError, toHttpError, validationMessage, type ErrorBody, type HttpErrorCode } from "./errors.ts";
import { publisherOf, publishRequestOf, type PublishBody } from "./routes-messages.ts";
import { AUTH_ERRORS, BEARER_SECURITY, batchBody, batchEntrySchema, errorResponses } from "./schemas.ts";
import { publishResultView, type PublishResultView } from "./views.ts";

/** What became of a batch's entries: "published", or the code of the entry's error. */
export type BatchEntryResult = "published" | HttpErrorCode;

/** Counts batch entries by result (the daemon's metrics); never throws. */
export interface BatchObserver {
  batchEntries(result: BatchEntryResult, count: number): void;
}

interface BatchEntry extends PublishBody {
  device?: string;
  topic?: string;
}

type Outcome = { readonly ok: PublishResultView } | { readonly failed: HttpError; readonly cause: unknown };

export function registerBatchRoutes(
  app: FastifyInstance,
  ctx: RouteContext,
  o: { readonly bodyLimitBytes: number; readonly observer?: BatchObserver | undefined },
): void {
  const count = (result: BatchEntryResult, n: number): void => {
    if (n === 0) return;
    try {
      o.observer?.batchEntries(result, n);
    } catch {
      // metrics never fail an answer
    }
  };

  app.post(
    "/v1/messages",
    {
      onRequest: ctx.guard.hook("publish"),
      bodyLimit: o.bodyLimitBytes,
      schema: {
        summary: "Publish up to 1000 messages, each to a device or a topic",
        description:
          "Each entry is published as POST /v1/devices/{id}/messages or /v1/topics/{topic}/messages would, and all that are accepted are " +
          "stored by one durable commit before the answer. One bad entry does not fail the others: results has one item per entry, in order, " +
          "its PublishResult or its own error (the codes of a single publish). An entry whose explicit id is stored already, or repeats the id " +
          "of an earlier entry of the batch, gets duplicate_message: a batch retried whole (after a timeout) publishes no entry with an id twice. " +
          "The request counts once against the rate limit. Its body may be up to http.batch_body_limit_bytes.",
        tags: ["messages"],
        security: BEARER_SECURITY,
        body: batchBody,
        response: {
          202: { description: "Every entry was handled: published (stored, durable) or refused with its own error.", $ref: "BatchResult#" },
          ...errorResponses([400, ...AUTH_ERRORS, 413, 415, 500, 503], {
            400: "The body is not a batch: not an object, no messages array, or not 1 to 1000 entries (bad_request).",
            413: "The body is over http.batch_body_limit_bytes (body_too_large).",
            500: "The store failed (internal): no entry of the batch was published.",
          }),
        },
      },
    },
    async (request, reply) => {
      const publisher = publisherOf(ctx, request);
      const entries = (request.body as { messages: unknown[] }).messages;
      const validate = request.compileValidationSchema(batchEntrySchema);
      const ids = new Set<string>();
      // each entry checked here becomes a request (or its own error); the engine publishes them together
      const requests: PublishRequest[] = [];
      const outcomes: (Outcome | number)[] = entries.map((raw, i): Outcome | number => {
        const where = `body.messages.${i}`;
        try {
          if (!validate(raw)) throw new HttpError("bad_request", validationMessage(validate.errors ?? [], where));
          const entry = raw as BatchEntry;
          const target = targetOf(entry, where);
          if (entry.id !== undefined) {
            if (ids.has(entry.id)) {
              throw new HttpError("duplicate_message", `An earlier entry of this batch has the id ${JSON.stringify(entry.id)}; ids are unique.`);
            }
            ids.add(entry.id);
          }
          return requests.push(publishRequestOf(publisher, entry, target, where)) - 1;
        } catch (e) {
          return { failed: toHttpError(e, o.bodyLimitBytes), cause: e };
        }
      });
      const published = await ctx.server.engine.publishMany(requests);
      const settled = outcomes.map((r): Outcome => {
        if (typeof r !== "number") return r;
        const p = published[r] as PromiseSettledResult<PublishResult>;
        return p.status === "fulfilled" ? { ok: publishResultView(p.value) } : { failed: toHttpError(p.reason, o.bodyLimitBytes), cause: p.reason };
      });

      const counts = new Map<BatchEntryResult, number>();
      let accepted = 0;
      let internal: unknown;
      const results: (PublishResultView | ErrorBody)[] = [];
      for (const r of settled) {
        const result: BatchEntryResult = "ok" in r ? "published" : r.failed.code;
        counts.set(result, (counts.get(result) ?? 0) + 1);
        if ("ok" in r) {
          accepted++;
          results.push(r.ok);
        } else {
          if (r.failed.code === "internal" && internal === undefined) internal = r.cause;
          results.push(errorBody(r.failed));
        }
      }
      for (const [result, n] of counts) count(result, n);
      // a store failure fails the whole commit, so no entry is stored: the request failed (500), not its entries
      if (internal !== undefined && accepted === 0) throw internal;
      return reply.code(202).send({ results });
    },
  );
}

/** The target of an entry: exactly one of device and topic. */
function targetOf(entry: BatchEntry, where: string): PublishTarget {
  if (entry.device !== undefined && entry.topic === undefined) return { device: entry.device };
  if (entry.topic !== undefined && entry.device === undefined) return { topic: entry.topic };
  throw new HttpError("bad_request", `Give exactly one of ${where}.device and ${where}.topic.`);
}
