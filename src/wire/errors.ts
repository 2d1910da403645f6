import { DtlspushError } from "../util/errors.ts";

/**
 * A frame that cannot be encoded or decoded: malformed or truncated bytes, a
 * Frame without a body, a uint64 this implementation cannot represent exactly,
 * or a field value outside its protobuf type. Always code "bad_frame" (the
 * protocol's ErrorCode.BAD_FRAME).
 */
export class WireError extends DtlspushError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("bad_frame", message, options);
    this.name = "WireError";
  }
}
