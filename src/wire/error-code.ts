import { ErrorCodeNames } from "./generated/frame.ts";

/** The ErrorCode name of a value ("QUEUE_FULL"), or "UNKNOWN_<n>" for a value this version does not know. */
export function errorCodeName(code: number): string {
  return ErrorCodeNames[code] ?? `UNKNOWN_${code}`;
}
