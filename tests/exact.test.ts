// "One engine, two targets": a quantized model gives bit-identical logits on native and wasm, so
// seeded generation writes the same text on both. Quantized matrix products quantize their
// activations to 8 bits first (as ggml does), so any last-bit difference upstream would become a
// whole quantization step: every float operation on the path is in one canonical order on every
// ISA (docs/numerics.md). Compared with `===` (max |diff| exactly 0), not a tolerance.
import { describe, expect, it } from "vitest";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_MODEL, coil, fixture } from "./helpers.js";

const dir = mkdtempSync(join(tmpdir(), "coil-exact-"));
const CASES: Array<[string, string, string]> = [
  ["shakespeare (mamba2)", DEFAULT_MODEL, "q8_0"],
  ["shakespeare (mamba2)", DEFAULT_MODEL, "q4_k"],
  ["tiny-mamba (mamba1)", fixture("models/tiny-mamba.gguf"), "q8_0"],
  ["tiny-mamba (mamba1)", fixture("models/tiny-mamba.gguf"), "q6_k"],
  ["tiny-mamba2", fixture("models/tiny-mamba2.gguf"), "q4_1"],
  ["tiny-jamba", fixture("models/tiny-jamba.gguf"), "q8_0"],
  ["tiny-jamba", fixture("models/tiny-jamba.gguf"), "q5_k"],
  ["tiny-granite-hybrid", fixture("models/tiny-granite-hybrid.gguf"), "q8_0"],
  ["tiny-nemotron-h", fixture("models/tiny-nemotron-h.gguf"), "q4_k"],
  ["tiny-falcon-h1", fixture("models/tiny-falcon-h1.gguf"), "q8_0"],
  ["tiny-lfm2", fixture("models/tiny-lfm2.gguf"), "q4_0"],
];
const PROMPT = "ROMEO:\nWhat light through yonder window breaks? It is the east.";

describe("quantized models: native and wasm bit-identical", () => {
  for (const [name, src, type] of CASES) {
    it(`${name} ${type}`, async () => {
      const file = join(dir, `${name.replace(/\W+/g, "_")}-${type}.gguf`);
      await coil.quantize(src, file, type);
      const logits: Float32Array[] = [];
      const texts: string[] = [];
      for (const backend of ["native", "wasm"] as const) {
        await using m = await coil.loadModel(file, { backend });
        const toks = m.tokenize(PROMPT);
        {
          await using c = m.createContext();
          logits.push(await c.sequence(0).evaluate(toks, { logits: "all" }));
        }
        const r = await m.complete(PROMPT, { maxTokens: 100, seed: 7, temperature: 1 });
        texts.push(r.text);
      }
      const [n, w] = logits as [Float32Array, Float32Array];
      let d = 0;
      let first = -1;
      for (let j = 0; j < n.length; j++) {
        const e = Math.abs(n[j]! - w[j]!);
        if (e > 0 && first < 0) first = j;
        d = Math.max(d, e);
      }
      console.log(`${name} ${type}: max |native - wasm| = ${d} (first at ${first} of ${n.length})`);
      expect(d, `${name} ${type}: max |native - wasm| logit`).toBe(0);
      expect(texts[1]).toBe(texts[0]);
    });
  }
});
