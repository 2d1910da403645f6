/** `dtlspush certs`: development and device certificates. */
import { certsDeviceCommand } from "./certs-device.ts";
import { certsInitCommand } from "./certs-init.ts";
import type { CommandGroup } from "./command.ts";

export const certsGroup: CommandGroup = {
  kind: "group",
  name: "certs",
  summary: "Development certificates: a local CA, server and device certificates",
  children: [certsInitCommand, certsDeviceCommand],
};
