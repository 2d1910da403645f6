/**
 * The dtlspush device protocol (proto/dtlspush/v1/frame.proto) in TypeScript:
 * message types, the ErrorCode enum, and the Frame codec. This is the only
 * entry point into src/wire; nothing outside src/wire imports generated/.
 */
import type { FrameBody } from "./generated/frame.ts";

export type {
  Ack,
  AckInit,
  Bye,
  ByeInit,
  ErrorCodeNumber,
  FrameBody,
  FrameInit,
  Hello,
  HelloInit,
  Limits,
  LimitsInit,
  Ping,
  PingInit,
  Pong,
  PongInit,
  Publish,
  PublishAck,
  PublishAckInit,
  PublishInit,
  Push,
  PushInit,
  SeqRange,
  SeqRangeInit,
  Subscribe,
  SubscribeInit,
  Subscribed,
  SubscribedInit,
  UnknownFrameBody,
  Unsubscribe,
  UnsubscribeInit,
  Welcome,
  WelcomeInit,
  WireErrorBody,
  WireErrorBodyInit,
} from "./generated/frame.ts";
export { ErrorCode, FrameFields } from "./generated/frame.ts";
export { errorCodeName } from "./error-code.ts";
export { WireError } from "./errors.ts";
export { decodeFrame, encodeFrame, encodePushBody, pushFrame, pushFrameSize, pushOverhead } from "./frame-codec.ts";

/** The kinds of FrameBody ("hello", "push", "publishAck", ...). */
export type FrameKind = FrameBody["kind"];
