import type { KeyStorage } from "../../src/auth/key-ring.ts";

/** Key ring storage in a Map (what the Store's settings are to a ring). */
export class MapStorage implements KeyStorage {
  readonly map = new Map<string, string>();
  getSetting(key: string): Promise<string | undefined> {
    return Promise.resolve(this.map.get(key));
  }
  putSetting(key: string, value: string): Promise<void> {
    this.map.set(key, value);
    return Promise.resolve();
  }
}
