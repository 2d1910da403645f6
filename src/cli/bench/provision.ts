/**
 * Registers the bench devices through the API (PUT /v1/devices/bench-<i>
 * with the run's PSK, or the identity of the device's certificate, and
 * topics) and removes them again (DELETE), a bounded number of requests at a
 * time.
 */
import { ApiError } from "../api-client.ts";
import { CliError } from "../errors.ts";
import type { BenchHttpClient } from "./http-client.ts";
import { benchDeviceId, deriveDeviceKey } from "./keys.ts";

/** Requests in flight while registering or removing devices. */
export const PROVISION_CONCURRENCY = 32;

/**
 * Runs `task(i)` for i in [0, n), `concurrency` at a time; stops starting new
 * ones once `stop()` says so or a task failed (the first failure is thrown).
 */
export async function runPool(n: number, concurrency: number, task: (i: number) => Promise<void>, stop: () => boolean = () => false): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const lane = async (): Promise<void> => {
    while (next < n && failure === undefined && !stop()) {
      const i = next++;
      try {
        await task(i);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, n)) }, lane));
  if (failure !== undefined) throw failure.error;
}

/** What the devices are registered with: PSKs derived from the run's seed, or their certificates' identity. */
export type ProvisionCredential = { readonly kind: "psk"; readonly seedHex: string } | { readonly kind: "certificate" };

/**
 * The identity the daemon's DTLS server reports for a bench device's
 * certificate. The daemon leaves ListenOptions.clientIdentity at its default,
 * the subject CN, and the workers issue every device's certificate with
 * CN = the device id: so the identity is the id, known here before any
 * certificate exists, and devices are registered before the workers issue
 * their certificates (a fingerprint identity would have to wait for them).
 */
export function certificateIdentity(id: string): string {
  return id;
}

/** The PUT body that registers device `id`. */
export async function registrationBody(id: string, credential: ProvisionCredential, topics: readonly string[]): Promise<string> {
  if (credential.kind === "certificate") return JSON.stringify({ certificate: { identity: certificateIdentity(id) }, topics, revoked: false });
  const key = await deriveDeviceKey(credential.seedHex, id);
  return JSON.stringify({ psk: { keyHex: Buffer.from(key).toString("hex") }, topics, revoked: false });
}

export interface ProvisionOptions {
  readonly http: BenchHttpClient;
  readonly indexes: readonly number[];
  readonly prefix: string;
  readonly credential: ProvisionCredential;
  readonly topics: readonly string[];
  readonly progress: (done: number) => void;
  readonly stop: () => boolean;
}

function explain(e: unknown, what: string): unknown {
  if (e instanceof ApiError && e.code === "rate_limited") {
    return new CliError(
      `${what}: the daemon's API rate limit refused the bench (rate_limited); run the daemon under test with http.rate_limit_per_minute = 0 (e.g. DTLSPUSH_HTTP_RATE_LIMIT_PER_MINUTE=0)`,
    );
  }
  if (e instanceof ApiError) return new CliError(`${what}: ${e.message.replace(/\.$/, "")} (${e.code})`);
  return e;
}

/** PUT every device with its credential and `topics` (an existing bench device is overwritten). */
export async function provisionDevices(o: ProvisionOptions): Promise<void> {
  let done = 0;
  await runPool(
    o.indexes.length,
    PROVISION_CONCURRENCY,
    async (k) => {
      const id = benchDeviceId(o.indexes[k] as number, o.prefix);
      const body = await registrationBody(id, o.credential, o.topics);
      try {
        await o.http.request("PUT", `/v1/devices/${encodeURIComponent(id)}`, body);
      } catch (e) {
        throw explain(e, `cannot register ${id}`);
      }
      o.progress(++done);
    },
    o.stop,
  );
}

/** DELETE every device; an already missing one counts as removed. Resolves with the failures. */
export async function removeDevices(o: Omit<ProvisionOptions, "credential" | "topics">): Promise<{ removed: number; failed: number }> {
  let removed = 0;
  let failed = 0;
  await runPool(
    o.indexes.length,
    PROVISION_CONCURRENCY,
    async (k) => {
      const id = benchDeviceId(o.indexes[k] as number, o.prefix);
      try {
        await o.http.request("DELETE", `/v1/devices/${encodeURIComponent(id)}`);
        removed++;
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) removed++;
        else failed++;
      }
      o.progress(removed + failed);
    },
    o.stop,
  );
  return { removed, failed };
}
