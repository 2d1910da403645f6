/**
 * `dtlspush serve` on Redis ([cluster] redis_url) as real processes against a
 * real redis-server on a free port (bin/dtlspush.js runs dist/: `npm run
 * build` first): the whole path on the Redis store (a device added by the CLI
 * into Redis, a push published over the API with a token minted from the keys
 * in Redis, received and acked), the one-line error when Redis is unreachable
 * at start, the persistence rule, and /healthz when Redis goes away. The
 * password in the URL appears in no output.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, expect, it } from "vitest";
import { connect, memoryStateStore, type ReceivedMessage } from "../../src/client/index.ts";
import { ProcessScope, waitUntil as until } from "../support/daemon-process.ts";
import { describeRedis, freePort, type RedisServer } from "../support/redis-server.ts";

const KEY_HEX = "000102030405060708090a0b0c0d0e0f";
const PASSWORD = "pw-Zx81-cluster";

const scope = new ProcessScope();
afterEach(() => scope.cleanup());
const tmp = (): string => scope.tmp();
const command = scope.command.bind(scope);
const serve = scope.serve.bind(scope);

function redis(o: { appendonly?: boolean; appendfsync?: "always" | "everysec" | "no" } = {}): Promise<RedisServer> {
  return scope.redis({ password: PASSWORD, ...o });
}

function noPassword(...texts: string[]): void {
  for (const t of texts) expect(t).not.toContain(PASSWORD);
}

describeRedis("dtlspush serve on Redis (cluster.redis_url)", () => {
  it("the whole path on the Redis store: device added by the CLI into Redis, push published over the API, received by the device", async () => {
    const r = await redis();
    const env = { DTLSPUSH_CLUSTER_REDIS_URL: r.url, DTLSPUSH_CLUSTER_KEY_PREFIX: "e2e:" };
    // the CLI on "another machine": its own data directory, the daemon's API not reachable, so it writes into Redis directly
    const cliDir = tmp();
    const refused = `http://127.0.0.1:${await freePort()}`;
    const added = await command(["device", "add", "sensor-1", "--psk", KEY_HEX, "--api", refused, "--data-dir", join(cliDir, "data")], cliDir, env);
    expect(added.stderr).toBe(
      `dtlspush device add: daemon not reachable at ${refused}; wrote to Redis redis://:***@127.0.0.1:${r.port} directly; a running daemon picks it up on SIGHUP\n`,
    );
    expect(added.code).toBe(0);
    expect(added.stdout).toContain("sensor-1");

    const dir = tmp();
    const d = await serve(dir, env);
    const nodeId = readFileSync(join(dir, "data", "node-id"), "utf8").trim();
    expect(nodeId).toMatch(/^n-[0-9a-f]{12}$/);
    expect(d.stderr()).toContain(`Redis redis://:***@127.0.0.1:${r.port}`);
    expect(d.stderr()).toContain(`cluster node    ${nodeId}`);
    await until(() => d.stdout().includes('"event":"cluster_node"'), 5_000, "the cluster_node log line");
    // every log line carries the node id
    for (const line of d.stdout().trim().split("\n")) expect(JSON.parse(line), line).toMatchObject({ node: nodeId });

    const health = (await (await fetch(`${d.api}/healthz`)).json()) as { status: string; store: { kind: string; reachable: boolean } };
    expect(health).toMatchObject({ status: "ok", store: { kind: "redis", reachable: true } });

    const got: ReceivedMessage[] = [];
    const client = await connect({
      host: "127.0.0.1",
      port: d.dtlsPort,
      psk: { identity: "sensor-1", key: Buffer.from(KEY_HEX, "hex") },
      stateStore: memoryStateStore(),
    });
    scope.client(client);
    client.on("message", (m) => got.push(m));
    // the publisher token is minted by the CLI from the publisher keys in Redis (another data directory than the daemon's)
    const sent = await command(
      ["send", "--device", "sensor-1", "--data", "over redis", "--api", d.api, "--data-dir", join(cliDir, "data")],
      cliDir,
      env,
    );
    expect(sent.stderr).toBe("");
    expect(sent.code).toBe(0);
    await until(() => got.length > 0, 10_000, "the push");
    expect(Buffer.from(got[0]?.payload ?? []).toString()).toBe("over redis");
    noPassword(added.stdout, added.stderr, sent.stdout, sent.stderr, d.stdout(), d.stderr());

    d.child.kill("SIGTERM");
    expect((await d.exit).code).toBe(0);
  }, 60_000);

  it("unreachable Redis at start: one line (URL without password, cause) and exit 1 within the bound", async () => {
    const port = await freePort();
    const dir = tmp();
    const res = await command(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", join(dir, "data")], dir, {
      DTLSPUSH_CLUSTER_REDIS_URL: `redis://admin:${PASSWORD}@127.0.0.1:${port}/0`,
      DTLSPUSH_CLUSTER_CONNECT_TIMEOUT_SECONDS: "2",
    });
    expect(res.code).toBe(1);
    expect(res.ms).toBeLessThan(10_000);
    const lines = res.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toBe(
      `dtlspush: error: cluster.redis_url (from DTLSPUSH_CLUSTER_REDIS_URL): cannot reach Redis at redis://admin:***@127.0.0.1:${port}/0 (within 2 s): connection refused (127.0.0.1:${port}) (config_invalid)`,
    );
    noPassword(res.stdout, res.stderr);
  }, 30_000);

  it("Redis without persistence is refused; with allow_no_persistence it starts and warns", async () => {
    const r = await redis({ appendonly: false });
    const dir = tmp();
    const env = { DTLSPUSH_CLUSTER_REDIS_URL: r.url };
    const refused = await command(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", join(dir, "data")], dir, env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /^dtlspush: error: cluster\.allow_no_persistence \(default\): Redis redis:\/\/:\*\*\*@127\.0\.0\.1:\d+ has no persistence/,
    );
    expect(refused.stderr.trim().split("\n")).toHaveLength(1);

    const d = await serve(dir, { ...env, DTLSPUSH_CLUSTER_ALLOW_NO_PERSISTENCE: "true" });
    await until(() => d.stdout().includes('"event":"redis_no_persistence"'), 5_000, "the warning");
    const warning =
      d
        .stdout()
        .split("\n")
        .find((l) => l.includes('"event":"redis_no_persistence"')) ?? "";
    expect(JSON.parse(warning)).toMatchObject({ level: "warn", appendonly: false, save: "", persistence: "none" });
    expect(warning).toContain("RUNNING WITHOUT PERSISTENCE");
    noPassword(refused.stderr, refused.stdout, d.stdout(), d.stderr());
  }, 60_000);

  it("appendfsync everysec: starts, with a warning saying what a 202 then means", async () => {
    const r = await redis({ appendfsync: "everysec" });
    const dir = tmp();
    const d = await serve(dir, { DTLSPUSH_CLUSTER_REDIS_URL: r.url });
    await until(() => d.stdout().includes('"event":"redis_persistence_weak"'), 5_000, "the warning");
    const warning = JSON.parse(
      d
        .stdout()
        .split("\n")
        .find((l) => l.includes('"event":"redis_persistence_weak"')) ?? "{}",
    ) as Record<string, unknown>;
    expect(warning).toMatchObject({ level: "warn", appendonly: true, appendfsync: "everysec", persistence: "second" });
    expect(String(warning["msg"])).toMatch(/appendfsync is not "always", so a 202 is not on Redis's disk when it is answered: .*power loss/);
  }, 30_000);

  it("/healthz answers 503 store_unreachable once redis-server is stopped, and the metrics say so", async () => {
    const r = await redis();
    const dir = tmp();
    const d = await serve(dir, { DTLSPUSH_CLUSTER_REDIS_URL: r.url, DTLSPUSH_HTTP_PUBLIC_METRICS: "true" });
    expect((await fetch(`${d.api}/healthz`)).status).toBe(200);
    await r.shutdown();
    let body: { status?: string; store?: { reachable?: boolean; error?: string }; error?: { code?: string } } = {};
    await until(
      async () => {
        const res = await fetch(`${d.api}/healthz`);
        body = (await res.json()) as typeof body;
        return res.status === 503;
      },
      5_000,
      "/healthz 503",
    );
    expect(body).toMatchObject({ status: "store_unreachable", store: { reachable: false }, error: { code: "store_unavailable" } });
    const metrics = await (await fetch(`${d.api}/metrics`)).text();
    expect(metrics).toMatch(/^dtlspush_redis_up 0$/m);
    expect(metrics).toMatch(/^dtlspush_redis_ping_failures_total [1-9]/m);
    await until(() => d.stdout().includes('"event":"redis_unreachable"'), 5_000, "the redis_unreachable log line");
    noPassword(d.stdout(), d.stderr(), JSON.stringify(body));
  }, 60_000);
});
