#!/usr/bin/env node
// The `coil` command line. Each subcommand is a thin layer over the public API, so whatever the CLI
// can do, a program can do too.

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { backendInfo, convert, inspectGguf, loadModel, perplexity, quantize, CoilError, describeError } from "./node/index.js";
import { readFile } from "node:fs/promises";
import { ProgressBar } from "./cli/progress.js";
import type { BackendChoice, GgufInfo } from "./node/index.js";
import { formatInspect } from "./cli/format-inspect.js";

const DEFAULT_MODEL = fileURLToPath(new URL("../models/tiny-mamba.gguf", import.meta.url));

const USAGE = `coil — run Mamba, Mamba-2 and Jamba GGUF models

Usage:
  coil inspect [FILE.gguf] [--json] [--full] [--ctx-size N] [--kv-type f16|f32] [--backend native|wasm]
      Summarise a GGUF file (default: the built-in model, ${"models/tiny-mamba.gguf"}), with the memory
      a sequence needs: recurrent state, and for attention models KV per token and per sequence.
  coil tokenize [-m FILE.gguf] TEXT [--special] [--no-bos] [--json] [--backend native|wasm]
      Tokenize TEXT as llama.cpp would; --json prints {"tokens":[...],"pieces":[...]}.
  coil eval -m FILE.gguf (--tokens 1,2,3 | --text "...") [--backend native|wasm] [--threads N]
            [--kv-type f32|f16] [--ctx-size N] [--json]
      Evaluate one prompt from a fresh state; --json prints {"n_vocab","tokens","logits":[[...] per position]}.
      For exact comparisons the KV cache of attention layers is f32 here unless --kv-type f16.
  coil bench -m FILE.gguf [-p 512] [-n 128] [--threads N] [--reps 3] [--kv-type f16|f32] [--ctx-size N]
             [--backend ...] [--vs node-llama-cpp] [--json]
      Prompt processing and generation speed (tokens/s), optionally beside node-llama-cpp.
  coil convert DIR -o OUT.gguf [--outtype f16|f32|bf16|auto|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k] [--name NAME] [--json]
      Convert a Hugging Face checkpoint (Mamba, Falcon-Mamba, Mamba-2, Mamba-Codestral, Jamba) to GGUF.
  coil quantize IN.gguf OUT.gguf TYPE [--threads N] [--json]
      Quantize as llama-quantize does (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, ...).
  coil generate [-m FILE.gguf] (-p TEXT | --tokens 1,2,3) [-n N] [--temp T] [--top-k K] [--top-p P]
                [--min-p P] [--seed S] [--stop STR]... [--backend ...] [--threads N]
                [--kv-type f16|f32] [--ctx-size N] [--json]
      Stream a completion (Ctrl-C stops cleanly); --json prints
      {"prompt_tokens","tokens","text","stop_reason"}.
  coil chat [-m FILE.gguf] [--system TEXT] [generation options]
      Chat interactively; the conversation's state is reused between turns.
  coil perplexity [-m FILE.gguf] -f TEXT.txt [--ctx 512] [--backend ...] [--threads N] [--json]
      Perplexity of a text by llama.cpp's method (windows of --ctx tokens from a fresh state, second
      half of each scored); --json prints {"model","perplexity","tokens","windows"}.
  coil backend [--backend native|wasm] [--json]
      Show which engine runs and what SIMD it uses.
  coil --help | --version

KV cache (attention layers of Jamba models): --kv-type f16 (default; eval: f32) or f32, and
--ctx-size N tokens per sequence (default: the model's context length, capped at 4096). A sequence
that would outgrow it stops with CONTEXT_FULL.
`;

function kvTypeOpt(v: string | undefined, dflt: "f16" | "f32"): "f16" | "f32" {
  if (v === undefined) return dflt;
  if (v === "f16" || v === "f32") return v;
  throw new UsageError(`--kv-type must be f16 or f32, not "${v}"`);
}

const KV_OPTIONS = {
  "kv-type": { type: "string" },
  "ctx-size": { type: "string" },
} as const;

/** The context options of --kv-type / --ctx-size. */
function kvOptions(values: Record<string, unknown>, dflt: "f16" | "f32"): { kvType: "f16" | "f32"; contextLength?: number } {
  const v = values as Record<string, string | undefined>;
  return { kvType: kvTypeOpt(v["kv-type"], dflt), contextLength: intOpt("ctx-size", v["ctx-size"], 1) };
}

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
      ...KV_OPTIONS,
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
    process.stdout.write(formatInspect(file, info, b.backend, kvOptions(values, "f16")));
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

function intOpt(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, not "${v}"`);
  return n;
}

async function cmdEval(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: false,
    options: {
      model: { type: "string", short: "m" },
      tokens: { type: "string" },
      text: { type: "string" },
      backend: { type: "string" },
      threads: { type: "string" },
      json: { type: "boolean", default: false },
      ...KV_OPTIONS,
    },
  });
  void positionals;
  const kv = kvOptions(values, "f32");
  if ((values.tokens === undefined) === (values.text === undefined)) {
    throw new UsageError("eval needs exactly one of --tokens 1,2,3 or --text \"...\"");
  }
  await using model = await loadModel(values.model ?? DEFAULT_MODEL, { backend: backendOpt(values.backend) });
  let tokens: number[];
  if (values.tokens !== undefined) {
    tokens = values.tokens.split(",").map((t) => {
      const n = Number(t.trim());
      if (!/^\s*\d+\s*$/.test(t)) throw new UsageError(`--tokens: "${t}" is not a token id`);
      return n;
    });
  } else {
    tokens = model.tokenize(values.text!);
  }
  if (tokens.length === 0) throw new UsageError("nothing to evaluate: no tokens");
  await using ctx = model.createContext({ threads: intOpt("threads", values.threads, 1), ...kv });
  const logits = await ctx.sequence(0).evaluate(tokens, { logits: "all" });
  const V = ctx.nVocab;
  const rows: number[][] = [];
  for (let i = 0; i < tokens.length; i++) rows.push(Array.from(logits.subarray(i * V, (i + 1) * V)));
  if (values.json) {
    process.stdout.write(JSON.stringify({ n_vocab: V, tokens, logits: rows }) + "\n");
    return;
  }
  for (let i = 0; i < tokens.length; i++) {
    const r = rows[i]!;
    let best = 0;
    for (let j = 1; j < V; j++) if (r[j]! > r[best]!) best = j;
    process.stdout.write(`${String(i).padStart(4)}  token ${String(tokens[i]).padStart(6)}  argmax ${String(best).padStart(6)} (${r[best]!.toFixed(4)})\n`);
  }
}

async function cmdBench(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", short: "m" },
      p: { type: "string", short: "p" },
      n: { type: "string", short: "n" },
      threads: { type: "string" },
      reps: { type: "string" },
      backend: { type: "string" },
      vs: { type: "string" },
      json: { type: "boolean", default: false },
      ...KV_OPTIONS,
    },
  });
  if (values.vs !== undefined && values.vs !== "node-llama-cpp") throw new UsageError(`--vs supports node-llama-cpp, not "${values.vs}"`);
  const { benchCoil, benchNodeLlamaCpp } = await import("./cli/bench.js");
  const opts = {
    model: values.model ?? DEFAULT_MODEL,
    pp: intOpt("p", values.p, 0) ?? 512,
    tg: intOpt("n", values.n, 0) ?? 128,
    threads: intOpt("threads", values.threads, 1),
    reps: intOpt("reps", values.reps, 1) ?? 3,
    backend: backendOpt(values.backend),
    ...kvOptions(values, "f16"),
  };
  const coilRes = await benchCoil(opts);
  let peer;
  if (values.vs) {
    const info = await inspectGguf(opts.model, { arrayHead: 0 });
    const emb = info.tensors.find((t) => t.name === "token_embd.weight");
    peer = await benchNodeLlamaCpp(opts, emb?.shape[1] ?? 1);
  }
  if (values.json) {
    const out: Record<string, unknown> = { model: opts.model, ...coilRes };
    if (peer) {
      out.vs = peer;
      out.pp_ratio = coilRes.pp_tokens_per_s / peer.pp_tokens_per_s;
      out.tg_ratio = coilRes.tg_tokens_per_s / peer.tg_tokens_per_s;
    }
    process.stdout.write(JSON.stringify(out) + "\n");
    return;
  }
  const line = (r: typeof coilRes) =>
    `${`${r.runner} (${r.backend})`.padEnd(28)} pp${opts.pp} ${r.pp_tokens_per_s.toFixed(1).padStart(9)} t/s   tg${opts.tg} ${r.tg_tokens_per_s.toFixed(1).padStart(9)} t/s`;
  process.stdout.write(line(coilRes) + "\n");
  if (peer) {
    process.stdout.write(line(peer) + "\n");
    process.stdout.write(
      `ratio (coil / node-llama-cpp): pp ${(coilRes.pp_tokens_per_s / peer.pp_tokens_per_s).toFixed(2)}×, tg ${(coilRes.tg_tokens_per_s / peer.tg_tokens_per_s).toFixed(2)}×\n`,
    );
  }
}

/** Ctrl-C cancels a running job cleanly (no output file is left), then exits 130. */
function abortOnSigint(): AbortController {
  const c = new AbortController();
  process.once("SIGINT", () => c.abort(new Error("interrupted")));
  return c;
}

async function cmdConvert(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      out: { type: "string", short: "o" },
      outtype: { type: "string" },
      name: { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  if (positionals.length !== 1) throw new UsageError("convert takes one checkpoint directory");
  if (!values.out) throw new UsageError("convert needs -o OUT.gguf");
  const bar = new ProgressBar("converting");
  const c = abortOnSigint();
  try {
    const report = await convert(positionals[0]!, values.out, {
      outtype: values.outtype,
      name: values.name,
      signal: c.signal,
      onProgress: (p) => bar.update(p.bytesDone, p.bytesTotal, p.tensor),
    });
    bar.done();
    for (const w of report.warnings) process.stderr.write(`coil: warning: ${w}\n`);
    if (values.json) process.stdout.write(JSON.stringify(report) + "\n");
    else {
      process.stdout.write(
        `wrote ${report.out}: ${report.architecture} (${report.hfArchitecture} from ${report.configSource}), ` +
          `${report.tensors.length} tensors, ${report.outtype}, ${(report.fileSize / 1e6).toFixed(2)} MB, vocabulary ${report.tokenizer ? `${report.tokenizer.model} (${report.tokenizer.nTokens} tokens)` : "none"}\n`,
      );
    }
  } finally {
    bar.done();
  }
}

async function cmdQuantize(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { threads: { type: "string" }, json: { type: "boolean", default: false } },
  });
  if (positionals.length !== 3) throw new UsageError("quantize takes IN.gguf OUT.gguf TYPE");
  const [input, output, type] = positionals as [string, string, string];
  const bar = new ProgressBar(`quantizing to ${type}`);
  const c = abortOnSigint();
  try {
    const report = await quantize(input, output, type, {
      threads: intOpt("threads", values.threads, 1),
      signal: c.signal,
      onProgress: (p) => bar.update(p.bytesDone, p.bytesTotal, p.tensor),
    });
    bar.done();
    if (values.json) process.stdout.write(JSON.stringify(report) + "\n");
    else {
      const changed = report.tensors.filter((t) => t.from !== t.to).length;
      process.stdout.write(
        `wrote ${output}: ${report.target}, ${changed} of ${report.tensors.length} tensors quantized ` +
          `(${report.nFallback} by fallback), ${(report.bytesBefore / 1e6).toFixed(2)} MB -> ${(report.bytesAfter / 1e6).toFixed(2)} MB of tensor data\n`,
      );
    }
  } finally {
    bar.done();
  }
}

function floatOpt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, not "${v}"`);
  return n;
}

const GEN_OPTIONS = {
  model: { type: "string", short: "m" },
  n: { type: "string", short: "n" },
  temp: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  seed: { type: "string" },
  stop: { type: "string", multiple: true },
  backend: { type: "string" },
  threads: { type: "string" },
  ...KV_OPTIONS,
} as const;

function genOptions(values: Record<string, string | string[] | boolean | undefined>) {
  const v = values as Record<string, string | undefined>;
  return {
    maxTokens: intOpt("n", v.n, 1) ?? 256,
    temperature: floatOpt("temp", v.temp),
    topK: intOpt("top-k", v["top-k"], 0),
    topP: floatOpt("top-p", v["top-p"]),
    minP: floatOpt("min-p", v["min-p"]),
    seed: intOpt("seed", v.seed, 0),
    stop: values.stop as string[] | undefined,
  };
}

async function cmdGenerate(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { ...GEN_OPTIONS, prompt: { type: "string", short: "p" }, tokens: { type: "string" }, json: { type: "boolean", default: false } },
  });
  if ((values.prompt === undefined) === (values.tokens === undefined)) throw new UsageError("generate needs exactly one of -p TEXT or --tokens 1,2,3");
  const opts = genOptions(values);
  await using model = await loadModel(values.model ?? DEFAULT_MODEL, { backend: backendOpt(values.backend) });
  await using ctx = model.createContext({ threads: intOpt("threads", values.threads, 1), ...kvOptions(values, "f16") });
  const prompt =
    values.tokens !== undefined
      ? values.tokens.split(",").map((t) => {
          if (!/^\s*\d+\s*$/.test(t)) throw new UsageError(`--tokens: "${t}" is not a token id`);
          return Number(t);
        })
      : values.prompt!;
  const promptTokens = typeof prompt === "string" ? model.tokenize(prompt, { special: true }) : prompt;
  const c = abortOnSigint();
  const gen = ctx.sequence(0).generate(promptTokens, { ...opts, signal: c.signal });
  if (!values.json && typeof prompt === "string") process.stdout.write(prompt);
  for await (const chunk of gen) if (!values.json) process.stdout.write(chunk.text);
  const r = await gen.result;
  if (values.json) {
    process.stdout.write(JSON.stringify({ prompt_tokens: promptTokens, tokens: r.tokens, text: r.text, stop_reason: r.stopReason }) + "\n");
  } else process.stdout.write("\n");
}

async function cmdChat(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { ...GEN_OPTIONS, system: { type: "string" } } });
  const { createInterface } = await import("node:readline");
  const { ChatSession } = await import("./core/chat.js");
  const opts = genOptions(values);
  await using model = await loadModel(values.model ?? DEFAULT_MODEL, { backend: backendOpt(values.backend) });
  await using ctx = model.createContext({ threads: intOpt("threads", values.threads, 1), ...kvOptions(values, "f16") });
  const chat = new ChatSession(ctx.sequence(0), { system: values.system });
  const rl = createInterface({ input: process.stdin, terminal: process.stdin.isTTY === true });
  let turn: AbortController | undefined;
  // Ctrl-C stops the reply being generated; at the prompt it ends the chat.
  process.on("SIGINT", () => (turn ? turn.abort() : rl.close()));
  const prompt = () => process.stdout.write("> ");
  prompt();
  try {
    for await (const line of rl) {
      if (line.trim() === "/exit") break;
      if (line.trim()) {
        turn = new AbortController();
        const gen = chat.send(line, { ...opts, signal: turn.signal });
        for await (const chunk of gen) process.stdout.write(chunk.text);
        const r = await gen.result;
        turn = undefined;
        process.stdout.write(`\n[${r.generatedTokens} tokens, ${r.stopReason}; reused ${chat.lastReusedTokens} of ${chat.lastPromptTokens} prompt tokens]\n`);
      }
      prompt();
    }
  } finally {
    rl.close();
    process.stdout.write("\n");
  }
}

async function cmdPerplexity(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", short: "m" },
      file: { type: "string", short: "f" },
      ctx: { type: "string" },
      backend: { type: "string" },
      threads: { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  if (values.file === undefined) throw new UsageError("perplexity needs -f TEXT.txt");
  const ctx = intOpt("ctx", values.ctx, 4) ?? 512;
  const text = await readFile(values.file, "utf8");
  const modelPath = values.model ?? DEFAULT_MODEL;
  await using model = await loadModel(modelPath, { backend: backendOpt(values.backend) });
  const c = abortOnSigint();
  const bar = new ProgressBar("perplexity", (n) => `${n} windows`);
  let r;
  try {
    r = await perplexity(model, text, {
      ctx,
      threads: intOpt("threads", values.threads, 1),
      signal: c.signal,
      onProgress: (p) => bar.update(p.window, p.windows, `ppl ${p.perplexity.toFixed(4)}`),
    });
  } finally {
    bar.done();
  }
  if (values.json) {
    process.stdout.write(JSON.stringify({ model: modelPath, perplexity: r.perplexity, tokens: r.tokens, windows: r.windows }) + "\n");
  } else {
    process.stdout.write(`perplexity ${r.perplexity.toFixed(4)} over ${r.tokens} scored tokens (${r.windows} windows of ${r.ctx}; ${r.textTokens} tokens in the text)\n`);
  }
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
      case "convert":
        await cmdConvert(rest);
        return 0;
      case "quantize":
        await cmdQuantize(rest);
        return 0;
      case "generate":
        await cmdGenerate(rest);
        return 0;
      case "chat":
        await cmdChat(rest);
        return 0;
      case "eval":
        await cmdEval(rest);
        return 0;
      case "bench":
        await cmdBench(rest);
        return 0;
      case "perplexity":
        await cmdPerplexity(rest);
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
    return e instanceof CoilError && e.code === "ABORTED" ? 130 : 1;
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
