import type { KeyStorage } from "../../src/auth/key-ring.ts";

/** Key ring storage in a Map (what the Store's settings are to a ring). */
export class MapStorage implements KeyStorage {
  readonly map = new Map<string, string>();
  getSetting(key: string): string | undefined {
    return this.map.get(key);
  }
  putSetting(key: string, value: string): void {
    this.map.set(key, value);
  }
}
