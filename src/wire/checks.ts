/**
 * The field checks the protocol needs and the generated code (ts-proto over
 * @bufbuild/protobuf's wire runtime) leaves out. frame-codec.ts runs them
 * around every encode and decode; nothing else in the project sees the
 * generated code unchecked.
 *
 * Decoding (checkFrameBytes, a walk over the bytes before the generated
 * decoder reads them):
 *  - a varint longer than 10 bytes, or anything running past the end of its
 *    enclosing message (nested messages are bounded by their parent), is refused;
 *  - field number 0, wire types 6 and 7, and an end-group without its start are refused;
 *  - a known field with a wire type its declared type never has is refused
 *    (repeated numbers are accepted packed and unpacked);
 *  - a uint64 above 2^53-1 is refused (every number this implementation returns is exact);
 *  - a string that is not valid UTF-8 is refused (proto3 requires it);
 *  - unknown fields of every wire type are skipped (forward compatibility), unknown
 *    groups nested deeper than MAX_GROUP_DEPTH are refused.
 * Encoding (checkMessage, over the encoding input before the generated code fills it in):
 *  - uint64: an integer from 0 to 2^53-1; uint32: from 0 to 2^32-1; enum: a 32-bit
 *    integer (the runtime would silently write a rounded or truncated value otherwise);
 *  - string: a well-formed string (no lone surrogate, which would be written as U+FFFD);
 *  - bytes: a Uint8Array; bool: a boolean; repeated: an array; message: an object.
 *
 * The field tables come from the file descriptor the generator emits
 * (protoMetadata), so a schema change needs no edit here, unless it brings a
 * field type these checks do not know: then loading this module throws, rather
 * than letting such a field through unchecked.
 */
import { protoMetadata } from "./generated/dtlspush/v1/frame.ts";
import { WireError } from "./errors.ts";

type Kind = "uint64" | "uint32" | "enum" | "bool" | "string" | "bytes" | "message";

/** google.protobuf.FieldDescriptorProto.Type values of the kinds above. */
const KIND_OF_TYPE: Readonly<Record<number, Kind>> = { 4: "uint64", 8: "bool", 9: "string", 11: "message", 12: "bytes", 13: "uint32", 14: "enum" };
const LABEL_REPEATED = 3;

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_SGROUP = 3;
const WIRE_EGROUP = 4;
const WIRE_I32 = 5;

/** Deepest nesting of unknown groups skipped; the runtime's own skip stops at 100. */
export const MAX_GROUP_DEPTH = 64;

export interface FieldRule {
  /** "Push.seq": proto names, for error messages */
  readonly label: string;
  /** the generated TypeScript property */
  readonly prop: string;
  readonly number: number;
  readonly kind: Kind;
  readonly repeated: boolean;
  /** the message type of a message field */
  message: MessageRule | undefined;
}

export interface MessageRule {
  readonly name: string;
  /** a message made of one oneof (Frame): its fields are the bodies; checked one body at a time */
  readonly envelope: boolean;
  readonly fields: ReadonlyMap<number, FieldRule>;
  readonly list: readonly FieldRule[];
}

export interface FieldDescriptor {
  readonly name: string;
  readonly number: number;
  readonly label: number;
  readonly type: number;
  readonly typeName: string;
  readonly jsonName: string;
  readonly proto3Optional: boolean;
}

/** The parts of a generated file descriptor the checks read. */
export interface FileDescriptorLike {
  readonly name: string;
  readonly package: string;
  readonly syntax: string;
  readonly messageType: readonly {
    readonly name: string;
    readonly field: readonly FieldDescriptor[];
    readonly nestedType: readonly unknown[];
    readonly oneofDecl: readonly unknown[];
  }[];
}

/**
 * Field tables by full message name (".dtlspush.v1.Push"). Throws on what the
 * checks do not support (and so would let through unchecked): a schema other
 * than proto3 (proto2's required fields and defaults), a field type
 * other than those of KIND_OF_TYPE, nested types (maps among them), proto3
 * `optional`, and a oneof anywhere but as the whole content of a message that
 * no other message holds (the Frame envelope).
 */
export function buildRules(file: FileDescriptorLike): ReadonlyMap<string, MessageRule> {
  if (file.syntax !== "proto3") throw new Error(`src/wire/checks.ts supports proto3 only; ${file.name} is ${file.syntax || "proto2"}.`);
  const rules = new Map<string, MessageRule>();
  const pending: [FieldRule, string][] = [];
  for (const m of file.messageType) {
    const fields = new Map<number, FieldRule>();
    for (const f of m.field) {
      const label = `${m.name}.${f.name}`;
      const kind = KIND_OF_TYPE[f.type];
      if (kind === undefined) throw new Error(`src/wire/checks.ts does not know the type (${f.type}) of ${label}; add it before using it.`);
      const rule: FieldRule = { label, prop: f.jsonName, number: f.number, kind, repeated: f.label === LABEL_REPEATED, message: undefined };
      if (kind === "message") pending.push([rule, f.typeName]);
      fields.set(f.number, rule);
    }
    if (m.nestedType.length > 0) throw new Error(`src/wire/checks.ts does not support the nested types (or maps) of ${m.name}.`);
    if (m.field.some((f) => f.proto3Optional)) throw new Error(`src/wire/checks.ts does not support the optional fields of ${m.name}.`);
    const envelope = m.oneofDecl.length > 0;
    if (m.oneofDecl.length > 1 || (envelope && [...fields.values()].some((f) => f.kind !== "message" || f.repeated))) {
      throw new Error(`src/wire/checks.ts supports a oneof only as the whole content of a message, of message bodies (${m.name}).`);
    }
    rules.set(`.${file.package}.${m.name}`, { name: m.name, envelope, fields, list: [...fields.values()] });
  }
  for (const [rule, typeName] of pending) {
    const target = rules.get(typeName);
    if (target === undefined) throw new Error(`${rule.label}: type ${typeName} is not in ${file.name}.`);
    if (target.envelope) throw new Error(`src/wire/checks.ts supports a oneof only in a message no other holds (${rule.label}).`);
    rule.message = target;
  }
  return rules;
}

const RULES = buildRules(protoMetadata.fileDescriptor);

/** The rule of a message of the schema by name ("Frame", "Push"). */
export function messageRule(name: string): MessageRule {
  const rule = RULES.get(`.${protoMetadata.fileDescriptor.package}.${name}`);
  if (rule === undefined) throw new Error(`no message ${name} in the schema`);
  return rule;
}

// ---------------------------------------------------------------- decoding

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A cursor over the bytes of one frame. */
class Walk {
  pos = 0;
  readonly buf: Uint8Array;
  constructor(buf: Uint8Array) {
    this.buf = buf;
  }

  truncated(what: string): WireError {
    return new WireError(`Frame is truncated: ${what} runs past the end of its message at offset ${this.pos}.`);
  }

  /** A varint as an exact number while it is below 2^53; above, a number above MAX_SAFE_INTEGER. */
  varint(end: number, what: string): number {
    const buf = this.buf;
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw this.truncated(what);
      const b = buf[this.pos++] as number;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 0x80;
    }
    throw new WireError(`${what} is a varint longer than 10 bytes.`);
  }

  /** A length prefix; returns the end offset of the bytes it announces. */
  length(end: number, what: string): number {
    const n = this.varint(end, what);
    if (n > end - this.pos) throw this.truncated(what);
    return this.pos + n;
  }

  skip(bytes: number, end: number, what: string): void {
    if (bytes > end - this.pos) {
      this.pos = end;
      throw this.truncated(what);
    }
    this.pos += bytes;
  }

  /** Reads a tag (field number * 8 + wire type, below 2^32) after checking both parts. */
  tag(end: number): number {
    const at = this.pos;
    const tag = this.varint(end, "a field tag");
    if (tag > 0xffff_ffff) throw new WireError(`Frame holds a field tag above 2^32-1 at offset ${at}.`);
    const field = Math.floor(tag / 8);
    const wireType = tag % 8;
    if (field === 0) throw new WireError(`Frame holds a field number 0 at offset ${at}, which protobuf forbids.`);
    if (wireType === WIRE_EGROUP || wireType > WIRE_I32) {
      throw new WireError(`Frame holds field ${field} with invalid wire type ${wireType}.`);
    }
    return tag;
  }
}

/**
 * Checks the bytes of a message of type `rule` between walk.pos and `end`.
 * Returns the number of the last field it did not know (0: none), which the
 * Frame uses for a body of a newer protocol.
 */
function checkMessageBytes(walk: Walk, end: number, rule: MessageRule): number {
  let unknown = 0;
  while (walk.pos < end) {
    const tag = walk.tag(end);
    const number = tag >>> 3;
    const wireType = tag & 7;
    const field = rule.fields.get(number);
    if (field === undefined) {
      unknown = number;
      skipUnknown(walk, end, number, wireType);
    } else {
      checkField(walk, end, field, wireType);
    }
  }
  return unknown;
}

function expectedWireType(field: FieldRule): number {
  return field.kind === "string" || field.kind === "bytes" || field.kind === "message" ? WIRE_LEN : WIRE_VARINT;
}

function checkField(walk: Walk, end: number, field: FieldRule, wireType: number): void {
  const expected = expectedWireType(field);
  if (wireType === WIRE_LEN && expected === WIRE_VARINT && field.repeated) {
    const stop = walk.length(end, field.label); // packed
    while (walk.pos < stop) checkNumber(walk, stop, field);
    return;
  }
  if (wireType !== expected) {
    throw new WireError(
      `${field.label} arrived with wire type ${wireType}, expected ${field.repeated && expected === WIRE_VARINT ? WIRE_LEN : expected}.`,
    );
  }
  if (expected === WIRE_VARINT) {
    checkNumber(walk, end, field);
    return;
  }
  const stop = walk.length(end, field.label);
  if (field.kind === "message") {
    checkMessageBytes(walk, stop, field.message as MessageRule);
  } else if (field.kind === "string" && !isAscii(walk.buf, walk.pos, stop)) {
    try {
      strictUtf8.decode(walk.buf.subarray(walk.pos, stop));
    } catch (cause) {
      throw new WireError(`${field.label} is not valid UTF-8.`, { cause });
    }
  }
  walk.pos = stop;
}

function isAscii(buf: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if ((buf[i] as number) > 0x7f) return false;
  return true;
}

function checkNumber(walk: Walk, end: number, field: FieldRule): void {
  const v = walk.varint(end, field.label);
  if (field.kind === "uint64" && v > Number.MAX_SAFE_INTEGER) {
    throw new WireError(`${field.label} is above 2^53-1 (${Number.MAX_SAFE_INTEGER}), which this decoder does not accept.`);
  }
}

/** Skips a field this version does not know, groups included (iteratively, bounded). */
function skipUnknown(walk: Walk, end: number, number: number, wireType: number): void {
  const groups: number[] = [];
  let n = number;
  let wt = wireType;
  for (;;) {
    const what = `field ${n}`;
    switch (wt) {
      case WIRE_VARINT:
        walk.varint(end, what);
        break;
      case WIRE_I64:
        walk.skip(8, end, what);
        break;
      case WIRE_I32:
        walk.skip(4, end, what);
        break;
      case WIRE_LEN:
        walk.pos = walk.length(end, what);
        break;
      case WIRE_SGROUP:
        if (groups.length >= MAX_GROUP_DEPTH) {
          throw new WireError(`Frame nests unknown groups deeper than depth ${MAX_GROUP_DEPTH} at offset ${walk.pos}.`);
        }
        groups.push(n);
        break;
      case WIRE_EGROUP:
        if (groups.pop() !== n) throw new WireError(`Frame holds an end-group of field ${n} without its start.`);
        break;
    }
    if (groups.length === 0) return;
    // Inside a group: the next tag may be its end (wire type 4), which tag() refuses on its own.
    const at = walk.pos;
    const tag = walk.varint(end, "a field tag");
    if (tag % 8 !== WIRE_EGROUP) {
      walk.pos = at;
      const next = walk.tag(end);
      n = next >>> 3;
      wt = next & 7;
    } else {
      n = Math.floor(tag / 8);
      wt = WIRE_EGROUP;
    }
  }
}

/**
 * Checks a whole Frame before the generated decoder reads it. Returns the
 * number of the last top-level field it did not know (a body of a newer
 * protocol), 0 when there is none.
 */
export function checkFrameBytes(bytes: Uint8Array, frame: MessageRule): number {
  const walk = new Walk(bytes);
  return checkMessageBytes(walk, bytes.length, frame);
}

// ---------------------------------------------------------------- encoding

interface MaybeWellFormed {
  isWellFormed(): boolean;
}

function checkValue(field: FieldRule, v: unknown): void {
  switch (field.kind) {
    case "uint64":
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
        throw new WireError(`${field.label} must be an integer from 0 to 2^53-1, got ${String(v)}.`);
      }
      return;
    case "uint32":
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffff_ffff) {
        throw new WireError(`${field.label} must be an integer from 0 to 2^32-1, got ${String(v)}.`);
      }
      return;
    case "enum":
      if (typeof v !== "number" || !Number.isInteger(v) || v < -0x8000_0000 || v > 0x7fff_ffff) {
        throw new WireError(`${field.label} must be a 32-bit integer, got ${String(v)}.`);
      }
      return;
    case "bool":
      if (typeof v !== "boolean") throw new WireError(`${field.label} must be a boolean, got ${typeof v}.`);
      return;
    case "string":
      if (typeof v !== "string") throw new WireError(`${field.label} must be a string, got ${typeof v}.`);
      if (!(v as string & MaybeWellFormed).isWellFormed()) {
        throw new WireError(`${field.label} is not well-formed Unicode (it holds a lone surrogate).`);
      }
      return;
    case "bytes":
      if (!(v instanceof Uint8Array)) throw new WireError(`${field.label} must be a Uint8Array.`);
      return;
    case "message":
      if (v === null || typeof v !== "object") throw new WireError(`${field.label} must be a message object.`);
      checkMessage(field.message as MessageRule, v);
      return;
  }
}

/**
 * Checks an encoding input (a message's Init: every field optional) before the
 * generated code fills in the defaults (fromPartial, which would turn a wrong
 * value into a default or fail without naming the field) and encodes it.
 * An absent (undefined) field is fine; anything else must be of the field's type.
 */
export function checkMessage(rule: MessageRule, message: object): void {
  const m = message as Readonly<Record<string, unknown>>;
  for (const field of rule.list) {
    const v = m[field.prop];
    if (v === undefined) continue;
    if (!field.repeated) {
      checkValue(field, v);
    } else {
      if (!Array.isArray(v)) throw new WireError(`${field.label} must be an array.`);
      for (const x of v) checkValue(field, x);
    }
  }
}
