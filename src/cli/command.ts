/**
 * The command tree. A group (e.g. `dtls`) holds subcommands; a leaf command
 * parses its own arguments and runs. New commands (serve, certs, device,
 * token, send, listen, bench) are added to the tree in `commands.ts`.
 */
import type { Readable, Writable } from "node:stream";
import type { OptionSpecs } from "./args.ts";

/** Everything a command may use of the outside world. */
export interface CliIo {
  readonly stdout: Writable;
  readonly stderr: Writable;
  /** Standard input, created on first use. */
  stdin(): Readable;
  /**
   * Calls `handler` on SIGINT/SIGTERM instead of terminating the process.
   * Returns a function that removes the handler.
   */
  onShutdownSignal(handler: (signal: string) => void): () => void;
  /** Calls `handler` on SIGHUP (reload); returns a function that removes it. Absent where there are no signals. */
  onReloadSignal?(handler: () => void): () => void;
}

export interface LeafCommand {
  readonly kind: "command";
  readonly name: string;
  /** One line for the parent's command list. */
  readonly summary: string;
  /** Full help text printed by `--help`. */
  help(): string;
  /** Runs with the arguments after the command name; resolves to the exit code. */
  run(argv: readonly string[], io: CliIo): Promise<number>;
}

export interface CommandGroup {
  readonly kind: "group";
  readonly name: string;
  readonly summary: string;
  readonly children: readonly CommandNode[];
}

export type CommandNode = LeafCommand | CommandGroup;

export const PROGRAM = "dtlspush";

// ---------------------------------------------------------------------------
// Help text

export interface HelpText {
  /** Usage lines without the "Usage:" prefix. */
  readonly usage: readonly string[];
  /** Paragraph(s) under the usage. */
  readonly description: string;
  readonly positionals?: readonly { readonly name: string; readonly description: string }[];
  readonly options: OptionSpecs;
  readonly examples?: readonly string[];
  readonly notes?: string;
}

/** Formats a leaf command's help from its option table. */
export function formatHelp(text: HelpText): string {
  const out: string[] = [];
  text.usage.forEach((line, i) => out.push(`${i === 0 ? "Usage: " : "       "}${line}`));
  out.push("", text.description.trimEnd());
  if (text.positionals !== undefined && text.positionals.length > 0) {
    out.push("", "Arguments:");
    out.push(...table(text.positionals.map((p) => [p.name, p.description])));
  }
  const rows: [string, string][] = Object.entries(text.options).map(([name, spec]) => {
    const long = `--${name}${spec.type === "string" ? ` ${spec.value ?? "VALUE"}` : ""}`;
    const flags = spec.short !== undefined ? `-${spec.short}, ${long}` : `    ${long}`;
    return [flags, spec.description];
  });
  out.push("", "Options:", ...table(rows));
  if (text.notes !== undefined) out.push("", text.notes.trimEnd());
  if (text.examples !== undefined && text.examples.length > 0) {
    out.push("", "Examples:", ...text.examples.map((e) => `  ${e}`));
  }
  return `${out.join("\n")}\n`;
}

/** Formats a group's help: its subcommands, recursively flattened. */
export function formatGroupHelp(path: readonly string[], group: CommandGroup, extraOptions: readonly [string, string][] = []): string {
  const prefix = path.join(" ");
  const rows: [string, string][] = [];
  const walk = (nodes: readonly CommandNode[], names: readonly string[]): void => {
    for (const node of nodes) {
      const here = [...names, node.name];
      if (node.kind === "command") rows.push([here.join(" "), node.summary]);
      else walk(node.children, here);
    }
  };
  walk(group.children, []);
  const out = [
    `Usage: ${prefix} <command> [options]`,
    "",
    group.summary,
    "",
    "Commands:",
    ...table(rows),
    "",
    "Options:",
    ...table([["-h, --help", "Show help (also works after any command)"], ...extraOptions]),
    "",
    `Run '${prefix} <command> --help' for a command's options.`,
  ];
  return `${out.join("\n")}\n`;
}

function table(rows: readonly (readonly [string, string])[]): string[] {
  const width = Math.min(28, Math.max(0, ...rows.map(([left]) => left.length)));
  const lines: string[] = [];
  for (const [left, right] of rows) {
    const [first = "", ...more] = right.split("\n");
    if (left.length > width) {
      lines.push(`  ${left}`);
      lines.push(`  ${" ".repeat(width)}  ${first}`);
    } else {
      lines.push(`  ${left.padEnd(width)}  ${first}`);
    }
    for (const line of more) lines.push(`  ${" ".repeat(width)}  ${line}`);
  }
  return lines;
}
