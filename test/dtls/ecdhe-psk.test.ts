import { describe, expect, it } from "vitest";
import { ExtensionType, HandshakeType, NamedGroup, ProtocolVersion } from "../../src/dtls/constants.ts";
import { generateEcdh } from "../../src/crypto/index.ts";
import { parseHandshakeFragments } from "../../src/dtls/handshake-codec.ts";
import {
  decodeEcdhePskServerParams,
  decodeServerHello,
  EMPTY,
  encodeSupportedGroups,
  type ClientHello,
  type Extension,
} from "../../src/dtls/messages.ts";
import { chooseServerParameters } from "../../src/dtls/negotiation.ts";
import { parseRecords } from "../../src/dtls/record.ts";
import { suiteByName, SUITE_NAMES } from "../../src/dtls/suites.ts";
import { Pipe, suites } from "./harness.ts";

const ECDHE = suites("TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256");

function hello(extensions: Extension[] | undefined, ids = [0xccac, 0xd001, 0x00a8]): ClientHello {
  return {
    version: ProtocolVersion.DTLS1_2,
    random: new Uint8Array(32),
    sessionId: EMPTY,
    cookie: EMPTY,
    cipherSuites: ids,
    compressionMethods: new Uint8Array([0]),
    extensions,
  };
}

const groups = (...ids: number[]): Extension => ({ type: ExtensionType.supported_groups, data: encodeSupportedGroups(ids) });
const formats = (...f: number[]): Extension => ({ type: ExtensionType.ec_point_formats, data: new Uint8Array([f.length, ...f]) });

describe("ECDHE_PSK negotiation", () => {
  it("prefers x25519, then secp256r1, then secp384r1 among the client's groups", () => {
    expect(chooseServerParameters(hello([groups(24, 23, 29)]), ECDHE, false).group?.name).toBe("x25519");
    expect(chooseServerParameters(hello([groups(24, 23)]), ECDHE, false).group?.name).toBe("secp256r1");
    // @nodertc/dtls offers only secp384r1 and secp521r1.
    expect(chooseServerParameters(hello([groups(24, 25)]), ECDHE, false).group?.name).toBe("secp384r1");
  });

  it("takes secp256r1 when the client sends no supported_groups", () => {
    expect(chooseServerParameters(hello(undefined), ECDHE, false).group?.name).toBe("secp256r1");
  });

  it("skips ECDHE suites without a common group or without uncompressed points, falling back to plain PSK", () => {
    const pref = [...ECDHE, suiteByName("TLS_PSK_WITH_AES_128_GCM_SHA256")];
    const noGroup = chooseServerParameters(hello([groups(25)]), pref, false);
    expect(noGroup.suite.name).toBe("TLS_PSK_WITH_AES_128_GCM_SHA256");
    expect(noGroup.group).toBeUndefined();
    const compressedOnly = chooseServerParameters(hello([groups(29), formats(1)]), pref, false);
    expect(compressedOnly.suite.name).toBe("TLS_PSK_WITH_AES_128_GCM_SHA256");
    expect(() => chooseServerParameters(hello([groups(25)], [0xccac]), ECDHE, false)).toThrow(/no cipher suite/);
  });

  it("echoes ec_point_formats only for an ECDHE suite the client sent it for", () => {
    const withFormats = chooseServerParameters(hello([groups(29), formats(0)]), ECDHE, false);
    expect(withFormats.extensions?.map((e) => e.type)).toEqual([ExtensionType.ec_point_formats]);
    const psk = chooseServerParameters(hello([groups(29), formats(0)], [0x00a8]), [suiteByName("TLS_PSK_WITH_AES_128_GCM_SHA256")], false);
    expect(psk.extensions).toBeUndefined();
  });
});

describe("ECDHE_PSK handshakes over the pipe", () => {
  for (const name of SUITE_NAMES.filter((n) => n.startsWith("TLS_ECDHE_PSK"))) {
    it(`${name}: x25519 key exchange, data both ways, under loss`, () => {
      const p = new Pipe({ loss: 0.2, seed: 3 }, { suites: suites(name) });
      const seen: number[] = [];
      const orig = p.enqueue.bind(p);
      p.enqueue = (to, d) => {
        if (to === "client") {
          for (const r of parseRecords(d)) {
            if (r.type !== 22 || r.epoch !== 0) continue;
            for (const f of parseHandshakeFragments(r.body)) {
              if (f.msgType === HandshakeType.server_key_exchange) seen.push(decodeEcdhePskServerParams(f.body).group);
              if (f.msgType === HandshakeType.server_hello) {
                expect(decodeServerHello(f.body).extensions?.some((e) => e.type === ExtensionType.ec_point_formats)).toBe(true);
              }
            }
          }
        }
        orig(to, d);
      };
      p.startClient({ suites: suites(name) });
      expect(p.runUntilEstablished(600_000)).toBe(true);
      expect(p.clientInfo?.suite).toBe(name);
      expect(seen[0]).toBe(NamedGroup.x25519);
    });
  }

  it("refuses an invalid client ECDH key with illegal_parameter", () => {
    const p = new Pipe({}, { suites: ECDHE });
    // Replace the client's x25519 public key (the last 32 bytes of its ClientKeyExchange) with zeros: a small-order point.
    p.tamperToServer = (d) => {
      const out = new Uint8Array(d);
      for (const r of parseRecords(out)) {
        if (r.type !== 22 || r.epoch !== 0) continue;
        const frags = parseHandshakeFragments(r.body);
        if (frags[0]?.msgType === HandshakeType.client_key_exchange) r.body.fill(0, r.body.length - 32);
      }
      return out;
    };
    p.startClient({ suites: ECDHE });
    p.run(5000);
    expect(p.serverErrors.map((e) => e.code)).toEqual(["illegal_parameter"]);
    expect(p.clientClosed).toMatchObject({ code: "alert_received", alert: 47 });
  });

  it("x25519 and NIST groups reject malformed or off-curve peer keys", () => {
    expect(generateEcdh("x25519").derive(new Uint8Array(31))).toBeNull();
    expect(generateEcdh("x25519").derive(new Uint8Array(32))).toBeNull();
    const p256 = generateEcdh("secp256r1");
    expect(p256.derive(new Uint8Array(65))).toBeNull(); // not 0x04-prefixed
    const offCurve = new Uint8Array(65).fill(1);
    offCurve[0] = 4;
    expect(p256.derive(offCurve)).toBeNull();
    expect(p256.derive(generateEcdh("secp384r1").publicKey)).toBeNull();
  });
});

describe("configured groups", () => {
  function groupOf(serverGroups?: ("x25519" | "secp256r1" | "secp384r1")[], clientGroups?: ("x25519" | "secp256r1" | "secp384r1")[]) {
    const p = new Pipe({}, { suites: ECDHE, ...(serverGroups ? { groups: serverGroups } : {}) });
    let group: number | undefined;
    const orig = p.enqueue.bind(p);
    p.enqueue = (to, d) => {
      if (to === "client") {
        for (const r of parseRecords(d)) {
          if (r.type !== 22 || r.epoch !== 0) continue;
          for (const f of parseHandshakeFragments(r.body)) {
            if (f.msgType === HandshakeType.server_key_exchange) group = decodeEcdhePskServerParams(f.body).group;
          }
        }
      }
      orig(to, d);
    };
    p.startClient({ suites: ECDHE, ...(clientGroups ? { groups: clientGroups } : {}) });
    expect(p.runUntilEstablished()).toBe(true);
    return group;
  }

  it("a client offering only secp256r1 gets P-256; a server preferring secp256r1 picks it over x25519", () => {
    expect(groupOf(undefined, ["secp256r1"])).toBe(NamedGroup.secp256r1);
    expect(groupOf(["secp256r1", "x25519"])).toBe(NamedGroup.secp256r1);
    expect(groupOf()).toBe(NamedGroup.x25519);
  });
});

describe("secp521r1", () => {
  it("is not offered or accepted by default, and works when configured on both sides", () => {
    expect(() => chooseServerParameters(hello([groups(25)], [0xccac]), ECDHE, false)).toThrow(/no cipher suite/);
    const p = new Pipe({}, { suites: ECDHE, groups: ["secp521r1"] });
    p.startClient({ suites: ECDHE, groups: ["secp521r1"] });
    expect(p.runUntilEstablished()).toBe(true);
    expect(p.clientInfo?.group).toBe("secp521r1");
  });
});
