/**
 * PEM encoding (RFC 7468) of DER bytes, and splitting of PEM text into its
 * blocks. Pure: no I/O.
 */
import { DtlspushError } from "../util/errors.ts";

export interface PemBlock {
  /** The label between "BEGIN " and the dashes, e.g. "CERTIFICATE". */
  readonly label: string;
  readonly der: Uint8Array;
}

/** Encodes DER bytes as a PEM block with 64-character lines and a final newline. */
export function encodePem(label: string, der: Uint8Array | ArrayBuffer): string {
  const bytes = der instanceof Uint8Array ? der : new Uint8Array(der);
  const base64 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
  const lines = base64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;

/** All PEM blocks in `text`, in order. Text outside blocks is ignored. */
export function decodePem(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) {
    const label = m[1] ?? "";
    const body = (m[2] ?? "").replace(/\s+/g, "");
    if (m[3] !== label) throw new DtlspushError("bad_pem", `PEM block BEGIN ${label} ends with END ${m[3] ?? ""}`);
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) throw new DtlspushError("bad_pem", `PEM block ${label} is not valid base64`);
    blocks.push({ label, der: Uint8Array.from(Buffer.from(body, "base64")) });
  }
  return blocks;
}

/** The DER bytes of every block with `label`. */
export function pemBlocks(text: string, label: string): Uint8Array[] {
  return decodePem(text)
    .filter((b) => b.label === label)
    .map((b) => b.der);
}

/** Lower-case hex without separators. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}
