import { describe, expect, it } from "vitest";
import { SUITE_NAMES, suiteByName, usesPsk } from "../../src/dtls/suites.ts";
import { Pipe, suites } from "./harness.ts";

describe("PSK handshake over an in-memory pipe", () => {
  for (const name of SUITE_NAMES.filter((n) => usesPsk(suiteByName(n)))) {
    it(`completes with ${name} and carries data both ways`, () => {
      const p = new Pipe();
      p.startClient({ suites: suites(name) });
      expect(p.runUntilEstablished()).toBe(true);
      const group = name.startsWith("TLS_ECDHE") ? "x25519" : undefined;
      expect(p.clientInfo).toEqual({
        identity: "device-1",
        suite: name,
        extendedMasterSecret: true,
        resumed: false,
        group,
        peerCertificate: undefined,
      });
      expect(p.serverSession?.info.group).toBe(group);
      expect(p.serverSession?.info.suite).toBe(name);
      p.client.send(new TextEncoder().encode("ping"));
      p.run(1000);
      expect(Buffer.from(p.serverData[0] ?? []).toString()).toBe("ping");
      p.serverSession?.connection.send(new TextEncoder().encode("pong"));
      p.run(1000);
      expect(Buffer.from(p.clientData[0] ?? []).toString()).toBe("pong");
      p.client.close();
      p.run(1000);
      expect(p.clientClosed).toBeUndefined();
      expect(p.serverClosed).toBeUndefined();
      expect(p.server.size).toBe(0);
    });
  }
});
