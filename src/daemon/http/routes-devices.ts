import type { FastifyInstance } from "fastify";
import type { DeviceInput } from "../../auth/index.ts";
import type { DeviceRecord } from "../../store/types.ts";
import type { ClusterStore } from "../../store/cluster-types.ts";
import type { DeliveryEngine } from "../../messaging/delivery-engine.ts";
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
/** Devices per holders/queueDepths call of a device listing (one script each on Redis). */
const STATUS_CHUNK = 1000;

/**
 * The views of `records`. On one node the engine knows every device. On a
 * shared store it knows only the devices whose sessions this node holds:
 * for the others the store says which live node holds them (`holders`, the
 * node is online there) and how many deliveries are stored for them
 * (`queueDepths`). `lastSeen` is this node's own sight of the device.
 */
export async function deviceViews(
  engine: DeliveryEngine,
  cluster: ClusterStore | undefined,
  records: readonly DeviceRecord[],
): Promise<DeviceView[]> {
  const local = records.map((d) => engine.deviceStatus(d.id));
  if (cluster === undefined) return records.map((d, i) => deviceView(d, local[i] as (typeof local)[number]));
  const elsewhere = records.filter((_, i) => !(local[i] as (typeof local)[number]).online).map((d) => d.id);
  const holders = new Map<string, string>();
  const depths = new Map<string, number>();
  for (let i = 0; i < elsewhere.length; i += STATUS_CHUNK) {
    const chunk = elsewhere.slice(i, i + STATUS_CHUNK);
    const [h, q] = await Promise.all([cluster.holders(chunk), cluster.queueDepths(chunk)]);
    for (const [k, v] of h) holders.set(k, v);
    for (const [k, v] of q) depths.set(k, v);
  }
  return records.map((d, i) => {
    const status = local[i] as (typeof local)[number];
    if (status.online) return deviceView(d, status, cluster.instance);
    const holder = holders.get(d.id) ?? "";
    return deviceView(d, { online: holder !== "", lastSeen: status.lastSeen, queueDepth: depths.get(d.id) ?? 0 }, holder === "" ? null : holder);
  });
}

/** GET /v1/devices, GET|PUT|DELETE /v1/devices/{id} (scope admin). */
export function registerDeviceRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { registry, engine } = ctx.server;
  const view = async (d: DeviceRecord): Promise<DeviceView> => (await deviceViews(engine, ctx.cluster, [d]))[0] as DeviceView;
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
            description: "Devices ordered by id, with presence and queue depth (on a cluster: as the store says for devices held by other nodes).",
            type: "object",
            required: ["devices"],
            properties: { devices: { type: "array", items: { $ref: "Device#" } } },
          },
          ...errorResponses(AUTH_ERRORS),
        },
      },
    },
    async () => ({ devices: await deviceViews(engine, ctx.cluster, registry.list()) }),
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
        return reply.code(201).send(await view(record));
      }
      const record = await registry.update(id, { ...changes, revoked: body.revoked });
      return reply.code(200).send(await view(record));
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
