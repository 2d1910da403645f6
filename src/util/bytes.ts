import { DecodeError } from "./errors.ts";

/**
 * Bounds-checked big-endian reader over a byte slice. Every read either
 * returns a value inside the slice or throws DecodeError; nothing reads past
 * the end, so parsers built on it cannot overrun on hostile input.
 */
export class ByteReader {
  private readonly buf: Uint8Array;
  private pos: number;
  private readonly end: number;

  constructor(buf: Uint8Array, start = 0, end = buf.length) {
    if (!(start >= 0 && start <= end && end <= buf.length)) {
      throw new RangeError(`reader window ${start}..${end} is not inside a buffer of ${buf.length} bytes`);
    }
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  get offset(): number {
    return this.pos;
  }

  remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number, what: string): void {
    if (n > this.end - this.pos) {
      throw new DecodeError(`truncated ${what}: need ${n} bytes, have ${this.end - this.pos}`);
    }
  }

  u8(what = "u8"): number {
    this.need(1, what);
    return this.buf[this.pos++] as number;
  }

  u16(what = "u16"): number {
    this.need(2, what);
    const b = this.buf;
    const v = ((b[this.pos] as number) << 8) | (b[this.pos + 1] as number);
    this.pos += 2;
    return v;
  }

  u24(what = "u24"): number {
    this.need(3, what);
    const b = this.buf;
    const v = ((b[this.pos] as number) << 16) | ((b[this.pos + 1] as number) << 8) | (b[this.pos + 2] as number);
    this.pos += 3;
    return v;
  }

  /** 48-bit unsigned, exact as a JS number. */
  u48(what = "u48"): number {
    this.need(6, what);
    const hi = this.u16(what);
    const lo = this.u32(what);
    return hi * 0x1_0000_0000 + lo;
  }

  u32(what = "u32"): number {
    this.need(4, what);
    const b = this.buf;
    const v =
      (b[this.pos] as number) * 0x100_0000 + (((b[this.pos + 1] as number) << 16) | ((b[this.pos + 2] as number) << 8) | (b[this.pos + 3] as number));
    this.pos += 4;
    return v;
  }

  /** A view (no copy) of the next n bytes. */
  bytes(n: number, what = "bytes"): Uint8Array {
    this.need(n, what);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** opaque<0..2^8-1> */
  vec8(what = "vector", min = 0, max = 0xff): Uint8Array {
    const n = this.u8(`${what} length`);
    return this.bounded(n, what, min, max);
  }

  /** opaque<0..2^16-1> */
  vec16(what = "vector", min = 0, max = 0xffff): Uint8Array {
    const n = this.u16(`${what} length`);
    return this.bounded(n, what, min, max);
  }

  /** opaque<0..2^24-1> */
  vec24(what = "vector", min = 0, max = 0xffffff): Uint8Array {
    const n = this.u24(`${what} length`);
    return this.bounded(n, what, min, max);
  }

  private bounded(n: number, what: string, min: number, max: number): Uint8Array {
    if (n < min || n > max) throw new DecodeError(`${what} length ${n} outside ${min}..${max}`);
    return this.bytes(n, what);
  }

  /** Throws unless every byte has been consumed. */
  expectEnd(what: string): void {
    if (this.pos !== this.end) throw new DecodeError(`${this.end - this.pos} trailing bytes after ${what}`);
  }
}

/** Growable big-endian writer. */
export class ByteWriter {
  private buf: Uint8Array;
  private pos = 0;

  constructor(initial = 256) {
    this.buf = new Uint8Array(Math.max(16, initial));
  }

  get length(): number {
    return this.pos;
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  u8(v: number): this {
    this.room(1);
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  u16(v: number): this {
    this.room(2);
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  u24(v: number): this {
    this.room(3);
    this.buf[this.pos++] = (v >>> 16) & 0xff;
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  u32(v: number): this {
    this.room(4);
    this.buf[this.pos++] = (v >>> 24) & 0xff;
    this.buf[this.pos++] = (v >>> 16) & 0xff;
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  u48(v: number): this {
    this.u16(Math.floor(v / 0x1_0000_0000));
    return this.u32(v >>> 0);
  }

  bytes(b: Uint8Array): this {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  vec8(b: Uint8Array): this {
    if (b.length > 0xff) throw new RangeError(`vector of ${b.length} bytes exceeds 2^8-1`);
    return this.u8(b.length).bytes(b);
  }

  vec16(b: Uint8Array): this {
    if (b.length > 0xffff) throw new RangeError(`vector of ${b.length} bytes exceeds 2^16-1`);
    return this.u16(b.length).bytes(b);
  }

  vec24(b: Uint8Array): this {
    if (b.length > 0xffffff) throw new RangeError(`vector of ${b.length} bytes exceeds 2^24-1`);
    return this.u24(b.length).bytes(b);
  }

  /** Writes a 16-bit length placeholder, runs fill, then patches the length. */
  lengthPrefixed16(fill: (w: this) => void): this {
    const at = this.pos;
    this.u16(0);
    fill(this);
    const n = this.pos - at - 2;
    if (n > 0xffff) throw new RangeError(`vector of ${n} bytes exceeds 2^16-1`);
    this.buf[at] = (n >>> 8) & 0xff;
    this.buf[at + 1] = n & 0xff;
    return this;
  }

  /** A copy of what was written. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

export function fromHex(s: string): Uint8Array {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(s)) throw new DecodeError(`not an even-length hex string`);
  return new Uint8Array(Buffer.from(s, "hex"));
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * A copy in fresh memory. (Buffer#slice returns a view, so `.slice()` on bytes
 * that may be a Buffer would keep the whole received datagram alive.)
 */
export function copyBytes(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
}
