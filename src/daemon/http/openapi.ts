import type { FastifyInstance } from "fastify";
import swagger from "@fastify/swagger";

/** The API's own version (the document's info.version), not the package's. */
export const API_VERSION = "1.0.0";

/**
 * Registers @fastify/swagger (dynamic mode): the OpenAPI 3.1 document is built
 * from the route schemas; shared schemas keep their $id as their name under
 * components.schemas. Register before any route.
 */
export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "dtlspush HTTP API",
        version: API_VERSION,
        description:
          "Publish messages to devices and topics, follow their delivery, manage the device registry. " +
          'Errors are {"error": {"code", "message"}}; see docs/http-api.md.',
        license: { name: "Apache-2.0", identifier: "Apache-2.0" },
      },
      tags: [
        { name: "messages", description: "Publishing and delivery status (scope publish)." },
        { name: "events", description: "Receipt and presence stream (scope publish)." },
        { name: "devices", description: "The device registry (scope admin)." },
        { name: "operations", description: "Health, keys, metrics, this document." },
      ],
      components: {
        securitySchemes: {
          bearerAuth: {
            type: "http",
            scheme: "bearer",
            bearerFormat: "JWT",
            description: "A publisher token (a JWT signed by the daemon's publisher keys) with scope publish, or admin (which implies publish).",
          },
        },
      },
    },
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json["$id"] === "string" ? json["$id"] : `def-${i}`),
    },
  });
}
