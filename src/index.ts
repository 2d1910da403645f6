/** dtlspush: the package's main entry. The DTLS engine is also at "dtlspush/dtls". */
export * from "./dtls/index.ts";
