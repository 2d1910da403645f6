import type { FastifyInstance } from "fastify";
import type { DeviceInput } from "../../auth/index.ts";
import type { DeviceRecord } from "../../store/types.ts";
import { fromHex } from "../../util/bytes.ts";
import type { RouteContext } from "./context.ts";
import { HttpError } from "./errors.ts";
import { AUTH_ERRORS, BEARER_SECURITY, deviceIdParams, errorResponses, putDeviceBody } from "./schemas.ts";
import { deviceView, type DeviceView } from "./views.ts";

interface PutDeviceBody {
  psk?: { identity?: string; keyHex: string };
  certificate?: { identity: string };
  topics?: string[];
  revoked?: boolean;
}

const NO_DEVICE = { 404: "No such device (device_unknown)." };

/** GET /v1/devices, GET|PUT|DELETE /v1/devices/{id} (scope admin). */
export function registerDeviceRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { registry, engine } = ctx.server;
  const view = (d: DeviceRecord): DeviceView => deviceView(d, engine.deviceStatus(d.id));
  const existing = (id: string): DeviceRecord => {
    const d = registry.get(id);
    if (d === undefined) throw new HttpError("device_unknown", `No device ${JSON.stringify(id)} is registered.`);
    return d;
  };

  app.get(
    "/v1/devices",
    {
      onRequest: ctx.guard.hook("admin"),
      schema: {
        summary: "All registered devices",
        tags: ["devices"],
        security: BEARER_SECURITY,
        response: {
          200: {
            description: "Devices ordered by id, with presence and queue depth.",
            type: "object",
            required: ["devices"],
            properties: { devices: { type: "array", items: { $ref: "Device#" } } },
          },
          ...errorResponses(AUTH_ERRORS),
        },
      },
    },
    async () => ({ devices: registry.list().map(view) }),
  );

  app.get(
    "/v1/devices/:id",
    {
      onRequest: ctx.guard.hook("admin"),
      schema: {
        summary: "One device",
        tags: ["devices"],
        security: BEARER_SECURITY,
        params: deviceIdParams,
        response: { 200: { description: "The device.", $ref: "Device#" }, ...errorResponses([...AUTH_ERRORS, 404], NO_DEVICE) },
      },
    },
    async (request) => view(existing((request.params as { id: string }).id)),
  );

  app.put(
    "/v1/devices/:id",
    {
      onRequest: ctx.guard.hook("admin"),
      schema: {
        summary: "Register a device or change one",
        description:
          "Creates the device (201) or updates it (200). Credentials and topics given replace the stored ones; omitted fields keep their value. Revoking closes the device's session.",
        tags: ["devices"],
        security: BEARER_SECURITY,
        params: deviceIdParams,
        body: putDeviceBody,
        response: {
          200: { description: "Updated.", $ref: "Device#" },
          201: { description: "Created.", $ref: "Device#" },
          ...errorResponses([400, ...AUTH_ERRORS, 413, 415], {
            400: "A field is invalid, a new device has no credentials, or a PSK or certificate identity belongs to another device (bad_request, bad_device, bad_topic).",
          }),
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      const body = request.body as PutDeviceBody;
      const current = registry.get(id);
      const defaultIdentity = current?.psk?.identity ?? id;
      const changes: Partial<Omit<DeviceInput, "id">> = {
        psk: body.psk === undefined ? undefined : { identity: body.psk.identity ?? defaultIdentity, key: fromHex(body.psk.keyHex) },
        certIdentity: body.certificate?.identity,
        topics: body.topics,
      };
      if (current === undefined) {
        let record = await registry.add({ id, ...changes });
        if (body.revoked === true) record = await registry.revoke(id);
        return reply.code(201).send(view(record));
      }
      const record = await registry.update(id, { ...changes, revoked: body.revoked });
      return reply.code(200).send(view(record));
    },
  );

  app.delete(
    "/v1/devices/:id",
    {
      onRequest: ctx.guard.hook("admin"),
      schema: {
        summary: "Revoke and remove a device",
        description: "Its live session is closed, its queued messages are dropped (receipts rejected/device_removed).",
        tags: ["devices"],
        security: BEARER_SECURITY,
        params: deviceIdParams,
        response: { 204: { description: "Removed.", type: "null" }, ...errorResponses([...AUTH_ERRORS, 404], NO_DEVICE) },
      },
    },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      existing(id);
      // revoking first ends the session (Bye device_revoked) before the queue goes
      await registry.revoke(id);
      await registry.remove(id);
      return reply.code(204).send();
    },
  );
}
