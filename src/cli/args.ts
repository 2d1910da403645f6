/**
 * Pure command-line parsing helpers shared by all commands. Nothing here
 * touches `process`; every function either returns a value or throws a
 * `UsageError` with a one-line message.
 */
import { isIP } from "node:net";
import { parseArgs } from "node:util";
import { UsageError, errorCode, firstLine } from "./errors.ts";

export interface HostPort {
  /** Host name or IP address, without IPv6 brackets. */
  readonly host: string;
  readonly port: number;
}

export interface PskEntry {
  readonly identity: string;
  readonly key: Uint8Array;
}

export interface HostPortOptions {
  /** Accept port 0 (let the system pick; for listening). Default false. */
  readonly allowPortZero?: boolean;
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
const DIGITS = /^[0-9]+$/;
const HEX = /^[0-9a-fA-F]*$/;
/** Limit of the 16-bit length fields for PSK identity and key (RFC 4279). */
const MAX_PSK_FIELD = 0xffff;

/**
 * Parses `HOST:PORT`, `[IPv6]:PORT` (e.g. `[::1]:5684`) or `IPv4:PORT`.
 * `label` names the argument in error messages, e.g. "--listen".
 */
export function parseHostPort(text: string, label: string, options: HostPortOptions = {}): HostPort {
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close === -1) throw new UsageError(`${label}: missing ']' in '${text}' (expected [IPv6]:PORT, e.g. [::1]:5684)`);
    host = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (!rest.startsWith(":")) throw new UsageError(`${label}: expected ':PORT' after ']' in '${text}'`);
    portText = rest.slice(1);
    const zone = host.indexOf("%");
    const address = zone === -1 ? host : host.slice(0, zone);
    if (isIP(address) !== 6) throw new UsageError(`${label}: '${host}' is not an IPv6 address`);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon === -1) throw new UsageError(`${label}: expected HOST:PORT, got '${text}'`);
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(":")) {
      throw new UsageError(`${label}: put IPv6 addresses in brackets, e.g. [::1]:5684 (got '${text}')`);
    }
    if (host === "") throw new UsageError(`${label}: missing host in '${text}' (e.g. 127.0.0.1:5684)`);
    if (isIP(host) === 0 && (!HOSTNAME.test(host) || /^[0-9.]+$/.test(host))) {
      throw new UsageError(`${label}: '${host}' is not a valid host name or IP address`);
    }
  }
  if (portText === "") throw new UsageError(`${label}: missing port in '${text}'`);
  if (!DIGITS.test(portText)) throw new UsageError(`${label}: port '${portText}' is not a number`);
  const port = Number(portText);
  const min = options.allowPortZero === true ? 0 : 1;
  if (port < min || port > 65535) {
    throw new UsageError(`${label}: port ${portText} is out of range (${min}-65535)`);
  }
  return { host, port };
}

/** Formats an address for humans and logs: `1.2.3.4:5`, `[::1]:5`. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Parses `ID:HEXKEY`. The key is after the last ':' so identities may
 * contain colons (e.g. `urn:dev:1:00ff`). Error messages never repeat the key.
 */
export function parsePsk(text: string, label = "--psk"): PskEntry {
  const colon = text.lastIndexOf(":");
  if (colon === -1) throw new UsageError(`${label}: expected ID:HEXKEY (e.g. device-1:000102030405060708090a0b0c0d0e0f)`);
  const identity = text.slice(0, colon);
  const hex = text.slice(colon + 1);
  if (identity === "") throw new UsageError(`${label}: the identity before ':' is empty`);
  if (Buffer.byteLength(identity, "utf8") > MAX_PSK_FIELD) {
    throw new UsageError(`${label}: the identity is longer than ${MAX_PSK_FIELD} bytes`);
  }
  const who = `${label} ${quote(identity)}`;
  if (hex === "") throw new UsageError(`${who}: the key after ':' is empty`);
  if (!HEX.test(hex)) throw new UsageError(`${who}: the key must be hexadecimal digits (0-9, a-f)`);
  if (hex.length % 2 !== 0) {
    throw new UsageError(`${who}: the key must have an even number of hex digits (got ${hex.length})`);
  }
  if (hex.length / 2 > MAX_PSK_FIELD) throw new UsageError(`${who}: the key is longer than ${MAX_PSK_FIELD} bytes`);
  return { identity, key: Uint8Array.from(Buffer.from(hex, "hex")) };
}

/** Parses several `--psk` values; an identity may appear only once. */
export function parsePskList(texts: readonly string[], label = "--psk"): PskEntry[] {
  const seen = new Set<string>();
  return texts.map((text) => {
    const entry = parsePsk(text, label);
    if (seen.has(entry.identity)) throw new UsageError(`${label}: identity ${quote(entry.identity)} is given twice`);
    seen.add(entry.identity);
    return entry;
  });
}

/** A server certificate chain file and its private key file (`--cert FILE --key FILE`). */
export interface CertKeyFiles {
  readonly cert: string;
  readonly key: string;
}

/**
 * Pairs `--cert` and `--key` values by position: the Nth `--key` belongs to
 * the Nth `--cert`. Both lists must have the same length.
 */
export function parseCertKeyPairs(certs: readonly string[], keys: readonly string[]): CertKeyFiles[] {
  if (certs.some((c) => c === "")) throw new UsageError("--cert: the file name is empty");
  if (keys.some((k) => k === "")) throw new UsageError("--key: the file name is empty");
  const lonelyCert = certs[keys.length];
  if (lonelyCert !== undefined) {
    throw new UsageError(`--cert ${quote(lonelyCert)} has no --key (give --cert FILE --key FILE in pairs)`);
  }
  const lonelyKey = keys[certs.length];
  if (lonelyKey !== undefined) {
    throw new UsageError(`--key ${quote(lonelyKey)} has no --cert (give --cert FILE --key FILE in pairs)`);
  }
  return certs.map((cert, i) => ({ cert, key: keys[i] ?? "" }));
}

/**
 * Parses a SHA-256 certificate fingerprint: 64 hex digits, colons allowed
 * anywhere (`AB:CD:…` as openssl prints it). Returns lowercase hex without colons.
 */
export function parseFingerprint(text: string, label = "--fingerprint"): string {
  const hex = text.trim().replaceAll(":", "");
  if (hex === "") throw new UsageError(`${label}: the fingerprint is empty`);
  if (!HEX.test(hex)) throw new UsageError(`${label}: expected hexadecimal digits (0-9, a-f) and colons`);
  if (hex.length !== 64) {
    throw new UsageError(`${label}: a SHA-256 fingerprint has 64 hex digits, got ${hex.length}`);
  }
  return hex.toLowerCase();
}

/** Parses a server name to check a certificate against: a DNS name or an IP address (IPv6 without brackets). */
export function parseServerName(text: string, label = "--servername"): string {
  if (text === "") throw new UsageError(`${label}: the name is empty`);
  if (isIP(text) !== 0) return text;
  if (!HOSTNAME.test(text) || /^[0-9.]+$/.test(text)) {
    throw new UsageError(`${label}: '${text}' is not a valid host name or IP address`);
  }
  return text;
}

export interface IntegerRange {
  readonly min: number;
  readonly max: number;
}

/** Parses a decimal integer (digits only) within [min, max]. */
export function parseInteger(text: string, label: string, range: IntegerRange): number {
  if (!DIGITS.test(text)) throw new UsageError(`${label}: '${text}' is not a whole number`);
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < range.min || value > range.max) {
    throw new UsageError(`${label}: ${text} is out of range (${range.min}-${range.max})`);
  }
  return value;
}

/** Bounds of `--mtu`: the largest UDP payload we send. */
export const MTU_RANGE: IntegerRange = { min: 100, max: 65507 };
/** Bounds of millisecond durations (up to one day). */
export const MS_RANGE: IntegerRange = { min: 0, max: 86_400_000 };

/** Quotes a value for a message or a log field unless it is plainly safe. */
export function quote(value: string): string {
  return /^[\x21-\x7e]+$/.test(value) && !/["'=\\]/.test(value) ? value : JSON.stringify(value);
}

// ---------------------------------------------------------------------------
// parseArgs wrapper

export interface OptionSpec {
  readonly type: "string" | "boolean";
  readonly short?: string;
  readonly multiple?: boolean;
  /** Placeholder shown in help, e.g. "HOST:PORT". Only for string options. */
  readonly value?: string;
  /** One line (or a few short lines) of help. */
  readonly description: string;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

export type OptionValue = string | boolean | string[] | undefined;

export interface ParsedCommandLine {
  readonly values: Readonly<Record<string, OptionValue>>;
  readonly positionals: readonly string[];
}

/**
 * Strict `node:util` parseArgs, with its errors turned into short usage
 * errors that point at the command's help.
 */
export function parseCommandLine(argv: readonly string[], specs: OptionSpecs, command: string): ParsedCommandLine {
  const options: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {};
  for (const [name, spec] of Object.entries(specs)) {
    options[name] = {
      type: spec.type,
      ...(spec.short !== undefined ? { short: spec.short } : {}),
      ...(spec.multiple === true ? { multiple: true } : {}),
    };
  }
  try {
    const { values, positionals } = parseArgs({ args: [...argv], options, strict: true, allowPositionals: true });
    return { values: values as Record<string, OptionValue>, positionals };
  } catch (e) {
    throw new UsageError(`${parseArgsMessage(e)} (see '${command} --help')`);
  }
}

function parseArgsMessage(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  // Node quotes the option as '--name', '-x' or '-x, --name <value>': prefer the long name.
  const quoted = /'(-[^']*)'/.exec(message)?.[1] ?? "";
  const flag = /--[A-Za-z0-9][\w-]*/.exec(quoted)?.[0] ?? /^-[^\s,]*/.exec(quoted)?.[0];
  switch (errorCode(e)) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return flag !== undefined ? `unknown option '${flag}'` : lowerFirst(firstLine(message));
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      if (flag === undefined) break;
      if (message.includes("does not take an argument")) return `option '${flag}' does not take a value`;
      if (message.includes("ambiguous")) {
        return `option '${flag}' needs a value (to give a value starting with '-', write ${flag}=VALUE)`;
      }
      return `option '${flag}' needs a value`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL": {
      const arg = /'([^']*)'/.exec(message)?.[1];
      if (arg !== undefined) return `unexpected argument '${arg}'`;
      break;
    }
    default:
      break;
  }
  return lowerFirst(firstLine(message));
}

function lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}

/** Expects exactly the named positionals; returns them in order. */
export function expectPositionals(positionals: readonly string[], names: readonly string[], command: string): string[] {
  if (positionals.length > names.length) {
    const extra = positionals[names.length] ?? "";
    throw new UsageError(`unexpected argument '${extra}' (see '${command} --help')`);
  }
  if (positionals.length < names.length) {
    const missing = names[positionals.length] ?? "argument";
    throw new UsageError(`missing ${missing} (see '${command} --help')`);
  }
  return [...positionals];
}

/** Typed accessors over parsed option values. */
export function stringOption(values: ParsedCommandLine["values"], name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : undefined;
}

export function stringListOption(values: ParsedCommandLine["values"], name: string): string[] {
  const v = values[name];
  if (Array.isArray(v)) return v;
  return typeof v === "string" ? [v] : [];
}

export function booleanOption(values: ParsedCommandLine["values"], name: string): boolean {
  return values[name] === true;
}

/** True when `-h` or `--help` appears before a `--` terminator. */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const arg of argv) {
    if (arg === "--") return false;
    if (arg === "-h" || arg === "--help") return true;
  }
  return false;
}
