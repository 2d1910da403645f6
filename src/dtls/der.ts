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
  for (let at = 0; at < content.length; ) {
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
