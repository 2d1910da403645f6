/**
 * One mapping from errors to alerts: a ClientHello whose extensions do not
 * parse gets decode_error (50), never internal_error (80), from the real
 * endpoint; and every error code maps to its alert.
 */
import { describe, expect, it } from "vitest";
import { AlertDescription, ContentType, ExtensionType } from "../../src/dtls/constants.ts";
import { alertFor, DtlsError, toDtlsError } from "../../src/dtls/errors.ts";
import { type Extension } from "../../src/dtls/messages.ts";
import { parseRecords } from "../../src/dtls/record.ts";
import { DecodeError } from "../../src/util/errors.ts";
import { echoServers } from "./echo-server.ts";
import { pskHello, rawPeers } from "./raw-peer.ts";

const server = echoServers();
const peer = rawPeers();

const ECDHE_PSK_AES128_GCM = 0xd001;
const PSK_AES128_GCM = 0x00a8;

const MALFORMED: { name: string; extensions: Extension[]; suites?: number[] }[] = [
  { name: "supported_groups of odd length", extensions: [{ type: ExtensionType.supported_groups, data: new Uint8Array([0, 3, 0, 29, 0]) }] },
  {
    name: "supported_groups with a list longer than its extension",
    extensions: [{ type: ExtensionType.supported_groups, data: new Uint8Array([0, 40, 0, 29]) }],
  },
  { name: "signature_algorithms of odd length", extensions: [{ type: ExtensionType.signature_algorithms, data: new Uint8Array([0, 3, 4, 3, 5]) }] },
  { name: "signature_algorithms empty", extensions: [{ type: ExtensionType.signature_algorithms, data: new Uint8Array([]) }] },
  { name: "renegotiation_info with a bad length byte", extensions: [{ type: ExtensionType.renegotiation_info, data: new Uint8Array([5]) }] },
  {
    name: "ec_point_formats truncated (ECDHE_PSK offered)",
    extensions: [
      { type: ExtensionType.supported_groups, data: new Uint8Array([0, 2, 0, 29]) },
      { type: ExtensionType.ec_point_formats, data: new Uint8Array([4, 0]) },
    ],
    suites: [ECDHE_PSK_AES128_GCM, PSK_AES128_GCM],
  },
  { name: "extended_master_secret not empty", extensions: [{ type: ExtensionType.extended_master_secret, data: new Uint8Array([1]) }] },
];

describe("malformed ClientHello extensions (real endpoint)", () => {
  it.each(MALFORMED)("$name: fatal decode_error (50)", async ({ extensions, suites }) => {
    const s = await server();
    const failures: string[] = [];
    s.on("handshakeError", (e) => failures.push(e.error.code));
    const p = await peer(s.address().port);
    const answer = await p.helloWithCookie(pskHello({ extensions, ...(suites ? { cipherSuites: suites } : {}) }));
    expect(answer).toBeDefined();
    const alert = parseRecords(answer as Uint8Array).find((r) => r.type === ContentType.alert);
    expect(alert, "the server answers with an alert").toBeDefined();
    expect([...alert!.body]).toEqual([2, AlertDescription.decode_error]);
    expect(failures).toEqual(["decode_error"]);
    expect(s.stats.alertsSent.decode_error).toBe(1);
    expect(s.stats.alertsSent.internal_error).toBeUndefined();
  });
});

describe("error -> alert mapping", () => {
  it("every alert code sends its own alert; refusals and local errors send none", () => {
    expect(alertFor("decode_error")).toBe(50);
    expect(alertFor("internal_error")).toBe(80);
    expect(alertFor("unsupported_extension")).toBe(110);
    expect(alertFor("over_capacity")).toBeUndefined();
    expect(alertFor("handshake_timeout")).toBeUndefined();
    expect(new DtlsError("unknown_psk_identity", "x").alert).toBe(115);
  });

  it("parse errors become decode_error, anything unknown internal_error", () => {
    expect(toDtlsError(new DecodeError("truncated")).alert).toBe(50);
    expect(toDtlsError(new RangeError("reader window 0..9 is not inside a buffer of 4 bytes")).code).toBe("decode_error");
    expect(toDtlsError(new TypeError("boom")).code).toBe("internal_error");
    const e = new DtlsError("illegal_parameter", "x");
    expect(toDtlsError(e)).toBe(e);
  });
});
