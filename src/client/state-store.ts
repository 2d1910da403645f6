import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync, openSync, fsyncSync, closeSync } from "node:fs";
import { dirname } from "node:path";
import { DtlspushError } from "../util/errors.ts";

/**
 * What a device persists between runs so it never processes a message twice:
 * the high-water mark (highest seq processed in order), the session token to
 * resume with, and the next uplink request id (so a repeated Publish is
 * recognised as a repeat, never as new); and the DTLS session, so that a
 * reconnect, even after a restart of the device, is an abbreviated handshake.
 */
export interface ClientState {
  readonly hwm: number;
  readonly sessionToken: string;
  readonly nextRequestId: number;
  /**
   * The DTLS session to resume (the transport's saved session, base64), absent
   * when none. It holds the session's master secret: whoever reads it can
   * resume the session as this device until its ticket expires.
   */
  readonly dtlsSession?: string | undefined;
  /**
   * With several servers (`ConnectOptions.servers`): the DTLS sessions of the
   * servers other than the latest one, by "host:port" (base64), so that failing
   * over and back resumes with each. Same secrecy as `dtlsSession`.
   */
  readonly dtlsSessions?: Readonly<Record<string, string>> | undefined;
}

/** Pluggable persistence of ClientState; `save` must be durable when it resolves. */
export interface ClientStateStore {
  load(): Promise<ClientState | undefined> | ClientState | undefined;
  save(state: ClientState): Promise<void> | void;
}

/** Keeps state in memory: a restarted process starts from nothing (the server's ackedSeq then resumes it). */
export function memoryStateStore(initial?: ClientState): ClientStateStore & { readonly state: ClientState | undefined } {
  let state = initial;
  return {
    get state() {
      return state;
    },
    load: () => state,
    save: (s) => {
      state = s;
    },
  };
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Mode of the state file: it holds the DTLS session's master secret. */
export const STATE_FILE_MODE = 0o600;

/** A JSON file of mode 0600, replaced atomically (write to a temporary file, fsync, rename). */
export function fileStateStore(path: string): ClientStateStore {
  return {
    load(): ClientState | undefined {
      let text: string;
      try {
        text = readFileSync(path, "utf8");
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw new DtlspushError("state_unreadable", `cannot read the device state file ${path}: ${(e as Error).message}`, { cause: e });
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (e) {
        throw new DtlspushError("state_unreadable", `the device state file ${path} is not JSON`, { cause: e });
      }
      const o = parsed as Partial<ClientState> | null;
      if (
        o === null ||
        typeof o !== "object" ||
        !Number.isSafeInteger(o.hwm) ||
        typeof o.sessionToken !== "string" ||
        !Number.isSafeInteger(o.nextRequestId)
      ) {
        throw new DtlspushError("state_unreadable", `the device state file ${path} lacks hwm, sessionToken or nextRequestId`);
      }
      if (o.dtlsSession !== undefined && (typeof o.dtlsSession !== "string" || !BASE64.test(o.dtlsSession))) {
        throw new DtlspushError("state_unreadable", `the device state file ${path} holds a dtlsSession that is not base64`);
      }
      const others = o.dtlsSessions;
      if (
        others !== undefined &&
        (others === null ||
          typeof others !== "object" ||
          Array.isArray(others) ||
          !Object.values(others).every((v) => typeof v === "string" && BASE64.test(v)))
      ) {
        throw new DtlspushError("state_unreadable", `the device state file ${path} holds dtlsSessions that are not base64 texts by server`);
      }
      const state = { hwm: o.hwm as number, sessionToken: o.sessionToken, nextRequestId: o.nextRequestId as number };
      const withSession = o.dtlsSession === undefined || o.dtlsSession === "" ? state : { ...state, dtlsSession: o.dtlsSession };
      return others === undefined || Object.keys(others).length === 0 ? withSession : { ...withSession, dtlsSessions: { ...others } };
    },
    save(state: ClientState): void {
      mkdirSync(dirname(path), { recursive: true });
      const tmp = `${path}.tmp`;
      writeFileSync(tmp, JSON.stringify(state), { mode: STATE_FILE_MODE });
      chmodSync(tmp, STATE_FILE_MODE); // a temporary file left by a crash keeps its old mode otherwise
      const fd = openSync(tmp, "r");
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
    },
  };
}
