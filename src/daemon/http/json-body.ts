import type { FastifyInstance } from "fastify";
import { HttpError } from "./errors.ts";

/** fatal: a byte sequence that is not UTF-8 throws instead of becoming U+FFFD. */
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/**
 * The JSON body parser: fastify's own (prototype poisoning refused), fed only
 * bodies that are valid UTF-8 (RFC 8259 8.1). Without the check a payload with
 * invalid bytes would be published with each replaced by U+FFFD, silently.
 */
export function installJsonParser(app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "buffer" }, (request, body, done) => {
    let text: string;
    try {
      text = strictUtf8.decode(body as Buffer);
    } catch {
      done(
        new HttpError(
          "bad_request",
          "The request body is not valid UTF-8; JSON text (and a text payload) must be UTF-8: send binary payloads as payloadBase64.",
        ),
        undefined,
      );
      return;
    }
    void parseJson(request, text, done); // fastify's default parser answers through done; its type also allows the promise form
  });
}
