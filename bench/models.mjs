// Model benchmark (issue 5): random-weight models of the mamba-130m shape (d_model 768, 24 layers,
// d_state 16) and the mamba2-130m shape (d_state 128, head_dim 64) in F32, F16 and Q8_0, and (issue
// 8, `--models jamba:f16,jamba:q8_0`) a small Jamba (d_model 1024, 8 layers, attention at 2 and 6,
// 8 experts top-2 on the odd layers, vocabulary 32000 from the LLaMA SPM test vocabulary); coil
// native and wasm against node-llama-cpp on the same GGUF in the same run; prompt processing
// (pp) and generation (tg) like llama-bench. Also reports generation as a fraction of the
// memory-bandwidth limit (weight bytes read per token / measured read bandwidth).
//   npm run build && node bench/models.mjs [--threads 2] [--pp 512] [--tg 128] [--reps 3] [--json]
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { benchCoil, benchNodeLlamaCpp } from "../dist/cli/bench.js";
import { importPeer } from "./peers.mjs";

const { values } = parseArgs({
  options: {
    threads: { type: "string", default: "2" },
    pp: { type: "string", default: "512" },
    tg: { type: "string", default: "128" },
    reps: { type: "string", default: "3" },
    models: { type: "string", default: "mamba:f32,mamba:f16,mamba:q8_0,mamba2:f32,mamba2:f16,mamba2:q8_0" },
    json: { type: "boolean", default: false },
    "no-wasm": { type: "boolean", default: false },
  },
});
const root = fileURLToPath(new URL("..", import.meta.url));
const dir = `${root}bench/.models`;
mkdirSync(dir, { recursive: true });
await importPeer("node-llama-cpp"); // install on first use

/** Single-thread and all-thread read bandwidth (GB/s), streaming over a 512 MiB buffer. */
function bandwidth() {
  const n = 128 << 20;
  const a = new Float32Array(n).fill(1);
  let best = 0;
  for (let r = 0; r < 3; r++) {
    const t0 = process.hrtime.bigint();
    let s = 0;
    for (let i = 0; i < n; i += 16) s += a[i];
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    if (s < 0) console.log(s);
    best = Math.max(best, (n * 4) / dt / 1e9);
  }
  return best;
}

const opts = { pp: Number(values.pp), tg: Number(values.tg), reps: Number(values.reps), threads: Number(values.threads) };
const rows = [];
for (const spec of values.models.split(",")) {
  const [arch, type] = spec.split(":");
  const shape = arch === "jamba" ? "jamba-d1024x8" : `${arch}-130m`;
  const vocab = arch === "jamba" ? "ggml-vocab-llama-spm.gguf" : "ggml-vocab-gpt-neox.gguf";
  const file = `${dir}/${shape}-${type}.gguf`;
  if (!existsSync(file)) {
    process.stderr.write(`[bench] writing ${file}\n`);
    execFileSync("cargo", ["run", "-q", "--release", "-p", "coil-core", "--example", "bench_model", "--", "--arch", arch, "--type", type, "--write", file, "--vocab", `${root}tests/fixtures/vocab/${vocab}`, "--pp", "1", "--tg", "1", "--reps", "1"], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
  }
  const bytes = statSync(file).size;
  const native = await benchCoil({ ...opts, model: file, backend: "native" });
  const none = { pp_tokens_per_s: NaN, tg_tokens_per_s: NaN };
  const wasm = values["no-wasm"] ? none : await benchCoil({ ...opts, model: file, backend: "wasm" });
  const info = JSON.parse(execFileSync(process.execPath, [`${root}dist/cli.js`, "inspect", file, "--json"], { maxBuffer: 64 << 20 }).toString());
  const nVocab = info.tensors.find((t) => t.name === "token_embd.weight").shape[1];
  const nlc = await benchNodeLlamaCpp({ ...opts, model: file }, nVocab);
  rows.push({ model: `${shape} ${type}`, file_bytes: bytes, native, wasm, nlc });
  process.stderr.write(`[bench] ${arch} ${type}: coil pp ${native.pp_tokens_per_s.toFixed(0)} tg ${native.tg_tokens_per_s.toFixed(1)} | wasm pp ${wasm.pp_tokens_per_s.toFixed(0)} tg ${wasm.tg_tokens_per_s.toFixed(1)} | llama.cpp pp ${nlc.pp_tokens_per_s.toFixed(0)} tg ${nlc.tg_tokens_per_s.toFixed(1)}\n`);
}
const bw = bandwidth();
if (values.json) {
  console.log(JSON.stringify({ threads: opts.threads, pp: opts.pp, tg: opts.tg, read_bandwidth_gb_s_js: bw, rows }, null, 2));
} else {
  console.log(`| model | coil native pp${opts.pp} | llama.cpp pp | ratio | coil native tg${opts.tg} | llama.cpp tg | ratio | coil wasm pp / tg (× native) | tg bytes/token ÷ bandwidth |`);
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const r of rows) {
    const f = (x) => x.toFixed(1);
    const limit = (bw * 1e9) / r.file_bytes; // tokens/s if every weight byte is read once per token
    console.log(
      `| ${r.model} | ${f(r.native.pp_tokens_per_s)} | ${f(r.nlc.pp_tokens_per_s)} | ${(r.native.pp_tokens_per_s / r.nlc.pp_tokens_per_s).toFixed(2)}× | ` +
        `${f(r.native.tg_tokens_per_s)} | ${f(r.nlc.tg_tokens_per_s)} | ${(r.native.tg_tokens_per_s / r.nlc.tg_tokens_per_s).toFixed(2)}× | ` +
        `${f(r.wasm.pp_tokens_per_s)} / ${f(r.wasm.tg_tokens_per_s)} (${(r.wasm.pp_tokens_per_s / r.native.pp_tokens_per_s).toFixed(2)}, ${(r.wasm.tg_tokens_per_s / r.native.tg_tokens_per_s).toFixed(2)}) | ` +
        `${((100 * r.native.tg_tokens_per_s) / limit).toFixed(0)}% of ${f(limit)} t/s |`,
    );
  }
  console.log(`\nread bandwidth measured from JS (one thread, strided): ${bw.toFixed(1)} GB/s`);
}
