import { AuthError } from "./errors.ts";

/** A device id: 1..128 characters, letters, digits and . _ : @ -, starting with a letter or digit. */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

/**
 * A topic: 1..128 characters, letters, digits and . _ / -, starting with a
 * letter or digit; "/" separates segments, none of which may be empty (no
 * "a//b", no trailing "/").
 */
export const TOPIC_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$/;

const MAX_NAME = 128;
const DEVICE_CHAR = /[A-Za-z0-9._:@-]/;
const TOPIC_CHAR = /[A-Za-z0-9._/-]/;
const ALNUM = /[A-Za-z0-9]/;

/** Returns the id, or throws AuthError bad_device naming what is wrong with it. */
export function checkDeviceId(id: string): string {
  if (typeof id === "string" && DEVICE_ID_PATTERN.test(id)) return id;
  throw new AuthError("bad_device", `Device id ${describe(id)} ${nameProblem(id, DEVICE_CHAR, "letters, digits and . _ : @ -")}.`);
}

/** Returns the topic, or throws AuthError bad_topic naming what is wrong with it. */
export function checkTopic(topic: string): string {
  if (typeof topic === "string" && TOPIC_PATTERN.test(topic)) {
    if (topic.endsWith("/")) throw new AuthError("bad_topic", `Topic ${describe(topic)} ends with "/".`);
    if (topic.includes("//")) throw new AuthError("bad_topic", `Topic ${describe(topic)} has an empty segment ("//").`);
    return topic;
  }
  throw new AuthError("bad_topic", `Topic ${describe(topic)} ${nameProblem(topic, TOPIC_CHAR, "letters, digits and . _ / -")}.`);
}

function nameProblem(name: unknown, allowed: RegExp, allowedText: string): string {
  if (typeof name !== "string") return `is a ${typeof name}, not a string`;
  if (name.length === 0) return "is empty";
  if (name.length > MAX_NAME) return `is ${name.length} characters long (at most ${MAX_NAME})`;
  const first = name[0] as string;
  if (!ALNUM.test(first)) return `must start with a letter or digit, not ${JSON.stringify(first)}`;
  for (const ch of name) {
    if (!allowed.test(ch)) return `contains ${JSON.stringify(ch)} (allowed: ${allowedText})`;
  }
  return "is not valid";
}

function describe(name: unknown): string {
  if (typeof name !== "string") return String(name);
  return JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}…` : name);
}
