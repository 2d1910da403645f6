import type { ClusterEvent, ClusterStore, DeviceHold, StoredQueue } from "./cluster-types.ts";
import { StoreError } from "./errors.ts";
import { inlineStore } from "./inline-store.ts";
import { createMemoryStore } from "./memory-store.ts";
import type { DeliveryRecord, DeviceRecord, Receipt, Store, Subscription, SyncStore, WriteBatch } from "./types.ts";

/**
 * A shared store in one process, for the delivery engine's cluster tests:
 * one memory store (memory-store.ts, the same data and checks) seen by N
 * nodes, each a `Store & ClusterStore` with the contract of cluster-types.ts:
 * holds with epochs, fencing of holder-only writes (skipped per device, the
 * rest of the batch applied), events to the other nodes, always delivered
 * later than the call that caused them (a microtask), never inside it.
 */
export interface MemoryCluster {
  /** a new node on the shared data (its instance name is unique over the cluster's life) */
  node(name?: string): Store & ClusterStore;
  /** the shared data, read directly (tests) */
  readonly data: SyncStore;
  /** the instance holding each device now, with its epoch (tests) */
  holdOf(device: string): { readonly instance: string; readonly epoch: number } | undefined;
  /** while `lost`, the node's events are dropped (its event connection is down: tests) */
  loseEvents(instance: string, lost: boolean): void;
  /** tells every node "resync" (its event connection is back) */
  resync(): void;
}

interface Hold {
  instance: string;
  epoch: number;
}

interface NodeState {
  readonly instance: string;
  readonly listeners: Set<(event: ClusterEvent) => void>;
  closed: boolean;
  deaf: boolean;
}

export function createMemoryCluster(): MemoryCluster {
  return new SharedData().cluster();
}

class SharedData {
  readonly data = createMemoryStore();
  /** device -> its current hold (instance "" once released) */
  private readonly holds = new Map<string, Hold>();
  private readonly nodes: NodeState[] = [];
  private instances = 0;

  cluster(): MemoryCluster {
    return {
      node: (name) => this.node(name),
      data: this.data,
      holdOf: (device) => {
        const h = this.holds.get(device);
        return h === undefined || h.instance === "" ? undefined : { instance: h.instance, epoch: h.epoch };
      },
      loseEvents: (instance, lost) => {
        for (const n of this.nodes) if (n.instance === instance) n.deaf = lost;
      },
      resync: () => this.tell(() => true, { kind: "resync" }),
    };
  }

  /** Tells every node `to` accepts (each listener on its own), after the caller's stack. */
  private tell(to: (n: NodeState) => boolean, event: ClusterEvent): void {
    const targets = this.nodes.filter((n) => !n.closed && !n.deaf && to(n));
    if (targets.length === 0) return;
    queueMicrotask(() => {
      for (const n of targets) {
        if (n.closed) continue;
        for (const fn of [...n.listeners]) {
          try {
            fn(event);
          } catch {
            // a throwing listener fails nobody (contract)
          }
        }
      }
    });
  }

  private node(name: string | undefined): Store & ClusterStore {
    const instance = `${name ?? "node"}#${++this.instances}`;
    const state: NodeState = { instance, listeners: new Set(), closed: false, deaf: false };
    this.nodes.push(state);
    const others = (n: NodeState): boolean => n !== state;
    const data = this.data;
    // the node's synchronous view: the shared data, with fencing and events on commit and the registry's writes
    const view: SyncStore = {
      kind: "memory",
      putDevice: (d: DeviceRecord) => {
        data.putDevice(d);
        this.tell(others, { kind: "registry", device: d.id });
      },
      getDevice: (id) => data.getDevice(id),
      findDeviceByPskIdentity: (identity) => data.findDeviceByPskIdentity(identity),
      findDeviceByCertIdentity: (identity) => data.findDeviceByCertIdentity(identity),
      listDevices: () => data.listDevices(),
      deleteDevice: (id) => {
        const existed = data.deleteDevice(id);
        this.tell(others, { kind: "registry", device: id });
        return existed;
      },
      commit: (batch) => this.commit(state, batch),
      loadDeliveryState: () => data.loadDeliveryState(),
      getMessage: (id) => data.getMessage(id),
      existingMessageIds: (ids) => data.existingMessageIds(ids),
      receiptsForMessage: (id) => data.receiptsForMessage(id),
      receiptsAfter: (afterId, limit) => data.receiptsAfter(afterId, limit),
      prune: (before) => data.prune(before),
      getSetting: (key) => data.getSetting(key),
      putSetting: (key, value) => data.putSetting(key, value),
      // closing a node leaves the shared data to the others
      close: () => {
        state.closed = true;
      },
    };
    // a closed node refuses everything (the others go on)
    const guarded = new Proxy(view, {
      get: (target, key: keyof SyncStore) => {
        const v = target[key];
        if (typeof v !== "function" || key === "close") return v;
        return (...args: unknown[]) => {
          if (state.closed) throw new StoreError("store_closed", `Node ${instance} of the memory cluster is closed.`);
          return (v as (...a: unknown[]) => unknown)(...args);
        };
      },
    });
    const store = inlineStore(guarded);
    const run = <T>(fn: () => T): Promise<T> => {
      try {
        if (state.closed) throw new StoreError("store_closed", `Node ${instance} of the memory cluster is closed.`);
        return Promise.resolve(fn());
      } catch (e) {
        return Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
    };
    const cluster: ClusterStore = {
      instance,
      claimDevice: (device) => run(() => this.claim(state, device)),
      releaseDevice: (device, epoch) =>
        run(() => {
          const h = this.holds.get(device);
          if (h !== undefined && h.instance === instance && h.epoch === epoch) h.instance = "";
        }),
      readQueue: (device) => run(() => this.queueOf(device)),
      holders: (devices) =>
        run(() => {
          const out = new Map<string, string>();
          for (const d of devices) out.set(d, this.holds.get(d)?.instance ?? "");
          return out;
        }),
      loadSubscriptions: () => run((): Subscription[] => [...data.loadDeliveryState().subscriptions]),
      queueDepths: (devices) =>
        run(() => {
          const counts = this.depths();
          const out = new Map<string, number>();
          for (const d of devices) out.set(d, counts.get(d) ?? 0);
          return out;
        }),
      onClusterEvent: (listener) => {
        const entry = (e: ClusterEvent): void => listener(e);
        state.listeners.add(entry);
        return () => state.listeners.delete(entry);
      },
    };
    return Object.assign(store, cluster);
  }

  private claim(state: NodeState, device: string): DeviceHold {
    const previous = this.holds.get(device);
    const epoch = (previous?.epoch ?? 0) + 1;
    const before = previous?.instance ?? "";
    this.holds.set(device, { instance: state.instance, epoch });
    if (before !== "" && before !== state.instance) {
      this.tell((n) => n.instance === before, { kind: "taken", device, epoch });
    }
    const counters = this.data.loadDeliveryState().counters.find((c) => c.device === device);
    const queue = this.queueOf(device);
    return { device, epoch, counters, deliveries: queue.deliveries, messages: queue.messages, previous: before };
  }

  private queueOf(device: string): StoredQueue {
    const state = this.data.loadDeliveryState();
    const deliveries = state.deliveries.filter((d) => d.device === device);
    const ids = new Set(deliveries.map((d) => d.messageId));
    return { deliveries, messages: state.messages.filter((m) => ids.has(m.id)) };
  }

  private depths(): Map<string, number> {
    const out = new Map<string, number>();
    for (const d of this.data.loadDeliveryState().deliveries) out.set(d.device, (out.get(d.device) ?? 0) + 1);
    return out;
  }

  /**
   * Applies the batch with the writes of fenced devices this node no longer
   * holds left out: their counters, removals, and deliveries with a seq or a
   * tombstone. A delivery of a message new in this batch is still queued (as
   * unsent: a publish reaches the device whoever holds it); an unsent
   * delivery never replaces a row already stored for such a device.
   */
  private commit(state: NodeState, batch: WriteBatch): Receipt[] {
    const lost = new Set<string>();
    for (const f of batch.fence ?? []) {
      const h = this.holds.get(f.device);
      if (h === undefined || h.instance !== state.instance || h.epoch !== f.epoch) lost.add(f.device);
    }
    let applied = batch;
    if (lost.size > 0) {
      const fresh = new Set((batch.messages ?? []).map((m) => m.id));
      const stored = new Map<string, Set<string>>();
      for (const device of lost) stored.set(device, new Set(this.queueOf(device).deliveries.map((d) => d.messageId)));
      const deliveries: DeliveryRecord[] = [];
      for (const d of batch.deliveries ?? []) {
        const rows = stored.get(d.device);
        if (rows === undefined) deliveries.push(d);
        else if (fresh.has(d.messageId) && !rows.has(d.messageId)) deliveries.push({ ...d, seq: 0, tombstone: false });
      }
      applied = {
        ...batch,
        deliveries,
        removeDeliveries: (batch.removeDeliveries ?? []).filter((k) => !lost.has(k.device)),
        counters: (batch.counters ?? []).filter((c) => !lost.has(c.device)),
      };
    }
    const receipts = this.data.commit(applied);
    // the holders of other nodes' queued devices, and the others' indexes
    const queuedFor = new Map<string, string[]>();
    for (const d of applied.deliveries ?? []) {
      const holder = this.holds.get(d.device)?.instance ?? "";
      if (holder === "" || holder === state.instance) continue;
      let list = queuedFor.get(holder);
      if (list === undefined) queuedFor.set(holder, (list = []));
      if (!list.includes(d.device)) list.push(d.device);
    }
    for (const [holder, devices] of queuedFor) this.tell((n) => n.instance === holder, { kind: "queued", devices });
    const changes = [
      ...(applied.subscribe ?? []).map((s) => ({ device: s.device, topic: s.topic, subscribed: true })),
      ...(applied.unsubscribe ?? []).map((s) => ({ device: s.device, topic: s.topic, subscribed: false })),
    ];
    if (changes.length > 0) this.tell((n) => n !== state, { kind: "subscriptions", changes });
    if (receipts.length > 0) this.tell((n) => n !== state, { kind: "receipts", lastId: (receipts.at(-1) as Receipt).id });
    return receipts;
  }
}
