#!/usr/bin/env node
// dtlspush command-line entry: runs the compiled CLI in dist/ (built from src/ by `npm run build`).
import { existsSync } from "node:fs";

const main = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(main)) {
  process.stderr.write("dtlspush: error: not built yet; run 'npm run build' (or 'npm ci') in the dtlspush checkout first\n");
  process.exit(1);
}
const { runCli } = await import(main.href);
await runCli(process.argv.slice(2));
