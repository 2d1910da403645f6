/**
 * The crypto layer rule beyond imports (dependency-cruiser checks those): no
 * file of src/ outside src/crypto reaches WebCrypto or node:crypto some other
 * way (the `crypto` global, `globalThis.crypto`, `.subtle`, node's
 * `webcrypto`, a dynamic import or require of node:crypto).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..", "..");
const SRC = join(ROOT, "src");

const FORBIDDEN: readonly { readonly what: string; readonly re: RegExp }[] = [
  { what: "globalThis.crypto", re: /\bglobalThis\s*(?:\.\s*crypto\b|\[\s*["'`]crypto["'`]\s*\])/ },
  { what: "the crypto global", re: /(?<![\w$.:'"`/-])crypto\s*(?:\.|\[|\?\.)|[(,]\s*crypto\s*[),]/ },
  { what: "crypto.subtle", re: /\.\s*subtle\b/ },
  { what: "webcrypto", re: /\bwebcrypto\b/ },
  { what: "node:crypto", re: /(?:import|require)\s*\(\s*["'`](?:node:)?crypto["'`]\s*\)|from\s*["'](?:node:)?crypto["']/ },
];

/** The code of a TypeScript file with its comments blanked (so prose may name what code may not use); lines stay where they were. */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, " ")).replace(/(^|[^:"'`\\])\/\/.*$/gm, "$1");
}

/** The forbidden uses in one file's text, as "what (line N)". */
export function violations(text: string): string[] {
  const out: string[] = [];
  const lines = code(text).split("\n");
  for (const [i, line] of lines.entries()) {
    for (const { what, re } of FORBIDDEN) if (re.test(line)) out.push(`${what} (line ${i + 1})`);
  }
  return out;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (/\.(?:ts|mts|js|mjs)$/.test(entry.name)) out.push(path);
  }
  return out;
}

describe("crypto layering", () => {
  it("finds each forbidden form and leaves prose and other names alone", () => {
    expect(violations("const b = globalThis.crypto.getRandomValues(new Uint8Array(4));")).toContain("globalThis.crypto (line 1)");
    expect(violations('const c = globalThis["crypto"];')).toContain("globalThis.crypto (line 1)");
    expect(violations("const id = crypto.randomUUID();")).toContain("the crypto global (line 1)");
    expect(violations("x509.cryptoProvider.set(crypto);")).toContain("the crypto global (line 1)");
    expect(violations("x509.cryptoProvider.set(webCrypto);")).toEqual([]);
    expect(violations("await crypto.subtle.digest('SHA-256', d);")).toContain("crypto.subtle (line 1)");
    expect(violations("const s = c.subtle;")).toContain("crypto.subtle (line 1)");
    expect(violations('import { webcrypto } from "node:crypto";')).toEqual(["webcrypto (line 1)", "node:crypto (line 1)"]);
    expect(violations('const m = await import("node:crypto");')).toContain("node:crypto (line 1)");
    expect(violations('const m = require("crypto");')).toContain("node:crypto (line 1)");
    expect(violations("// uses node:crypto KeyObjects, not crypto.subtle\n/* globalThis.crypto */ const a = 1;")).toEqual([]);
    expect(violations("/**\n * prose\n */\nconst id = crypto.randomUUID();")).toEqual(["the crypto global (line 4)"]);
    expect(violations('import { hash } from "../crypto/index.ts";\nconst cryptoProvider = defaultCrypto;')).toEqual([]);
  });

  it("no file of src/ outside src/crypto uses node:crypto or WebCrypto", () => {
    const found: string[] = [];
    for (const file of sourceFiles(SRC)) {
      const rel = relative(ROOT, file).split("\\").join("/");
      if (rel.startsWith("src/crypto/")) continue;
      for (const v of violations(readFileSync(file, "utf8"))) found.push(`${rel}: ${v}`);
    }
    expect(found).toEqual([]);
  });
});
