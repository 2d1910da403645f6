import { checkTopic } from "../auth/index.ts";
import { MessagingError } from "./errors.ts";
import type { DeliveryOptions } from "./options.ts";

export type PublishTarget = { readonly device: string } | { readonly topic: string };

export interface PublishRequest {
  readonly target: PublishTarget;
  readonly payload: Uint8Array;
  readonly contentType?: string;
  /** default options.defaultTtlSeconds */
  readonly ttlSeconds?: number;
  /** 0..9, default 5 */
  readonly priority?: number;
  readonly collapseKey?: string;
  /** who publishes: a publisher token's subject, or "device:ID" */
  readonly publisher: string;
  /** message id; generated when absent */
  readonly id?: string;
}

/** A publish request's fields with defaults applied; throws MessagingError for bad input. */
export function checkPublishRequest(
  req: PublishRequest,
  o: DeliveryOptions,
): { ttl: number; priority: number; contentType: string; collapseKey: string; topic: string; device: string } {
  const payload = req.payload;
  if (payload.byteLength > o.maxPayload) {
    throw new MessagingError(
      "payload_too_large",
      `payload is ${payload.byteLength} bytes; at most ${o.maxPayload} bytes are accepted (the payload limit)`,
    );
  }
  const ttl = req.ttlSeconds ?? o.defaultTtlSeconds;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > o.maxTtlSeconds) {
    throw new MessagingError("bad_request", `ttlSeconds must be an integer from 1 to ${o.maxTtlSeconds}, got ${ttl}`);
  }
  const priority = req.priority ?? 5;
  if (!Number.isInteger(priority) || priority < 0 || priority > 9) {
    throw new MessagingError("bad_request", `priority must be an integer from 0 to 9, got ${priority}`);
  }
  const contentType = req.contentType ?? "";
  if (contentType.length > 128) throw new MessagingError("bad_request", "contentType is longer than 128 characters");
  const collapseKey = req.collapseKey ?? "";
  if (collapseKey.length > 128) throw new MessagingError("bad_request", "collapseKey is longer than 128 characters");
  if ("topic" in req.target) return { ttl, priority, contentType, collapseKey, topic: checkedTopic(req.target.topic), device: "" };
  return { ttl, priority, contentType, collapseKey, topic: "", device: req.target.device };
}

/**
 * The refusal of a message whose Push (`pushBytes` with its payload of
 * `payloadBytes`) would not fit one record: it states how many payload bytes
 * would fit beside this message's id, target, publisher, content type,
 * collapse key and signature (exact for limits of 128 bytes and more).
 */
export function pushTooLarge(pushBytes: number, payloadBytes: number, o: DeliveryOptions): MessagingError {
  const fits = Math.max(0, Math.min(o.maxPayload, o.maxRecordPayload - (pushBytes - payloadBytes)));
  return new MessagingError(
    "payload_too_large",
    `payload is ${payloadBytes} bytes; with this message's id, target, content type, collapse key and signature at most ${fits} bytes fit one DTLS record ` +
      `(the Push would be ${pushBytes} bytes, a record carries ${o.maxRecordPayload}): shorten the payload or those fields`,
  );
}

/** The topic, or MessagingError "bad_topic" naming the problem. */
export function checkedTopic(topic: string): string {
  try {
    return checkTopic(topic);
  } catch (e) {
    throw new MessagingError("bad_topic", e instanceof Error ? e.message : String(e));
  }
}
