/** `dtlspush bench` argument parsing: modes, defaults per mode, bounds, and the combinations refused. */
import { describe, expect, it } from "vitest";
import { UsageError } from "../../../src/cli/errors.ts";
import { MAX_DEVICES_PER_WORKER } from "../../../src/cli/bench/fleet.ts";
import { DEFAULT_DEVICES, fanoutRoundMs, globalTimeoutSeconds, minimumWorkers, parseBenchArgs } from "../../../src/cli/bench/options.ts";

describe("parseBenchArgs", () => {
  it("applies the defaults of each mode", () => {
    const push = parseBenchArgs(["push"]);
    expect(push).toMatchObject({
      mode: "push",
      devices: DEFAULT_DEVICES.push,
      durationSeconds: 10,
      count: undefined,
      rate: undefined,
      payloadBytes: 100,
      workers: undefined,
      window: undefined,
      batch: undefined,
      verify: false,
      inProcess: false,
      store: "sqlite",
      keep: false,
      json: false,
      server: undefined,
    });
    expect(parseBenchArgs(["sessions"])).toMatchObject({ devices: 1000, durationSeconds: 3 });
    expect(parseBenchArgs(["fanout"]).devices).toBe(1000);
    expect(parseBenchArgs(["handshake"]).devices).toBe(100);
  });

  it("takes every option", () => {
    const c = parseBenchArgs([
      "push",
      "--api",
      "http://127.0.0.1:9000",
      "--token",
      "T",
      "--server",
      "127.0.0.1:5999",
      "--devices",
      "250",
      "--duration",
      "1.5",
      "--count",
      "1000",
      "--rate",
      "2500.5",
      "--payload",
      "200",
      "--workers",
      "3",
      "--concurrency",
      "8",
      "--window",
      "99",
      "--batch",
      "100",
      "--verify",
      "--keep",
      "--json",
      "--timeout",
      "30",
      "--data-dir",
      "d",
      "--source-addresses",
      "4",
    ]);
    expect(c).toMatchObject({
      devices: 250,
      durationSeconds: 1.5,
      count: 1000,
      rate: 2500.5,
      payloadBytes: 200,
      workers: 3,
      sourceAddresses: 4,
      concurrency: 8,
      window: 99,
      batch: 100,
      verify: true,
      keep: true,
      json: true,
      timeoutSeconds: 30,
      server: { host: "127.0.0.1", port: 5999 },
      api: { token: "T" },
      access: { dataDir: "d" },
    });
    expect(c.api.api?.href).toBe("http://127.0.0.1:9000/");
    expect(globalTimeoutSeconds(c)).toBe(30);
  });

  it("--resume: handshake only, a second phase as long (the run's bound grows with it)", () => {
    expect(parseBenchArgs(["handshake"]).resume).toBe(false);
    const c = parseBenchArgs(["handshake", "--resume", "--duration", "10"]);
    expect(c.resume).toBe(true);
    expect(globalTimeoutSeconds(c) - globalTimeoutSeconds(parseBenchArgs(["handshake", "--duration", "10"]))).toBe(20);
    expect(() => parseBenchArgs(["push", "--resume"])).toThrow("--resume: only for handshake");
  });

  it("--in-process takes --store and ignores DTLSPUSH_API/DTLSPUSH_TOKEN", () => {
    const c = parseBenchArgs(["push", "--in-process", "--store", "memory"], { DTLSPUSH_API: "http://10.0.0.1:1", DTLSPUSH_TOKEN: "X" });
    expect(c).toMatchObject({ inProcess: true, store: "memory", api: { api: undefined, token: undefined } });
  });

  it("--cert: certificates instead of PSKs, with a key curve and a CA directory, in every mode", () => {
    expect(parseBenchArgs(["push"]).cert).toBeUndefined();
    expect(parseBenchArgs(["handshake", "--cert"]).cert).toEqual({ curve: "p256", caDir: undefined });
    expect(parseBenchArgs(["sessions", "--cert", "--curve", "p384", "--ca-dir", "certs"]).cert).toEqual({ curve: "p384", caDir: "certs" });
    expect(parseBenchArgs(["fanout", "--cert", "--in-process"])).toMatchObject({ inProcess: true, cert: { curve: "p256" } });
    // issuing certificates is part of the run's bound
    const psk = globalTimeoutSeconds(parseBenchArgs(["handshake", "--devices", "100000"]));
    expect(globalTimeoutSeconds(parseBenchArgs(["handshake", "--devices", "100000", "--cert"]))).toBeGreaterThan(psk + 100_000 * 0.007);
  });

  it("needs enough workers for the devices", () => {
    expect(minimumWorkers(1)).toBe(1);
    expect(minimumWorkers(MAX_DEVICES_PER_WORKER)).toBe(1);
    expect(minimumWorkers(MAX_DEVICES_PER_WORKER + 1)).toBe(2);
    expect(() => parseBenchArgs(["sessions", "--devices", String(MAX_DEVICES_PER_WORKER + 1), "--workers", "1"])).toThrow(
      `--workers: ${MAX_DEVICES_PER_WORKER + 1} devices need at least 2 workers`,
    );
  });

  it("bounds the whole run by the devices and the duration", () => {
    const small = globalTimeoutSeconds(parseBenchArgs(["push", "--devices", "10", "--duration", "1"]));
    const big = globalTimeoutSeconds(parseBenchArgs(["sessions", "--devices", "100000"]));
    expect(small).toBeGreaterThanOrEqual(60);
    expect(small).toBeLessThan(120);
    expect(big).toBeGreaterThan(small);
  });

  it("allows 100 000 devices ~1 300 handshakes a second with room to spare, and a fan-out round twice over", () => {
    const sessions = globalTimeoutSeconds(parseBenchArgs(["sessions", "--devices", "100000"]));
    // registering, connecting and removing at 500 a second each
    expect(sessions).toBeGreaterThanOrEqual(600);
    expect(sessions).toBeGreaterThan(3 * (100_000 / 1_300));
    expect(sessions).toBeLessThan(1200);
    const fanout = globalTimeoutSeconds(parseBenchArgs(["fanout", "--devices", "100000", "--count", "2"]));
    expect(fanout - sessions).toBeGreaterThanOrEqual((2 * 2 * fanoutRoundMs(100_000)) / 1000);
    expect(parseBenchArgs(["sessions"]).sourceAddresses).toBeUndefined();
  });

  it.each([
    [[], "missing MODE"],
    [["flood"], "unknown mode 'flood': use one of handshake, push, sessions, fanout"],
    [["push", "extra"], "unexpected argument 'extra'"],
    [["push", "--devices", "0"], "--devices: 0 is out of range"],
    [["push", "--duration", "0"], "--duration: 0 is out of range"],
    [["push", "--duration", "abc"], "--duration: 'abc' is not a number of seconds"],
    [["push", "--payload", "10"], "--payload: 10 is out of range (24-65536)"],
    [["push", "--rate=-1"], "--rate: '-1' is not a number"],
    [["sessions", "--count", "3"], "--count: only for push, handshake and fanout"],
    [["fanout", "--rate", "3"], "--rate: only for push"],
    [["handshake", "--window", "3"], "--window: only for push"],
    [["fanout", "--batch", "3"], "--batch: only for push"],
    [["push", "--batch", "1001"], "--batch: 1001 is out of range (1-1000)"],
    [["push", "--batch", "0"], "--batch: 0 is out of range (1-1000)"],
    [["push", "--store", "memory"], "--store: only with --in-process"],
    [["push", "--in-process", "--store", "disk"], "--store: 'disk' is not sqlite or memory"],
    [["push", "--in-process", "--api", "http://127.0.0.1:1"], "--api: --in-process starts its own daemon"],
    [["push", "--in-process", "--server", "127.0.0.1:1"], "--server: --in-process starts its own daemon"],
    [["push", "--server", "nohost"], "--server: expected HOST:PORT"],
    [["push", "--workers", "65"], "--workers: 65 is out of range (1-64)"],
    [["push", "--source-addresses", "0"], "--source-addresses: 0 is out of range (1-254)"],
    [["push", "--source-addresses", "255"], "--source-addresses: 255 is out of range (1-254)"],
    [["push", "--bogus"], "unknown option '--bogus'"],
    [["push", "--curve", "p384"], "--curve: only with --cert"],
    [["push", "--ca-dir", "certs"], "--ca-dir: only with --cert"],
    [["push", "--cert", "--curve", "p521"], "--curve: 'p521' is not p256 or p384"],
    [["push", "--cert", "--curve", "rsa2048"], "--curve: 'rsa2048' is not p256 or p384"],
    [["push", "--cert", "--ca-dir", ""], "--ca-dir: the directory is empty"],
  ])("%j is a usage error", (argv, message) => {
    expect(() => parseBenchArgs(argv)).toThrow(UsageError);
    expect(() => parseBenchArgs(argv)).toThrow(message);
  });
});
