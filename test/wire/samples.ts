/**
 * One Frame of every kind with every field set to a non-default value, shared
 * by the wire tests. Values exercise multi-byte varints (up to 2^53-1),
 * non-ASCII strings and all byte values.
 */
import { ErrorCode } from "../../src/wire/index.ts";
import type { FrameBody } from "../../src/wire/index.ts";

export const MAX_SAFE = Number.MAX_SAFE_INTEGER;

const allBytes = Uint8Array.from({ length: 256 }, (_, i) => i);

export const FULL: readonly FrameBody[] = [
  {
    kind: "hello",
    hello: { version: 1, sessionToken: "eyJ0b2tlbiI6MX0.e30.c2ln", receivedSeq: 2 ** 40 + 3, maxPayload: 1024, client: "dtlspush-sdk/0.2.0" },
  },
  {
    kind: "welcome",
    welcome: {
      version: 1,
      deviceId: "device-ü-1",
      sessionToken: "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJkZXZpY2UifQ.c2lnbmF0dXJl",
      tokenExpiresAt: 1_760_086_400_000,
      heartbeatIntervalMs: 25_000,
      serverTime: 1_760_000_000_123,
      jwks: '{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}',
      limits: { maxPayload: 1100, window: 32, maxTopics: 64 },
      resumed: true,
      ackedSeq: MAX_SAFE,
      topics: ["sensors/temp", "alerts/🔥", ""],
    },
  },
  {
    kind: "push",
    push: {
      seq: 123_456_789,
      messageId: "01J9Z8Y7X6W5V4T3S2R1Q0P9N8",
      topic: "sensors/temp",
      device: "device-1",
      payload: allBytes,
      contentType: "application/octet-stream",
      createdAt: 1_760_000_000_000,
      expiresAt: 1_760_086_400_000,
      priority: 9,
      collapseKey: "temp",
      publisher: "device:device-2",
      signature: "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0..c2lnbmF0dXJl",
      expired: true,
    },
  },
  {
    kind: "ack",
    ack: {
      cumulative: 41,
      ranges: [
        { first: 43, last: 45 },
        { first: 50, last: MAX_SAFE },
      ],
      rejected: [44, 2 ** 35],
    },
  },
  {
    kind: "publish",
    publish: { requestId: 7, topic: "up/ä", payload: Uint8Array.of(0, 1, 2, 255), contentType: "text/plain", ttlSeconds: 3600, priority: 8 },
  },
  {
    kind: "publishAck",
    publishAck: { requestId: 7, messageId: "m-1", error: { code: ErrorCode.QUEUE_FULL, message: "queue full", requestId: 7 } },
  },
  { kind: "subscribe", subscribe: { requestId: 8, topics: ["a", "b/c"] } },
  { kind: "unsubscribe", unsubscribe: { requestId: 9, topics: ["a"] } },
  {
    kind: "subscribed",
    subscribed: { requestId: 9, topics: ["b/c"], error: { code: ErrorCode.TOO_MANY_TOPICS, message: "too many", requestId: 9 } },
  },
  { kind: "ping", ping: { time: 1_760_000_000_001 } },
  { kind: "pong", pong: { time: 1_760_000_000_001, serverTime: 1_760_000_000_002 } },
  { kind: "error", error: { code: ErrorCode.HELLO_REQUIRED, message: "send Hello first", requestId: 3 } },
  { kind: "bye", bye: { reason: { code: ErrorCode.SHUTTING_DOWN, message: "restarting", requestId: 1 } } },
];

/** Every kind with an empty body: what each decodes to. */
export const DEFAULTS: readonly FrameBody[] = [
  { kind: "hello", hello: { version: 0, sessionToken: "", receivedSeq: 0, maxPayload: 0, client: "" } },
  {
    kind: "welcome",
    welcome: {
      version: 0,
      deviceId: "",
      sessionToken: "",
      tokenExpiresAt: 0,
      heartbeatIntervalMs: 0,
      serverTime: 0,
      jwks: "",
      limits: { maxPayload: 0, window: 0, maxTopics: 0 },
      resumed: false,
      ackedSeq: 0,
      topics: [],
    },
  },
  {
    kind: "push",
    push: {
      seq: 0,
      messageId: "",
      topic: "",
      device: "",
      payload: new Uint8Array(0),
      contentType: "",
      createdAt: 0,
      expiresAt: 0,
      priority: 0,
      collapseKey: "",
      publisher: "",
      signature: "",
      expired: false,
    },
  },
  { kind: "ack", ack: { cumulative: 0, ranges: [], rejected: [] } },
  { kind: "publish", publish: { requestId: 0, topic: "", payload: new Uint8Array(0), contentType: "", ttlSeconds: 0, priority: 0 } },
  { kind: "publishAck", publishAck: { requestId: 0, messageId: "", error: undefined } },
  { kind: "subscribe", subscribe: { requestId: 0, topics: [] } },
  { kind: "unsubscribe", unsubscribe: { requestId: 0, topics: [] } },
  { kind: "subscribed", subscribed: { requestId: 0, topics: [], error: undefined } },
  { kind: "ping", ping: { time: 0 } },
  { kind: "pong", pong: { time: 0, serverTime: 0 } },
  { kind: "error", error: { code: 0, message: "", requestId: 0 } },
  { kind: "bye", bye: { reason: undefined } },
];

/** The body object of a FrameBody (e.g. the Push of a push frame). */
export function bodyOf(frame: FrameBody): Record<string, unknown> {
  return (frame as unknown as Record<string, Record<string, unknown>>)[frame.kind] as Record<string, unknown>;
}

export function fullOf<K extends FrameBody["kind"]>(kind: K): Extract<FrameBody, { kind: K }> {
  const f = FULL.find((x) => x.kind === kind);
  if (f === undefined) throw new Error(`no sample of kind ${kind}`);
  return f as Extract<FrameBody, { kind: K }>;
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

export function unhex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
}
