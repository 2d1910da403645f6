/**
 * Generates src/wire/generated/frame.ts from proto/dtlspush/v1/frame.proto.
 *
 *   npx node scripts/gen-wire.ts            (writes the file; Node 24 runs the .ts directly)
 *   npx node scripts/gen-wire.ts --check    (exits 1 when the committed file is stale)
 *
 * protobufjs parses the schema; the output is static TypeScript: one interface
 * per message (the decoded shape, every field present), one *Init interface
 * (the encoding input, every field optional), and encode/decode functions over
 * protobufjs/minimal's Writer and Reader with field-level checks from
 * src/wire/scalars.ts. No reflection runs at run time.
 *
 * Only what the protocol uses is supported (proto3; uint32, uint64, bool,
 * string, bytes, enums, messages, repeated fields of those; one envelope
 * message made of a single oneof). Anything else stops the generator with a
 * message naming the field, rather than producing a codec that is wrong.
 */
import protobuf from "protobufjs";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const PROTO_FILE = "proto/dtlspush/v1/frame.proto";
export const OUTPUT_FILE = "src/wire/generated/frame.ts";

/** TypeScript names for proto messages whose own name would clash (the global Error). */
const RENAMED: Readonly<Record<string, string>> = { Error: "WireErrorBody" };

/**
 * Message-typed fields that decode to an all-defaults message when absent
 * (their absence carries no meaning). Every other message field decodes to
 * `undefined` when absent, because there "not set" means something (e.g.
 * PublishAck.error: not refused).
 */
const FILLED_WHEN_ABSENT: ReadonlySet<string> = new Set(["Welcome.limits"]);

const WIRE_VARINT = 0;
const WIRE_LEN = 2;

interface Scalar {
  ts: string;
  zero: string;
  /** condition, over expression `v`, under which a non-repeated value is written */
  isSet: (v: string) => string;
  /** helper from src/wire/scalars.ts: fn(w, value, label); undefined for bool (w.bool) */
  writeFn: string | undefined;
  /** helper from src/wire/scalars.ts: fn(r, label) */
  readFn: string;
  wire: number;
  packable: boolean;
}

const isNonZero = (v: string): string => `${v} !== undefined && ${v} !== 0`;

const SCALARS: Readonly<Record<string, Scalar>> = {
  uint32: { ts: "number", zero: "0", isSet: isNonZero, writeFn: "writeU32", readFn: "readU32", wire: WIRE_VARINT, packable: true },
  uint64: { ts: "number", zero: "0", isSet: isNonZero, writeFn: "writeU64", readFn: "readU64", wire: WIRE_VARINT, packable: true },
  bool: {
    ts: "boolean",
    zero: "false",
    isSet: (v) => `${v} === true`,
    writeFn: undefined,
    readFn: "readBool",
    wire: WIRE_VARINT,
    packable: true,
  },
  string: {
    ts: "string",
    zero: '""',
    isSet: (v) => `${v} !== undefined && ${v} !== ""`,
    writeFn: "writeString",
    readFn: "readString",
    wire: WIRE_LEN,
    packable: false,
  },
  bytes: {
    ts: "Uint8Array",
    zero: "new Uint8Array(0)",
    isSet: (v) => `${v} !== undefined && ${v}.length !== 0`,
    writeFn: "writeBytes",
    readFn: "readBytes",
    wire: WIRE_LEN,
    packable: false,
  },
};

function enumScalar(tsName: string): Scalar {
  return { ts: tsName, zero: "0", isSet: isNonZero, writeFn: "writeEnum", readFn: "readEnum", wire: WIRE_VARINT, packable: true };
}

class Unsupported extends Error {}

function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

function tsName(protoName: string): string {
  return RENAMED[protoName] ?? protoName;
}

function docComment(text: string | null | undefined, indent: string): string {
  if (text === null || text === undefined || text.trim() === "") return "";
  const lines = text.replace(/\*\//g, "*\\/").trim().split("\n");
  if (lines.length === 1) return `${indent}/** ${lines[0]} */\n`;
  return `${indent}/**\n${lines.map((l) => `${indent} * ${l}`.trimEnd()).join("\n")}\n${indent} */\n`;
}

function tag(id: number, wire: number): number {
  return id * 8 + wire;
}

/** The generated TypeScript for a .proto source. Pure: the test compares it with the committed file. */
export function generateWire(protoSource: string, protoPath: string): string {
  if (!/^\s*syntax\s*=\s*"proto3"\s*;/m.test(protoSource)) {
    throw new Unsupported(`${protoPath} is not proto3; gen-wire supports proto3 only.`);
  }
  const parsed = protobuf.parse(protoSource, { keepCase: true, alternateCommentMode: true });
  const root = parsed.root;
  root.resolveAll();
  if (parsed.package === undefined) throw new Unsupported(`${protoPath} declares no package.`);
  if ((parsed.imports ?? []).length > 0) throw new Unsupported(`${protoPath} imports other files; gen-wire does not.`);
  const pkg = root.lookup(parsed.package);
  if (!(pkg instanceof protobuf.Namespace)) throw new Unsupported(`package ${parsed.package} not found.`);

  const types: protobuf.Type[] = [];
  const enums: protobuf.Enum[] = [];
  for (const item of pkg.nestedArray) {
    if (item instanceof protobuf.Type) {
      if (item.nestedArray.length > 0) throw new Unsupported(`${item.name} has nested declarations.`);
      types.push(item);
    } else if (item instanceof protobuf.Enum) enums.push(item);
    else throw new Unsupported(`${item.name} is neither a message nor an enum.`);
  }
  const enumNames = new Set(enums.map((e) => e.name));

  const out: string[] = [];
  const used = new Set<string>();
  const use = (name: string): string => {
    used.add(name);
    return name;
  };
  const writeCall = (s: Scalar, v: string, label: string): string =>
    s.writeFn === undefined ? `w.bool(${v})` : `${use(s.writeFn)}(w, ${v}, ${label})`;
  const readCall = (s: Scalar, label: string): string => `${use(s.readFn)}(r, ${label})`;

  // ---------------------------------------------------------------- enums
  for (const e of enums) {
    const name = tsName(e.name);
    out.push(docComment(e.comment, ""));
    out.push(`export const ${name} = {\n`);
    for (const [key, value] of Object.entries(e.values)) {
      out.push(docComment(e.comments[key], "  "));
      out.push(`  ${key}: ${value},\n`);
    }
    out.push(`} as const;\n\n`);
    out.push(`/** A value of ${name}, or a newer one this version does not know (proto3 enums are open). */\n`);
    out.push(`export type ${name}Number = number;\n\n`);
    out.push(`/** ${name} names by value. */\n`);
    out.push(`export const ${name}Names: Readonly<Record<number, string>> = {\n`);
    for (const [key, value] of Object.entries(e.values)) out.push(`  ${value}: "${key}",\n`);
    out.push(`};\n\n`);
  }

  // ---------------------------------------------------------------- field model
  interface FieldModel {
    proto: protobuf.Field;
    label: string; // "Push.seq", for error messages
    prop: string;
    repeated: boolean;
    scalar: Scalar | undefined; // undefined: message
    message: string | undefined; // TS name of the message type
    filled: boolean;
  }

  const fieldModel = (t: protobuf.Type, f: protobuf.Field): FieldModel => {
    const label = `${t.name}.${f.name}`;
    if (f.map) throw new Unsupported(`${label}: map fields are not supported.`);
    if (f.partOf !== null && f.partOf !== undefined) throw new Unsupported(`${label}: oneof outside an envelope.`);
    if (f.options?.["proto3_optional"] === true) throw new Unsupported(`${label}: proto3 optional is not supported.`);
    const resolved = f.resolvedType;
    let scalar: Scalar | undefined;
    let message: string | undefined;
    if (resolved instanceof protobuf.Type) {
      if (resolved.parent !== pkg) throw new Unsupported(`${label}: type from another package.`);
      message = tsName(resolved.name);
    } else if (resolved instanceof protobuf.Enum) {
      if (!enumNames.has(resolved.name)) throw new Unsupported(`${label}: enum from another package.`);
      scalar = enumScalar(`${tsName(resolved.name)}Number`);
    } else {
      scalar = SCALARS[f.type];
      if (scalar === undefined) throw new Unsupported(`${label}: type ${f.type} is not supported by gen-wire.`);
    }
    const filled = FILLED_WHEN_ABSENT.has(label);
    if (filled && (message === undefined || f.repeated)) throw new Unsupported(`${label}: only singular messages can be filled.`);
    return { proto: f, label, prop: camel(f.name), repeated: f.repeated, scalar, message, filled };
  };

  const isEnvelope = (t: protobuf.Type): boolean =>
    t.oneofsArray.length === 1 && t.fieldsArray.every((f) => f.partOf === t.oneofsArray[0]);

  // ---------------------------------------------------------------- messages
  for (const t of types) {
    if (t.oneofsArray.length > 0) {
      if (!isEnvelope(t)) throw new Unsupported(`${t.name}: a oneof is supported only as a message's sole content.`);
      continue; // generated below
    }
    const name = tsName(t.name);
    const fields = t.fieldsArray.map((f) => fieldModel(t, f));

    // decoded interface
    out.push(docComment(t.comment, ""));
    out.push(`export interface ${name} {\n`);
    for (const f of fields) {
      out.push(docComment(f.proto.comment, "  "));
      let type = f.scalar?.ts ?? (f.message as string);
      if (f.repeated) type = `${type}[]`;
      else if (f.message !== undefined && !f.filled) type = `${type} | undefined`;
      out.push(`  ${f.prop}: ${type};\n`);
    }
    out.push(`}\n\n`);

    // init interface
    out.push(`/** ${name} for encoding: every field optional; absent and default values are not written. */\n`);
    out.push(`export interface ${name}Init {\n`);
    for (const f of fields) {
      let type = f.scalar?.ts ?? `${f.message as string}Init`;
      if (f.repeated) type = `readonly ${type}[]`;
      else if (f.message !== undefined) type = `${type} | undefined`;
      out.push(`  ${f.prop}?: ${type};\n`);
    }
    out.push(`}\n\n`);

    // encoder
    out.push(`export function encode${name}(m: ${name}Init, w: Writer): void {\n`);
    for (const f of fields) {
      const v = `m.${f.prop}`;
      const label = JSON.stringify(f.label);
      if (f.message !== undefined) {
        const t2 = tag(f.proto.id, WIRE_LEN);
        if (f.repeated) {
          out.push(`  if (${v} !== undefined) {\n`);
          out.push(`    for (const x of ${v}) {\n`);
          out.push(`      w.uint32(${t2}).fork();\n      encode${f.message}(x, w);\n      w.ldelim();\n    }\n  }\n`);
        } else {
          out.push(`  if (${v} !== undefined) {\n`);
          out.push(`    w.uint32(${t2}).fork();\n    encode${f.message}(${v}, w);\n    w.ldelim();\n  }\n`);
        }
        continue;
      }
      const s = f.scalar as Scalar;
      if (f.repeated && s.packable) {
        out.push(`  if (${v} !== undefined && ${v}.length !== 0) {\n`);
        out.push(`    w.uint32(${tag(f.proto.id, WIRE_LEN)}).fork();\n`);
        out.push(`    for (const x of ${v}) ${writeCall(s, "x", label)};\n`);
        out.push(`    w.ldelim();\n  }\n`);
      } else if (f.repeated) {
        out.push(`  if (${v} !== undefined) {\n`);
        out.push(`    for (const x of ${v}) {\n      w.uint32(${tag(f.proto.id, s.wire)});\n`);
        out.push(`      ${writeCall(s, "x", label)};\n    }\n  }\n`);
      } else {
        out.push(`  if (${s.isSet(v)}) {\n    w.uint32(${tag(f.proto.id, s.wire)});\n`);
        out.push(`    ${writeCall(s, v, label)};\n  }\n`);
      }
    }
    out.push(`}\n\n`);

    // decoder
    out.push(`/** Decodes the message that fills the reader up to r.len (callers bound it with enterMessage). */\n`);
    out.push(`export function decode${name}(r: Reader): ${name} {\n`);
    for (const f of fields) {
      let init: string;
      let type: string;
      if (f.repeated) {
        type = `${f.scalar?.ts ?? (f.message as string)}[]`;
        init = "[]";
      } else if (f.message !== undefined) {
        type = `${f.message} | undefined`;
        init = "undefined";
      } else {
        const s = f.scalar as Scalar;
        type = s.ts;
        init = s.zero;
      }
      out.push(`  ${f.repeated ? "const" : "let"} ${f.prop}: ${type} = ${init};\n`);
    }
    out.push(`  while (r.pos < r.len) {\n    const tag = r.tag();\n    switch (tag >>> 3) {\n`);
    for (const f of fields) {
      const label = JSON.stringify(f.label);
      out.push(`      case ${f.proto.id}: {\n`);
      if (f.message !== undefined) {
        out.push(`        if ((tag & 7) !== ${WIRE_LEN}) throw ${use("wrongWireType")}(${label}, tag, ${WIRE_LEN});\n`);
        out.push(`        const outer = ${use("enterMessage")}(r, ${label});\n`);
        const decoded = `decode${f.message}(r)`;
        out.push(f.repeated ? `        ${f.prop}.push(${decoded});\n` : `        ${f.prop} = ${decoded};\n`);
        out.push(`        ${use("leaveMessage")}(r, outer);\n`);
      } else {
        const s = f.scalar as Scalar;
        const read = readCall(s, label);
        if (f.repeated && s.packable) {
          out.push(`        if ((tag & 7) === ${WIRE_LEN}) {\n`);
          out.push(`          const outer = ${use("enterMessage")}(r, ${label});\n`);
          out.push(`          while (r.pos < r.len) ${f.prop}.push(${read});\n`);
          out.push(`          ${use("leaveMessage")}(r, outer);\n`);
          out.push(`        } else if ((tag & 7) === ${s.wire}) {\n          ${f.prop}.push(${read});\n`);
          out.push(`        } else {\n          throw ${use("wrongWireType")}(${label}, tag, ${WIRE_LEN});\n        }\n`);
        } else {
          out.push(`        if ((tag & 7) !== ${s.wire}) throw ${use("wrongWireType")}(${label}, tag, ${s.wire});\n`);
          out.push(f.repeated ? `        ${f.prop}.push(${read});\n` : `        ${f.prop} = ${read};\n`);
        }
      }
      out.push(`        break;\n      }\n`);
    }
    out.push(`      default:\n        ${use("skipField")}(r, tag);\n    }\n  }\n`);
    const props = fields.map((f) => (f.filled ? `${f.prop}: ${f.prop} ?? default${f.message as string}()` : f.prop));
    out.push(`  return { ${props.join(", ")} };\n}\n\n`);
  }

  // defaults for filled fields
  const filledTypes = new Set<string>();
  for (const t of types) {
    if (isEnvelope(t)) continue;
    for (const f of t.fieldsArray) {
      const m = fieldModel(t, f);
      if (m.filled) filledTypes.add(m.message as string);
    }
  }
  for (const name of filledTypes) {
    const t = types.find((x) => tsName(x.name) === name) as protobuf.Type;
    const fields = t.fieldsArray.map((f) => fieldModel(t, f));
    if (fields.some((f) => f.message !== undefined && !f.repeated)) {
      throw new Unsupported(`${name}: a filled message may hold only scalars and repeated fields.`);
    }
    out.push(`/** ${name} with every field at its default, the decoded value when the field is absent. */\n`);
    out.push(`export function default${name}(): ${name} {\n  return { `);
    out.push(fields.map((f) => `${f.prop}: ${f.repeated ? "[]" : (f.scalar as Scalar).zero}`).join(", "));
    out.push(` };\n}\n\n`);
  }

  // ---------------------------------------------------------------- envelopes
  for (const t of types) {
    if (!isEnvelope(t)) continue;
    const name = tsName(t.name);
    const members = t.fieldsArray.map((f) => {
      const resolved = f.resolvedType;
      if (!(resolved instanceof protobuf.Type)) throw new Unsupported(`${t.name}.${f.name}: envelope members must be messages.`);
      return { id: f.id, kind: camel(f.name), message: tsName(resolved.name), label: `${t.name}.${f.name}`, comment: f.comment };
    });
    out.push(docComment(`${t.comment ?? name}\nThe decoded body, tagged by kind.`, ""));
    out.push(`export type ${name}Body =\n`);
    out.push(members.map((m) => `  | { kind: "${m.kind}"; ${m.kind}: ${m.message} }`).join("\n"));
    out.push(`;\n\n`);
    out.push(`/** A ${name} for encoding: the body's fields are all optional. */\n`);
    out.push(`export type ${name}Init =\n`);
    out.push(members.map((m) => `  | { kind: "${m.kind}"; ${m.kind}: ${m.message}Init }`).join("\n"));
    out.push(`;\n\n`);
    out.push(`/** A ${name} whose body is a field this version does not know (a newer protocol). */\n`);
    out.push(`export interface Unknown${name}Body {\n  kind: "unknown";\n  field: number;\n}\n\n`);
    out.push(`/** ${name} field numbers by kind. */\n`);
    out.push(`export const ${name}Fields = {\n`);
    for (const m of members) out.push(`  ${m.kind}: ${m.id},\n`);
    out.push(`} as const;\n\n`);

    out.push(`export function encode${name}Body(f: ${name}Init, w: Writer): void {\n  switch (f.kind) {\n`);
    for (const m of members) {
      out.push(`    case "${m.kind}":\n      w.uint32(${tag(m.id, WIRE_LEN)}).fork();\n`);
      out.push(`      encode${m.message}(f.${m.kind}, w);\n      w.ldelim();\n      return;\n`);
    }
    out.push(`  }\n`);
    out.push(`  throw new ${use("WireError")}(\`${name} kind \${String((f as { kind: unknown }).kind)} is not one this version knows.\`);\n}\n\n`);

    out.push(`/**\n * Decodes a ${name} that fills the reader. undefined when it holds no body at all;\n`);
    out.push(` * a body field this version does not know yields kind "unknown" (unless a known body is present too).\n */\n`);
    out.push(`export function decode${name}Body(r: Reader): ${name}Body | Unknown${name}Body | undefined {\n`);
    out.push(`  let body: ${name}Body | undefined;\n  let unknownField = 0;\n`);
    out.push(`  while (r.pos < r.len) {\n    const tag = r.tag();\n    switch (tag >>> 3) {\n`);
    for (const m of members) {
      const label = JSON.stringify(m.label);
      out.push(`      case ${m.id}: {\n`);
      out.push(`        if ((tag & 7) !== ${WIRE_LEN}) throw ${use("wrongWireType")}(${label}, tag, ${WIRE_LEN});\n`);
      out.push(`        const outer = ${use("enterMessage")}(r, ${label});\n`);
      out.push(`        body = { kind: "${m.kind}", ${m.kind}: decode${m.message}(r) };\n`);
      out.push(`        ${use("leaveMessage")}(r, outer);\n        break;\n      }\n`);
    }
    out.push(`      default:\n        unknownField = tag >>> 3;\n        ${use("skipField")}(r, tag);\n    }\n  }\n`);
    out.push(`  if (body !== undefined) return body;\n`);
    out.push(`  return unknownField !== 0 ? { kind: "unknown", field: unknownField } : undefined;\n}\n\n`);
  }

  // ---------------------------------------------------------------- header
  const scalarsImports = [...used].filter((n) => n !== "WireError").sort();
  const header: string[] = [
    `// generated by scripts/gen-wire.ts from ${protoPath}; do not edit.\n`,
    `// Regenerate with \`npx node scripts/gen-wire.ts\` after changing the schema.\n`,
    `// Only src/wire imports this file; the rest of the project uses src/wire/index.ts.\n`,
    `import type { Reader, Writer } from "protobufjs/minimal.js";\n`,
  ];
  if (used.has("WireError")) header.push(`import { WireError } from "../errors.ts";\n`);
  header.push(`import {\n${scalarsImports.map((n) => `  ${n},\n`).join("")}} from "../scalars.ts";\n\n`);
  return (header.join("") + out.join("")).replace(/\n+$/, "\n");
}

function repoPath(relative: string): string {
  return fileURLToPath(new URL(`../${relative}`, import.meta.url));
}

if (import.meta.main) {
  const source = readFileSync(repoPath(PROTO_FILE), "utf8");
  const generated = generateWire(source, PROTO_FILE);
  if (process.argv.includes("--check")) {
    const current = readFileSync(repoPath(OUTPUT_FILE), "utf8");
    if (current !== generated) {
      process.stderr.write(`${OUTPUT_FILE} is out of date; run npx node scripts/gen-wire.ts\n`);
      process.exitCode = 1;
    }
  } else {
    writeFileSync(repoPath(OUTPUT_FILE), generated);
    process.stdout.write(`wrote ${OUTPUT_FILE}\n`);
  }
}
