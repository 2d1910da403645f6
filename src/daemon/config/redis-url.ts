/**
 * `cluster.redis_url`: checked at load, and never printed with its password.
 * The daemon holds it as a RedisUrl, whose every printable form (toString,
 * JSON, util.inspect) is the redacted one; only `reveal()` gives the text a
 * client connects with.
 */
import { inspect } from "node:util";
import { redactRedisUrl } from "../../store/redis-options.ts";

export { REDACTED_PASSWORD, redactRedisUrl } from "../../store/redis-options.ts";

/** Why the text is not a usable Redis URL (one phrase for "cluster.redis_url (...): <phrase>, got ..."), or undefined when it is. */
export function redisUrlProblem(text: string): string | undefined {
  const shape = "expected redis://[user:password@]host[:port][/db] or rediss://... (TLS)";
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `not a URL: ${shape}`;
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") return `the scheme ${url.protocol.replace(/:$/, "")}:// is not redis:// or rediss://`;
  if (url.hostname === "") return `no host: ${shape}`;
  if (!/^\/?(\d{1,5})?$/.test(url.pathname)) return `the path must be a database number (/0), ${shape}`;
  if (url.search !== "" || url.hash !== "") return `query (?...) and fragment (#...) are not supported: ${shape}`;
  return undefined;
}

/** A checked Redis URL whose printed forms never hold the password. */
export class RedisUrl {
  readonly #text: string;
  /** the URL with the password as `***` */
  readonly redacted: string;
  /** host:port as written ("127.0.0.1:6379"; the default port when none) */
  readonly address: string;
  readonly tls: boolean;

  constructor(text: string) {
    const problem = redisUrlProblem(text);
    if (problem !== undefined) throw new RangeError(`${problem}, got ${JSON.stringify(redactRedisUrl(text))}`);
    this.#text = text;
    this.redacted = redactRedisUrl(text);
    const url = new URL(text);
    this.tls = url.protocol === "rediss:";
    this.address = `${url.hostname}:${url.port === "" ? "6379" : url.port}`;
  }

  /** The URL as given, password included: only for the client that connects. */
  reveal(): string {
    return this.#text;
  }

  toString(): string {
    return this.redacted;
  }

  toJSON(): string {
    return this.redacted;
  }

  [inspect.custom](): string {
    return `RedisUrl(${this.redacted})`;
  }
}
