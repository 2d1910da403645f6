/**
 * Benchmark peer: a DTLS echo server (or, with --raw, a plain UDP echo server
 * as the reference) in its own process. It prints `port N` once listening and
 * answers each stdin line "cpu" with its own CPU time in microseconds, so the
 * driver measures server CPU only. Exits when stdin closes.
 */
import { createSocket } from "node:dgram";
import { createInterface } from "node:readline";
import { listen } from "../../src/dtls/index.ts";

const raw = process.argv.includes("--raw");
const suiteArg = process.argv.find((a) => a.startsWith("--suite="))?.slice(8);
const key = Buffer.from("000102030405060708090a0b0c0d0e0f", "hex");

if (raw) {
  const sock = createSocket("udp4");
  sock.on("message", (m, r) => sock.send(m, r.port, r.address));
  sock.bind(0, "127.0.0.1", () => console.log(`port ${sock.address().port}`));
} else {
  const server = await listen({
    host: "127.0.0.1",
    port: 0,
    psk: { lookup: (id) => (id.startsWith("bench-") ? key : undefined) },
    suites: suiteArg ? [suiteArg as never] : undefined,
    maxHandshakes: 10_000,
  });
  server.on("session", (c) => c.on("data", (d) => c.send(d)));
  console.log(`port ${server.address().port}`);
}
const rl = createInterface({ input: process.stdin });
rl.on("line", (l) => {
  if (l.trim() === "cpu") {
    const u = process.cpuUsage();
    console.log(`cpu ${u.user} ${u.system}`);
  }
});
rl.on("close", () => process.exit(0));
