/**
 * Generates src/wire/generated/ from proto/ with ts-proto.
 *
 *   npm run gen:wire                         (rewrites src/wire/generated/)
 *   node scripts/gen-wire.ts --out <dir>     (writes into <dir> instead; the freshness test uses it)
 *
 * The schema is compiled by buf (the @bufbuild/buf devDependency ships its
 * binary; no protoc install) and handed to ts-proto's protoc plugin
 * (protoc-gen-ts_proto, the ts-proto devDependency). The generated code runs on
 * @bufbuild/protobuf's wire runtime (BinaryReader/BinaryWriter). Both tools
 * are pinned by package-lock.json, so the output is the same on every machine.
 *
 * The generated code is plain protobuf: the field checks the protocol needs
 * (exact uint64 numbers, ranges, strict UTF-8, bounded nested messages, wire
 * types, ...) are in src/wire/checks.ts, which frame-codec.ts runs around it.
 */
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const PROTO_DIR = "proto";
export const OUTPUT_DIR = "src/wire/generated";

/** ts-proto options (see its README); each one chosen for this repository. */
export const TS_PROTO_OPTIONS: readonly string[] = [
  "esModuleInterop=true", // ESM + esModuleInterop-style default imports
  "importSuffix=.ts", // relative imports (a second .proto file) end in .ts, like the rest of src/ (tsc rewrites them to .js)
  "forceLong=number", // uint64 as number; the generated decoder throws above 2^53-1 (checks.ts refuses it first, with the field named)
  "oneof=unions", // Frame.body as a tagged union { $case: "push"; push: Push }
  "enumsAsLiterals=true", // ErrorCode as a const object: no TypeScript enum (the build allows only erasable syntax)
  "unrecognizedEnum=false", // no invented UNRECOGNIZED member: proto3 enums are open, unknown values are kept as numbers
  "outputJsonMethods=false", // the protocol is binary only
  "outputServices=false", // the schema declares no services
  "useExactTypes=false", // fromPartial takes our Init types without Exact<> gymnastics
  "outputSchema=const", // the file descriptor as a const: checks.ts builds its field tables from it
];

const repo = (relative: string): string => fileURLToPath(new URL(`../${relative}`, import.meta.url));

/** Runs buf + ts-proto over proto/ into `outDir` (created; must not hold other files). */
export function generateWire(outDir: string): void {
  const bin = (name: string): string => repo(`node_modules/.bin/${name}`);
  const template = {
    version: "v2",
    plugins: [{ local: bin("protoc-gen-ts_proto"), out: outDir, opt: [...TS_PROTO_OPTIONS] }],
  };
  mkdirSync(outDir, { recursive: true });
  const r = spawnSync(bin("buf"), ["generate", PROTO_DIR, "--template", JSON.stringify(template)], {
    cwd: repo("."),
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 120_000,
  });
  if (r.error !== undefined) throw new Error(`buf generate could not run: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`buf generate exited with ${r.status}: ${(r.stderr ?? "").trim()}`);
}

/** Every file under dir, as sorted paths relative to it. */
export function listFiles(dir: string, prefix = ""): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix === "" ? e.name : `${prefix}/${e.name}`;
    if (e.isDirectory()) out.push(...listFiles(join(dir, e.name), rel));
    else out.push(rel);
  }
  return out.sort();
}

if (import.meta.main) {
  const at = process.argv.indexOf("--out");
  if (at !== -1) {
    const dir = process.argv[at + 1];
    if (dir === undefined) throw new Error("--out needs a directory");
    generateWire(dir);
    process.stdout.write(`wrote ${listFiles(dir).join(", ")} into ${dir}\n`);
  } else {
    // Generate aside, then swap, so that files of a removed .proto do not linger.
    const staging = mkdtempSync(join(tmpdir(), "gen-wire-"));
    try {
      generateWire(staging);
      rmSync(repo(OUTPUT_DIR), { recursive: true, force: true });
      mkdirSync(repo(OUTPUT_DIR), { recursive: true });
      cpSync(staging, repo(OUTPUT_DIR), { recursive: true });
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
    process.stdout.write(
      `wrote ${listFiles(repo(OUTPUT_DIR))
        .map((f) => `${OUTPUT_DIR}/${f}`)
        .join(", ")}\n`,
    );
  }
}
