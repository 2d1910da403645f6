#!/usr/bin/env node
// Makes sure the native test peers are installed before `npm test`:
//   openssl      (openssl s_server / s_client)
//   gnutls-bin   (gnutls-serv / gnutls-cli)
//   redis-server (the Redis store and cluster tests start their own, on a free port)
//   libmbedtls-dev nanopb libnanopb-dev libsodium-dev pkg-config make gcc
//                (the device in C, examples/c-device, built by its interop test)
// When something is missing and we are on Debian/Ubuntu as root (or with
// passwordless sudo), installs it with apt-get, non-interactively. Otherwise
// prints one loud warning naming the interop tests that will be skipped, and
// exits 0 either way: the tests skip themselves when a peer is absent.
// Fast path: when every binary is on PATH, no subprocess is started.
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync } from "node:fs";
import { delimiter, join } from "node:path";

const PEERS = [
  { pkg: "openssl", bins: ["openssl"], tests: "openssl s_client/s_server" },
  { pkg: "gnutls-bin", bins: ["gnutls-cli", "gnutls-serv"], tests: "gnutls-cli/gnutls-serv" },
  { pkg: "redis-server", bins: ["redis-server"], tests: "redis-server (the Redis store)" },
  // the C device: headers and libraries are files, not commands
  { pkg: "libmbedtls-dev", bins: [], files: ["/usr/include/mbedtls/ssl.h"], tests: "the C device (examples/c-device)" },
  { pkg: "nanopb", bins: ["nanopb_generator.py", "protoc"], tests: "the C device (examples/c-device)" },
  { pkg: "libnanopb-dev", bins: [], files: ["/usr/include/pb_decode.h"], tests: "the C device (examples/c-device)" },
  { pkg: "libsodium-dev", bins: [], files: ["/usr/include/sodium.h"], tests: "the C device (examples/c-device)" },
  { pkg: "pkg-config", bins: ["pkg-config"], tests: "the C device (examples/c-device)" },
  { pkg: "make", bins: ["make"], tests: "the C device (examples/c-device)" },
  { pkg: "gcc", bins: ["cc"], tests: "the C device (examples/c-device)" },
];

function onPath(bin) {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, bin), constants.X_OK);
      return true;
    } catch {
      // keep looking
    }
  }
  return false;
}

function missingPeers() {
  return PEERS.filter((p) => p.bins.some((b) => !onPath(b)) || (p.files ?? []).some((f) => !existsSync(f)));
}

function warn(missing, why) {
  const bins = missing.flatMap((p) => [...p.bins, ...(p.files ?? [])]).join(", ");
  const pkgs = missing.map((p) => p.pkg).join(" ");
  const tests = [...new Set(missing.map((p) => p.tests))].join(" and ");
  const bar = "!".repeat(78);
  console.warn(
    `\n${bar}\n` +
      `WARNING: test peers missing (${bins}). The interop tests against ` +
      `${tests} will be SKIPPED, because they could not be installed: ${why}. ` +
      `To run them, install the packages yourself (Debian/Ubuntu: ` +
      `'sudo apt-get install --no-install-recommends ${pkgs}') and run npm test again.` +
      `\n${bar}\n`,
  );
}

function run(cmd, args, timeoutMs) {
  const r = spawnSync(cmd, args, {
    stdio: ["ignore", "pipe", "pipe"],
    encoding: "utf8",
    timeout: timeoutMs,
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive", NEEDRESTART_MODE: "a" },
  });
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  if (r.error) return { ok: false, why: `${cmd} ${args.join(" ")}: ${r.error.message}`, out };
  if (r.status !== 0) {
    const tail = out.trim().split("\n").slice(-3).join(" | ");
    return { ok: false, why: `'${cmd} ${args.join(" ")}' exited with ${r.status}${tail ? `: ${tail}` : ""}`, out };
  }
  return { ok: true, why: "", out };
}

function main() {
  const missing = missingPeers();
  if (missing.length === 0) return;

  if (process.platform !== "linux" || !existsSync("/etc/debian_version")) {
    warn(missing, "this is not a Debian-based Linux (no /etc/debian_version), so apt-get is not used");
    return;
  }
  if (!onPath("apt-get")) {
    warn(missing, "apt-get is not on PATH");
    return;
  }

  // root runs apt-get directly; otherwise only passwordless sudo (never prompts).
  let prefix = [];
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot) {
    if (onPath("sudo") && run("sudo", ["-n", "true"], 10_000).ok) {
      prefix = ["sudo", "-n", "--preserve-env=DEBIAN_FRONTEND,NEEDRESTART_MODE"];
    } else {
      warn(missing, "not running as root and no passwordless sudo");
      return;
    }
  }
  const apt = (args, timeoutMs) =>
    prefix.length > 0 ? run(prefix[0], [...prefix.slice(1), "apt-get", ...args], timeoutMs) : run("apt-get", args, timeoutMs);

  const pkgs = missing.map((p) => p.pkg);
  console.log(`ensure-peers: installing ${pkgs.join(" ")} with apt-get (test peers)...`);
  const lock = ["-o", "DPkg::Lock::Timeout=120"];
  const update = apt(["-q", ...lock, "update"], 300_000);
  if (!update.ok) {
    warn(missing, `apt-get update failed (${update.why})`);
    return;
  }
  const install = apt(["-q", "-y", ...lock, "--no-install-recommends", "install", ...pkgs], 600_000);
  if (!install.ok) {
    warn(missing, `apt-get install failed (${install.why})`);
    return;
  }
  const still = missingPeers();
  if (still.length > 0) {
    warn(still, "apt-get install succeeded but the binaries or headers are still missing");
    return;
  }
  console.log(`ensure-peers: installed ${pkgs.join(" ")}.`);
}

try {
  main();
} catch (e) {
  warn(missingPeers(), `unexpected error: ${e instanceof Error ? e.message : String(e)}`);
}
process.exitCode = 0;
