/**
 * The saved-sessions file (src/daemon/session-snapshot-file.ts) on a real
 * directory: sealed and opened back; every way a file is refused names its
 * cause; taking the file deletes it, so it is never read twice; the key file
 * is made once with mode 0600.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  openSnapshot,
  sealSnapshot,
  snapshotKey,
  SNAPSHOT_FILE,
  takeSnapshotFile,
  writeSnapshotFile,
} from "../../src/daemon/session-snapshot-file.ts";
import { decodeLinkSnapshot, encodeLinkSnapshot } from "../../src/messaging/link-snapshot.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function dir(): string {
  const d = mkdtempSync(join(tmpdir(), "dtlspush-snapfile-"));
  dirs.push(d);
  return d;
}

const SESSIONS = [Uint8Array.of(1, 2, 3), new Uint8Array(300).fill(7)];
const NOW = 1_780_000_000_000;

describe("the saved-sessions file", () => {
  it("round-trips; taking it deletes it (never read twice); the key is made once, mode 0600", async () => {
    const d = dir();
    const key = await snapshotKey(d);
    expect(statSync(join(d, "session-snapshot.key")).mode & 0o777).toBe(0o600);
    expect(await snapshotKey(d)).toEqual(key);
    await writeSnapshotFile(d, sealSnapshot(key, SESSIONS, NOW));
    expect(statSync(join(d, SNAPSHOT_FILE)).mode & 0o777).toBe(0o600);
    const bytes = await takeSnapshotFile(d);
    expect(existsSync(join(d, SNAPSHOT_FILE))).toBe(false);
    expect(await takeSnapshotFile(d)).toBeUndefined();
    const opened = openSnapshot(key, bytes as Uint8Array, NOW + 1000, 600_000);
    expect(opened.kind === "loaded" ? opened.sessions.map((s) => [...s]) : opened).toEqual(SESSIONS.map((s) => [...s]));
  });

  it("refuses by cause: too old (or from the future), another key, another version, damaged", async () => {
    const key = await snapshotKey(dir());
    const other = await snapshotKey(dir());
    const file = sealSnapshot(key, SESSIONS, NOW);
    const cause = (bytes: Uint8Array, k = key, now = NOW): string => {
      const r = openSnapshot(k, bytes, now, 600_000);
      return r.kind === "refused" ? r.cause : r.kind;
    };
    expect(cause(file)).toBe("loaded");
    expect(cause(file, key, NOW + 600_001)).toBe("too_old");
    expect(cause(file, key, NOW - 120_000)).toBe("too_old");
    expect(cause(file, other)).toBe("other_key");
    const v2 = Uint8Array.from(file);
    v2[6] = 2;
    expect(cause(v2)).toBe("other_version");
    for (const at of [20, 40, file.length - 1]) {
      const flipped = Uint8Array.from(file);
      flipped[at] = (flipped[at] as number) ^ 1;
      expect(cause(flipped), `byte ${at}`).not.toBe("loaded");
    }
    expect(cause(file.subarray(0, file.length - 1))).toBe("damaged");
    expect(cause(new Uint8Array(10))).toBe("damaged");
  });

  it("a key file of another length is replaced: what it sealed is refused as another key's", async () => {
    const d = dir();
    writeFileSync(join(d, "session-snapshot.key"), new Uint8Array(5));
    const key = await snapshotKey(d);
    expect(key.length).toBe(32);
    expect(openSnapshot(new Uint8Array(32), sealSnapshot(key, SESSIONS, NOW), NOW, 1000)).toMatchObject({ kind: "refused", cause: "other_key" });
  });
});

describe("the engine's link snapshot", () => {
  it("round-trips; another version or damaged bytes are not a link", () => {
    const b = encodeLinkSnapshot({ sessionId: "s-1", deviceId: "dev-é" });
    expect(decodeLinkSnapshot(b)).toEqual({ sessionId: "s-1", deviceId: "dev-é" });
    expect(decodeLinkSnapshot(Uint8Array.of(2, ...b.subarray(1)))).toBeUndefined();
    expect(decodeLinkSnapshot(b.subarray(0, b.length - 1))).toBeUndefined();
    expect(decodeLinkSnapshot(Uint8Array.of(1, 0, 0))).toBeUndefined(); // no session id
  });
});
