/** `dtlspush token issue`: a publisher token for the HTTP API, signed with the data directory's keys. */
import { booleanOption, expectPositionals, parseCommandLine, parseInteger, stringListOption, stringOption } from "./args.ts";
import type { IntegerRange, OptionSpecs } from "./args.ts";
import type { CommandGroup, CliIo, LeafCommand } from "./command.ts";
import { PROGRAM, formatHelp } from "./command.ts";
import { DATA_DIR_OPTIONS, DaemonAccess, parseDataDirOptions } from "./daemon-access.ts";
import type { DataDirOptions, Env } from "./daemon-access.ts";
import { UsageError } from "./errors.ts";

const COMMAND = `${PROGRAM} token issue`;
export const DEFAULT_TOKEN_TTL_SECONDS = 86_400;
export const DEFAULT_TOKEN_SUBJECT = "operator";
/** Up to ten years, as the token issuer allows. */
export const TOKEN_TTL_RANGE: IntegerRange = { min: 1, max: 10 * 365 * 24 * 3600 };
const SCOPE_NAMES = ["publish", "admin"] as const;
type ScopeName = (typeof SCOPE_NAMES)[number];

const OPTIONS: OptionSpecs = {
  scope: {
    type: "string",
    multiple: true,
    value: "SCOPE",
    description: "publish (send messages, read receipts) or admin (also manage\ndevices); repeat for both. Required",
  },
  subject: {
    type: "string",
    value: "NAME",
    description: `Who the token is for, 1-256 characters (default: ${DEFAULT_TOKEN_SUBJECT})`,
  },
  ttl: {
    type: "string",
    value: "SECONDS",
    description: `Lifetime in seconds (default ${DEFAULT_TOKEN_TTL_SECONDS}, one day)`,
  },
  ...DATA_DIR_OPTIONS,
  json: { type: "boolean", description: "Print {token, expiresAt, scopes, subject} as JSON" },
  help: { type: "boolean", short: "h", description: "Show this help" },
};

export interface TokenIssueConfig {
  readonly scopes: ScopeName[];
  readonly subject: string;
  readonly ttlSeconds: number;
  readonly json: boolean;
  readonly access: DataDirOptions;
}

/** Parses `token issue` arguments (pure). */
export function parseTokenIssueArgs(argv: readonly string[], env: Env = {}): TokenIssueConfig {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, COMMAND);
  expectPositionals(positionals, [], COMMAND);
  const scopeTexts = stringListOption(values, "scope");
  if (scopeTexts.length === 0) throw new UsageError(`missing --scope publish|admin (see '${COMMAND} --help')`);
  const scopes: ScopeName[] = [];
  for (const text of scopeTexts) {
    const scope = SCOPE_NAMES.find((s) => s === text.trim().toLowerCase());
    if (scope === undefined) throw new UsageError(`--scope: '${text}' is not one of ${SCOPE_NAMES.join(", ")}`);
    if (!scopes.includes(scope)) scopes.push(scope);
  }
  const subject = stringOption(values, "subject") ?? DEFAULT_TOKEN_SUBJECT;
  if (subject.length === 0 || subject.length > 256) throw new UsageError("--subject: give 1 to 256 characters");
  const ttlText = stringOption(values, "ttl");
  return {
    scopes,
    subject,
    ttlSeconds: ttlText === undefined ? DEFAULT_TOKEN_TTL_SECONDS : parseInteger(ttlText, "--ttl", TOKEN_TTL_RANGE),
    json: booleanOption(values, "json"),
    access: parseDataDirOptions(values, env),
  };
}

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const config = parseTokenIssueArgs(argv, process.env);
  const access = new DaemonAccess(config.access, { api: undefined, token: undefined }, process.env, process.cwd());
  try {
    const { token, expiresAt } = await access.mint(config.scopes, config.ttlSeconds, config.subject);
    if (config.json) {
      const out = { token, expiresAt: new Date(expiresAt).toISOString(), scopes: config.scopes, subject: config.subject };
      io.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    } else {
      io.stdout.write(`${token}\n`);
    }
  } finally {
    await access.close();
  }
  return 0;
}

export const tokenIssueCommand: LeafCommand = {
  kind: "command",
  name: "issue",
  summary: "Issue a publisher token (JWT) for the HTTP API from the local data directory",
  help: () =>
    formatHelp({
      usage: [`${COMMAND} --scope publish|admin [--scope …] [--subject NAME] [--ttl SECONDS] [--config FILE | --data-dir DIR] [--json]`],
      description:
        "Signs a publisher token with the publisher key of the daemon's data directory\n" +
        "(creating the directory and its keys when they do not exist yet) and prints\n" +
        "the token alone on standard output. Works whether or not the daemon runs; a\n" +
        "running daemon accepts the token at once. Give the token to API clients as\n" +
        "'Authorization: Bearer TOKEN', or to this CLI with --token or DTLSPUSH_TOKEN.\n" +
        "Anyone who can read the data directory can issue tokens.",
      options: OPTIONS,
      examples: [
        `${COMMAND} --scope publish --subject billing-service`,
        `export DTLSPUSH_TOKEN=$(${COMMAND} --scope admin --ttl 3600 --config dtlspush.toml)`,
        `${COMMAND} --scope publish --data-dir /var/lib/dtlspush --json`,
      ],
    }),
  run,
};

export const tokenGroup: CommandGroup = {
  kind: "group",
  name: "token",
  summary: "Publisher tokens for the HTTP API",
  children: [tokenIssueCommand],
};
