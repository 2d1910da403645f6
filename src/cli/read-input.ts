/** Reading what a command is given as a file or, for "-", on standard input. */
import { readFile } from "node:fs/promises";
import type { Readable } from "node:stream";
import type { CliIo } from "./command.ts";
import { CliError, describeError } from "./errors.ts";

/** Reads a file, or standard input for "-", of at most `max` bytes; `option` names it in errors. */
export async function readInput(option: string, path: string, io: CliIo, max: number): Promise<Uint8Array> {
  if (path === "-") return await readStream(option, io.stdin(), max);
  try {
    const bytes = await readFile(path);
    if (bytes.length > max) throw new CliError(`${option} ${path}: larger than ${max} bytes`);
    return bytes;
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`${option} ${path}: cannot read the file: ${describeError(e)}`);
  }
}

async function readStream(option: string, stream: Readable, max: number): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      const buf = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : Buffer.from(chunk as Uint8Array);
      size += buf.length;
      if (size > max) throw new CliError(`${option} -: standard input is larger than ${max} bytes`);
      chunks.push(buf);
    }
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`${option} -: cannot read standard input: ${describeError(e)}`);
  }
  return Buffer.concat(chunks);
}
