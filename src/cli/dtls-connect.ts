/** `dtlspush dtls connect`: a DTLS 1.2 client (PSK and/or certificate suites); stdin lines out, records in on stdout. */
import { createInterface } from "node:readline";
import {
  MS_RANGE,
  MTU_RANGE,
  expectPositionals,
  formatHostPort,
  parseCommandLine,
  parseHostPort,
  parseCertKeyPairs,
  parseFingerprint,
  parseInteger,
  parsePsk,
  parseServerName,
  stringListOption,
  stringOption,
} from "./args.ts";
import type { CertKeyFiles, HostPort, OptionSpecs, PskEntry } from "./args.ts";
import { PROGRAM, formatHelp } from "./command.ts";
import type { CliIo, LeafCommand } from "./command.ts";
import {
  MUTUAL_AUTH_EXAMPLE,
  certificateOptionMessage,
  describeDtlsError,
  loadDtls,
  readCertKeyFiles,
  readOptionFile,
  resolveSuites,
} from "./dtls-engine.ts";
import { CliError, UsageError, describeError, errorCode } from "./errors.ts";
import { formatConnected, formatReason, formatServerCertificate } from "./format.ts";

const COMMAND = `${PROGRAM} dtls connect`;
export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_WAIT_MS = 500;
const NEWLINE = Buffer.from("\n");

const OPTIONS: OptionSpecs = {
  psk: {
    type: "string",
    multiple: true,
    value: "ID:HEXKEY",
    description:
      "PSK identity and key, e.g. device-1:00112233445566778899aabbccddeeff;\n" +
      "offers the PSK suites. Required unless --ca or --fingerprint is given",
  },
  ca: {
    type: "string",
    value: "FILE",
    description:
      "PEM CA certificate(s) the server's chain must lead to; offers the\n" +
      "certificate suites. The certificate must also be valid now and\n" +
      "issued for --servername",
  },
  fingerprint: {
    type: "string",
    value: "SHA256HEX",
    description:
      "Accept exactly the server certificate with this SHA-256 fingerprint\n" +
      "(64 hex digits, colons allowed) instead of a CA; offers the certificate\n" +
      "suites. The name is not checked, the validity period is",
  },
  cert: {
    type: "string",
    value: "FILE",
    description:
      "PEM device certificate chain (leaf first), sent when the server asks\n" +
      "for a client certificate; give --key FILE with it. Only with --ca or\n" +
      "--fingerprint (certificate suites)",
  },
  key: { type: "string", value: "FILE", description: "PEM private key of --cert" },
  servername: {
    type: "string",
    value: "NAME",
    description: "DNS name or IP address the server certificate must be issued for\n(with --ca; default: HOST)",
  },
  suites: {
    type: "string",
    value: "NAME,...",
    description: "Cipher suites to offer, in order (IANA names; default: all)",
  },
  mtu: { type: "string", value: "N", description: `Largest UDP payload to send (${MTU_RANGE.min}-${MTU_RANGE.max}; default 1200)` },
  timeout: { type: "string", value: "MS", description: `Handshake timeout in milliseconds (default ${DEFAULT_TIMEOUT_MS})` },
  wait: {
    type: "string",
    value: "MS",
    description: `After standard input ends, wait this long for replies\n(restarted by each reply; default ${DEFAULT_WAIT_MS})`,
  },
  help: { type: "boolean", short: "h", description: "Show this help" },
};

export interface ConnectConfig {
  readonly target: HostPort;
  readonly psk: PskEntry | undefined;
  /** `--ca` file name (read by run). */
  readonly caFile: string | undefined;
  /** `--fingerprint`, lowercase hex without colons. */
  readonly fingerprint: string | undefined;
  /** `--servername`; undefined means the host. */
  readonly servername: string | undefined;
  /** `--cert`/`--key` (read by run): our certificate chain and key, for servers that ask. */
  readonly certificate: CertKeyFiles | undefined;
  /** Raw `--suites` value; resolved by the engine's parser. */
  readonly suites: string | undefined;
  readonly mtu: number | undefined;
  readonly timeoutMs: number;
  readonly waitMs: number;
}

/** Parses and validates `dtls connect` arguments (pure). */
export function parseConnectArgs(argv: readonly string[]): ConnectConfig {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, COMMAND);
  const [targetText = ""] = expectPositionals(positionals, ["HOST:PORT"], COMMAND);
  const target = parseHostPort(targetText, "HOST:PORT");
  const pskTexts = stringListOption(values, "psk");
  const pskText = pskTexts[0];
  if (pskTexts.length > 1) throw new UsageError("--psk: give it once (a client has one identity)");
  const psk = pskText === undefined ? undefined : parsePsk(pskText);
  const caFile = stringOption(values, "ca");
  if (caFile === "") throw new UsageError("--ca: the file name is empty");
  const fingerprintText = stringOption(values, "fingerprint");
  const fingerprint = fingerprintText === undefined ? undefined : parseFingerprint(fingerprintText);
  if (psk === undefined && caFile === undefined && fingerprint === undefined) {
    throw new UsageError(`missing --psk ID:HEXKEY, --ca FILE or --fingerprint SHA256HEX (see '${COMMAND} --help')`);
  }
  if (caFile !== undefined && fingerprint !== undefined) {
    throw new UsageError("--ca and --fingerprint: give one (with a pinned fingerprint the CA is not used)");
  }
  const [certificate] = parseCertKeyPairs(stringListOption(values, "cert"), stringListOption(values, "key"));
  if (certificate !== undefined && caFile === undefined && fingerprint === undefined) {
    throw new UsageError("--cert/--key: only with --ca or --fingerprint (a client certificate is sent in the certificate suites)");
  }
  const servernameText = stringOption(values, "servername");
  const servername = servernameText === undefined ? undefined : parseServerName(servernameText);
  if (servername !== undefined && caFile === undefined) {
    throw new UsageError(
      fingerprint !== undefined
        ? "--servername: the name is not checked with --fingerprint (the pin alone decides)"
        : "--servername: only with --ca (it names what the server certificate must be issued for)",
    );
  }
  const suites = stringOption(values, "suites");
  if (suites !== undefined && suites.trim() === "") throw new UsageError("--suites: no suite given");
  const mtuText = stringOption(values, "mtu");
  const timeoutText = stringOption(values, "timeout");
  const waitText = stringOption(values, "wait");
  return {
    target,
    psk,
    caFile,
    fingerprint,
    servername,
    certificate,
    suites,
    mtu: mtuText === undefined ? undefined : parseInteger(mtuText, "--mtu", MTU_RANGE),
    timeoutMs: timeoutText === undefined ? DEFAULT_TIMEOUT_MS : parseInteger(timeoutText, "--timeout", { min: 1, max: MS_RANGE.max }),
    waitMs: waitText === undefined ? DEFAULT_WAIT_MS : parseInteger(waitText, "--wait", MS_RANGE),
  };
}

/** Close reasons that mean the peer ended the session on purpose. */
const CLEAN_CLOSE_CODES = new Set(["close_notify", "closed"]);

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const config = parseConnectArgs(argv);
  const dtls = await loadDtls();
  const suites = resolveSuites(dtls, config.suites);
  const where = formatHostPort(config.target.host, config.target.port);
  const ca = config.caFile === undefined ? undefined : await readOptionFile("--ca", config.caFile);
  const own = config.certificate === undefined ? undefined : await readCertKeyFiles(config.certificate);

  let conn: Awaited<ReturnType<typeof dtls.connect>>;
  try {
    conn = await dtls.connect({
      host: config.target.host,
      port: config.target.port,
      ...(config.psk !== undefined ? { psk: { identity: config.psk.identity, key: config.psk.key } } : {}),
      ...(ca !== undefined ? { ca } : {}),
      ...(config.fingerprint !== undefined ? { fingerprint: config.fingerprint } : {}),
      ...(config.servername !== undefined ? { servername: config.servername } : {}),
      ...(own !== undefined ? { cert: own.cert, key: own.key } : {}),
      ...(suites !== undefined ? { suites } : {}),
      ...(config.mtu !== undefined ? { mtu: config.mtu } : {}),
      timeoutMs: config.timeoutMs,
    });
  } catch (e) {
    if (errorCode(e) === "bad_option") throw new CliError(optionErrorMessage(describeDtlsError(e), config.caFile, config.certificate));
    throw new CliError(`handshake with ${where} failed: ${describeDtlsError(e)}`);
  }
  return await new Promise<number>((resolve) => {
    let done = false;
    /** Set once we close, so our own close_notify is not reported as the peer's. */
    let closing = false;
    let waitTimer: NodeJS.Timeout | undefined;
    const stdin = io.stdin();
    const lines = createInterface({ input: stdin, crlfDelay: Infinity });

    const finish = (code: number): void => {
      if (done) return;
      done = true;
      clearTimeout(waitTimer);
      removeSignalHandler();
      lines.close();
      stdin.destroy();
      resolve(code);
    };
    /** Ends the session from our side with close_notify. */
    const closeSession = (code: number): void => {
      if (done || closing) return;
      closing = true;
      try {
        conn.close();
      } catch {
        // Already closed: nothing left to notify.
      }
      finish(code);
    };
    const fail = (message: string): void => {
      if (done) return;
      io.stderr.write(`${PROGRAM}: error: ${message}\n`);
      closeSession(1);
    };
    const startWait = (): void => {
      clearTimeout(waitTimer);
      waitTimer = setTimeout(() => closeSession(0), config.waitMs);
    };
    let stdinEnded = false;

    const removeSignalHandler = io.onShutdownSignal(() => closeSession(0));

    conn.on("data", (data: Uint8Array) => {
      if (done) return;
      io.stdout.write(Buffer.concat([data, NEWLINE]));
      if (stdinEnded) startWait();
    });
    conn.on("error", (e: unknown) => fail(`connection to ${where}: ${describeDtlsError(e)}`));
    conn.on("close", (reason: { code: string; message: string }) => {
      if (done || closing) return;
      const clean = CLEAN_CLOSE_CODES.has(reason.code);
      io.stderr.write(
        clean ? `closed by peer${formatReason(reason)}\n` : `${PROGRAM}: error: connection to ${where} closed${formatReason(reason)}\n`,
      );
      finish(clean ? 0 : 1);
    });

    lines.on("line", (line: string) => {
      if (done) return;
      try {
        conn.send(Buffer.from(line, "utf8"));
      } catch (e) {
        fail(`cannot send a line of ${Buffer.byteLength(line, "utf8")} bytes: ${describeError(e)}`);
      }
    });
    lines.on("close", () => {
      if (done) return;
      stdinEnded = true;
      startWait();
    });
    stdin.on("error", (e: unknown) => fail(`cannot read standard input: ${describeError(e)}`));

    // Only now, with signals and input handled, tell the user (and scripts) we are ready;
    // the server certificate (certificate suites) comes first, so it is known once 'connected' is seen.
    const serverCert = formatServerCertificate(conn.info);
    if (serverCert !== undefined) io.stderr.write(`${serverCert}\n`);
    io.stderr.write(`${formatConnected(conn.info)}\n`);
  });
}

/** The engine's option errors name `ca` and `certificates[0]` (our --cert/--key); say which files instead. */
function optionErrorMessage(message: string, caFile: string | undefined, certificate: CertKeyFiles | undefined): string {
  if (certificate !== undefined && message.startsWith("certificates[")) return certificateOptionMessage(message, [certificate]);
  if (caFile === undefined) return message;
  return message.replace(/^ca(:| holds)/, (_m, rest: string) => `--ca ${caFile}${rest === ":" ? ":" : ": holds"}`);
}

export const dtlsConnectCommand: LeafCommand = {
  kind: "command",
  name: "connect",
  summary: "Connect to a DTLS 1.2 server (PSK or certificates); send stdin lines, print records",
  help: () =>
    formatHelp({
      usage: [
        `${COMMAND} HOST:PORT --psk ID:HEXKEY [options]`,
        `${COMMAND} HOST:PORT --ca FILE [--servername NAME] [--cert FILE --key FILE] [options]`,
        `${COMMAND} HOST:PORT --fingerprint SHA256HEX [--cert FILE --key FILE] [options]`,
      ],
      description:
        "Connects to a DTLS 1.2 server with a pre-shared key (PSK suites) and/or\n" +
        "verifying its certificate (certificate suites: --ca or --fingerprint), and\n" +
        "prints 'connected suite=NAME ems=yes|no' on standard error once established,\n" +
        "preceded by 'server-cert subject=\"CN=…, O=…\" sha256=HEX' when the server\n" +
        "sent a certificate. A certificate that fails verification ends the handshake\n" +
        "(unknown_ca, certificate_expired, bad_certificate; exit 1).\n" +
        "With --cert/--key the client sends that certificate when the server asks for\n" +
        "one; a server that requires one and gets none (or refuses it) ends the\n" +
        "handshake with an alert (alert_received; exit 1).\n" +
        "Each line of standard input is sent as one application record; each record\n" +
        "received is printed as one line on standard output. When standard input\n" +
        "ends, waits for replies (--wait), then closes with close_notify and exits 0.",
      positionals: [{ name: "HOST:PORT", description: "Server address, e.g. 127.0.0.1:5684 or [::1]:5684" }],
      options: OPTIONS,
      examples: [
        `echo hello | ${COMMAND} 127.0.0.1:5684 --psk device-1:00112233445566778899aabbccddeeff`,
        `${COMMAND} [::1]:5684 --psk device-1:0102 --suites TLS_PSK_WITH_AES_128_GCM_SHA256 --wait 2000`,
        `echo hello | ${COMMAND} 127.0.0.1:5684 --ca certs/ca.pem --servername localhost`,
      ],
      notes: MUTUAL_AUTH_EXAMPLE,
    }),
  run,
};
