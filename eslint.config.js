// ESLint for src/, test/, scripts/ and bin/ (flat config, type-aware), run by `npm run lint` and `npm test`.
// Formatting is Prettier's job (`npm run format:check`); dependency-cruiser keeps the layering.
//
// The rule set is small on purpose: rules that catch bugs the compiler lets through, not style.
// - no-duplicate-imports: one value import and at most one `import type` per module.
// - switch-exhaustiveness-check: a switch over a union names every member or has a default, so a new
//   member (an error code, a frame kind) cannot slip through unhandled. A default counts: a dozen switches
//   handle a few frame kinds and ignore the rest on purpose; maps that must be total are a Record or end
//   in a `never` check (the project's rule for error codes).
// - no-floating-promises, no-misused-promises, await-thenable: a promise is awaited, handled or
//   explicitly `void`ed (fire-and-forget, said why), never handed to a place that drops it (a callback
//   that must return void, a condition), and `await` is only used on something that can be awaited.
// - a few type-aware and core checks with no false positives here (for-in over arrays, delete on arrays,
//   implied eval, x === x, return in finally, constant conditions, async Promise executors, ==).
// Left out: the rest of recommended-type-checked. no-unsafe-* and restrict-template-expressions flag
// the deliberate casts at untyped edges (JSON, peer libraries); only-throw-error,
// prefer-promise-reject-errors and no-base-to-string flagged only rethrows of caught values and values
// already narrowed at run time; no-unnecessary-type-assertion is cosmetic. None of them found a bug.
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

export default defineConfig(
  {
    ignores: ["dist/", "coverage/", "node_modules/", "src/wire/generated/"],
  },
  {
    files: ["src/**/*.ts", "test/**/*.ts", "scripts/**/*.{ts,mjs}", "bin/**/*.js"],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: {
        // tsconfig.json covers src, test and scripts/**/*.ts; the two plain JS entry points get a default program
        projectService: { allowDefaultProject: ["bin/*.js", "scripts/*.mjs"] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    plugins: { "@typescript-eslint": tseslint.plugin },
    rules: {
      "no-duplicate-imports": ["error", { allowSeparateTypeImports: true }],
      "@typescript-eslint/switch-exhaustiveness-check": ["error", { considerDefaultExhaustiveForUnions: true }],
      "@typescript-eslint/no-floating-promises": ["error", { ignoreVoid: true }],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/await-thenable": "error",
      "@typescript-eslint/no-for-in-array": "error",
      "@typescript-eslint/no-array-delete": "error",
      "@typescript-eslint/no-implied-eval": "error",
      "no-self-compare": "error",
      "no-unsafe-finally": "error",
      "no-constant-binary-expression": "error",
      "no-constant-condition": ["error", { checkLoops: "none" }],
      "no-async-promise-executor": "error",
      eqeqeq: ["error", "always", { null: "ignore" }],
    },
  },
);
