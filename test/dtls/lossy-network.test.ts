import { describe, expect, it } from "vitest";
import { SUITE_NAMES, suiteByName, usesPsk } from "../../src/dtls/suites.ts";
import { Pipe, suites } from "./harness.ts";

/** A handshake then data both ways, under the given conditions; returns the pipe. */
function handshakeAndExchange(p: Pipe): void {
  expect(p.runUntilEstablished(600_000)).toBe(true);
  // Application data is not retransmitted by DTLS: resend until it gets through.
  for (let i = 0; i < 50 && p.serverData.length === 0; i++) {
    p.client.send(new TextEncoder().encode("up"));
    p.run(100);
  }
  for (let i = 0; i < 50 && p.clientData.length === 0; i++) {
    p.serverSession?.connection.send(new TextEncoder().encode("down"));
    p.run(100);
  }
  expect(Buffer.from(p.serverData[0] ?? []).toString()).toBe("up");
  expect(Buffer.from(p.clientData[0] ?? []).toString()).toBe("down");
}

describe("handshake under loss, reordering, duplication and a small MTU", () => {
  for (const loss of [0, 0.1, 0.3, 0.5]) {
    it(`completes with ${loss * 100}% loss (20 seeds)`, () => {
      let worst = 0;
      for (let seed = 1; seed <= 20; seed++) {
        // retransmission alone, without the server's handshake deadline (at 50% loss a handshake may take minutes)
        const p = new Pipe({ loss, seed }, { retransmit: { initialMs: 1000, maxMs: 60_000, maxRetransmits: 12 }, handshakeTimeoutMs: 0 });
        p.startClient({ retransmit: { initialMs: 1000, maxMs: 60_000, maxRetransmits: 12 } });
        handshakeAndExchange(p);
        worst = Math.max(worst, p.now);
      }
      expect(worst).toBeGreaterThan(0);
    });
  }

  it("completes with heavy reordering and duplication", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const p = new Pipe({ reorder: 0.5, duplicate: 0.3, jitterMs: 400, seed });
      p.startClient();
      handshakeAndExchange(p);
    }
  });

  it("fragments every flight to an MTU of 200 and still completes under loss and reordering", () => {
    for (let seed = 1; seed <= 10; seed++) {
      const p = new Pipe(
        { loss: 0.2, reorder: 0.3, duplicate: 0.1, seed },
        { mtu: 200, psk: { lookup: () => new Uint8Array(16), hint: "h".repeat(400) } },
      );
      let biggest = 0;
      const origEnqueue = p.enqueue.bind(p);
      p.enqueue = (to, d) => {
        biggest = Math.max(biggest, d.length);
        origEnqueue(to, d);
      };
      p.startClient({ mtu: 200, suites: suites("TLS_PSK_WITH_AES_128_GCM_SHA256") }, { identity: "x".repeat(300), key: new Uint8Array(16) });
      handshakeAndExchange(p);
      expect(biggest).toBeLessThanOrEqual(200);
    }
  });

  it("fails with a timeout, not a hang, when the server never answers", () => {
    const p = new Pipe({ loss: 1 });
    p.startClient();
    p.run(10 * 60_000);
    expect(p.clientClosed).toMatchObject({ code: "timeout" });
    // 1 s, doubling, 60 s cap, 6 retransmissions: 1+2+4+8+16+32+60 s
    expect(p.now).toBeLessThanOrEqual(123_000 + 1);
  });

  it("retransmission timeouts double from 1 s and cap at 60 s", () => {
    const p = new Pipe({ loss: 1 }, {});
    const sendTimes: number[] = [];
    const orig = p.enqueue.bind(p);
    p.enqueue = (to, d) => {
      if (to === "server") sendTimes.push(p.now);
      orig(to, d);
    };
    p.startClient({ retransmit: { initialMs: 1000, maxMs: 60_000, maxRetransmits: 8 } });
    p.run(20 * 60_000);
    const gaps = sendTimes.slice(1).map((t, i) => t - (sendTimes[i] as number));
    expect(gaps).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]);
    expect(p.clientClosed).toMatchObject({ code: "timeout" });
  });

  for (const name of SUITE_NAMES.filter((n) => usesPsk(suiteByName(n)))) {
    it(`answers a retransmitted final client flight by resending its own (${name})`, () => {
      const p = new Pipe({}, {});
      p.startClient({ suites: suites(name) });
      // Drop the server's final flight (CCS + Finished) once.
      let dropped = 0;
      const orig = p.enqueue.bind(p);
      p.enqueue = (to, d) => {
        if (to === "client" && d[0] === 20 && dropped === 0) {
          dropped++;
          return;
        }
        orig(to, d);
      };
      expect(p.runUntilEstablished()).toBe(true);
      expect(dropped).toBe(1);
      expect(p.now).toBeGreaterThanOrEqual(1000); // it took the client's retransmission
    });
  }
});
