/**
 * The contracts of session resumption (RFC 5246 7.3 abbreviated handshake,
 * RFC 5077 tickets) between the DTLS engine and what configures it: the
 * server's ticket keys and limits, the client's saved session. The daemon
 * keeps ticket keys in its store (so a restart, and later other nodes, open
 * the tickets); `listen` alone keeps them in memory.
 *
 * Times here are wall-clock milliseconds since the epoch (tickets outlive the
 * process, so a monotonic clock cannot date them).
 */

/** One ticket-sealing key: its name travels in the ticket, the key never does. */
export interface TicketKey {
  /** 16 random bytes (RFC 5077 4's key_name): which key sealed a ticket. */
  readonly name: Uint8Array;
  /** 32 bytes of AEAD key material (AES-256-GCM). */
  readonly secret: Uint8Array;
  /** New tickets are sealed with it from then (ms since the epoch). */
  readonly notBefore: number;
  /** No new ticket is sealed with it after this; tickets it sealed are opened until `retiresAt`. */
  readonly notAfter: number;
  /** Tickets sealed with it are refused from then on (notAfter + the ticket lifetime). */
  readonly retiresAt: number;
}

/**
 * Where a server finds its ticket keys. Both calls are synchronous and cheap
 * (they run per handshake on the event loop): a store-backed source keeps its
 * keys in memory and writes new ones ahead of their use.
 */
export interface TicketKeySource {
  /** The key to seal a new ticket with at `wallNow`, or undefined (no ticket is issued). */
  current(wallNow: number): TicketKey | undefined;
  /** The key named `name` if tickets sealed with it are still accepted at `wallNow`. */
  byName(name: Uint8Array, wallNow: number): TicketKey | undefined;
}

/** A server's resumption settings (ListenOptions.resumption); every field has a default. */
export interface ServerResumptionOptions {
  /** Off: no tickets issued, no session IDs cached, every handshake is full. Default on. */
  readonly enabled?: boolean;
  /** Default: one random key in memory, replaced every ticketLifetimeMs (tickets die with the process). */
  readonly ticketKeys?: TicketKeySource;
  /** A ticket is accepted this long after it was issued (and announced as its lifetime hint). Default 24 h. */
  readonly ticketLifetimeMs?: number;
  /** No resumption this long after the session's full handshake, however fresh its ticket. Default 7 days. */
  readonly maxSessionAgeMs?: number;
  /** Sessions kept for session-ID resumption (least recently used go first); 0: none. Default 10 000. */
  readonly sessionCacheSize?: number;
  /** The wall clock (ms since the epoch); default Date.now. */
  readonly wallClock?: () => number;
}

/**
 * A client's resumable session as applications keep it: opaque bytes from
 * DtlsConnection.session (and its "session" event), handed back in
 * ConnectOptions.session. It holds the session's master secret: store it as
 * carefully as a private key.
 */
export type SavedSession = Uint8Array;
