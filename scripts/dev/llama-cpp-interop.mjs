// Developer check (not CI: node-llama-cpp is ~700 MB): the GGUFs coil's converter and quantizer
// write load in llama.cpp through node-llama-cpp, which reproduces the transformers reference
// logits and tokenizes like the reference tokenizers.
//   npm run build && node scripts/dev/llama-cpp-interop.mjs
import { mkdtempSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as coil from "../../dist/node/index.js";
import { importPeer } from "../../bench/peers.mjs";

const root = (p) => fileURLToPath(new URL(`../../${p}`, import.meta.url));
const { getLlama, LlamaLogLevel } = await importPeer("node-llama-cpp");
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const dir = mkdtempSync(join(tmpdir(), "coil-interop-"));
let failures = 0;

// mamba2-g2 has no tokenizer files: llama.cpp refuses GGUFs without a vocabulary, so it is skipped here.
const fixtures = ["mamba", "mamba-untied", "falcon-mamba", "mamba2", "jamba", "mamba-codestral-layout"];
for (const name of fixtures) {
  const ref = JSON.parse(readFileSync(root(`tests/fixtures/hf/${name}/reference.json`), "utf8"));
  for (const type of ["f32", "q8_0"]) {
    const out = join(dir, `${name}-${type}.gguf`);
    if (type === "f32") await coil.convert(root(`tests/fixtures/hf/${name}`), out, { outtype: "f32" });
    else await coil.quantize(join(dir, `${name}-f32.gguf`), out, type);
    const model = await llama.loadModel({ modelPath: out, gpuLayers: 0 });
    const ctx = await model.createContext({ contextSize: 256, flashAttention: false });
    const seq = ctx.getSequence();
    let maxDiff = 0;
    for (const p of ref.prompts) {
      await seq.clearHistory();
      const input = p.tokens.map((t, i) => (i === p.tokens.length - 1 ? [t, { generateNext: { logits: true } }] : t));
      const res = await seq.controlledEvaluate(input);
      const logits = res.at(-1)?.next?.logits; // Map<token, logit>
      if (!logits) throw new Error(`${name}: node-llama-cpp returned no logits`);
      const want = p.logits.at(-1);
      const cols = ref.logit_columns ?? want.map((_, j) => j);
      cols.forEach((c, j) => (maxDiff = Math.max(maxDiff, Math.abs(logits.get(c) - want[j]))));
    }
    let tokOk = 0;
    let tokAll = 0;
    for (const e of ref.expected_ids ?? []) {
      tokAll++;
      // The reference tokenizers match added/special tokens written in text ("a<|endoftext|>b").
      const ids = model.tokenize(e.text, true);
      if (JSON.stringify(ids) === JSON.stringify(e.ids)) tokOk++;
    }
    // f32: llama.cpp matches transformers to ~1e-6, except Falcon-Mamba (llama.cpp uses one RMS eps
    // where transformers has a separate mixer eps: ~2e-4) and Jamba (llama.cpp's f16 KV cache: ~5e-3).
    const tol = type === "f32" ? ({ "falcon-mamba": 5e-4, jamba: 1e-2 }[name] ?? 1e-5) : 0.5;
    const ok = maxDiff <= tol && tokOk === tokAll;
    if (!ok) failures++;
    console.log(`${ok ? "ok  " : "FAIL"} ${name} ${type}: last-token logits max|diff| vs transformers ${maxDiff.toExponential(2)}, tokenizer ${tokOk}/${tokAll}`);
    await ctx.dispose();
    await model.dispose();
  }
}
console.log(failures ? `${failures} failed` : "all loaded in llama.cpp and matched");
process.exitCode = failures ? 1 : 0;
