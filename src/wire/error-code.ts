import { ErrorCode } from "./generated/dtlspush/v1/frame.ts";

const NAMES: ReadonlyMap<number, string> = new Map(Object.entries(ErrorCode).map(([name, value]) => [value, name]));

/** The ErrorCode name of a value ("QUEUE_FULL"), or "UNKNOWN_<n>" for a value this version does not know. */
export function errorCodeName(code: number): string {
  return NAMES.get(code) ?? `UNKNOWN_${code}`;
}
