// wasm matrix-product kernels alone, one thread: GMAC/s per type for a generation-like product
// (1 token) and a prompt-like one (64 tokens), on mamba-130m's largest shapes. For tuning the
// simd128 kernels; `--alt DIR` also measures another build's wasm-pkg (A/B, interleaved).
//   node bench/wasm-kernels.mjs [--types f32,f16,q8_0,q4_k] [--alt DIR]
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";

const { values } = parseArgs({ options: { types: { type: "string", default: "f32,f16,q8_0,q4_0,q4_k,q6_k" }, alt: { type: "string" } } });
const root = fileURLToPath(new URL("..", import.meta.url));
async function load(dir) {
  const b = await import(`${dir}/wasm-pkg/coil_wasm.js`);
  b.initSync({ module: await readFile(`${dir}/wasm-pkg/coil_wasm_bg.wasm`) });
  return b;
}
const builds = [["this", await load(root)]];
if (values.alt) builds.push(["alt", await load(values.alt)]);
const shapes = [["tg 3072x768", 3072, 768, 1], ["tg 24576x1536", 24576, 1536, 1], ["pp 3072x768 x64", 3072, 768, 64]];
for (const ty of values.types.split(",")) {
  for (const [name, rows, cols, tokens] of shapes) {
    const line = [];
    for (const [label, b] of builds) {
      const reps = Math.max(8, Math.round(4e9 / (rows * cols * tokens)));
      b.benchMatmul(ty, rows, cols, tokens, 1);
      // Each call builds its matrix first: time it with 0 products and subtract.
      const time = (n) => {
        const t = performance.now();
        b.benchMatmul(ty, rows, cols, tokens, n);
        return (performance.now() - t) / 1000;
      };
      let best = Infinity;
      for (let i = 0; i < 3; i++) best = Math.min(best, time(reps) - time(0));
      line.push(`${label} ${((rows * cols * tokens * reps) / best / 1e9).toFixed(2)}`);
    }
    console.log(`${ty.padEnd(5)} ${name.padEnd(16)} GMAC/s: ${line.join("  ")}`);
  }
}
