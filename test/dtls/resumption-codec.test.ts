/**
 * The bytes of resumption as a peer or an application hands them back:
 * tickets (sealed, AAD = key name) and saved sessions. Every truncation and
 * every single-bit change is refused, never thrown.
 */
import { describe, expect, it } from "vitest";
import { defaultCrypto } from "../../src/crypto/index.ts";
import { openTicket, pskDigest, sealTicket, type ServerSessionState } from "../../src/dtls/resumption.ts";
import { decodeSavedSession, encodeSavedSession, type ClientSessionState } from "../../src/dtls/saved-session.ts";
import { RotatingTicketKeys } from "../../src/dtls/ticket-keys.ts";

const NOW = 1_800_000_000_000;
const state: ServerSessionState = {
  suite: 0xc0ae,
  master: new Uint8Array(48).fill(5),
  ems: true,
  group: "x25519",
  identity: "sensor-7 ünïcode",
  peer: { subject: "CN=sensor-7", fingerprint256: "ab".repeat(32) },
  createdAt: NOW - 5000,
  issuedAt: NOW,
  pskDigest: new Uint8Array(0),
};

describe("tickets", () => {
  const keys = new RotatingTicketKeys(60_000);
  const key = keys.current(NOW);
  if (key === undefined) throw new Error("no key");
  const ticket = sealTicket(defaultCrypto, key, state);

  it("round-trips the whole state; the layout is key name, nonce, ciphertext, tag", () => {
    expect(openTicket(defaultCrypto, keys, ticket, NOW)).toEqual(state);
    expect(new Uint8Array(ticket.subarray(0, 16))).toEqual(key.name);
    const psk = {
      ...state,
      peer: undefined,
      group: undefined,
      identity: "dev",
      pskDigest: new Uint8Array(pskDigest(defaultCrypto.digest, new Uint8Array(16))),
    };
    expect(openTicket(defaultCrypto, keys, sealTicket(defaultCrypto, key, psk), NOW)).toEqual(psk);
  });

  it("every truncation and every flipped bit is refused (unknown_key inside the name, bad_ticket after it)", () => {
    for (let n = 0; n < ticket.length; n++) expect(openTicket(defaultCrypto, keys, ticket.subarray(0, n), NOW)).toBe("bad_ticket");
    for (let i = 0; i < ticket.length; i++) {
      const t = new Uint8Array(ticket);
      t[i] = (t[i] as number) ^ 0x01;
      expect(openTicket(defaultCrypto, keys, t, NOW)).toBe(i < 16 ? "unknown_key" : "bad_ticket");
    }
  });

  it("another server's key (same name, other secret) cannot open it", () => {
    const other = { current: () => undefined, byName: () => ({ ...key, secret: new Uint8Array(32) }) };
    expect(openTicket(defaultCrypto, other, ticket, NOW)).toBe("bad_ticket");
  });
});

describe("saved sessions", () => {
  const saved: ClientSessionState = {
    ...state,
    server: "127.0.0.1:5684",
    ticket: new Uint8Array(150).fill(3),
    sessionId: new Uint8Array(32).fill(4),
    lifetimeMs: 86_400_000,
  };
  const bytes = encodeSavedSession(saved);

  it("round-trip, version byte first", () => {
    const { pskDigest: _unused, ...core } = saved as ClientSessionState & { pskDigest: Uint8Array };
    expect(decodeSavedSession(bytes)).toEqual(core);
    expect(bytes[0]).toBe(1);
  });

  it("every truncation, and another version, is not a session (undefined, no throw)", () => {
    for (let n = 0; n < bytes.length; n++) expect(decodeSavedSession(bytes.subarray(0, n))).toBeUndefined();
    const v2 = new Uint8Array(bytes);
    v2[0] = 2;
    expect(decodeSavedSession(v2)).toBeUndefined();
  });
});
