/**
 * The layering of the README ("Layout"), enforced by `npm run lint` on every `npm test`:
 *   bin -> cli -> daemon -> client -> messaging -> auth -> store -> wire -> pki -> dtls -> crypto -> util
 * A layer may import only layers below it; node:crypto only in src/crypto/node.ts (the crypto layer's one owner;
 * test/crypto/layering.test.ts also keeps WebCrypto globals out of the rest of src/),
 * node:dgram only in src/dtls/udp-sockets.ts (the endpoint's and the CID forwarder's sockets).
 */
const layers = ["util", "crypto", "dtls", "pki", "wire", "store", "auth", "messaging", "client", "daemon", "cli"];

const upward = layers.map((layer, i) => ({
  name: `no-upward-from-${layer}`,
  comment: `src/${layer} may import only layers below it (${layers.slice(0, i).join(", ") || "none"})`,
  severity: "error",
  from: { path: `^src/${layer}/` },
  to: { path: `^src/(${layers.slice(i + 1).join("|") || "__none__"})/` },
}));

module.exports = {
  forbidden: [
    ...upward,
    {
      name: "crypto-only-in-provider",
      comment: "only src/crypto/node.ts imports node:crypto (the rest of the crypto layer takes it from there)",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/crypto/node\\.ts$" },
      to: { path: "^(node:)?crypto$", dependencyTypes: ["core"] },
    },
    {
      name: "dgram-only-in-udp-sockets",
      comment: "only src/dtls/udp-sockets.ts imports node:dgram (the endpoint and the CID forwarder take their sockets from it)",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/dtls/udp-sockets\\.ts$" },
      to: { path: "^(node:)?dgram$", dependencyTypes: ["core"] },
    },
    {
      name: "no-process-in-cores",
      comment: "protocol layers never touch process/fs/net; I/O lives in the endpoint, daemon and CLI",
      severity: "error",
      from: { path: "^src/(util|crypto|dtls|pki|wire|messaging|auth)/", pathNot: "^src/dtls/endpoint\\.ts$" },
      to: { path: "^(node:)?(fs|fs/promises|child_process|process|http|https|net|tls)$", dependencyTypes: ["core"] },
    },
    {
      name: "wire-generated-only-in-wire",
      comment: "the generated codec and its protobuf runtime are private to src/wire; the rest of the project uses src/wire/index.ts",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/wire/" },
      // the runtime's "exports" subpaths stay unresolved here, so match the specifier too
      to: { path: "^src/wire/generated/|^(node_modules/)?@bufbuild/protobuf(/|$)" },
    },
    {
      name: "no-circular",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    {
      name: "bin-only-cli",
      comment: "bin/ is a thin entry into the compiled CLI",
      severity: "error",
      from: { path: "^bin/" },
      to: { path: "^src/(?!cli/)" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { extensions: [".ts", ".js"] },
    exclude: { path: "^dist/" },
  },
};
