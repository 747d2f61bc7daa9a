// Inference against the transformers reference (float64 logits of tiny random checkpoints), on both
// engines; the checkpoints go through coil's converter first, as a user's would.
import { beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BACKENDS, coil, fixture, unknownArchGguf } from "./helpers.js";

type Prompt = { tokens: number[]; logits: number[][] };
type Reference = { architecture: string; logit_columns?: number[]; prompts: Prompt[] };

const FIXTURES = [
  "mamba",
  "mamba-untied",
  "falcon-mamba",
  "mamba2",
  "mamba2-g2",
  "mamba-codestral-layout",
  // The 2025–26 hybrids (issue 16).
  "granite-hybrid-moe",
  "granite-hybrid-dense",
  "bamba",
  "nemotron-h",
  "nemotron-h-moe",
  "falcon-h1",
  "falcon-h1-tied",
  "falcon-h1-norm-first",
  "lfm2",
  "lfm2-moe",
];
const dir = mkdtempSync(join(tmpdir(), "coil-inference-"));
const gguf = (name: string, t = "f32") => join(dir, `${name}-${t}.gguf`);
const reference = (name: string) => JSON.parse(readFileSync(fixture(`hf/${name}/reference.json`), "utf8")) as Reference;

beforeAll(async () => {
  for (const name of FIXTURES) await coil.convert(fixture(`hf/${name}`), gguf(name), { outtype: "f32" });
}, 120_000);

function maxDiff(got: Float32Array, nVocab: number, want: number[][], columns?: number[]): number {
  let m = 0;
  want.forEach((row, t) => {
    row.forEach((v, j) => {
      const col = columns ? columns[j]! : j;
      m = Math.max(m, Math.abs(got[t * nVocab + col]! - v));
    });
  });
  return m;
}

describe("logits parity with transformers (float64), f32 weights", () => {
  for (const name of FIXTURES) {
    it(name, async () => {
      const ref = reference(name);
      const byBackend: Float32Array[][] = [];
      for (const backend of BACKENDS) {
        await using model = await coil.loadModel(gguf(name), { backend });
        const out: Float32Array[] = [];
        for (const p of ref.prompts) {
          // f32 KV cache: the parity bound is for f32 arithmetic (an f16 cache rounds K and V).
          await using ctx = model.createContext({ kvType: "f32" });
          const logits = await ctx.sequence(0).evaluate(p.tokens, { logits: "all" });
          expect(logits.length).toBe(p.tokens.length * ctx.nVocab);
          const d = maxDiff(logits, ctx.nVocab, p.logits, ref.logit_columns);
          expect(d, `${name} on ${backend}, ${p.tokens.length} tokens: max |diff| ${d}`).toBeLessThanOrEqual(1e-4);
          out.push(logits);
        }
        byBackend.push(out);
      }
      // Native and wasm agree to 1e-5, relative to the logits' scale.
      const [n, w] = byBackend as [Float32Array[], Float32Array[]];
      n.forEach((a, i) => {
        const b = w[i]!;
        let scale = 0;
        let d = 0;
        for (let j = 0; j < a.length; j++) {
          scale = Math.max(scale, Math.abs(a[j]!));
          d = Math.max(d, Math.abs(a[j]! - b[j]!));
        }
        expect(d / scale).toBeLessThanOrEqual(1e-5);
      });
    });
  }
});

describe("sequences and contexts", () => {
  it("several sequences of different lengths in one call equal each alone; token by token equals whole prompt", async () => {
    const ref = reference("mamba2");
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(gguf("mamba2"), { backend });
      const prompts = ref.prompts.map((p) => p.tokens);
      await using batched = model.createContext({ sequences: prompts.length });
      const together = await batched.evaluateBatch(prompts.map((tokens, sequence) => ({ sequence, tokens, logits: "all" as const })));
      for (let i = 0; i < prompts.length; i++) {
        await using alone = model.createContext();
        const a = await alone.sequence(0).evaluate(prompts[i]!, { logits: "all" });
        expect(Array.from(together[i]!)).toEqual(Array.from(a));
        expect(batched.sequence(i).position).toBe(prompts[i]!.length);
        // Token by token.
        await using step = model.createContext();
        const V = step.nVocab;
        for (let t = 0; t < prompts[i]!.length; t++) {
          const l = await step.sequence(0).evaluate([prompts[i]![t]!]);
          const whole = a.subarray(t * V, (t + 1) * V);
          for (let j = 0; j < V; j++) expect(Math.abs(l[j]! - whole[j]!)).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(whole[j]!)));
        }
      }
    }
  });

  it("clear() resets; a failed evaluate (out-of-range token) changes nothing", async () => {
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(gguf("mamba"), { backend });
      await using ctx = model.createContext();
      const s = ctx.sequence(0);
      const first = await s.evaluate([5, 6, 7]);
      await expect(s.evaluate([8, 999_999])).rejects.toMatchObject({ code: "TOKEN_OUT_OF_RANGE" });
      expect(s.position).toBe(3);
      const next = await s.evaluate([8]);
      s.clear();
      expect(s.position).toBe(0);
      expect(Array.from(await s.evaluate([5, 6, 7]))).toEqual(Array.from(first));
      expect(Array.from(await s.evaluate([8]))).toEqual(Array.from(next));
      await expect(s.evaluate([])).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      expect(() => ctx.sequence(1)).toThrow(coil.InvalidArgumentError);
    }
  });

  it("disposed contexts and models say so; recurrent state size is reported", async () => {
    await using model = await coil.loadModel(gguf("mamba2"));
    const ctx = model.createContext();
    // conv (K-1)*(E+2GN) + ssm N*E floats per layer, f32
    expect(ctx.stateBytesPerSequence).toBe(2 * 4 * (3 * (128 + 2 * 16) + 16 * 128));
    await ctx.dispose();
    await expect(ctx.sequence(0).evaluate([1])).rejects.toMatchObject({ code: "DISPOSED" });
  });

  it("an unsupported architecture is a clear error", async () => {
    const f = await unknownArchGguf();
    for (const backend of BACKENDS) {
      await expect(coil.loadModel(f, { backend })).rejects.toMatchObject({
        code: "UNKNOWN_ARCHITECTURE",
        message: expect.stringContaining("llama"),
      });
      // ...but its metadata still loads.
      await using m = await coil.loadModel(f, { backend, vocabOnly: true });
      expect(m.hasWeights).toBe(false);
    }
  });
});

describe("quantized weights", () => {
  // A quantized model is compared with the same weights dequantized to f32 (`coil quantize` to
  // f32): what remains is the kernels' own error (activations go through Q8 as in ggml), which a
  // broken kernel blows up. Tiny random models are a worst case for quantization itself, so the
  // distance to the original f32 model is only reported (docs/benchmarks.md), not bounded tightly.
  // Mamba-2 in every type; the hybrids (experts, attention, short convs, parallel mixers) in two.
  const CASES: Array<[string, string]> = [
    ...["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q6_k"].map((t): [string, string] => ["mamba2", t]),
    ...["granite-hybrid-moe", "nemotron-h-moe", "falcon-h1", "lfm2-moe"].flatMap((m) => ["q8_0", "q4_0"].map((t): [string, string] => [m, t])),
  ];
  for (const [name, type] of CASES) {
    it(`${name} ${type}`, async () => {
      const ref = reference(name);
      await coil.quantize(gguf(name), gguf(name, type), type);
      await coil.quantize(gguf(name, type), gguf(name, `${type}-deq`), "f32");
      const p = ref.prompts.at(-1)!.tokens;
      const run = async (file: string, backend: "native" | "wasm") => {
        await using m = await coil.loadModel(file, { backend });
        await using c = m.createContext();
        return { logits: await c.sequence(0).evaluate(p, { logits: "all" }), V: c.nVocab };
      };
      const byBackend: Float32Array[] = [];
      for (const backend of BACKENDS) {
        const q = await run(gguf(name, type), backend);
        const deq = await run(gguf(name, `${type}-deq`), backend);
        const V = q.V;
        let scale = 0;
        let d = 0;
        let agree = 0;
        for (let t = 0; t < p.length; t++) {
          let a = 0;
          let b = 0;
          for (let j = 0; j < V; j++) {
            const k = t * V + j;
            scale = Math.max(scale, Math.abs(deq.logits[k]!));
            d = Math.max(d, Math.abs(q.logits[k]! - deq.logits[k]!));
            if (q.logits[k]! > q.logits[t * V + a]!) a = j;
            if (deq.logits[k]! > deq.logits[t * V + b]!) b = j;
          }
          if (a === b) agree++;
        }
        expect(d / scale, `${type} ${backend}: max relative difference from its dequantized weights`).toBeLessThan(0.06);
        expect(agree / p.length).toBeGreaterThanOrEqual(0.9);
        byBackend.push(q.logits);
      }
      const [n, w] = byBackend as [Float32Array, Float32Array];
      let scale = 0;
      let d = 0;
      for (let j = 0; j < n.length; j++) {
        scale = Math.max(scale, Math.abs(n[j]!));
        d = Math.max(d, Math.abs(n[j]! - w[j]!));
      }
      expect(d / scale).toBeLessThanOrEqual(1e-5);
    });
  }
});
