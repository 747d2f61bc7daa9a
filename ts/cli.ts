#!/usr/bin/env node
// The `coil` command line. Each subcommand is a thin layer over the public API, so whatever the CLI
// can do, a program can do too.

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { backendInfo, inspectGguf, loadModel, CoilError, describeError } from "./node/index.js";
import type { BackendChoice, GgufInfo } from "./node/index.js";
import { formatInspect } from "./cli/format-inspect.js";

const DEFAULT_MODEL = fileURLToPath(new URL("../models/tiny-mamba.gguf", import.meta.url));

const USAGE = `coil — run Mamba, Mamba-2 and Jamba GGUF models

Usage:
  coil inspect [FILE.gguf] [--json] [--full] [--backend native|wasm]
      Summarise a GGUF file (default: the built-in model, ${"models/tiny-mamba.gguf"}).
  coil tokenize [-m FILE.gguf] TEXT [--special] [--no-bos] [--json] [--backend native|wasm]
      Tokenize TEXT as llama.cpp would; --json prints {"tokens":[...],"pieces":[...]}.
  coil backend [--backend native|wasm] [--json]
      Show which engine runs and what SIMD it uses.
  coil --help | --version
`;

class UsageError extends Error {}

function backendOpt(v: string | undefined): BackendChoice | undefined {
  if (v === undefined) return undefined;
  if (v === "native" || v === "wasm" || v === "auto") return v;
  throw new UsageError(`--backend must be native, wasm or auto, not "${v}"`);
}

async function cmdInspect(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      json: { type: "boolean", default: false },
      full: { type: "boolean", default: false },
      backend: { type: "string" },
    },
  });
  if (positionals.length > 1) throw new UsageError(`inspect takes one file, got ${positionals.length}`);
  const file = positionals[0] ?? DEFAULT_MODEL;
  const backend = backendOpt(values.backend);
  const info: GgufInfo = await inspectGguf(file, {
    backend,
    arrayHead: values.full ? undefined : 16,
  });
  if (values.json) {
    process.stdout.write(JSON.stringify({ file, ...info }) + "\n");
  } else {
    const b = await backendInfo({ backend });
    process.stdout.write(formatInspect(file, info, b.backend));
  }
}

async function cmdTokenize(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      model: { type: "string", short: "m" },
      special: { type: "boolean", default: false },
      "no-bos": { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      backend: { type: "string" },
    },
  });
  if (positionals.length !== 1) throw new UsageError(`tokenize takes one TEXT argument (quote it), got ${positionals.length}`);
  const text = positionals[0]!;
  await using model = await loadModel(values.model ?? DEFAULT_MODEL, { backend: backendOpt(values.backend) });
  const tokens = model.tokenize(text, { special: values.special, addBos: values["no-bos"] ? false : undefined });
  const pieces = model.tokenPieces(tokens);
  if (values.json) {
    process.stdout.write(JSON.stringify({ tokens, pieces }) + "\n");
    return;
  }
  const w = Math.max(2, ...tokens.map((t) => String(t).length));
  process.stdout.write(tokens.map((t, i) => `${String(t).padStart(w)}  ${JSON.stringify(pieces[i])}`).join("\n") + "\n");
  process.stdout.write(`${tokens.length} tokens\n`);
}

async function cmdBackend(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { json: { type: "boolean", default: false }, backend: { type: "string" } } });
  const info = await backendInfo({ backend: backendOpt(values.backend) });
  if (values.json) process.stdout.write(JSON.stringify(info) + "\n");
  else {
    process.stdout.write(`backend: ${info.backend}\nversion: ${info.version}\nsimd: ${info.cpuFeatures.join(", ") || "none"}\n`);
    const k = info.kernels.map((x) => `${x.path} (max rel. diff ${x.max_rel_diff.toExponential(1)})`).join(", ");
    process.stdout.write(`kernel paths: ${k}\n`);
    if (info.fallbackReason) process.stdout.write(`fallback: ${info.fallbackReason}\n`);
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case undefined:
      case "-h":
      case "--help":
      case "help":
        process.stdout.write(USAGE);
        return cmd === undefined ? 2 : 0;
      case "-v":
      case "--version": {
        const pkg = await import("../package.json", { with: { type: "json" } });
        process.stdout.write(`${pkg.default.version}\n`);
        return 0;
      }
      case "inspect":
        await cmdInspect(rest);
        return 0;
      case "backend":
        await cmdBackend(rest);
        return 0;
      case "tokenize":
        await cmdTokenize(rest);
        return 0;
      default:
        throw new UsageError(`unknown command "${cmd}" (try coil --help)`);
    }
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`coil: ${(e as Error).message}\n`);
      return 2;
    }
    const code = e instanceof CoilError ? ` [${e.code}]` : "";
    process.stderr.write(`coil: ${describeError(e)}${code}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`coil: ${describeError(e)}\n`);
    process.exitCode = 1;
  },
);
