// wasm vs native on the same GGUF files, interleaved in one process (issue 5: wasm ≥ 0.5× native).
// For each file: load it with both engines, then alternate native/wasm pp and tg runs `--reps`
// times and keep the best of each (the machines are shared: best-of is the least noisy).
//   npm run build && node bench/wasm-ratio.mjs [--threads 2] [--pp 512] [--tg 128] [--reps 3]
//     [--models mamba:f32,...] [--json]
// Model files: bench/.models/<arch>-130m-<type>.gguf (node bench/models.mjs writes them).
// `--threads` applies to both engines: wasm runs its threaded module where shared memory works
// (Node does); COIL_WASM_THREADS=1 in the environment measures the single-threaded module.
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { loadModel } from "../dist/node/index.js";
import { benchTokens } from "../dist/cli/bench.js";

const { values } = parseArgs({
  options: {
    threads: { type: "string", default: "2" },
    pp: { type: "string", default: "512" },
    tg: { type: "string", default: "128" },
    reps: { type: "string", default: "3" },
    models: { type: "string", default: "mamba:f32,mamba:f16,mamba:q8_0,mamba2:f32,mamba2:f16,mamba2:q8_0" },
    backends: { type: "string", default: "native,wasm" },
    // Another build of coil (a directory with dist/ and wasm-pkg/, e.g. a copy of the previous
    // commit's) measured as backend "wasm-alt", for A/B comparisons of wasm kernels.
    alt: { type: "string" },
    json: { type: "boolean", default: false },
  },
});
const root = fileURLToPath(new URL("..", import.meta.url));
const [pp, tg, reps, threads] = [values.pp, values.tg, values.reps, values.threads].map(Number);
const now = () => performance.now() / 1000;

const altLoad = values.alt ? (await import(`${values.alt}/dist/node/index.js`)).loadModel : null;

async function open(file, backend) {
  const model = backend === "wasm-alt" ? await altLoad(file, { backend: "wasm" }) : await loadModel(file, { backend });
  const ctx = model.createContext({ threads });
  return { model, ctx, seq: ctx.sequence(0) };
}

// Also tokens per CPU-second of this process (user + system), which other jobs on the machine
// disturb far less than wall time: for the single-threaded wasm engine it is its speed on an idle
// core; for native it counts both threads' time (spin-waits included).
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function runPp(e, prompt) {
  e.seq.clear();
  const [t0, c0] = [now(), cpu()];
  await e.seq.evaluate(prompt);
  return [prompt.length / (now() - t0), prompt.length / (cpu() - c0)];
}

async function runTg(e, gen) {
  e.seq.clear();
  await e.seq.evaluate([gen[0]]);
  const [t0, c0] = [now(), cpu()];
  for (const t of gen) await e.seq.evaluate([t]);
  return [gen.length / (now() - t0), gen.length / (cpu() - c0)];
}

const rows = [];
const backends = values.backends.split(",");
for (const spec of values.models.split(",")) {
  const [arch, type] = spec.split(":");
  const file = `${root}bench/.models/${arch}-130m-${type}.gguf`;
  const eng = {};
  for (const b of backends) eng[b] = await open(file, b);
  const nVocab = eng[backends[0]].ctx.nVocab;
  const prompt = benchTokens(pp, nVocab);
  const gen = benchTokens(tg, nVocab, 99);
  const best = Object.fromEntries(backends.map((b) => [b, { pp: 0, tg: 0, pp_cpu: 0, tg_cpu: 0 }]));
  for (const b of backends) if (pp > 0) await eng[b].seq.evaluate(prompt.slice(0, 16)); // warm-up
  for (let r = 0; r < reps; r++) {
    for (const b of r % 2 ? [...backends].reverse() : backends) {
      if (pp > 0) {
        const [w, c] = await runPp(eng[b], prompt);
        best[b].pp = Math.max(best[b].pp, w);
        best[b].pp_cpu = Math.max(best[b].pp_cpu, c);
      }
      if (tg > 0) {
        const [w, c] = await runTg(eng[b], gen);
        best[b].tg = Math.max(best[b].tg, w);
        best[b].tg_cpu = Math.max(best[b].tg_cpu, c);
      }
    }
  }
  for (const b of backends) {
    await eng[b].ctx.dispose();
    await eng[b].model.dispose();
  }
  const row = { model: `${arch}-130m ${type}`, ...best };
  rows.push(row);
  const f = (x) => x.toFixed(1);
  const ratio = (k) => (best.wasm && best.native && best.native[k] ? (best.wasm[k] / best.native[k]).toFixed(2) : "-");
  process.stderr.write(
    `[bench] ${row.model}: ` + backends.map((b) => `${b} pp ${f(best[b].pp)} (cpu ${f(best[b].pp_cpu)}) tg ${f(best[b].tg)} (cpu ${f(best[b].tg_cpu)})`).join(" | ") + ` | wasm/native pp ${ratio("pp")} tg ${ratio("tg")}\n`,
  );
}
if (values.json) console.log(JSON.stringify({ threads, pp, tg, reps, rows }, null, 2));
else if (backends.includes("native") && backends.includes("wasm")) {
  console.log(`| model | native pp${pp} | wasm pp${pp} | × native | native tg${tg} | wasm tg${tg} | × native |`);
  console.log("|---|---:|---:|---:|---:|---:|---:|");
  for (const r of rows) {
    const f = (x) => x.toFixed(1);
    console.log(`| ${r.model} | ${f(r.native.pp)} | ${f(r.wasm.pp)} | ${(r.wasm.pp / r.native.pp).toFixed(2)} | ${f(r.native.tg)} | ${f(r.wasm.tg)} | ${(r.wasm.tg / r.native.tg).toFixed(2)} |`);
  }
}
