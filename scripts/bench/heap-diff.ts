/**
 * Where a heap grew between two V8 heap snapshots, by what holds the bytes.
 * Not a test: it prints a table.
 *
 *   node scripts/bench/heap-diff.ts BEFORE.heapsnapshot AFTER.heapsnapshot [--per N] [--top K]
 *
 * Every node's self size is charged to an owner: a JS object or closure is its
 * own owner (by constructor name); V8's internal parts of an object (its
 * property and element arrays, a closure's context, a Map's hash table, a
 * typed array's buffer) are charged to the object that alone holds them, and
 * so on up, so "LinkState" is the LinkState object with the arrays and tables
 * only it holds. Strings and numbers held by one object are charged to it too.
 * Nodes shared by several owners stay under their own type and name. C++
 * objects (native nodes, e.g. a KeyObject's key) are listed apart: they are
 * not in the V8 heap the bench's "heap per session" counts. With
 * --per N the growth is also divided by N (e.g. the sessions opened in between).
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface Snapshot {
  readonly snapshot: {
    readonly meta: {
      readonly node_fields: string[];
      readonly node_types: [string[]];
      readonly edge_fields: string[];
      readonly edge_types: [string[]];
    };
  };
  readonly nodes: number[];
  readonly edges: number[];
  readonly strings: string[];
}

/** The label of C++ objects held by JS objects: not in the V8 heap (heapUsed), listed apart. */
const NATIVE = "(native, outside the V8 heap)";

/** Bytes and node count per owner label. */
function owners(file: string): Map<string, { bytes: number; count: number }> {
  const s = JSON.parse(readFileSync(file, "utf8")) as Snapshot;
  const nf = s.snapshot.meta.node_fields;
  const ef = s.snapshot.meta.edge_fields;
  const nodeTypes = s.snapshot.meta.node_types[0];
  const edgeTypes = s.snapshot.meta.edge_types[0];
  const NF = nf.length;
  const EF = ef.length;
  const iType = nf.indexOf("type");
  const iName = nf.indexOf("name");
  const iSize = nf.indexOf("self_size");
  const iEdges = nf.indexOf("edge_count");
  const eType = ef.indexOf("type");
  const eTo = ef.indexOf("to_node");
  const weak = edgeTypes.indexOf("weak");
  const shortcut = edgeTypes.indexOf("shortcut");
  const n = s.nodes.length / NF;
  // retainers: a single strong retainer per node, or -2 when several
  const retainer = new Int32Array(n).fill(-1);
  let e = 0;
  for (let i = 0; i < n; i++) {
    const count = s.nodes[i * NF + iEdges] as number;
    for (let k = 0; k < count; k++, e += EF) {
      const t = s.edges[e + eType] as number;
      if (t === weak || t === shortcut) continue;
      const to = (s.edges[e + eTo] as number) / NF;
      if (to === i) continue;
      const r = retainer[to] as number;
      if (r === -1) retainer[to] = i;
      else if (r !== i) retainer[to] = -2;
    }
  }
  const typeOf = (i: number): string => nodeTypes[s.nodes[i * NF + iType] as number] as string;
  const nameOf = (i: number): string => s.strings[s.nodes[i * NF + iName] as number] as string;
  const isOwner = (i: number): boolean => {
    const t = typeOf(i);
    return t === "object" || t === "closure" || t === "regexp";
  };
  const firstEdge = new Int32Array(n + 1);
  for (let i = 0, at = 0; i < n; i++) {
    firstEdge[i] = at;
    at += (s.nodes[i * NF + iEdges] as number) * EF;
    firstEdge[i + 1] = at;
  }
  const property = edgeTypes.indexOf("property");
  const eName = ef.indexOf("name_or_index");
  /** A plain object's label: "Object {a,b,c}" (its first property names), so object literals of different shapes stay apart. */
  const keysOf = (i: number): string => {
    const names: string[] = [];
    for (let at = firstEdge[i] as number; at < (firstEdge[i + 1] as number) && names.length < 6; at += EF) {
      if (s.edges[at + eType] === property) names.push(s.strings[s.edges[at + eName] as number] as string);
    }
    return `{${names.filter((x) => x !== "__proto__" && x !== "map").join(",")}}`;
  };
  const label = (i: number): string => {
    const t = typeOf(i);
    if (t === "object") return nameOf(i) === "Object" ? `Object ${keysOf(i)}` : nameOf(i);
    if (t === "closure") return `closure ${nameOf(i) || "(anonymous)"}`;
    if (t === "string" || t === "concatenated string" || t === "sliced string") return `(${t})`;
    return `(${t}) ${nameOf(i).slice(0, 60)}`;
  };
  const owner = new Int32Array(n).fill(-1);
  const ownerOf = (i: number): number => {
    let at = i;
    for (let depth = 0; depth < 8; depth++) {
      if (isOwner(at)) return at;
      const r = retainer[at] as number;
      if (r < 0) return at;
      at = r;
    }
    return at;
  };
  const out = new Map<string, { bytes: number; count: number }>();
  for (let i = 0; i < n; i++) {
    owner[i] = ownerOf(i);
    // C++ objects (a KeyObject's key, a socket) are in the snapshot with an estimated size, outside the V8 heap
    const key = typeOf(i) === "native" ? NATIVE : label(owner[i] as number);
    const size = s.nodes[i * NF + iSize] as number;
    const row = out.get(key) ?? { bytes: 0, count: 0 };
    row.bytes += size;
    if (owner[i] === i) row.count++;
    out.set(key, row);
  }
  return out;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { per: { type: "string", default: "1" }, top: { type: "string", default: "40" } },
});
const [beforeFile, afterFile] = positionals;
if (beforeFile === undefined || afterFile === undefined)
  throw new Error("usage: heap-diff.ts BEFORE.heapsnapshot AFTER.heapsnapshot [--per N] [--top K]");
const per = Number(values.per);
const before = owners(beforeFile);
const after = owners(afterFile);
const rows = [...after.keys(), ...[...before.keys()].filter((k) => !after.has(k))].map((k) => {
  const a = after.get(k) ?? { bytes: 0, count: 0 };
  const b = before.get(k) ?? { bytes: 0, count: 0 };
  return { owner: k, bytes: a.bytes - b.bytes, count: a.count - b.count };
});
rows.sort((x, y) => y.bytes - x.bytes);
const total = rows.reduce((t, r) => t + (r.owner === NATIVE ? 0 : r.bytes), 0);
console.log(`${"owner".padEnd(56)} ${"+bytes".padStart(11)} ${"+count".padStart(8)} ${"per N".padStart(8)}`);
for (const r of rows.slice(0, Number(values.top))) {
  console.log(
    `${r.owner.slice(0, 56).padEnd(56)} ${String(r.bytes).padStart(11)} ${String(r.count).padStart(8)} ${(r.bytes / per).toFixed(1).padStart(8)}`,
  );
}
console.log(`${"total (V8 heap)".padEnd(56)} ${String(total).padStart(11)} ${"".padStart(8)} ${(total / per).toFixed(1).padStart(8)}`);
