/** dtlspush.example.toml and docs/configuration.md stay in step with the schema. */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "smol-toml";
import { configSchema, loadConfig, SETTINGS } from "../../../src/daemon/config/index.ts";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const EXAMPLE = join(ROOT, "dtlspush.example.toml");

describe("dtlspush.example.toml", () => {
  it("parses and equals the defaults", async () => {
    const fromExample = await loadConfig({ file: EXAMPLE, env: {}, cwd: ROOT });
    const defaults = await loadConfig({ env: {}, cwd: ROOT });
    const { file, sources, ...settings } = fromExample;
    const { file: _noFile, sources: _defaultSources, ...defaultSettings } = defaults;
    expect(file).toBe(EXAMPLE);
    expect(settings).toEqual(defaultSettings);
    // ... and lists every setting.
    for (const s of SETTINGS) expect(sources[s.name], s.name).toBe(`in ${EXAMPLE}`);
  });

  it("holds exactly the schema's defaults", () => {
    expect(parse(readFileSync(EXAMPLE, "utf8"))).toEqual(configSchema.parse({}));
  });
});

describe("docs/configuration.md", () => {
  const doc = readFileSync(join(ROOT, "docs", "configuration.md"), "utf8");

  it("documents every setting with its environment variable and default", () => {
    for (const s of SETTINGS) {
      const row = doc.split("\n").find((line) => line.startsWith(`| \`${s.key}\` |`) && line.includes(`\`${s.env}\``));
      expect(row, s.name).toBeDefined();
      expect(row, s.name).toContain(`\`${JSON.stringify(s.default)}\``);
      if (s.min !== undefined) expect(row, s.name).toContain(`${s.min}–${s.max}`);
    }
  });
});
