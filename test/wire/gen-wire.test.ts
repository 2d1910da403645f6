import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generateWire, listFiles, OUTPUT_DIR } from "../../scripts/gen-wire.ts";

const repo = (path: string): string => new URL(`../../${path}`, import.meta.url).pathname;

describe("scripts/gen-wire.ts (buf + ts-proto)", () => {
  const fresh = mkdtempSync(join(tmpdir(), "gen-wire-test-"));
  afterAll(() => rmSync(fresh, { recursive: true, force: true }));

  it("generated the committed src/wire/generated/ from the current proto/, byte for byte", () => {
    generateWire(fresh);
    const files = listFiles(fresh);
    expect(files.length).toBeGreaterThan(0);
    const stale = "src/wire/generated/ is out of date: run npm run gen:wire";
    expect(listFiles(repo(OUTPUT_DIR)), stale).toEqual(files);
    for (const f of files) {
      const committed = readFileSync(repo(`${OUTPUT_DIR}/${f}`));
      const generated = readFileSync(join(fresh, f));
      expect(committed.equals(generated), `${stale} (${f} differs)`).toBe(true);
    }
  }, 60_000);
});
