/** The content-signing worker pool: real worker threads signing with a real key ring. */
import { base64url } from "jose";
import { afterEach, describe, expect, it } from "vitest";
import { createContentVerifier, signContent } from "../../src/auth/content-signing.ts";
import { KeyRing, type SigningKeyMaterial } from "../../src/auth/key-ring.ts";
import type { SignedFields } from "../../src/auth/signed-content.ts";
import { SigningPool, type SigningKeySource } from "../../src/auth/signing-pool.ts";
import { connect, type DtlspushClient, type ReceivedMessage } from "../../src/client/index.ts";
import { createMetrics } from "../../src/daemon/metrics.ts";
import { startPushServer, type PushServer } from "../../src/daemon/push-server.ts";
import { MessagingError } from "../../src/messaging/errors.ts";
import { openMemoryStore } from "../../src/store/index.ts";
import { MapStorage } from "./map-storage.ts";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

function fields(i: number): SignedFields {
  return {
    messageId: `msg-${i}`,
    topic: i % 2 === 0 ? "room/1" : "",
    device: i % 2 === 0 ? "" : "dev-1",
    contentType: "text/plain",
    publisher: "ops",
    collapseKey: "",
    payload: enc(`payload ${i}`),
    createdAt: 1_700_000_000_000 + i,
    expiresAt: 1_700_000_060_000 + i,
    priority: 5,
  };
}

function kidOf(signature: string): string {
  return (JSON.parse(new TextDecoder().decode(base64url.decode(signature.split(".")[0] ?? ""))) as { kid: string }).kid;
}

async function settle<T>(ps: Promise<T>[]): Promise<{ ok: T[]; failed: Error[] }> {
  const out = await Promise.allSettled(ps);
  return {
    ok: out.filter((r) => r.status === "fulfilled").map((r) => (r as PromiseFulfilledResult<T>).value),
    failed: out.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason as Error),
  };
}

const pools: SigningPool[] = [];
const servers: PushServer[] = [];
const clients: DtlspushClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  for (const s of servers.splice(0)) await s.close();
  for (const p of pools.splice(0)) await p.close();
});

async function pool(ring: SigningKeySource, workers: number): Promise<SigningPool> {
  const p = await SigningPool.start(ring, workers);
  pools.push(p);
  return p;
}

describe("SigningPool", () => {
  it("signs in workers, one message per worker per turn, exactly what signContent makes on the main thread", async () => {
    const ring = await KeyRing.open(new MapStorage(), "content");
    const p = await pool(ring, 2);
    const sigs = await Promise.all(Array.from({ length: 100 }, (_, i) => p.sign(fields(i))));
    expect(p.stats.batches).toBe(2); // one turn, two workers
    expect(p.stats.signed).toBe(100);
    expect(p.stats.signedOnMainThread).toBe(0);
    const verifier = createContentVerifier(ring.jwks());
    for (const [i, sig] of sigs.entries()) {
      await verifier.verify(fields(i), sig);
      expect(sig).toBe(await signContent(ring, fields(i))); // Ed25519 is deterministic
    }
    // a few in one turn go to one worker, not one message per signature
    await Promise.all([p.sign(fields(1)), p.sign(fields(2)), p.sign(fields(3))]);
    expect(p.stats.batches).toBe(3);
  });

  it("signs with ES256 keys too (verified, not byte-compared: ECDSA is randomized)", async () => {
    const ring = await KeyRing.open(new MapStorage(), "content", { alg: "ES256" });
    const p = await pool(ring, 1);
    const sig = await p.sign(fields(7));
    await createContentVerifier(ring.jwks()).verify(fields(7), sig);
    expect(kidOf(sig)).toBe(ring.currentKid);
  });

  it("a rotation reaches the workers: the next signature is by the new key, once per worker", async () => {
    const ring = await KeyRing.open(new MapStorage(), "content", { now: 1000 });
    const p = await pool(ring, 2);
    const oldKid = ring.currentKid;
    const before = await Promise.all(Array.from({ length: 32 }, (_, i) => p.sign(fields(i))));
    for (const s of before) expect(kidOf(s)).toBe(oldKid);
    const newKid = await ring.rotate(2000);
    expect(newKid).not.toBe(oldKid);
    const after = await Promise.all(Array.from({ length: 32 }, (_, i) => p.sign(fields(i))));
    const verifier = createContentVerifier(ring.jwks());
    for (const [i, s] of after.entries()) {
      expect(kidOf(s)).toBe(newKid);
      await verifier.verify(fields(i), s);
    }
    // retiring the old key changes nothing for signing
    await ring.retire(1500);
    expect(kidOf(await p.sign(fields(1)))).toBe(newKid);
  });

  it("a worker that crashes (its key does not import) fails only its batch; it is replaced and the next signature succeeds", async () => {
    const ring = await KeyRing.open(new MapStorage(), "content");
    const other = await KeyRing.open(new MapStorage(), "content");
    let corrupt = true;
    // the first key the worker gets has another key's public member: importing it throws in the worker, outside any item
    const source: SigningKeySource = {
      get currentKid() {
        return corrupt ? "corrupt" : ring.currentKid;
      },
      signingKeyMaterial(): SigningKeyMaterial {
        const m = ring.signingKeyMaterial();
        return corrupt ? { ...m, kid: "corrupt", jwk: { ...m.jwk, x: other.signingKeyMaterial().jwk.x } } : m;
      },
      signingKey: () => ring.signingKey(),
    };
    const p = await pool(source, 1);
    const first = await settle([p.sign(fields(1)), p.sign(fields(2))]);
    expect(first.ok).toEqual([]);
    expect(first.failed).toHaveLength(2);
    expect(first.failed[0]?.message).toMatch(/content-signing worker failed/);
    expect(p.stats.workerFailures).toBe(1);
    expect(p.stats.failedByWorkerFailure).toBe(2);
    corrupt = false;
    const sig = await p.sign(fields(3));
    await createContentVerifier(ring.jwks()).verify(fields(3), sig);
    expect(p.stats.signedOnMainThread).toBe(0); // signed by the replacement worker
    expect(p.liveWorkers).toBe(1);
  });

  it("a worker that dies fails only the signatures in flight on it; the other worker's succeed, and the next ones too", async () => {
    const ring = await KeyRing.open(new MapStorage(), "content");
    const p = await pool(ring, 2);
    const inFlight = Array.from({ length: 32 }, (_, i) => p.sign(fields(i)));
    p.flush(); // 16 to each worker
    p.terminateWorker(0);
    const r = await settle(inFlight);
    expect(r.failed).toHaveLength(16);
    expect(r.ok).toHaveLength(16);
    expect(p.stats.workerFailures).toBe(1);
    expect(p.stats.failedByWorkerFailure).toBe(16);
    const next = await Promise.all(Array.from({ length: 32 }, (_, i) => p.sign(fields(i))));
    const verifier = createContentVerifier(ring.jwks());
    for (const [i, s] of next.entries()) await verifier.verify(fields(i), s);
    expect(p.liveWorkers).toBe(2);
    expect(p.stats.signedOnMainThread).toBe(0);
  });

  it("refuses to start without a worker and signs nothing once closed", async () => {
    const ring = await KeyRing.open(new MapStorage(), "content");
    await expect(SigningPool.start(ring, 0)).rejects.toThrow(RangeError);
    const p = await SigningPool.start(ring, 1);
    const waiting = p.sign(fields(1)).then(
      () => "signed",
      (e: unknown) => (e as Error).message,
    );
    await p.close();
    expect(await waiting).toMatch(/closed/);
    await expect(p.sign(fields(2))).rejects.toThrow(/closed/);
  });
});

describe("push server with a signing pool", () => {
  async function serverWithDevice(): Promise<{ s: PushServer; got: ReceivedMessage[] }> {
    const s = await startPushServer({ store: openMemoryStore(), dtls: { host: "127.0.0.1", port: 0 }, signingWorkers: 2 });
    servers.push(s);
    const key = enc("0123456789abcdef");
    await s.registry.add({ id: "d1", psk: { identity: "d1", key }, topics: ["room/1"] });
    await s.registry.add({ id: "d2", psk: { identity: "d2", key }, topics: ["room/1"] });
    const c = await connect({ host: "127.0.0.1", port: s.address().port, psk: { identity: "d1", key } });
    clients.push(c);
    const got: ReceivedMessage[] = [];
    c.on("message", (m) => got.push(m));
    return { s, got };
  }

  async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error("timed out waiting");
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it("pushes signed by the workers verify in the device SDK; a topic publish is signed once; a rotation signs with the new kid", async () => {
    const { s, got } = await serverWithDevice();
    const pool = s.signing as SigningPool;
    expect(pool.liveWorkers).toBe(2);
    const r1 = await s.publish({ target: { device: "d1" }, payload: enc("one"), publisher: "t" });
    const r2 = await s.publish({ target: { topic: "room/1" }, payload: enc("two"), publisher: "t" });
    expect(r2.recipients).toBe(2);
    expect(pool.stats.signed).toBe(2); // one per publish, whatever the recipients
    await waitFor(() => got.length === 2); // the SDK hands over only pushes whose signature verified
    expect(got.map((m) => m.id)).toEqual([r1.messageId, r2.messageId]);
    const oldKid = s.contentKeys.currentKid;
    const stored1 = (await s.engine.messageStatus(r1.messageId))?.message.signature ?? "";
    expect(kidOf(stored1)).toBe(oldKid);

    const newKid = await s.contentKeys.rotate(Date.now());
    s.engine.keysChanged();
    const r3 = await s.publish({ target: { device: "d1" }, payload: enc("three"), publisher: "t" });
    const stored3 = (await s.engine.messageStatus(r3.messageId))?.message.signature ?? "";
    expect(kidOf(stored3)).toBe(newKid);
    const m = (await s.engine.messageStatus(r3.messageId))?.message;
    if (m === undefined) throw new Error("message 3 not stored");
    const { id: messageId, topic, device, contentType, publisher, collapseKey, payload, createdAt, expiresAt, priority } = m;
    const signed = { messageId, topic, device, contentType, publisher, collapseKey, payload, createdAt, expiresAt, priority };
    await createContentVerifier(s.contentKeys.jwks()).verify(signed, stored3);
    await waitFor(() => got.length === 3);
    expect(got[2]?.text()).toBe("three");
  });

  it("a worker crash fails the publishes in flight on it (internal, nothing stored or sent); the next publish is delivered", async () => {
    const { s, got } = await serverWithDevice();
    const pool = s.signing as SigningPool;
    const inFlight = s.publish({ id: "lost-1", target: { device: "d1" }, payload: enc("lost"), publisher: "t" });
    pool.flush(); // one signature: one batch to one worker
    pool.terminateWorker(0);
    pool.terminateWorker(1);
    const e = await inFlight.then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(MessagingError);
    expect((e as MessagingError).code).toBe("internal");
    expect(await s.engine.messageStatus("lost-1")).toBeUndefined();
    expect(s.engine.deviceStatus("d1").queueDepth).toBe(0);
    const ok = await s.publish({ id: "kept-1", target: { device: "d1" }, payload: enc("kept"), publisher: "t" });
    await waitFor(() => got.length === 1);
    expect(got.map((m) => m.id)).toEqual([ok.messageId]);
    expect(pool.stats.failedByWorkerFailure).toBe(1);
    expect(pool.stats.signedOnMainThread).toBe(0);
    const metrics = createMetrics();
    metrics.attach(s);
    const text = await metrics.text();
    expect(text).toMatch(/^dtlspush_signing_worker_failures_total 2$/m);
    expect(text).toMatch(/^dtlspush_signing_failed_total 1$/m);
    expect(text).toMatch(/^dtlspush_signing_workers 2$/m);
    // the id of the failed publish is free: a retry succeeds
    await s.publish({ id: "lost-1", target: { device: "d1" }, payload: enc("lost"), publisher: "t" });
    await waitFor(() => got.length === 2);
  });
});
