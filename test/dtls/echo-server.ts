/** PSK echo servers on 127.0.0.1 for the endpoint tests, closed after each test. */
import { afterEach } from "vitest";
import { listen, type DtlsConnection, type DtlsServer } from "../../src/dtls/index.ts";

export const KEY = Buffer.from("00112233445566778899aabbccddeeff", "hex");

/**
 * Returns `server(opts)`: a server (identity "dev", KEY) that answers every
 * record with "echo:" + the record. Every server it made is closed after each test.
 */
export function echoServers(): (opts?: Partial<Parameters<typeof listen>[0]>) => Promise<DtlsServer> {
  let servers: DtlsServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.map((s) => s.close()));
    servers = [];
  });
  return async (opts = {}) => {
    const s = await listen({ host: "127.0.0.1", port: 0, psk: { keys: new Map([["dev", KEY]]) }, ...opts });
    servers.push(s);
    s.on("session", (c) => c.on("data", (d) => c.send(Buffer.concat([Buffer.from("echo:"), d]))));
    return s;
  };
}

/** The next record a connection receives, as text. */
export function nextData(c: DtlsConnection): Promise<string> {
  return new Promise((resolve) => c.once("data", (d) => resolve(d.toString())));
}
