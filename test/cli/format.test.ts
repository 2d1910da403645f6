import { describe, expect, it } from "vitest";
import {
  formatClosed,
  formatConnected,
  formatData,
  formatEstablished,
  formatHandshakeError,
  formatPayload,
  formatServerCertificate,
  formatSubject,
  isPskSuite,
} from "../../src/cli/format.ts";

const info = {
  peer: { address: "127.0.0.1", port: 50000 },
  identity: "dev1",
  suite: "TLS_PSK_WITH_AES_128_CCM_8",
  extendedMasterSecret: true,
};

describe("log lines", () => {
  it("established", () => {
    expect(formatEstablished(info)).toBe("established peer=127.0.0.1:50000 identity=dev1 suite=TLS_PSK_WITH_AES_128_CCM_8 ems=yes");
    expect(formatEstablished({ ...info, peer: { address: "::1", port: 1 }, identity: "a b", extendedMasterSecret: false })).toBe(
      'established peer=[::1]:1 identity="a b" suite=TLS_PSK_WITH_AES_128_CCM_8 ems=no',
    );
  });

  it("connected", () => {
    expect(formatConnected(info)).toBe("connected suite=TLS_PSK_WITH_AES_128_CCM_8 ems=yes peer=127.0.0.1:50000");
  });

  it("closed", () => {
    expect(formatClosed(info, { code: "close_notify", message: "" })).toBe("closed peer=127.0.0.1:50000 identity=dev1 reason=close_notify");
    expect(formatClosed(info, { code: "timeout", message: "idle for 300 s" })).toBe(
      'closed peer=127.0.0.1:50000 identity=dev1 reason=timeout message="idle for 300 s"',
    );
  });

  it("handshake error", () => {
    expect(formatHandshakeError({ address: "10.0.0.2", port: 7 }, { code: "decrypt_error", alert: 51, message: "bad Finished" })).toBe(
      'handshake-failed peer=10.0.0.2:7 code=decrypt_error alert=51 message="bad Finished"',
    );
    expect(formatHandshakeError({ address: "10.0.0.2", port: 7 }, { code: "timeout" })).toBe("handshake-failed peer=10.0.0.2:7 code=timeout");
  });

  it("data as text or hex", () => {
    expect(formatData(info, Buffer.from('hi "there"\n'))).toBe('data peer=127.0.0.1:50000 identity=dev1 bytes=11 text="hi \\"there\\"\\n"');
    expect(formatPayload(new Uint8Array([0xff, 0x00]))).toBe("hex=ff00");
    expect(formatPayload(new Uint8Array(0))).toBe('text=""');
    const sub = Buffer.from("xxabc").subarray(2);
    expect(formatPayload(new Uint8Array([0xc3])).startsWith("hex=")).toBe(true);
    expect(formatPayload(sub)).toBe('text="abc"');
  });
});

describe("certificates in log lines", () => {
  const cert = { subject: "CN=localhost\nO=dtlspush", fingerprint256: "ab".repeat(32) };
  const ecdsa = { ...info, identity: "", suite: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" };

  it("renders a subject on one line", () => {
    expect(formatSubject("CN=localhost\nO=dtlspush")).toBe("CN=localhost, O=dtlspush");
    expect(formatSubject("CN=x")).toBe("CN=x");
    expect(formatSubject("")).toBe("");
  });

  it("tells PSK suites apart", () => {
    expect(isPskSuite("TLS_PSK_WITH_AES_128_CCM_8")).toBe(true);
    expect(isPskSuite("TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256")).toBe(true);
    expect(isPskSuite("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")).toBe(false);
    expect(isPskSuite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")).toBe(false);
  });

  it("established: nothing extra for PSK, peer-cert=none or the certificate for certificate suites", () => {
    expect(formatEstablished({ ...info, peerCertificate: undefined })).toBe(formatEstablished(info));
    expect(formatEstablished(ecdsa)).toBe(
      'established peer=127.0.0.1:50000 identity="" suite=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 ems=yes peer-cert=none',
    );
    expect(formatEstablished({ ...ecdsa, peerCertificate: cert })).toBe(
      `established peer=127.0.0.1:50000 identity="" suite=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 ems=yes peer-subject="CN=localhost, O=dtlspush" peer-sha256=${"ab".repeat(32)}`,
    );
  });

  it("server-cert line", () => {
    expect(formatServerCertificate(info)).toBeUndefined();
    expect(formatServerCertificate({ ...ecdsa, peerCertificate: cert })).toBe(
      `server-cert subject="CN=localhost, O=dtlspush" sha256=${"ab".repeat(32)}`,
    );
  });
});
