/** Spreading the bench devices over loopback source addresses, and the port limit it computes. */
import { describe, expect, it } from "vitest";
import { CliError } from "../../../src/cli/errors.ts";
import {
  ASSUMED_PORTS_PER_ADDRESS,
  isLoopbackV4,
  loopbackAddresses,
  planSourceAddresses,
  PORT_RESERVE,
  sourceAddressOf,
  type PlanInput,
} from "../../../src/cli/bench/source-addresses.ts";

/** Linux's default ephemeral range: 28 232 ports, 27 232 for the devices. */
const LINUX = { low: 32768, high: 60999 };
const PER = LINUX.high - LINUX.low + 1 - PORT_RESERVE;

function plan(o: Partial<PlanInput> & { devices: number }): ReturnType<typeof planSourceAddresses> {
  return planSourceAddresses({ sockets: o.devices, requested: undefined, serverHost: "127.0.0.1", ports: LINUX, ...o });
}

function failure(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    return (e as Error).message;
  }
  throw new Error("did not throw");
}

describe("source addresses", () => {
  it("knows the loopback network and names its addresses", () => {
    expect(isLoopbackV4("127.0.0.1")).toBe(true);
    expect(isLoopbackV4("127.1.2.3")).toBe(true);
    expect(isLoopbackV4("10.0.0.1")).toBe(false);
    expect(isLoopbackV4("::1")).toBe(false);
    expect(isLoopbackV4("127.example")).toBe(false);
    expect(loopbackAddresses(3)).toEqual(["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    expect(loopbackAddresses(254).at(-1)).toBe("127.0.0.254");
    expect(() => loopbackAddresses(255)).toThrow(RangeError);
  });

  it("gives devices the addresses round-robin, so each holds about as many", () => {
    const addrs = loopbackAddresses(4);
    const counts = new Map<string, number>();
    for (let i = 0; i < 100_000; i++) {
      const a = sourceAddressOf(addrs, i) as string;
      counts.set(a, (counts.get(a) ?? 0) + 1);
    }
    expect([...counts.values()]).toEqual([25_000, 25_000, 25_000, 25_000]);
    expect(sourceAddressOf([], 7)).toBeUndefined();
  });

  it("uses one address (the system's pick) while one range holds the devices", () => {
    expect(plan({ devices: 1000 })).toEqual({ addresses: [], portsPerAddress: PER });
    expect(plan({ devices: PER }).addresses).toEqual([]);
  });

  it("takes as many loopback addresses as the devices need: 100 000 on 4", () => {
    expect(plan({ devices: PER + 1 }).addresses).toEqual(["127.0.0.1", "127.0.0.2"]);
    const p = plan({ devices: 100_000 });
    expect(p.addresses).toHaveLength(4);
    expect(100_000 / p.addresses.length).toBeLessThanOrEqual(p.portsPerAddress);
    expect(plan({ devices: 1_000_000 }).addresses).toHaveLength(Math.ceil(1_000_000 / PER));
  });

  it("counts only the sockets held at once (handshake churn)", () => {
    expect(plan({ devices: 100_000, sockets: 64 }).addresses).toEqual([]);
  });

  it("takes --source-addresses as given, and computes the limit from it", () => {
    expect(plan({ devices: 10, requested: 3 }).addresses).toEqual(["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    expect(failure(() => plan({ devices: 60_000, requested: 2 }))).toBe(
      "60 000 devices need 60 000 UDP source ports at once, but 2 source addresses (127.0.0.1-127.0.0.2) with this machine's ephemeral " +
        "port range (32768-60999) leave about 54 464 (27 232 each); use --source-addresses 3 or more, or at most 54 464 devices",
    );
    expect(failure(() => plan({ devices: 30_000, requested: 1 }))).toContain("1 source address (127.0.0.1) with");
  });

  it("says when even 254 addresses are not enough", () => {
    const small = { low: 40000, high: 41099 }; // 100 ports each
    expect(failure(() => plan({ devices: 30_000, ports: small }))).toContain("use at most 25 400 devices (254 addresses)");
  });

  it("a server off the loopback network: one source address, and the old limit", () => {
    expect(plan({ devices: 20_000, serverHost: "192.0.2.7" }).addresses).toEqual([]);
    expect(plan({ devices: 20_000, serverHost: "::1" }).addresses).toEqual([]);
    expect(failure(() => plan({ devices: 30_000, serverHost: "192.0.2.7" }))).toBe(
      "30 000 devices need 30 000 UDP source ports at once, but this machine's ephemeral port range (32768-60999) leaves about 27 232 on one " +
        "source address, and the server 192.0.2.7 is not on 127.0.0.0/8 (where the devices could use 127.0.0.2, ...); use at most 27 232 devices",
    );
    expect(failure(() => plan({ devices: 10, requested: 2, serverHost: "192.0.2.7" }))).toMatch(/^--source-addresses: .* 192\.0\.2\.7 is not$/);
  });

  it("without a readable port range: no limit, and addresses for an assumed range", () => {
    expect(plan({ devices: 40_000, ports: undefined })).toEqual({
      addresses: ["127.0.0.1", "127.0.0.2", "127.0.0.3"],
      portsPerAddress: ASSUMED_PORTS_PER_ADDRESS,
    });
    expect(plan({ devices: 40_000, ports: undefined, requested: 1 }).addresses).toEqual([]);
  });
});
