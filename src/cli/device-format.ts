/**
 * Devices as the CLI shows them: the API's device item (`GET /v1/devices`),
 * the same item built from a stored record (offline), and the `device list`
 * table. No key material ever appears here.
 */
import type { DeviceRecord } from "../store/types.ts";
import { quote } from "./args.ts";

/** A device as the HTTP API describes it. */
export interface DeviceItem {
  readonly id: string;
  readonly revoked: boolean;
  readonly psk: { readonly identity: string } | null;
  readonly certificate: { readonly identity: string } | null;
  readonly topics: readonly string[];
  readonly online: boolean;
  /** ISO-8601 time (or ms since the epoch) of the last datagram; null when never seen or unknown. */
  readonly lastSeen: string | number | null;
  /** Messages waiting for the device; null when unknown. */
  readonly queueDepth: number | null;
}

/** The API item for a stored device (the daemon is not running: offline, last seen unknown). */
export function deviceItemFromRecord(record: DeviceRecord, queueDepth: number | null): DeviceItem {
  return {
    id: record.id,
    revoked: record.revoked,
    psk: record.psk === undefined ? null : { identity: record.psk.identity },
    certificate: record.certIdentity === undefined ? null : { identity: record.certIdentity },
    topics: [...record.topics],
    online: false,
    lastSeen: null,
    queueDepth,
  };
}

/** Reads one device item from an API answer; undefined when it does not look like one. */
export function parseDeviceItem(value: unknown): DeviceItem | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v["id"] !== "string") return undefined;
  const identity = (x: unknown): { identity: string } | null =>
    typeof x === "object" && x !== null && typeof (x as { identity?: unknown }).identity === "string"
      ? { identity: (x as { identity: string }).identity }
      : null;
  const lastSeen = v["lastSeen"];
  const queueDepth = v["queueDepth"];
  return {
    id: v["id"],
    revoked: v["revoked"] === true,
    psk: identity(v["psk"]),
    certificate: identity(v["certificate"]),
    topics: Array.isArray(v["topics"]) ? v["topics"].filter((t): t is string => typeof t === "string") : [],
    online: v["online"] === true,
    lastSeen: typeof lastSeen === "string" || typeof lastSeen === "number" ? lastSeen : null,
    queueDepth: typeof queueDepth === "number" ? queueDepth : null,
  };
}

/** `psk`, `cert` or `psk+cert`. */
export function credentialsKind(item: DeviceItem): string {
  const kinds = [item.psk !== null ? "psk" : "", item.certificate !== null ? "cert" : ""].filter((k) => k !== "");
  return kinds.length === 0 ? "none" : kinds.join("+");
}

/** `2026-01-02T03:04:05Z`, or `-` when never seen (null, 0, empty). */
export function formatLastSeen(value: string | number | null): string {
  if (value === null || value === 0 || value === "") return "-";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

const HEADER = ["ID", "CREDENTIALS", "REVOKED", "ONLINE", "LAST SEEN", "QUEUE"] as const;

/** The `device list` table: a header and one row per device, columns padded to fit; "no devices" when empty. */
export function formatDeviceTable(items: readonly DeviceItem[]): string {
  if (items.length === 0) return "no devices\n";
  const rows: string[][] = [
    [...HEADER],
    ...items.map((d) => [
      d.id,
      credentialsKind(d),
      d.revoked ? "yes" : "no",
      d.online ? "yes" : "no",
      formatLastSeen(d.lastSeen),
      d.queueDepth === null ? "-" : String(d.queueDepth),
    ]),
  ];
  const widths = HEADER.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return (
    rows
      .map((r) =>
        r
          .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
          .join("  ")
          .trimEnd(),
      )
      .join("\n") + "\n"
  );
}

/** One line about a device: `sensor-1 psk-identity=sensor-1 topics=a,b` (`revoked` when it is). */
export function formatDeviceSummary(item: DeviceItem): string {
  const parts = [item.id];
  if (item.psk !== null) parts.push(`psk-identity=${quote(item.psk.identity)}`);
  if (item.certificate !== null) parts.push(`cert-identity=${quote(item.certificate.identity)}`);
  if (item.topics.length > 0) parts.push(`topics=${item.topics.join(",")}`);
  if (item.revoked) parts.push("revoked");
  return parts.join(" ");
}
