/**
 * JSON schemas of the HTTP API: fastify validates requests and serializes
 * responses with them, and @fastify/swagger builds the OpenAPI document from
 * the same objects. Shared schemas are registered by $id and referenced as
 * "<Id>#".
 */
import type { FastifyInstance } from "fastify";
import { HTTP_ERROR_CODES } from "./errors.ts";

/** The DEVICE_ID_PATTERN of src/auth/names.ts, as JSON Schema. */
const DEVICE_ID = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$";
const TOPIC = "^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$";
/** Message ids: what publishers choose (and what the engine generates, UUIDs, and uplink ids "up:<device>:<n>"). */
export const MESSAGE_ID = "^[A-Za-z0-9][A-Za-z0-9._:@~-]{0,199}$";
const BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";
const ISO_TIME = { type: "string", format: "date-time" } as const;

export const BEARER_SECURITY = [{ bearerAuth: [] }];

/** The `error` member of every error answer. */
export const ERROR_FIELDS = {
  type: "object",
  required: ["code", "message"],
  properties: {
    code: { type: "string", enum: HTTP_ERROR_CODES, description: "Stable snake_case code (see docs/http-api.md).", examples: ["bad_request"] },
    message: { type: "string", description: "One sentence naming the problem." },
  },
} as const;

const errorSchema = {
  $id: "Error",
  type: "object",
  description: "Every error answer.",
  required: ["error"],
  properties: { error: ERROR_FIELDS },
} as const;

const deviceSchema = {
  $id: "Device",
  type: "object",
  required: ["id", "revoked", "psk", "certificate", "topics", "online", "lastSeen", "queueDepth"],
  properties: {
    id: { type: "string" },
    revoked: { type: "boolean" },
    psk: {
      type: ["object", "null"],
      description: "PSK credentials (the key is never shown); null when the device has none.",
      required: ["identity"],
      properties: { identity: { type: "string" } },
    },
    certificate: {
      type: ["object", "null"],
      description: "The certificate identity (CN, SAN or fingerprint, per the DTLS server's setting); null when none.",
      required: ["identity"],
      properties: { identity: { type: "string" } },
    },
    topics: { type: "array", items: { type: "string" }, description: "Topics assigned by the operator." },
    online: { type: "boolean", description: "A DTLS session is bound to the device now." },
    lastSeen: { type: ["string", "null"], format: "date-time", description: "Last record from the device since the daemon started; null when none." },
    queueDepth: { type: "integer", description: "Messages queued or in flight." },
    node: {
      type: ["string", "null"],
      description:
        "On a cluster: the store instance of the node holding the device's session (a live node's; the daemon logs its own as cluster_node.instance); null when offline or on one node.",
    },
  },
} as const;

const receiptSchema = {
  $id: "Receipt",
  type: "object",
  required: ["eventId", "device", "state", "at", "reason", "seq"],
  properties: {
    eventId: { type: "integer", description: "Receipt id; increases with every receipt (the SSE event id)." },
    device: { type: "string" },
    state: { type: "string", enum: ["queued", "sent", "delivered", "expired", "rejected"] },
    at: ISO_TIME,
    reason: { type: ["string", "null"], description: "e.g. ttl, collapsed, evicted, queue_full, device_refused, device_removed; null when none." },
    seq: { type: ["integer", "null"], description: "The device's sequence number of the message, when one was assigned." },
  },
} as const;

const publishResultSchema = {
  $id: "PublishResult",
  type: "object",
  required: ["id", "createdAt", "expiresAt", "recipients", "rejected"],
  properties: {
    id: { type: "string", description: "Message id." },
    createdAt: ISO_TIME,
    expiresAt: ISO_TIME,
    recipients: { type: "integer", description: "Devices the message was queued for." },
    rejected: {
      type: "array",
      description: "Subscribers the message was not queued for (topic publishes).",
      items: {
        type: "object",
        required: ["device", "reason"],
        properties: { device: { type: "string" }, reason: { type: "string", examples: ["queue_full"] } },
      },
    },
  },
} as const;

const messageStatusSchema = {
  $id: "MessageStatus",
  type: "object",
  required: ["id", "target", "createdAt", "expiresAt", "priority", "collapseKey", "contentType", "publisher", "receipts"],
  properties: {
    id: { type: "string" },
    target: {
      type: "object",
      description: "Either {device} or {topic}.",
      minProperties: 1,
      maxProperties: 1,
      properties: { device: { type: "string" }, topic: { type: "string" } },
    },
    createdAt: ISO_TIME,
    expiresAt: ISO_TIME,
    priority: { type: "integer", minimum: 0, maximum: 9 },
    collapseKey: { type: ["string", "null"] },
    contentType: { type: ["string", "null"] },
    publisher: { type: "string", description: "The publisher token's subject, or device:<id> for an uplink publish." },
    receipts: { type: "array", items: { $ref: "Receipt#" } },
  },
} as const;

/** Most entries of one batch publish. */
export const MAX_BATCH_ENTRIES = 1000;

/** One result of a batch publish: either a PublishResult's fields, or error. */
const batchResultSchema = {
  $id: "BatchResult",
  type: "object",
  required: ["results"],
  properties: {
    results: {
      type: "array",
      description:
        "One result per entry, in the order of the entries: the entry's PublishResult (id, createdAt, expiresAt, recipients, rejected), or its own error.",
      items: {
        type: "object",
        properties: {
          ...publishResultSchema.properties,
          error: { ...ERROR_FIELDS, description: "Why this entry was not published (nothing of it is stored); the same codes as a single publish." },
        },
      },
    },
  },
} as const;

export function addSharedSchemas(app: FastifyInstance): void {
  for (const s of [errorSchema, deviceSchema, receiptSchema, publishResultSchema, messageStatusSchema, batchResultSchema]) app.addSchema(s);
}

const ERROR_TEXT: Readonly<Record<number, string>> = {
  400: "Bad request: a field is missing or invalid (bad_request, bad_topic, bad_device).",
  401: "No valid publisher token (token_missing, token_invalid, token_expired).",
  403: "The token lacks the scope (insufficient_scope).",
  404: "Not found.",
  409: "Conflict.",
  413: "Too large (body_too_large, payload_too_large).",
  415: "The body is not JSON (unsupported_media_type).",
  429: "Too many requests (rate_limited); see Retry-After.",
  503: "The server is shutting down (shutting_down).",
};

/** Error responses of a route, all with the Error body. */
export function errorResponses(statuses: readonly number[], texts: Readonly<Record<number, string>> = {}): Record<number, object> {
  const out: Record<number, object> = {};
  for (const s of statuses) out[s] = { description: texts[s] ?? ERROR_TEXT[s] ?? "Error.", $ref: "Error#" };
  return out;
}

/** Statuses every authenticated route can answer besides its own. */
export const AUTH_ERRORS = [401, 403, 429] as const;

export const deviceIdParams = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", pattern: DEVICE_ID, description: "Device id." } },
} as const;

export const topicParams = {
  type: "object",
  required: ["topic"],
  properties: {
    topic: { type: "string", pattern: TOPIC, description: "Topic; URL-encode its / as %2F." },
  },
} as const;

export const messageIdParams = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", minLength: 1, maxLength: 200, description: "Message id." } },
} as const;

export const publishBody = {
  type: "object",
  additionalProperties: false,
  description: "Exactly one of payload and payloadBase64.",
  properties: {
    payload: { type: "string", description: "The payload as UTF-8 text." },
    payloadBase64: { type: "string", pattern: BASE64, description: "The payload as base64 (binary payloads)." },
    contentType: { type: "string", maxLength: 128, examples: ["application/json"] },
    ttlSeconds: { type: "integer", minimum: 1, description: "Default delivery.default_ttl_seconds; at most delivery.max_ttl_seconds." },
    priority: { type: "integer", minimum: 0, maximum: 9, description: "Higher first; default 5." },
    collapseKey: { type: "string", maxLength: 128, description: "A newer message with the same key replaces an unsent older one." },
    id: {
      type: "string",
      pattern: MESSAGE_ID,
      description: "Message id chosen by the publisher (idempotency: the same id again is 409 duplicate_message); generated when absent.",
    },
  },
} as const;

export const putDeviceBody = {
  type: "object",
  additionalProperties: false,
  description: "A new device needs psk or certificate. On an update, the fields given replace the stored ones and omitted fields keep their value.",
  properties: {
    psk: {
      type: "object",
      additionalProperties: false,
      required: ["keyHex"],
      properties: {
        identity: { type: "string", minLength: 1, maxLength: 128, description: "PSK identity; default the current identity, else the device id." },
        keyHex: { type: "string", pattern: "^(?:[0-9A-Fa-f]{2}){1,64}$", description: "The key, 1..64 bytes as 2..128 hex digits." },
      },
    },
    certificate: {
      type: "object",
      additionalProperties: false,
      required: ["identity"],
      properties: { identity: { type: "string", minLength: 1, maxLength: 1024, description: "CN, SAN or SHA-256 fingerprint." } },
    },
    topics: { type: "array", maxItems: 1000, items: { type: "string" }, description: "Topics assigned to the device (replaces the list)." },
    revoked: { type: "boolean" },
  },
} as const;

export const eventsQuery = {
  type: "object",
  additionalProperties: false,
  properties: {
    device: { type: "array", items: { type: "string" }, description: "Only these devices (repeatable or comma-separated)." },
    topic: { type: "array", items: { type: "string" }, description: "Only receipts of messages to these topics." },
    message: { type: "array", items: { type: "string" }, description: "Only receipts of these messages." },
    lastEventId: { type: "string", pattern: "^[0-9]{1,15}$", description: "Resume after this receipt id (as the Last-Event-ID header)." },
  },
} as const;

export const eventsHeaders = {
  type: "object",
  properties: {
    "last-event-id": { type: "string", pattern: "^[0-9]{1,15}$", description: "Resume after this receipt id (EventSource sends it on reconnect)." },
  },
} as const;

/**
 * One entry of a batch publish: a single publish's fields and its target.
 * Checked entry by entry (one bad entry does not fail the others), so the
 * batch body's schema only says "objects"; the route checks each with this.
 */
export const batchEntrySchema = {
  type: "object",
  additionalProperties: false,
  description: "Exactly one of device and topic; exactly one of payload and payloadBase64.",
  properties: {
    device: { type: "string", pattern: DEVICE_ID, description: "Publish to this device (as POST /v1/devices/{id}/messages)." },
    topic: { type: "string", pattern: TOPIC, description: "Publish to this topic (as POST /v1/topics/{topic}/messages)." },
    ...publishBody.properties,
  },
} as const;

export const batchBody = {
  type: "object",
  additionalProperties: false,
  required: ["messages"],
  properties: {
    messages: {
      type: "array",
      minItems: 1,
      maxItems: MAX_BATCH_ENTRIES,
      description:
        `1 to ${MAX_BATCH_ENTRIES} entries, each an object with the fields of a single publish (payload or payloadBase64, contentType, ttlSeconds, ` +
        "priority, collapseKey, id) and its target: device or topic. Each entry is checked on its own; one that is not valid gets its own error in results.",
      // not checked here: an entry that is not valid (not even an object) is refused on its own
      items: { description: "An object: device or topic, and the fields of a single publish (see the description of messages)." },
    },
  },
} as const;
