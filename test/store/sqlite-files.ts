/**
 * Helpers of the SQLite schema upgrade tests: a file's schema and version as
 * SQLite holds them, and the check that a refused upgrade left a file as it was.
 */
import { expect } from "vitest";
import { openSqliteStore, StoreError } from "../../src/store/index.ts";

const sqlite = process.getBuiltinModule("node:sqlite") as typeof import("node:sqlite") | undefined;
if (sqlite === undefined)
  throw new Error(`the SQLite store tests need node:sqlite, which Node.js ${process.version} lacks; run them with the project's Node 24`);
export const { DatabaseSync } = sqlite;

/** Every table, index and trigger of the file, with its SQL. */
export function schemaOf(path: string): string[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return db
      .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name")
      .all()
      .map((r) => `${String(r["type"])} ${String(r["name"])} ${String(r["tbl_name"])}: ${String(r["sql"]).replace(/\s+/g, " ")}`);
  } finally {
    db.close();
  }
}

export function userVersion(path: string): number {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return Number(db.prepare("PRAGMA user_version").get()?.["user_version"]);
  } finally {
    db.close();
  }
}

/** Opening the file fails with store_corrupt naming it, and leaves its version and schema as they were. */
export function expectUpgradeRefused(path: string, version: number): void {
  const before = schemaOf(path);
  let error: unknown;
  try {
    openSqliteStore(path).close();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(StoreError);
  expect((error as StoreError).code).toBe("store_corrupt");
  expect((error as StoreError).message).toContain(path);
  expect(userVersion(path)).toBe(version);
  expect(schemaOf(path)).toEqual(before);
}

/** Opening `upgraded` (an old file) and `created` (no file yet) gives both the same schema. */
export function expectSameSchemaAsNew(upgraded: string, created: string): void {
  openSqliteStore(upgraded).close();
  openSqliteStore(created).close();
  expect(schemaOf(upgraded)).toEqual(schemaOf(created));
}
