import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ContentType, HandshakeType } from "../../src/dtls/constants.ts";
import { encodeFragment, encodeHandshake } from "../../src/dtls/handshake-codec.ts";
import { encodePlainRecord } from "../../src/dtls/record.ts";
import { copyBytes } from "../../src/util/bytes.ts";
import { CLIENT_PEER, Pipe } from "./harness.ts";

const FC = { seed: 42, numRuns: 300 } as const;

/** A pipe stopped right after the server's first real flight, i.e. a handshake in progress. */
function midHandshake(): Pipe {
  const p = new Pipe();
  p.startClient();
  p.run(50, () => p.server.handshakesInProgress === 1 && p.sentByServer.length >= 2);
  expect(p.server.handshakesInProgress).toBe(1);
  return p;
}

describe("hostile input never crashes or grows state", () => {
  it("random datagrams from strangers leave no state", () => {
    const p = new Pipe();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1500 }), fc.integer({ min: 1, max: 65535 }), (bytes, port) => {
        p.server.receive({ address: "198.51.100.7", port }, bytes, 0);
      }),
      FC,
    );
    expect(p.server.size).toBe(0);
  });

  it("random records, with plausible DTLS headers, at an established session are dropped", () => {
    const p = new Pipe();
    p.startClient();
    expect(p.runUntilEstablished()).toBe(true);
    fc.assert(
      fc.property(
        fc.constantFrom(20, 21, 22, 23, 24, 99),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 0, max: 2 ** 48 - 1 }),
        fc.uint8Array({ maxLength: 300 }),
        (type, epoch, seq, body) => {
          const rec = encodePlainRecord(type, 0xfefd, 0, 0, body);
          rec[3] = epoch >> 8;
          rec[4] = epoch & 0xff;
          const hi = Math.floor(seq / 2 ** 32);
          rec[5] = hi >> 8;
          rec[6] = hi & 0xff;
          new DataView(rec.buffer).setUint32(7, seq >>> 0);
          p.server.receive(CLIENT_PEER, rec, p.now);
        },
      ),
      FC,
    );
    expect(p.server.establishedCount).toBe(1);
    expect(p.serverData).toHaveLength(0);
    p.client.send(new TextEncoder().encode("still here"));
    p.run(10);
    expect(p.serverData).toHaveLength(1);
  });

  it("truncated handshake datagrams never throw, and the real ones still complete the handshake", () => {
    for (let seed = 1; seed <= 5; seed++) {
      const p = new Pipe({ seed, reorder: 0.3 });
      const origEnqueue = p.enqueue.bind(p);
      p.enqueue = (to, d) => {
        // Before each real datagram, deliver every 7th truncation of it.
        for (let cut = 0; cut < d.length; cut += 7) {
          const t = copyBytes(d.subarray(0, cut));
          if (to === "server") p.server.receive(CLIENT_PEER, t, p.now);
          else p.client?.receive(t, p.now);
        }
        origEnqueue(to, d);
      };
      p.startClient();
      expect(p.runUntilEstablished()).toBe(true);
    }
  });

  it("bit-flipped handshake datagrams never throw; each either is ignored or ends the handshake with an alert", () => {
    for (let seed = 1; seed <= 40; seed++) {
      const p = new Pipe({ seed });
      let flips = 0;
      const origEnqueue = p.enqueue.bind(p);
      p.enqueue = (to, d) => {
        const flipped = copyBytes(d);
        const i = (seed * 131 + flips * 17) % flipped.length;
        flipped[i] = flipped[i]! ^ (1 << (seed % 8));
        flips++;
        origEnqueue(to, flipped);
      };
      p.startClient();
      p.run(300_000);
      const serverOutcome = p.serverSession !== undefined || p.serverErrors.length > 0 || p.server.size === 0;
      expect(serverOutcome).toBe(true);
      expect(p.client.state === "established" || p.client.state === "closed").toBe(true);
      expect(p.server.handshakesInProgress).toBe(0);
    }
  });

  it("refuses handshake messages out of order with unexpected_message", () => {
    const p = midHandshake();
    // A Finished where the ClientKeyExchange belongs (message_seq 2), in the clear.
    const fin = encodeHandshake(HandshakeType.finished, 2, new Uint8Array(12));
    p.server.receive(CLIENT_PEER, encodePlainRecord(ContentType.handshake, 0xfefd, 0, 10, fin), p.now);
    expect(p.serverErrors.map((e) => e.code)).toEqual(["unexpected_message"]);
    expect(p.server.size).toBe(0);
  });

  it("ignores fragments claiming huge lengths and bounds reassembly memory", () => {
    const p = midHandshake();
    const big = new Uint8Array(100);
    // Claimed length 16 MiB - 1: over the handshake message limit, dropped.
    const huge = encodeFragment(HandshakeType.client_key_exchange, 2, big, 0, 100);
    huge[1] = 0xff;
    huge[2] = 0xff;
    huge[3] = 0xff;
    p.server.receive(CLIENT_PEER, encodePlainRecord(ContentType.handshake, 0xfefd, 0, 11, huge), p.now);
    // 64 KiB messages at many future message_seqs: only a bounded number are kept.
    for (let seq = 2; seq < 2000; seq++) {
      const body = new Uint8Array(0x10000);
      const frag = encodeFragment(HandshakeType.client_key_exchange, seq, body, 0, 10);
      p.server.receive(CLIENT_PEER, encodePlainRecord(ContentType.handshake, 0xfefd, 0, 12 + seq, frag), p.now);
    }
    const conn = p.server.session(CLIENT_PEER)!.connection as unknown as { reassembler: { bytes: number } };
    expect(conn.reassembler.bytes).toBeLessThanOrEqual(0x20000);
    expect(p.server.size).toBe(1);
  });

  it("an unauthenticated alert in the clear cannot close an established session", () => {
    const p = new Pipe();
    p.startClient();
    expect(p.runUntilEstablished()).toBe(true);
    p.server.receive(CLIENT_PEER, encodePlainRecord(ContentType.alert, 0xfefd, 0, 99, new Uint8Array([2, 40])), p.now);
    p.server.receive(CLIENT_PEER, encodePlainRecord(ContentType.alert, 0xfefd, 0, 100, new Uint8Array([1, 0])), p.now);
    expect(p.server.establishedCount).toBe(1);
  });
});
