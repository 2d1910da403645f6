/**
 * Which local addresses the simulated devices send from (pure). Every device
 * connection is a UDP socket of its own, so one source address gives at most
 * the ephemeral port range's worth of devices (about 28 000 on Linux). A
 * server on the loopback network 127.0.0.0/8 can be reached from any address
 * of it (on Linux all of them are the loopback interface's), so the devices
 * are spread over 127.0.0.1, 127.0.0.2, ...: each address has its own range.
 */
import { isIP } from "node:net";
import { CliError } from "../errors.ts";
import { groupDigits } from "./stats.ts";

/** Most source addresses: 127.0.0.1 .. 127.0.0.254. */
export const MAX_SOURCE_ADDRESSES = 254;
/** Ports of each address kept free for everything else on the machine. */
export const PORT_RESERVE = 1000;
/** Ports per address assumed where the ephemeral range cannot be read (IANA's 49152-65535). */
export const ASSUMED_PORTS_PER_ADDRESS = 16_384;

export interface PortRange {
  readonly low: number;
  readonly high: number;
}

export interface SourcePlan {
  /** the devices' source addresses, device i uses addresses[i % length]; empty: the system picks one */
  readonly addresses: readonly string[];
  /** UDP ports one address offers the devices (the range less the reserve) */
  readonly portsPerAddress: number;
}

/** An IPv4 address on the loopback network 127.0.0.0/8. */
export function isLoopbackV4(host: string): boolean {
  return isIP(host) === 4 && host.startsWith("127.");
}

/** 127.0.0.1 .. 127.0.0.<n>. */
export function loopbackAddresses(n: number): string[] {
  if (!Number.isInteger(n) || n < 1 || n > MAX_SOURCE_ADDRESSES) throw new RangeError(`source addresses: 1 to ${MAX_SOURCE_ADDRESSES}, got ${n}`);
  return Array.from({ length: n }, (_, i) => `127.0.0.${i + 1}`);
}

/** The source address of device `index` (undefined: the system picks one). */
export function sourceAddressOf(addresses: readonly string[], index: number): string | undefined {
  return addresses.length === 0 ? undefined : addresses[index % addresses.length];
}

export interface PlanInput {
  /** devices in the run */
  readonly devices: number;
  /** UDP sockets the devices hold at once (handshake churn: its concurrency; otherwise every device) */
  readonly sockets: number;
  /** --source-addresses, if given */
  readonly requested: number | undefined;
  /** where the devices connect */
  readonly serverHost: string;
  /** the ephemeral port range, undefined where it cannot be read */
  readonly ports: PortRange | undefined;
}

/**
 * The source addresses for a run: as many loopback addresses as the sockets
 * need (or --source-addresses), when the server is on 127.0.0.0/8; else the
 * one the system picks. Throws a CliError when the sockets exceed the ports
 * of the addresses available, naming the limit.
 */
export function planSourceAddresses(o: PlanInput): SourcePlan {
  const perAddress = o.ports === undefined ? ASSUMED_PORTS_PER_ADDRESS : Math.max(1, o.ports.high - o.ports.low + 1 - PORT_RESERVE);
  const loopback = isLoopbackV4(o.serverHost);
  const needed = Math.ceil(o.sockets / perAddress);
  if (!loopback && o.requested !== undefined && o.requested > 1) {
    throw new CliError(
      `--source-addresses: the devices can spread over several source addresses only when the server is on 127.0.0.0/8 (they bind 127.0.0.1, 127.0.0.2, ...); ${o.serverHost} is not`,
    );
  }
  const count = loopback ? (o.requested ?? Math.min(MAX_SOURCE_ADDRESSES, Math.max(1, needed))) : 1;
  if (o.ports !== undefined && o.sockets > count * perAddress) {
    const range = `${o.ports.low}-${o.ports.high}`;
    const limit = groupDigits(count * perAddress);
    const what = `${groupDigits(o.devices)} devices need ${groupDigits(o.sockets)} UDP source ports at once, but`;
    if (!loopback) {
      throw new CliError(
        `${what} this machine's ephemeral port range (${range}) leaves about ${limit} on one source address, and the server ${o.serverHost} is not on 127.0.0.0/8 ` +
          `(where the devices could use 127.0.0.2, ...); use at most ${limit} devices`,
      );
    }
    const fix =
      needed <= MAX_SOURCE_ADDRESSES
        ? `use --source-addresses ${needed} or more, or at most ${limit} devices`
        : `use at most ${groupDigits(MAX_SOURCE_ADDRESSES * perAddress)} devices (${MAX_SOURCE_ADDRESSES} addresses)`;
    throw new CliError(
      `${what} ${count} source address${count === 1 ? "" : "es"} (127.0.0.1${count > 1 ? `-127.0.0.${count}` : ""}) with this machine's ephemeral port range (${range}) ` +
        `leave about ${limit} (${groupDigits(perAddress)} each); ${fix}`,
    );
  }
  // one address: the system picks it, as any client would
  return { addresses: count > 1 ? loopbackAddresses(count) : [], portsPerAddress: perAddress };
}
