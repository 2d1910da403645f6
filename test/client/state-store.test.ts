/** fileStateStore: the DTLS session kept with the device state, in a file only its owner reads. */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { fileStateStore, STATE_FILE_MODE } from "../../src/client/state-store.ts";
import { DtlspushError } from "../../src/util/errors.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function file(): string {
  const dir = mkdtempSync(join(tmpdir(), "dtlspush-state-"));
  dirs.push(dir);
  return join(dir, "sub", "state.json");
}

describe("fileStateStore", () => {
  it("keeps the DTLS session and writes the file with mode 0600, even over a temporary file left by a crash", async () => {
    const path = file();
    const store = fileStateStore(path);
    await store.save({ hwm: 1, sessionToken: "t", nextRequestId: 5 });
    // a crash left a world-readable temporary file behind
    writeFileSync(`${path}.tmp`, "{}");
    chmodSync(`${path}.tmp`, 0o644);
    const session = Buffer.from("ticket and master secret").toString("base64");
    await store.save({ hwm: 2, sessionToken: "t", nextRequestId: 6, dtlsSession: session });
    expect(statSync(path).mode & 0o777).toBe(STATE_FILE_MODE);
    expect(await fileStateStore(path).load()).toEqual({ hwm: 2, sessionToken: "t", nextRequestId: 6, dtlsSession: session });
  });

  it("reads a file written before it held a DTLS session", async () => {
    const path = file();
    await fileStateStore(path).save({ hwm: 3, sessionToken: "", nextRequestId: 1 });
    expect(JSON.parse(readFileSync(path, "utf8"))).not.toHaveProperty("dtlsSession");
    expect(await fileStateStore(path).load()).toEqual({ hwm: 3, sessionToken: "", nextRequestId: 1 });
  });

  it("keeps the DTLS sessions of the other servers, and refuses ones that are not base64 texts by server", async () => {
    const path = file();
    const others = { "10.0.0.2:5684": Buffer.from("B's session").toString("base64") };
    await fileStateStore(path).save({ hwm: 1, sessionToken: "t", nextRequestId: 2, dtlsSession: "QQ==", dtlsSessions: others });
    expect(await fileStateStore(path).load()).toEqual({ hwm: 1, sessionToken: "t", nextRequestId: 2, dtlsSession: "QQ==", dtlsSessions: others });
    for (const bad of [42, ["QQ=="], { "h:1": "not base64!" }, { "h:1": 7 }, null]) {
      writeFileSync(path, JSON.stringify({ hwm: 0, sessionToken: "", nextRequestId: 1, dtlsSessions: bad }));
      expect(() => fileStateStore(path).load(), JSON.stringify(bad)).toThrow(/dtlsSessions/);
    }
  });

  it("refuses a dtlsSession that is not base64 text (state_unreadable)", async () => {
    const path = file();
    await fileStateStore(path).save({ hwm: 0, sessionToken: "", nextRequestId: 1 });
    for (const bad of [42, "not base64!", { a: 1 }]) {
      writeFileSync(path, JSON.stringify({ hwm: 0, sessionToken: "", nextRequestId: 1, dtlsSession: bad }));
      const e = await (async () => {
        try {
          await fileStateStore(path).load();
          return undefined;
        } catch (x) {
          return x;
        }
      })();
      expect(e, JSON.stringify(bad)).toBeInstanceOf(DtlspushError);
      expect((e as DtlspushError).code).toBe("state_unreadable");
    }
  });
});
