// Model benchmark: coil against llama.cpp itself, side by side on the same GGUF files in the same run.
//
// Random-weight models of real shapes (written once into bench/.models by `bench_model --write`,
// with a real vocabulary so that llama.cpp accepts them): the mamba-130m shape (d_model 768, 24
// layers, d_state 16), the mamba2-130m shape (d_state 128, head_dim 64) and a small Jamba (d_model
// 1024, 8 layers, attention at 2 and 6, 8 experts top-2 on the odd layers; 337M parameters). For
// every model and thread count, in this order: llama.cpp's own `llama-bench` (built on first use by
// bench/llama-bench.mjs), coil native through its public API (`coil bench`'s `benchCoil`:
// `Sequence.evaluate`, one call per generated token), optionally coil's wasm engine in Node and
// node-llama-cpp. pp = one batch of `--pp` tokens from an empty state; tg = `--tg` single-token steps;
// median of `--reps`. Generation is also given as bytes read per second (the weight bytes a token
// reads × tokens/s) against the streaming read bandwidth measured natively with the same thread
// count (`bench_matmul --bandwidth`).
//
// With `--alt DIR` (a checkout of another commit, built: its dist/ and bindings/), that build's
// native engine is measured too, right after this one's: before/after tables in one run.
//
// The 2025–26 hybrids (issue 16) have shapes of their own: `--models hybrids` stands for
// granite-4.0-h-1b, lfm2-1.2b, nemotron-h-9b-slice (eight layers of Nemotron-Nano-9B-v2) and
// falcon-h1-0.5b, each at Q8_0 and Q4_K.
//
//   npm run build && node bench/models.mjs [--threads 1,2] [--pp 512] [--tg 128] [--reps 2]
//     [--models mamba2:q8_0,...] [--wasm] [--nlc] [--alt DIR] [--json]
//   node bench/models.mjs --from RESULTS.json      the table of an earlier `--json` run
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { benchCoil, benchNodeLlamaCpp } from "../dist/cli/bench.js";
import { ensureLlamaBench, runLlamaBench } from "./llama-bench.mjs";

const { values } = parseArgs({
  options: {
    threads: { type: "string", default: "1,2" },
    pp: { type: "string", default: "512" },
    tg: { type: "string", default: "128" },
    reps: { type: "string", default: "2" },
    models: { type: "string", default: "mamba2:q8_0,mamba:q8_0,mamba2:f16,mamba2:q4_0,mamba2:q4_k,jamba:q8_0" },
    wasm: { type: "boolean", default: false },
    nlc: { type: "boolean", default: false },
    alt: { type: "string" },
    from: { type: "string" },
    json: { type: "boolean", default: false },
  },
});
const root = fileURLToPath(new URL("..", import.meta.url));
const cargo = (example, args) =>
  execFileSync("cargo", ["run", "-q", "--release", "-p", "coil-core", "--example", example, "--", ...args], {
    cwd: root,
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 16 << 20,
  }).toString();

/** The hybrid shapes `bench_model --arch` writes (`HybridSpec` in crates/coil-core/src/model/synth.rs). */
const HYBRIDS = ["granite-4.0-h-1b", "lfm2-1.2b", "nemotron-h-9b-slice", "falcon-h1-0.5b"];

/** Writes (once) and returns the benchmark file of `arch:type`. */
function modelFile(arch, type) {
  const dir = `${root}bench/.models`;
  mkdirSync(dir, { recursive: true });
  // The hybrids (`HybridSpec` presets) carry no vocabulary (`tokenizer.ggml.model = none`, which
  // llama.cpp accepts); the others get a real one.
  const hybrid = HYBRIDS.includes(arch);
  const shape = hybrid ? arch : arch === "jamba" ? "jamba-d1024x8" : `${arch}-130m`;
  const vocab = arch === "jamba" ? "ggml-vocab-llama-spm.gguf" : "ggml-vocab-gpt-neox.gguf";
  const file = `${dir}/${shape}-${type}.gguf`;
  if (!existsSync(file)) {
    process.stderr.write(`[bench] writing ${file}\n`);
    const vocabArgs = hybrid ? [] : ["--vocab", `${root}tests/fixtures/vocab/${vocab}`];
    cargo("bench_model", ["--arch", arch, "--type", type, "--write", file, ...vocabArgs, "--pp", "1", "--tg", "1", "--reps", "1"]);
  }
  return { name: `${shape} ${type}`, file };
}

/**
 * Weight bytes one generated token reads: every tensor once, except the token embeddings (one row)
 * and the stacked expert tensors (`*_exps`), of which only `expert_used_count / expert_count` —
 * the selected experts' rows — are read.
 */
function bytesPerToken(file) {
  const info = JSON.parse(execFileSync(process.execPath, [`${root}dist/cli.js`, "inspect", file, "--json"], { maxBuffer: 64 << 20 }).toString());
  const meta = info.metadata;
  const arch = meta["general.architecture"];
  const used = (meta[`${arch}.expert_used_count`] ?? 1) / (meta[`${arch}.expert_count`] ?? 1);
  let bytes = 0;
  for (const t of info.tensors) {
    if (t.name === "token_embd.weight" && info.tensors.some((u) => u.name === "output.weight")) continue;
    bytes += t.name.includes("_exps") ? t.bytes * used : t.bytes;
  }
  return Math.round(bytes);
}

/** Runs every model at every thread count; returns what `--json` prints. */
async function measure() {
  const alt = values.alt ? await import(pathToFileURL(`${values.alt}/dist/cli/bench.js`).href) : undefined;
  const peer = ensureLlamaBench();
  const bandwidth = JSON.parse(cargo("bench_matmul", ["--bandwidth", "--threads", values.threads]));
  const opts = { pp: Number(values.pp), tg: Number(values.tg), reps: Number(values.reps) };
  const none = { pp_tokens_per_s: NaN, tg_tokens_per_s: NaN };
  const rows = [];
  const list = values.models === "hybrids" ? HYBRIDS.flatMap((h) => [`${h}:q8_0`, `${h}:q4_k`]) : values.models.split(",");
  for (const spec of list) {
    const { name, file } = modelFile(...spec.split(":"));
    const bytes = bytesPerToken(file);
    for (const threads of values.threads.split(",").map(Number)) {
      const o = { ...opts, threads, model: file };
      const llama = runLlamaBench(file, o);
      const native = await benchCoil({ ...o, backend: "native" });
      const before = alt ? await alt.benchCoil({ ...o, backend: "native" }) : none;
      const wasm = values.wasm ? await benchCoil({ ...o, backend: "wasm" }) : none;
      let nlc = none;
      if (values.nlc) {
        const info = JSON.parse(execFileSync(process.execPath, [`${root}dist/cli.js`, "inspect", file, "--json"], { maxBuffer: 64 << 20 }).toString());
        nlc = await benchNodeLlamaCpp(o, info.tensors.find((t) => t.name === "token_embd.weight").shape[1]);
      }
      rows.push({ model: name, threads, file_bytes: statSync(file).size, token_bytes: bytes, bandwidth_gb_s: bandwidth[threads], llama, native, before, wasm, nlc });
      process.stderr.write(
        `[bench] ${name} t=${threads}: coil pp ${native.pp_tokens_per_s.toFixed(0)} tg ${native.tg_tokens_per_s.toFixed(1)} | ` +
          `llama-bench pp ${llama.pp_tokens_per_s.toFixed(0)} tg ${llama.tg_tokens_per_s.toFixed(1)}\n`,
      );
    }
  }
  return { llama_cpp: peer, alt: values.alt ?? null, ...opts, bandwidth, rows };
}

/** The markdown table of a measurement (columns for wasm, node-llama-cpp, --alt where measured). */
function printTable(res) {
  const f = (x) => (Number.isFinite(x) ? x.toFixed(1) : "–");
  const ratio = (a, b) => (Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : "–");
  const pct = (r, tps) => (Number.isFinite(tps) ? `${((100 * tps * (r.token_bytes ?? r.file_bytes)) / (r.bandwidth_gb_s * 1e9)).toFixed(0)}%` : "–");
  const has = (k) => res.rows.some((r) => Number.isFinite(r[k]?.tg_tokens_per_s));
  const bw = Object.entries(res.bandwidth).map(([t, v]) => `${v.toFixed(1)} GB/s with ${t} thread(s)`);
  console.log(`llama.cpp ${res.llama_cpp.release} (${res.llama_cpp.commit}); streaming read bandwidth ${bw.join(", ")}\n`);
  let head = `| model | thr | coil pp${res.pp} | llama.cpp pp | ratio | coil tg${res.tg} | llama.cpp tg | ratio | tg % of bandwidth: coil / llama.cpp |`;
  let sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|";
  const cols = [];
  if (has("wasm")) cols.push(["wasm pp / tg (× native)", (r) => `${f(r.wasm.pp_tokens_per_s)} / ${f(r.wasm.tg_tokens_per_s)} (${(r.wasm.pp_tokens_per_s / r.native.pp_tokens_per_s).toFixed(2)} / ${(r.wasm.tg_tokens_per_s / r.native.tg_tokens_per_s).toFixed(2)})`]);
  if (has("nlc")) cols.push(["node-llama-cpp pp / tg", (r) => `${f(r.nlc.pp_tokens_per_s)} / ${f(r.nlc.tg_tokens_per_s)}`]);
  if (has("before")) cols.push(["--alt build pp / tg (ratios to llama.cpp)", (r) => `${f(r.before.pp_tokens_per_s)} / ${f(r.before.tg_tokens_per_s)} (${ratio(r.before.pp_tokens_per_s, r.llama.pp_tokens_per_s)} / ${ratio(r.before.tg_tokens_per_s, r.llama.tg_tokens_per_s)})`]);
  for (const [h] of cols) [head, sep] = [`${head} ${h} |`, `${sep}---:|`];
  console.log(head);
  console.log(sep);
  for (const r of res.rows) {
    const line =
      `| ${r.model} | ${r.threads} | ${f(r.native.pp_tokens_per_s)} | ${f(r.llama.pp_tokens_per_s)} | ${ratio(r.native.pp_tokens_per_s, r.llama.pp_tokens_per_s)} | ` +
      `${f(r.native.tg_tokens_per_s)} | ${f(r.llama.tg_tokens_per_s)} | ${ratio(r.native.tg_tokens_per_s, r.llama.tg_tokens_per_s)} | ` +
      `${pct(r, r.native.tg_tokens_per_s)} / ${pct(r, r.llama.tg_tokens_per_s)} |`;
    console.log(line + cols.map(([, c]) => ` ${c(r)} |`).join(""));
  }
}

const res = values.from ? JSON.parse(readFileSync(values.from, "utf8")) : await measure();
if (values.json) console.log(JSON.stringify(res, null, 2));
else printTable(res);
