/**
 * The CLI dispatcher: walks the command tree (`commands.ts`) by the leading
 * arguments, handles `--help`/`-h` at every level and `--version` at the top,
 * and turns errors into one line on stderr with the exit code:
 * 0 success, 1 runtime failure, 2 usage error.
 */
import { wantsHelp } from "./args.ts";
import { PROGRAM, formatGroupHelp } from "./command.ts";
import type { CliIo, CommandGroup, CommandNode } from "./command.ts";
import { rootCommand } from "./commands.ts";
import { CliError, UsageError, describeError, isExpectedError } from "./errors.ts";
import { packageVersion } from "./version.ts";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export interface MainOptions {
  /** Print stack traces of unexpected errors (DTLSPUSH_DEBUG=1). */
  readonly debug?: boolean;
  readonly root?: CommandGroup;
}

/** Runs one command line; resolves to the process exit code. Never throws. */
export async function main(argv: readonly string[], io: CliIo, options: MainOptions = {}): Promise<number> {
  try {
    return await dispatch(argv, io, options.root ?? rootCommand);
  } catch (e) {
    return reportError(e, io, options.debug === true);
  }
}

async function dispatch(argv: readonly string[], io: CliIo, root: CommandGroup): Promise<number> {
  let node: CommandNode = root;
  const path: string[] = [PROGRAM];
  let i = 0;
  while (node.kind === "group") {
    const group: CommandGroup = node;
    const isRoot = group === root;
    const arg = argv[i];
    const name = path.join(" ");
    if (arg === undefined) {
      const choices = group.children.map((c) => c.name).join(", ");
      throw new UsageError(isRoot ? `missing command (try '${name} --help')` : `missing subcommand for '${name}' (one of: ${choices})`);
    }
    if (arg === "-h" || arg === "--help") {
      io.stdout.write(formatGroupHelp(path, group, isRoot ? [["--version", "Print the version and exit"]] : []));
      return EXIT_OK;
    }
    if (isRoot && arg === "--version") {
      io.stdout.write(`${PROGRAM} ${packageVersion()}\n`);
      return EXIT_OK;
    }
    if (arg.startsWith("-")) throw new UsageError(`unknown option '${arg}' (try '${name} --help')`);
    const child: CommandNode | undefined = group.children.find((c) => c.name === arg);
    if (child === undefined) throw new UsageError(`unknown command '${[...path.slice(1), arg].join(" ")}' (try '${name} --help')`);
    node = child;
    path.push(arg);
    i += 1;
  }
  const rest = argv.slice(i);
  if (wantsHelp(rest)) {
    io.stdout.write(node.help());
    return EXIT_OK;
  }
  return await node.run(rest, io);
}

function reportError(e: unknown, io: CliIo, debug: boolean): number {
  if (e instanceof UsageError) {
    io.stderr.write(`${PROGRAM}: error: ${e.message}\n`);
    return EXIT_USAGE;
  }
  if (e instanceof CliError) {
    io.stderr.write(`${PROGRAM}: error: ${e.message}\n`);
    return e.exitCode;
  }
  if (isExpectedError(e)) {
    io.stderr.write(`${PROGRAM}: error: ${describeError(e)}\n`);
  } else {
    io.stderr.write(`${PROGRAM}: error: internal error: ${describeError(e)}${debug ? "" : " (set DTLSPUSH_DEBUG=1 for details)"}\n`);
  }
  if (debug && e instanceof Error && e.stack !== undefined) io.stderr.write(`${e.stack}\n`);
  return EXIT_FAILURE;
}

/** `CliIo` over the real process. */
export function processIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: () => process.stdin,
    onShutdownSignal(handler) {
      const onSignal = (signal: NodeJS.Signals): void => handler(signal);
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      return () => {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      };
    },
    onReloadSignal(handler) {
      const onSignal = (): void => handler();
      process.on("SIGHUP", onSignal);
      return () => {
        process.off("SIGHUP", onSignal);
      };
    },
  };
}

/** How long to let the event loop drain after a command finished before exiting anyway. */
const EXIT_GRACE_MS = 2_000;

/** Entry point used by `bin/dtlspush.js`. */
export async function runCli(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  const debug = process.env["DTLSPUSH_DEBUG"] === "1";
  const io = processIo();
  // A closed pipe on stdout (e.g. `| head`) ends the program quietly.
  process.stdout.on("error", (e: unknown) => {
    if (typeof e === "object" && e !== null && (e as { code?: unknown }).code === "EPIPE") process.exit(process.exitCode ?? EXIT_OK);
  });
  const crash = (e: unknown): void => {
    process.exitCode = reportError(e, io, debug);
    process.exit();
  };
  process.on("uncaughtException", crash);
  process.on("unhandledRejection", crash);
  const code = await main(argv, io, { debug });
  process.exitCode = code;
  // Normally the process ends here on its own; a stray handle must not keep it alive.
  setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
}
