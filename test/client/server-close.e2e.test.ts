/**
 * An in-process PushServer closing (the drain a daemon runs on SIGTERM) tells
 * its devices: each gets Bye SHUTTING_DOWN, so the SDK reports `disconnected`
 * with the server's reason at once, not after its liveness probes.
 */
import { afterEach, describe, expect, it } from "vitest";
import { connect, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { openMemoryStore } from "../../src/store/index.ts";
import { until } from "./daemon-process.ts";

const KEY = Buffer.from("000102030405060708090a0b0c0d0e0f", "hex");
const clients: DtlspushClient[] = [];
const servers: PushServer[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const s of servers.splice(0)) await s.close();
});

async function setUp(ackMode: "auto" | "manual") {
  const server = await startPushServer({ store: openMemoryStore(), dtls: { host: "127.0.0.1", port: 0 } });
  servers.push(server);
  await server.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
  const client = await connect({
    host: "127.0.0.1",
    port: server.address().port,
    psk: { identity: "d1", key: KEY },
    ackMode,
    reconnect: false,
    // probes far beyond the test: only the server's Bye can end the session in time
    liveness: { idleMs: 600_000 },
  });
  clients.push(client);
  const got: ReceivedMessage[] = [];
  const ended: { at: number; error: Error | undefined }[] = [];
  client.on("message", (m) => got.push(m));
  client.on("disconnected", (e) => ended.push({ at: Date.now(), error: e }));
  client.on("error", () => undefined);
  return { server, client, got, ended };
}

describe("PushServer.close()", () => {
  for (const ackMode of ["auto", "manual"] as const) {
    it(`says Bye SHUTTING_DOWN to an online device (${ackMode === "manual" ? "holding an unacked push" : "idle"}) that arrives within a second`, async () => {
      const { server, got, ended } = await setUp(ackMode);
      await server.publish({ target: { device: "d1" }, payload: new TextEncoder().encode("held"), publisher: "test" });
      await until(
        () => got.length === 1,
        5000,
        () => "the push",
      );
      if (ackMode === "auto")
        await until(
          () => server.engine.deviceStatus("d1").ackedSeq === 1,
          5000,
          () => "the ack",
        );
      else expect(server.engine.deviceStatus("d1").ackedSeq).toBe(0);
      const closedAt = Date.now();
      await server.close();
      servers.splice(0);
      await until(
        () => ended.length > 0,
        1000,
        () => "disconnected",
      );
      expect((ended[0]?.at ?? Infinity) - closedAt).toBeLessThan(1000);
      expect((ended[0]?.error as { code?: string } | undefined)?.code).toBe("shutting_down");
      expect(ended[0]?.error?.message).toContain("the server is shutting down");
    });
  }
});
