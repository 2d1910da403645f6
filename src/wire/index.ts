/**
 * The dtlspush device protocol (proto/dtlspush/v1/frame.proto) in TypeScript:
 * message types, the ErrorCode enum, and the Frame codec. This is the only
 * entry point into src/wire; nothing outside src/wire imports generated/.
 */
export type {
  Ack,
  AckInit,
  Bye,
  ByeInit,
  ErrorCodeNumber,
  FrameBody,
  FrameInit,
  FrameKind,
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
} from "./types.ts";
export { ErrorCode } from "./generated/dtlspush/v1/frame.ts";
export { errorCodeName } from "./error-code.ts";
export { WireError } from "./errors.ts";
export { decodeFrame, encodeFrame, encodePushBody, FrameFields, pushFrame, pushFrameSize, pushOverhead } from "./frame-codec.ts";
