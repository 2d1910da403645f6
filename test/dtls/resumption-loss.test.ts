/**
 * The abbreviated handshake under loss (sans-I/O pipe, fake clock): there the
 * server's flight (ServerHello, CCS, Finished) is the one that awaits an
 * answer and the client's CCS+Finished is the last flight, so each side must
 * retransmit (server) or answer a retransmission (client) the other way
 * round from a full handshake.
 */
import { describe, expect, it } from "vitest";
import { decodeSavedSession } from "../../src/dtls/saved-session.ts";
import { serverResumption, type ServerResumption } from "../../src/dtls/resumption.ts";
import type { SavedSession } from "../../src/dtls/resumption-options.ts";
import { Pipe } from "./harness.ts";

const SERVER = "192.0.2.100:5684";

/** A full handshake over a clean pipe whose server uses `res`; the client's saved session. */
function fullHandshake(res: ServerResumption): SavedSession {
  const p = new Pipe({}, { resumption: res });
  p.startClient({}, undefined, undefined, undefined, { offer: undefined, server: SERVER, wallClock: Date.now });
  expect(p.runUntilEstablished()).toBe(true);
  expect(p.clientInfo?.resumed).toBe(false);
  if (p.clientSession === undefined) throw new Error("no session saved");
  return p.clientSession;
}

/** A pipe whose client offers `saved` to a server with the same resumption state. */
function resumingPipe(res: ServerResumption, saved: SavedSession): Pipe {
  const p = new Pipe({}, { resumption: res });
  p.startClient({}, undefined, undefined, undefined, { offer: decodeSavedSession(saved), server: SERVER, wallClock: Date.now });
  return p;
}

/** Datagram counter for a tamper hook: drops the `nth` (1-based) datagram once. */
function dropNth(nth: number): (d: Uint8Array) => Uint8Array | undefined {
  let n = 0;
  return (d) => (++n === nth ? undefined : d);
}

describe("abbreviated handshake under loss", () => {
  for (const mode of ["ticket", "session ID"] as const) {
    const res = (): ServerResumption => {
      const r = serverResumption(mode === "ticket" ? {} : { ticketKeys: { current: () => undefined, byName: () => undefined } });
      if (r === undefined) throw new Error("resumption off");
      return r;
    };

    it(`${mode}: the server's flight (ServerHello, CCS, Finished) lost once: resent on its timer, then established both sides`, () => {
      const r = res();
      const p = resumingPipe(r, fullHandshake(r));
      p.tamperToClient = dropNth(2); // 1: HelloVerifyRequest, 2: ServerHello..Finished
      expect(p.runUntilEstablished()).toBe(true);
      expect(p.clientInfo?.resumed).toBe(true);
      expect(p.serverSession?.info.resumed).toBe(true);
      expect(p.now).toBeGreaterThanOrEqual(1000); // it took a retransmission
      expect(p.serverErrors).toEqual([]);
    });

    it(`${mode}: the client's Finished lost once: the server resends its flight and the established client answers with its last flight`, () => {
      const r = res();
      const p = resumingPipe(r, fullHandshake(r));
      p.tamperToServer = dropNth(2); // (the first ClientHello left before the hook) 1: ClientHello(cookie), 2: CCS+Finished
      expect(p.runUntilEstablished()).toBe(true);
      expect(p.clientInfo?.resumed).toBe(true);
      expect(p.serverSession?.info.resumed).toBe(true);
      expect(p.datagrams.toServer).toBeGreaterThanOrEqual(4); // the client sent its last flight again
      expect(p.server.stats.handshakesResumed).toBe(1);
      // data both ways once established
      p.client.send(new TextEncoder().encode("up"));
      p.serverSession?.connection.send(new TextEncoder().encode("down"));
      p.run(5000);
      expect(p.serverData.map((d) => new TextDecoder().decode(d))).toEqual(["up"]);
      expect(p.clientData.map((d) => new TextDecoder().decode(d))).toEqual(["down"]);
    });
  }

  it("with 30% loss both ways, 20 seeds: every resumption completes", () => {
    const r = serverResumption({});
    if (r === undefined) throw new Error("resumption off");
    const saved = fullHandshake(r);
    for (let seed = 1; seed <= 20; seed++) {
      const p = new Pipe({ loss: 0.3, seed }, { resumption: r });
      p.startClient({}, undefined, undefined, undefined, { offer: decodeSavedSession(saved), server: SERVER, wallClock: Date.now });
      expect(p.runUntilEstablished(), `seed ${seed}`).toBe(true);
      expect(p.clientInfo?.resumed).toBe(true);
    }
  });
});
