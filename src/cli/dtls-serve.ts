/** `dtlspush dtls serve`: a DTLS 1.2 server (PSK and/or certificates) that logs sessions and echoes or prints records. */
import {
  MTU_RANGE,
  booleanOption,
  expectPositionals,
  formatHostPort,
  parseCommandLine,
  parseHostPort,
  parseCertKeyPairs,
  parseInteger,
  parsePskList,
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
import { formatClosed, formatData, formatEstablished, formatHandshakeError, formatSessionError } from "./format.ts";

const COMMAND = `${PROGRAM} dtls serve`;
/** How long a clean shutdown may take before we give up. */
const CLOSE_TIMEOUT_MS = 10_000;

const OPTIONS: OptionSpecs = {
  listen: {
    type: "string",
    value: "HOST:PORT",
    description: "Address to listen on (required), e.g. 127.0.0.1:5684,\n[::1]:5684; port 0 picks a free port",
  },
  psk: {
    type: "string",
    multiple: true,
    value: "ID:HEXKEY",
    description:
      "Accept this PSK identity and key (repeat for more devices),\n" +
      "e.g. device-1:00112233445566778899aabbccddeeff; required unless\n" +
      "--cert/--key are given",
  },
  cert: {
    type: "string",
    multiple: true,
    value: "FILE",
    description:
      "PEM certificate chain (leaf first, then intermediates) for the\n" +
      "certificate suites; give --key FILE with each. Repeat the pair for\n" +
      "more chains (e.g. ECDSA and RSA): the Nth --key belongs to the Nth\n" +
      "--cert, and the server picks a chain per client",
  },
  key: { type: "string", multiple: true, value: "FILE", description: "PEM private key of the preceding --cert" },
  "client-auth": {
    type: "string",
    value: "MODE",
    description:
      "Client certificates (certificate suites, so only with --cert/--key):\n" +
      "none (default: not asked for), request (asked for; a client may send\n" +
      "none, but one it sends must verify) or require (a client without a\n" +
      "valid certificate fails the handshake). request and require need --ca",
  },
  ca: {
    type: "string",
    value: "FILE",
    description:
      "PEM CA certificate(s) client certificates must lead to (with\n" + "--client-auth request or require); their names are sent to clients",
  },
  "client-identity": {
    type: "string",
    value: "SOURCE",
    description:
      "Where a client certificate's device identity (identity=) comes from:\n" +
      "cn (subject common name; default), san-uri (first SAN URI, e.g.\n" +
      "urn:dtlspush:device:ID) or fingerprint (SHA-256, lowercase hex)",
  },
  "legacy-sha1-signatures": {
    type: "boolean",
    description:
      "Sign with SHA-1 for clients that send no signature_algorithms\n" +
      "(such as @nodertc/dtls). Off by default: SHA-1 signatures are\n" +
      "forgeable in principle and refused by current security policies",
  },
  echo: { type: "boolean", description: "Send every application record back to its sender\n(default: print received records)" },
  suites: {
    type: "string",
    value: "NAME,...",
    description: "Cipher suites in preference order (IANA names),\ne.g. TLS_PSK_WITH_AES_128_CCM_8,TLS_PSK_WITH_AES_128_GCM_SHA256",
  },
  mtu: { type: "string", value: "N", description: `Largest UDP payload to send (${MTU_RANGE.min}-${MTU_RANGE.max}; default 1200)` },
  "require-ems": { type: "boolean", description: "Refuse clients without extended master secret (RFC 7627)" },
  "psk-hint": { type: "string", value: "TEXT", description: "Send this PSK identity hint (default: none)" },
  help: { type: "boolean", short: "h", description: "Show this help" },
};

const CLIENT_AUTH_MODES = ["none", "request", "require"] as const;
export type ClientAuthMode = (typeof CLIENT_AUTH_MODES)[number];
const CLIENT_IDENTITY_SOURCES = ["cn", "san-uri", "fingerprint"] as const;
export type ClientIdentitySource = (typeof CLIENT_IDENTITY_SOURCES)[number];

export interface ServeConfig {
  readonly listen: HostPort;
  readonly psks: readonly PskEntry[];
  /** Certificate chain and key files, in the order given. */
  readonly certificates: readonly CertKeyFiles[];
  readonly legacySha1Signatures: boolean;
  /** `--client-auth`: whether client certificates are asked for. */
  readonly clientAuth: ClientAuthMode;
  /** `--ca` file name (read by run): the CAs client certificates must lead to. */
  readonly clientCaFile: string | undefined;
  /** `--client-identity`: where a client certificate's device identity comes from. */
  readonly clientIdentity: ClientIdentitySource;
  readonly echo: boolean;
  /** Raw `--suites` value; resolved by the engine's parser. */
  readonly suites: string | undefined;
  readonly mtu: number | undefined;
  readonly requireEms: boolean;
  readonly pskHint: string | undefined;
}

/** Parses and validates `dtls serve` arguments (pure). */
export function parseServeArgs(argv: readonly string[]): ServeConfig {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, COMMAND);
  expectPositionals(positionals, [], COMMAND);
  const listenText = stringOption(values, "listen");
  if (listenText === undefined) throw new UsageError(`missing --listen HOST:PORT (see '${COMMAND} --help')`);
  const listen = parseHostPort(listenText, "--listen", { allowPortZero: true });
  const psks = parsePskList(stringListOption(values, "psk"));
  const certificates = parseCertKeyPairs(stringListOption(values, "cert"), stringListOption(values, "key"));
  if (psks.length === 0 && certificates.length === 0) {
    throw new UsageError(`missing --psk ID:HEXKEY or --cert FILE --key FILE (see '${COMMAND} --help')`);
  }
  const legacySha1Signatures = booleanOption(values, "legacy-sha1-signatures");
  if (legacySha1Signatures && certificates.length === 0) {
    throw new UsageError("--legacy-sha1-signatures: only with --cert/--key (PSK suites sign nothing)");
  }
  const { clientAuth, clientCaFile, clientIdentity } = parseClientAuth(values, certificates.length > 0);
  const mtuText = stringOption(values, "mtu");
  const pskHint = stringOption(values, "psk-hint");
  if (pskHint !== undefined) {
    if (psks.length === 0) throw new UsageError("--psk-hint: only with --psk");
    if (pskHint === "") throw new UsageError("--psk-hint: the hint is empty");
    if (Buffer.byteLength(pskHint, "utf8") > 0xffff) throw new UsageError("--psk-hint: the hint is longer than 65535 bytes");
  }
  const suites = stringOption(values, "suites");
  if (suites !== undefined && suites.trim() === "") throw new UsageError("--suites: no suite given");
  return {
    listen,
    psks,
    certificates,
    legacySha1Signatures,
    clientAuth,
    clientCaFile,
    clientIdentity,
    echo: booleanOption(values, "echo"),
    suites,
    mtu: mtuText === undefined ? undefined : parseInteger(mtuText, "--mtu", MTU_RANGE),
    requireEms: booleanOption(values, "require-ems"),
    pskHint,
  };
}

/** `--client-auth`, `--ca` and `--client-identity`: client certificates, asked for only in the certificate suites. */
function parseClientAuth(
  values: Parameters<typeof stringOption>[0],
  haveCertificates: boolean,
): Pick<ServeConfig, "clientAuth" | "clientCaFile" | "clientIdentity"> {
  const modeText = stringOption(values, "client-auth");
  const clientCaFile = stringOption(values, "ca");
  const sourceText = stringOption(values, "client-identity");
  const given =
    modeText !== undefined ? "--client-auth" : clientCaFile !== undefined ? "--ca" : sourceText !== undefined ? "--client-identity" : undefined;
  if (given !== undefined && !haveCertificates) {
    throw new UsageError(`${given}: only with --cert/--key (client certificates are asked for in the certificate suites)`);
  }
  const clientAuth = modeText === undefined ? "none" : CLIENT_AUTH_MODES.find((m) => m === modeText);
  if (clientAuth === undefined) throw new UsageError(`--client-auth: '${modeText ?? ""}' is not one of ${CLIENT_AUTH_MODES.join(", ")}`);
  const clientIdentity = sourceText === undefined ? "cn" : CLIENT_IDENTITY_SOURCES.find((m) => m === sourceText);
  if (clientIdentity === undefined) {
    throw new UsageError(`--client-identity: '${sourceText ?? ""}' is not one of ${CLIENT_IDENTITY_SOURCES.join(", ")}`);
  }
  if (clientCaFile === "") throw new UsageError("--ca: the file name is empty");
  if (clientAuth !== "none" && clientCaFile === undefined) {
    throw new UsageError(`--client-auth ${clientAuth}: needs --ca FILE (the CAs client certificates must lead to)`);
  }
  if (clientAuth === "none") {
    if (clientCaFile !== undefined) throw new UsageError("--ca: only with --client-auth request or require (client certificates are not asked for)");
    if (sourceText !== undefined)
      throw new UsageError("--client-identity: only with --client-auth request or require (client certificates are not asked for)");
  }
  return { clientAuth, clientCaFile, clientIdentity };
}

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const config = parseServeArgs(argv);
  const dtls = await loadDtls();
  const suites = resolveSuites(dtls, config.suites);
  const certificates = await readCertificates(config.certificates);
  const clientCa = config.clientCaFile === undefined ? undefined : await readOptionFile("--ca", config.clientCaFile);
  const log = (line: string): void => {
    io.stdout.write(`${line}\n`);
  };

  // Signals: the first closes cleanly, a second one stops waiting.
  let signalCount = 0;
  let onFirstSignal: (signal: string) => void = () => {};
  let onSecondSignal: (signal: string) => void = () => {};
  const firstSignal = new Promise<string>((resolve) => (onFirstSignal = resolve));
  const secondSignal = new Promise<string>((resolve) => (onSecondSignal = resolve));
  const removeSignalHandler = io.onShutdownSignal((signal) => {
    signalCount += 1;
    if (signalCount === 1) onFirstSignal(signal);
    else onSecondSignal(signal);
  });

  try {
    const where = formatHostPort(config.listen.host, config.listen.port);
    let server: Awaited<ReturnType<typeof dtls.listen>>;
    try {
      server = await dtls.listen({
        host: config.listen.host,
        port: config.listen.port,
        ...(config.psks.length > 0
          ? {
              psk: {
                keys: new Map(config.psks.map((p) => [p.identity, p.key])),
                ...(config.pskHint !== undefined ? { hint: config.pskHint } : {}),
              },
            }
          : {}),
        ...(certificates.length > 0 ? { certificates, legacySha1Signatures: config.legacySha1Signatures } : {}),
        ...(config.clientAuth !== "none" ? { clientAuth: config.clientAuth, clientIdentity: config.clientIdentity } : {}),
        ...(clientCa !== undefined ? { clientCa } : {}),
        ...(suites !== undefined ? { suites } : {}),
        ...(config.mtu !== undefined ? { mtu: config.mtu } : {}),
        requireExtendedMasterSecret: config.requireEms,
      });
    } catch (e) {
      if (errorCode(e) === "bad_option") {
        throw new CliError(optionErrorMessage(describeDtlsError(e), config.certificates, config.clientCaFile));
      }
      throw new CliError(`cannot listen on ${where}: ${describeDtlsError(e)}`);
    }

    const address = server.address();
    log(`listening on ${formatHostPort(address.address, address.port)}`);

    server.on("session", (conn) => {
      const info = conn.info;
      log(formatEstablished(info));
      conn.on("data", (data: Uint8Array) => {
        if (!config.echo) {
          log(formatData(info, data));
          return;
        }
        try {
          conn.send(data);
        } catch (e) {
          log(formatSessionError(info, errorFields(e)));
        }
      });
      conn.on("close", (reason) => log(formatClosed(info, reason)));
      conn.on("error", (e) => log(formatSessionError(info, errorFields(e))));
    });
    server.on("handshakeError", ({ peer, error }) => log(formatHandshakeError(peer, errorFields(error))));
    server.on("error", (e) => log(`socket-error message=${JSON.stringify(describeError(e))}`));

    const signal = await firstSignal;
    log(`shutting down (${signal})`);
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      server.close().then(() => "closed" as const),
      secondSignal.then(() => "interrupted" as const),
      new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), CLOSE_TIMEOUT_MS))),
    ]).finally(() => clearTimeout(timer));
    if (outcome === "interrupted") throw new CliError("interrupted again; stopped without waiting for the server to close");
    if (outcome === "timeout") throw new CliError(`the server did not close within ${CLOSE_TIMEOUT_MS / 1000} s`);
    log("stopped");
    return 0;
  } finally {
    removeSignalHandler();
  }
}

/** Reads every --cert/--key pair, in order (a file that cannot be read is a one-line error, exit 1). */
async function readCertificates(files: readonly CertKeyFiles[]): Promise<{ cert: Uint8Array; key: Uint8Array }[]> {
  const out: { cert: Uint8Array; key: Uint8Array }[] = [];
  for (const pair of files) out.push(await readCertKeyFiles(pair));
  return out;
}

/**
 * The engine names certificate pairs by index ("certificates[1]: the private key
 * does not belong to …") and the client CAs `clientCa`; say which files instead.
 */
export function optionErrorMessage(message: string, files: readonly CertKeyFiles[], clientCaFile?: string): string {
  if (clientCaFile !== undefined) {
    const m = /^clientCa(:| holds)/.exec(message);
    if (m !== null) return `--ca ${clientCaFile}${m[1] === ":" ? ":" : ": holds"}${message.slice(m[0].length)}`;
  }
  return certificateOptionMessage(message, files);
}

function errorFields(e: unknown): { code?: unknown; alert?: unknown; message?: unknown } {
  if (typeof e === "object" && e !== null) return e as { code?: unknown; alert?: unknown; message?: unknown };
  return { message: String(e) };
}

export const dtlsServeCommand: LeafCommand = {
  kind: "command",
  name: "serve",
  summary: "Run a DTLS 1.2 server (PSK or certificates) that logs sessions and echoes or prints records",
  help: () =>
    formatHelp({
      usage: [
        `${COMMAND} --listen HOST:PORT --psk ID:HEXKEY [--psk ID:HEXKEY ...] [options]`,
        `${COMMAND} --listen HOST:PORT --cert FILE --key FILE [--cert FILE --key FILE ...] [options]`,
        `${COMMAND} --listen HOST:PORT --cert FILE --key FILE --ca FILE --client-auth request|require [options]`,
      ],
      description:
        "Runs a DTLS 1.2 server with pre-shared keys, certificates, or both (each\n" +
        "enables its suites). Prints 'listening on HOST:PORT' once bound, then one\n" +
        "line per established session (peer, identity, suite, extended master\n" +
        "secret; certificate suites add the client certificate or 'peer-cert=none'),\n" +
        "per closed session and per failed handshake.\n" +
        "With --client-auth request|require the server asks for a client certificate\n" +
        "leading to a --ca certificate; identity= is then the device identity taken\n" +
        "from it (--client-identity), and a missing (require), untrusted, expired or\n" +
        "non-client certificate fails the handshake (handshake_failure, unknown_ca,\n" +
        "certificate_expired, unsupported_certificate).\n" +
        "With --echo every application record goes back to its sender; otherwise\n" +
        "each record is printed. SIGINT/SIGTERM send close_notify to every peer and exit 0.",
      options: OPTIONS,
      examples: [
        `${COMMAND} --listen 127.0.0.1:5684 --psk device-1:00112233445566778899aabbccddeeff --echo`,
        `${COMMAND} --listen [::1]:0 --psk a:0102 --psk b:0304 --suites TLS_PSK_WITH_AES_128_GCM_SHA256`,
        `${COMMAND} --listen 127.0.0.1:5684 --cert certs/server-p256.pem --key certs/server-p256.key \\\n` +
          "      --cert certs/server-rsa.pem --key certs/server-rsa.key --echo",
      ],
      notes: MUTUAL_AUTH_EXAMPLE,
    }),
  run,
};
