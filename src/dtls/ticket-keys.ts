/**
 * The default ticket keys of a server that was given none (ListenOptions
 * without resumption.ticketKeys): one random key in memory, replaced every
 * `lifetimeMs`; the key it replaced still opens its tickets for one more
 * lifetime, then retires. Tickets die with the process (the daemon gives a
 * store-backed source instead, so they survive restarts).
 */
import { bytesEqual } from "../util/bytes.ts";
import { defaultCrypto, type RandomSource } from "../crypto/index.ts";
import type { TicketKey, TicketKeySource } from "./resumption-options.ts";

export class RotatingTicketKeys implements TicketKeySource {
  private readonly lifetimeMs: number;
  private active: TicketKey | undefined;
  private previous: TicketKey | undefined;

  /** Where the key names and secrets come from (the endpoint's crypto provider). */
  private readonly random: RandomSource;

  constructor(lifetimeMs: number, random: RandomSource = defaultCrypto.random) {
    this.lifetimeMs = lifetimeMs;
    this.random = random;
  }

  current(wallNow: number): TicketKey | undefined {
    const active = this.active;
    if (active !== undefined && wallNow < active.notAfter) return active;
    this.previous = active;
    const key: TicketKey = {
      name: this.random.bytes(16),
      secret: this.random.bytes(32),
      notBefore: wallNow,
      notAfter: wallNow + this.lifetimeMs,
      retiresAt: wallNow + 2 * this.lifetimeMs,
    };
    this.active = key;
    return key;
  }

  byName(name: Uint8Array, wallNow: number): TicketKey | undefined {
    for (const key of [this.active, this.previous]) {
      if (key !== undefined && wallNow < key.retiresAt && bytesEqual(key.name, name)) return key;
    }
    return undefined;
  }
}
