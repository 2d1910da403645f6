/**
 * An in-process UDP proxy for loopback end-to-end tests that impairs traffic
 * in both directions: drops, duplicates and delays (so later datagrams
 * overtake them) datagrams with a seeded PRNG, so a run is reproducible for
 * a given order of arrivals.
 *
 * Each client address gets its own upstream socket, so the server sees one
 * peer per client. Queues are bounded (delayed datagrams, clients) and
 * close() clears every timer and closes every socket.
 *
 * Stats count datagrams arriving at the proxy (both directions together):
 * `forwarded + dropped` = arrivals; `duplicated` = extra copies sent;
 * `reordered` = copies held back for a random delay.
 */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { isIP } from "node:net";

export interface LossyProxyOptions {
  /** Where client datagrams go (the server). */
  target: { host: string; port: number };
  /** Probability that a datagram is dropped (0..1). Default 0. */
  drop?: number;
  /** Probability that a forwarded datagram is sent twice. Default 0. */
  duplicate?: number;
  /** Probability that a copy is held back for a random delay, so later datagrams overtake it. Default 0. */
  reorder?: number;
  /** Delay range for held-back copies, in ms (inclusive). Default [1, 20]. */
  reorderDelayMs?: readonly [number, number];
  /** PRNG seed. Default 1. */
  seed?: number;
  /** Address the proxy listens on (port is ephemeral). Default "127.0.0.1". */
  listenHost?: string;
  /** Most datagrams held back at once; beyond it copies go out at once. Default 1024. */
  maxDelayed?: number;
  /** Most clients (upstream sockets); the least recently active one is dropped beyond it. Default 256. */
  maxClients?: number;
}

export interface LossyProxyStats {
  forwarded: number;
  dropped: number;
  duplicated: number;
  reordered: number;
}

export interface LossyProxy {
  /** The port clients send to (on listenHost). */
  readonly port: number;
  /** Live counters (the object is updated in place). */
  readonly stats: LossyProxyStats;
  /** Number of clients (upstream sockets) currently known. */
  readonly clients: number;
  /** Changes the drop probability from now on (e.g. 1 to cut the link, 0 to restore it). */
  setDrop(p: number): void;
  /** Clears all pending timers and closes every socket. */
  close(): Promise<void>;
}

/** mulberry32: a small, fast, seedable PRNG with uniform output in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function checkProbability(name: string, p: number): number {
  if (typeof p !== "number" || !(p >= 0 && p <= 1)) throw new RangeError(`${name} must be a probability from 0 to 1, got ${String(p)}`);
  return p;
}

function socketType(host: string): "udp4" | "udp6" {
  return isIP(host) === 6 ? "udp6" : "udp4";
}

interface Client {
  readonly upstream: Socket;
  readonly address: string;
  readonly port: number;
}

export async function startLossyProxy(options: LossyProxyOptions): Promise<LossyProxy> {
  let drop = checkProbability("drop", options.drop ?? 0);
  const duplicate = checkProbability("duplicate", options.duplicate ?? 0);
  const reorder = checkProbability("reorder", options.reorder ?? 0);
  const [minDelay, maxDelay] = options.reorderDelayMs ?? [1, 20];
  if (!(minDelay >= 0 && maxDelay >= minDelay)) throw new RangeError(`reorderDelayMs must be [min, max] with 0 <= min <= max`);
  const maxDelayed = options.maxDelayed ?? 1024;
  const maxClients = options.maxClients ?? 256;
  const random = seededRandom(options.seed ?? 1);
  const listenHost = options.listenHost ?? "127.0.0.1";
  const target = options.target;

  const stats: LossyProxyStats = { forwarded: 0, dropped: 0, duplicated: 0, reordered: 0 };
  const timers = new Set<NodeJS.Timeout>();
  /** Clients by "address|port", in order of last activity (a Map keeps insertion order). */
  const clients = new Map<string, Client>();
  let closed = false;

  const listener = createSocket({ type: socketType(listenHost) });
  listener.on("error", () => {}); // e.g. ICMP errors on loopback: a lossy link ignores them

  /** Applies the impairments to one datagram and hands each surviving copy to `send`. */
  const impair = (msg: Buffer, send: (b: Buffer) => void): void => {
    if (random() < drop) {
      stats.dropped++;
      return;
    }
    stats.forwarded++;
    let copies = 1;
    if (random() < duplicate) {
      stats.duplicated++;
      copies = 2;
    }
    for (let i = 0; i < copies; i++) {
      if (random() < reorder && timers.size < maxDelayed) {
        stats.reordered++;
        const delay = minDelay + Math.floor(random() * (maxDelay - minDelay + 1));
        const copy = Buffer.from(msg);
        const timer = setTimeout(() => {
          timers.delete(timer);
          if (!closed) send(copy);
        }, delay);
        timers.add(timer);
      } else {
        send(msg);
      }
    }
  };

  const clientFor = (rinfo: RemoteInfo): Client => {
    const key = `${rinfo.address}|${rinfo.port}`;
    const known = clients.get(key);
    if (known !== undefined) {
      clients.delete(key); // re-inserted below: most recently active last
      clients.set(key, known);
      return known;
    }
    if (clients.size >= maxClients) {
      const [oldestKey, oldest] = clients.entries().next().value as [string, Client];
      clients.delete(oldestKey);
      oldest.upstream.close();
    }
    const upstream = createSocket({ type: socketType(target.host) });
    const client: Client = { upstream, address: rinfo.address, port: rinfo.port };
    upstream.on("error", () => {});
    upstream.on("message", (reply) => {
      if (closed) return;
      impair(reply, (b) => listener.send(b, client.port, client.address));
    });
    clients.set(key, client);
    return client;
  };

  listener.on("message", (msg, rinfo) => {
    if (closed) return;
    const client = clientFor(rinfo);
    impair(msg, (b) => client.upstream.send(b, target.port, target.host));
  });

  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.bind(0, listenHost, () => {
      listener.off("error", reject);
      resolve();
    });
  });

  const closeSocket = (s: Socket): Promise<void> =>
    new Promise<void>((resolve) => {
      try {
        s.close(() => resolve());
      } catch {
        resolve(); // already closed
      }
    });

  return {
    port: listener.address().port,
    stats,
    get clients() {
      return clients.size;
    },
    setDrop(p: number) {
      drop = checkProbability("drop", p);
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      const sockets = [listener, ...[...clients.values()].map((c) => c.upstream)];
      clients.clear();
      await Promise.all(sockets.map(closeSocket));
    },
  };
}
