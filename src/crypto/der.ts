/**
 * Just enough DER to find the subject Name of an X.509 certificate (for the
 * certificate_authorities list of a CertificateRequest): Certificate ::=
 * SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
 * signature, issuer, validity, subject, ... }, ... } (RFC 5280 4.1).
 */
import { DecodeError } from "../util/errors.ts";

interface Tlv {
  readonly tag: number;
  /** The whole element, header included. */
  readonly all: Uint8Array;
  readonly content: Uint8Array;
}

function readTlv(buf: Uint8Array, at: number): Tlv {
  if (at + 2 > buf.length) throw new DecodeError("DER element truncated");
  const tag = buf[at] as number;
  let len = buf[at + 1] as number;
  let off = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || off + n > buf.length) throw new DecodeError("bad DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[off + i] as number);
    off += n;
  }
  if (off + len > buf.length) throw new DecodeError("DER element longer than its container");
  return { tag, all: buf.subarray(at, off + len), content: buf.subarray(off, off + len) };
}

function children(content: Uint8Array): Tlv[] {
  const out: Tlv[] = [];
  for (let at = 0; at < content.length;) {
    const t = readTlv(content, at);
    out.push(t);
    at += t.all.length;
  }
  return out;
}

/** The DER of the certificate's subject Name. */
export function subjectNameDer(certDer: Uint8Array): Uint8Array {
  const cert = readTlv(certDer, 0);
  const tbs = children(cert.content)[0];
  if (tbs === undefined) throw new DecodeError("certificate without tbsCertificate");
  const fields = children(tbs.content);
  const skip = fields[0]?.tag === 0xa0 ? 1 : 0; // explicit [0] version
  const subject = fields[skip + 4];
  if (subject === undefined || subject.tag !== 0x30) throw new DecodeError("certificate without a subject Name");
  return subject.all;
}

/** The keyUsage bits that matter to a handshake (RFC 5280 4.2.1.3). */
export interface KeyUsage {
  readonly digitalSignature: boolean;
  readonly keyCertSign: boolean;
}

const KEY_USAGE_OID = [0x55, 0x1d, 0x0f]; // 2.5.29.15

/** The certificate's keyUsage, or undefined when it has no such extension (any use allowed). */
export function keyUsage(certDer: Uint8Array): KeyUsage | undefined {
  const cert = readTlv(certDer, 0);
  const tbs = children(cert.content)[0];
  if (tbs === undefined) throw new DecodeError("certificate without tbsCertificate");
  const extensionsField = children(tbs.content).find((f) => f.tag === 0xa3);
  if (extensionsField === undefined) return undefined;
  const list = children(extensionsField.content)[0];
  if (list === undefined) return undefined;
  for (const ext of children(list.content)) {
    const parts = children(ext.content);
    const oid = parts[0];
    const value = parts[parts.length - 1];
    if (oid === undefined || value === undefined || oid.tag !== 0x06) continue;
    if (oid.content.length !== 3 || !KEY_USAGE_OID.every((b, i) => oid.content[i] === b)) continue;
    const bits = readTlv(value.content, 0);
    if (bits.tag !== 0x03 || bits.content.length < 2) throw new DecodeError("malformed keyUsage");
    const first = bits.content[1] as number;
    return { digitalSignature: (first & 0x80) !== 0, keyCertSign: (first & 0x04) !== 0 };
  }
  return undefined;
}
