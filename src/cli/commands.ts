/**
 * The command tree. Add a command by writing `src/cli/<name>.ts` exporting a
 * `LeafCommand` (or a `CommandGroup` of them) and listing it here.
 */
import { benchCommand } from "./bench.ts";
import { certsGroup } from "./certs.ts";
import type { CommandGroup } from "./command.ts";
import { PROGRAM } from "./command.ts";
import { deviceGroup } from "./device.ts";
import { dtlsConnectCommand } from "./dtls-connect.ts";
import { dtlsServeCommand } from "./dtls-serve.ts";
import { listenCommand } from "./listen.ts";
import { sendCommand } from "./send.ts";
import { serveCommand } from "./serve.ts";
import { tokenGroup } from "./token.ts";

export const dtlsGroup: CommandGroup = {
  kind: "group",
  name: "dtls",
  summary: "Raw DTLS 1.2 tools: a PSK test server and client",
  children: [dtlsServeCommand, dtlsConnectCommand],
};

export const rootCommand: CommandGroup = {
  kind: "group",
  name: PROGRAM,
  summary: "dtlspush: a DTLS 1.2 push daemon and its tools",
  children: [serveCommand, deviceGroup, tokenGroup, sendCommand, listenCommand, benchCommand, dtlsGroup, certsGroup],
};
