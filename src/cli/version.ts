/** The package version, read from package.json (two levels up from src/cli and dist/cli). */
import { readFileSync } from "node:fs";

export function packageVersion(): string {
  try {
    const pkg: unknown = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
    if (typeof pkg === "object" && pkg !== null && "version" in pkg && typeof pkg.version === "string") return pkg.version;
  } catch {
    // Fall through: a missing or broken package.json only loses the version.
  }
  return "unknown";
}
