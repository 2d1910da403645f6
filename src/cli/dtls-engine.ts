/**
 * Loads the DTLS engine on first use, so help and argument errors work (and
 * stay fast) without it, and maps its suite-list errors to usage errors.
 */
import type * as Dtls from "../dtls/index.ts";
import { CliError, UsageError, errorCode } from "./errors.ts";

export type DtlsModule = typeof Dtls;

export async function loadDtls(): Promise<DtlsModule> {
  try {
    return await import("../dtls/index.ts");
  } catch (e) {
    if (errorCode(e) === "ERR_MODULE_NOT_FOUND") {
      throw new CliError("the DTLS engine is missing from this build; run 'npm run build'");
    }
    throw e;
  }
}

/** `--suites NAME,NAME` through the engine's parser; a bad name is a usage error. */
export function resolveSuites(dtls: DtlsModule, csv: string | undefined, label = "--suites"): Dtls.SuiteName[] | undefined {
  if (csv === undefined) return undefined;
  try {
    return dtls.parseSuiteList(csv);
  } catch (e) {
    if (errorCode(e) === "bad_suite") {
      const message = e instanceof Error ? e.message : String(e);
      throw new UsageError(`${label}: ${message}`);
    }
    throw e;
  }
}
