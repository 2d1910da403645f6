/**
 * The message types of the protocol as the rest of the project sees them,
 * derived from the generated ones (generated/dtlspush/v1/frame.ts):
 *  - a decoded message has every field (proto3 defaults when absent); a message
 *    field is `undefined` when absent, except Welcome.limits, whose absence
 *    means nothing and which decodes to all-default Limits;
 *  - enum fields are plain numbers (proto3 enums are open: a newer peer may send
 *    a value this version does not know);
 *  - `*Init` is the encoding input: every field optional, absent and default
 *    values are not written;
 *  - a Frame is `{ kind: "push", push: Push }` (FrameBody), or
 *    `{ kind: "unknown", field }` for a body of a newer protocol.
 */
import type * as gen from "./generated/dtlspush/v1/frame.ts";

/** A value of ErrorCode, or a newer one this version does not know (proto3 enums are open). */
export type ErrorCodeNumber = number;

type Builtin = Uint8Array | string | number | boolean | undefined;

/** A generated message type with open enums. */
export type Decoded<T> = { [K in keyof T]: DecodedValue<T[K]> };
type DecodedValue<V> = V extends gen.ErrorCode
  ? ErrorCodeNumber
  : V extends Builtin
    ? V
    : V extends readonly (infer U)[]
      ? DecodedValue<U>[]
      : Decoded<V>;

/** The encoding input of a message: every field optional, repeated fields readonly. */
export type Init<T> = { [K in keyof T]?: InitValue<T[K]> };
type InitValue<V> = V extends gen.ErrorCode
  ? ErrorCodeNumber
  : V extends Builtin
    ? V
    : V extends readonly (infer U)[]
      ? readonly InitValue<U>[]
      : Init<V>;

export type Hello = Decoded<gen.Hello>;
export type HelloInit = Init<gen.Hello>;
export type Limits = Decoded<gen.Limits>;
export type LimitsInit = Init<gen.Limits>;
export type Welcome = Decoded<Omit<gen.Welcome, "limits">> & { limits: Limits };
export type WelcomeInit = Init<gen.Welcome>;
export type Push = Decoded<gen.Push>;
export type PushInit = Init<gen.Push>;
export type Ack = Decoded<gen.Ack>;
export type AckInit = Init<gen.Ack>;
export type SeqRange = Decoded<gen.SeqRange>;
export type SeqRangeInit = Init<gen.SeqRange>;
export type Publish = Decoded<gen.Publish>;
export type PublishInit = Init<gen.Publish>;
export type PublishAck = Decoded<gen.PublishAck>;
export type PublishAckInit = Init<gen.PublishAck>;
export type Subscribe = Decoded<gen.Subscribe>;
export type SubscribeInit = Init<gen.Subscribe>;
export type Unsubscribe = Decoded<gen.Unsubscribe>;
export type UnsubscribeInit = Init<gen.Unsubscribe>;
export type Subscribed = Decoded<gen.Subscribed>;
export type SubscribedInit = Init<gen.Subscribed>;
export type Ping = Decoded<gen.Ping>;
export type PingInit = Init<gen.Ping>;
export type Pong = Decoded<gen.Pong>;
export type PongInit = Init<gen.Pong>;
/** The protocol's Error message (named so as not to clash with the global Error). */
export type WireErrorBody = Decoded<gen.Error>;
export type WireErrorBodyInit = Init<gen.Error>;
export type Bye = Decoded<gen.Bye>;
export type ByeInit = Init<gen.Bye>;

type GeneratedBody = NonNullable<gen.Frame["body"]>;

/** The decoded body of a Frame, tagged by kind. */
export type FrameBody =
  | (GeneratedBody extends infer B
      ? B extends { $case: infer C extends Exclude<GeneratedBody["$case"], "welcome"> }
        ? { kind: C } & { [K in Exclude<keyof B, "$case">]: Decoded<B[K]> }
        : never
      : never)
  | { kind: "welcome"; welcome: Welcome };

/** A Frame for encoding: the body's fields are all optional. */
export type FrameInit = GeneratedBody extends infer B
  ? B extends { $case: infer C extends string }
    ? { kind: C } & { [K in Exclude<keyof B, "$case">]: Init<B[K]> }
    : never
  : never;

/** The kinds of FrameBody ("hello", "push", "publishAck", ...). */
export type FrameKind = GeneratedBody["$case"];

/** A Frame whose body is a field this version does not know (a newer protocol). */
export interface UnknownFrameBody {
  kind: "unknown";
  field: number;
}
