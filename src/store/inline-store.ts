import { refusedAfterFailure } from "./errors.ts";
import type { Store, SyncStore } from "./types.ts";

/**
 * A `SyncStore` as a `Store`: each operation runs at once, in the caller's
 * turn, and its promise settles with the result. For the memory store (tests,
 * throw-away runs) and offline tools; the daemon's SQLite store runs on a
 * worker thread instead (worker-store.ts). Keeps the Store contract: calls
 * take effect in order, and after a failed commit every later commit is
 * refused (store_failed) so the contents stay a prefix of the batches.
 */
export function inlineStore(sync: SyncStore): Store {
  let failed: Error | undefined;
  let closed = false;
  const run = <T>(fn: () => T): Promise<T> => {
    try {
      return Promise.resolve(fn());
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  };
  return {
    kind: sync.kind,
    putDevice: (d) => run(() => sync.putDevice(d)),
    getDevice: (id) => run(() => sync.getDevice(id)),
    findDeviceByPskIdentity: (identity) => run(() => sync.findDeviceByPskIdentity(identity)),
    findDeviceByCertIdentity: (identity) => run(() => sync.findDeviceByCertIdentity(identity)),
    listDevices: () => run(() => sync.listDevices()),
    deleteDevice: (id) => run(() => sync.deleteDevice(id)),
    commit: (batch) =>
      run(() => {
        if (failed !== undefined && !closed) {
          throw refusedAfterFailure(failed);
        }
        try {
          return sync.commit(batch);
        } catch (e) {
          failed = e instanceof Error ? e : new Error(String(e));
          throw e;
        }
      }),
    loadDeliveryState: () => run(() => sync.loadDeliveryState()),
    getMessage: (id) => run(() => sync.getMessage(id)),
    existingMessageIds: (ids) => run(() => sync.existingMessageIds(ids)),
    receiptsForMessage: (id) => run(() => sync.receiptsForMessage(id)),
    receiptsAfter: (afterId, limit) => run(() => sync.receiptsAfter(afterId, limit)),
    prune: (before) => run(() => sync.prune(before)),
    getSetting: (key) => run(() => sync.getSetting(key)),
    putSetting: (key, value) => run(() => sync.putSetting(key, value)),
    close: () =>
      run(() => {
        closed = true;
        sync.close();
      }),
  };
}
