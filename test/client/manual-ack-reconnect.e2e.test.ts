/**
 * Exactly once across a reconnect in manual ack mode: the application holds a
 * message (not yet acked) while its session ends and a new one starts. The
 * server never got the ack, so it offers the same seq again on the new
 * session; the SDK must not hand it over a second time, and the application's
 * late ack must count (hwm persisted, the server sees the ack, the next
 * message follows). Real push server and SDK over loopback UDP; the server is
 * closed and started again on the same port and store.
 */
import { afterEach, describe, expect, it } from "vitest";
import { connect, memoryStateStore, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { openMemoryStore, type Store } from "../../src/store/index.ts";

const KEY = new TextEncoder().encode("0123456789abcdef");
const clients: DtlspushClient[] = [];
const servers: PushServer[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const s of servers.splice(0)) await s.close();
});

async function start(store: Store, port = 0): Promise<PushServer> {
  const s = await startPushServer({ store, dtls: { host: "127.0.0.1", port } });
  servers.push(s);
  if (port === 0) await s.registry.add({ id: "d1", psk: { identity: "d1", key: KEY } });
  return s;
}

async function until(cond: () => boolean, what: () => string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("manual ack across a reconnect", () => {
  for (const when of ["after", "before"] as const) {
    it(`a message held by the application is handed over once; its ack ${when === "after" ? "on the new session" : "between the sessions"} counts`, async () => {
      const store = openMemoryStore();
      const first = await start(store);
      const port = first.address().port;
      const state = memoryStateStore();
      const client = await connect({
        host: "127.0.0.1",
        port,
        psk: { identity: "d1", key: KEY },
        stateStore: state,
        ackMode: "manual",
        reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
        // the closed server's Bye does not always arrive: quick probes notice it is gone
        liveness: { idleMs: 200, probes: 1, minRtoMs: 100, maxRtoMs: 200 },
      });
      clients.push(client);
      client.on("error", () => undefined);
      const got: ReceivedMessage[] = [];
      let welcomes = 0;
      let disconnects = 0;
      client.on("connected", () => welcomes++);
      client.on("disconnected", () => disconnects++);
      client.on("message", (m) => {
        got.push(m);
        if (m.seq !== 1) m.ack();
      });
      await first.publish({ target: { device: "d1" }, payload: new TextEncoder().encode("one"), publisher: "t" });
      await until(
        () => got.length === 1,
        () => "message 1",
      );

      // the session ends with message 1 unacked (the server says Bye); a new server takes over the port and store
      servers.splice(servers.indexOf(first), 1);
      await first.close();
      if (when === "before") {
        await until(
          () => disconnects === 1,
          () => "the end of the first session",
        );
        got[0]?.ack(); // its session is gone, the next one not yet there
        await until(
          () => state.state?.hwm === 1,
          () => "hwm 1 persisted",
        );
      }
      const second = await start(store, port);
      await until(
        () => welcomes === 1,
        () => "the reconnect",
      );
      // the new server offers seq 1 again (never acked); let it arrive before the late ack
      await until(
        () => second.engine.deviceStatus("d1").lastSeq >= 1,
        () => "seq 1 sent again",
      );
      if (when === "after") got[0]?.ack();
      await until(
        () => second.engine.deviceStatus("d1").ackedSeq === 1,
        () => `the ack of seq 1 (acked ${second.engine.deviceStatus("d1").ackedSeq})`,
      );
      expect(state.state?.hwm).toBe(1);

      await second.publish({ target: { device: "d1" }, payload: new TextEncoder().encode("two"), publisher: "t" });
      await until(
        () => second.engine.deviceStatus("d1").ackedSeq === 2,
        () => `message 2 (got ${got.map((m) => m.seq).join(",")})`,
      );
      expect(got.map((m) => [m.seq, m.text()])).toEqual([
        [1, "one"],
        [2, "two"],
      ]);
      expect(state.state?.hwm).toBe(2);
    });
  }
});
