// Jamba (issue #8) on both engines: logits parity with transformers' float64 reference through an
// f32 KV cache, the deviation an f16 cache costs, batching invariants, CONTEXT_FULL, memory
// accounting, and generation through the API and the CLI.
import { beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BACKENDS, coil, fixture } from "./helpers.js";

type Prompt = { tokens: number[]; logits: number[][] };
const ref = JSON.parse(readFileSync(fixture("hf/jamba/reference.json"), "utf8")) as { prompts: Prompt[] };
const dir = mkdtempSync(join(tmpdir(), "coil-jamba-"));
const GGUF = join(dir, "jamba-f32.gguf");
const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));

/** The deviation the f16 KV cache is allowed on this fixture (measured: ~5e-3; see the README). */
const F16_KV_BOUND = 2e-2;

beforeAll(async () => {
  await coil.convert(fixture("hf/jamba"), GGUF, { outtype: "f32" });
}, 120_000);

function maxDiff(got: Float32Array, V: number, want: number[][]): number {
  let m = 0;
  want.forEach((row, t) => row.forEach((v, j) => (m = Math.max(m, Math.abs(got[t * V + j]! - v)))));
  return m;
}

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", maxBuffer: 256 << 20 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe("jamba", () => {
  it("logits match transformers to 1e-4 with an f32 KV cache; the f16 cache's deviation is bounded", async () => {
    const byBackend: Float32Array[][] = [];
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(GGUF, { backend });
      const out: Float32Array[] = [];
      let f16 = 0;
      for (const p of ref.prompts) {
        await using ctx = model.createContext({ kvType: "f32" });
        expect(ctx.kvType).toBe("f32");
        const logits = await ctx.sequence(0).evaluate(p.tokens, { logits: "all" });
        const d = maxDiff(logits, ctx.nVocab, p.logits);
        expect(d, `${backend}, ${p.tokens.length} tokens: max |diff| ${d}`).toBeLessThanOrEqual(1e-4);
        out.push(logits);
        await using c16 = model.createContext();
        expect(c16.kvType).toBe("f16");
        f16 = Math.max(f16, maxDiff(await c16.sequence(0).evaluate(p.tokens, { logits: "all" }), c16.nVocab, p.logits));
      }
      console.log(`jamba ${backend}: max |diff| with an f16 KV cache ${f16.toExponential(2)} (f32: ≤ 1e-4)`);
      expect(f16).toBeLessThanOrEqual(F16_KV_BOUND);
      byBackend.push(out);
    }
    const [n, w] = byBackend as [Float32Array[], Float32Array[]];
    n.forEach((a, i) => {
      let d = 0;
      for (let j = 0; j < a.length; j++) d = Math.max(d, Math.abs(a[j]! - w[i]![j]!));
      expect(d).toBeLessThanOrEqual(1e-4);
    });
  });

  it("several sequences in one call equal each alone; token by token equals the whole prompt", async () => {
    const prompts = ref.prompts.map((p) => p.tokens);
    for (const backend of BACKENDS) {
      for (const kvType of ["f16", "f32"] as const) {
        await using model = await coil.loadModel(GGUF, { backend });
        await using batched = model.createContext({ sequences: prompts.length, kvType });
        const together = await batched.evaluateBatch(prompts.map((tokens, sequence) => ({ sequence, tokens, logits: "all" as const })));
        for (let i = 0; i < prompts.length; i++) {
          await using alone = model.createContext({ kvType });
          const a = await alone.sequence(0).evaluate(prompts[i]!, { logits: "all" });
          expect(Array.from(together[i]!), `${backend} ${kvType} prompt ${i}`).toEqual(Array.from(a));
          await using step = model.createContext({ kvType });
          const V = step.nVocab;
          for (let t = 0; t < prompts[i]!.length; t++) {
            const l = await step.sequence(0).evaluate([prompts[i]![t]!]);
            const whole = a.subarray(t * V, (t + 1) * V);
            for (let j = 0; j < V; j++) expect(Math.abs(l[j]! - whole[j]!)).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(whole[j]!)));
          }
        }
      }
    }
  });

  it("CONTEXT_FULL names the sequence, its position and the context length, and leaves the sequence intact", async () => {
    const p = ref.prompts[2]!.tokens; // 26 tokens
    const messages: string[] = [];
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(GGUF, { backend });
      await using ctx = model.createContext({ contextLength: 20, kvType: "f32" });
      expect(ctx.contextLength).toBe(20);
      const s = ctx.sequence(0);
      const first = await s.evaluate(p.slice(0, 15), { logits: "all" });
      const err = await s.evaluate(p.slice(15, 26)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(coil.CoilError);
      expect(err).toMatchObject({ code: "CONTEXT_FULL" });
      const msg = (err as Error).message;
      for (const part of ["sequence 0", "15", "20"]) expect(msg).toContain(part);
      messages.push(msg);
      expect(s.position).toBe(15);
      // It goes on as if the failed call had not happened.
      const rest = await s.evaluate(p.slice(15, 20), { logits: "all" });
      await using fresh = model.createContext({ kvType: "f32" });
      const whole = await fresh.sequence(0).evaluate(p.slice(0, 20), { logits: "all" });
      expect(Array.from(whole)).toEqual([...Array.from(first), ...Array.from(rest)]);
      await expect(s.evaluate([1])).rejects.toMatchObject({ code: "CONTEXT_FULL" });
      s.clear();
      expect(s.position).toBe(0);
      expect(Array.from(await s.evaluate(p.slice(0, 15), { logits: "all" }))).toEqual(Array.from(first));
      expect(() => model.createContext({ contextLength: 0 })).toThrow(coil.InvalidArgumentError);
      expect(() => model.createContext({ kvType: "q8" as "f16" })).toThrow(coil.InvalidArgumentError);
    }
    expect(messages[0]).toBe(messages[1]);
  });

  it("memory accounting: recurrent state per sequence, KV per token and per sequence", async () => {
    // Fixture: D 32, 4 heads (head_dim 8), 2 KV heads on the 2 attention layers (1, 4); 4 Mamba
    // layers with d_inner 64, d_state 8, d_conv 4.
    const kvValuesPerToken = 2 * 2 * (2 * 8);
    const recurrent = 4 * 4 * (3 * 64 + 8 * 64);
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(GGUF, { backend });
      await using ctx = model.createContext({ contextLength: 100 });
      expect(ctx.memory).toEqual({
        contextLength: 100,
        kvType: "f16",
        attentionLayers: 2,
        recurrentStateBytesPerSequence: recurrent,
        kvBytesPerToken: kvValuesPerToken * 2,
        kvBytesPerSequence: kvValuesPerToken * 2 * 128, // 100 tokens in whole 32-token blocks
      });
      expect(ctx.stateBytesPerSequence).toBe(recurrent);
      await using c32 = model.createContext({ kvType: "f32" });
      expect(c32.memory.contextLength).toBe(4096); // the fixture's max_position_embeddings, capped at 4096
      expect(c32.memory.kvBytesPerSequence).toBe(kvValuesPerToken * 4 * 4096);
      // Recurrent-only models: no KV.
      await using mamba = await coil.loadModel(fixture("models/tiny-mamba.gguf"), { backend });
      await using mc = mamba.createContext();
      expect(mc.memory).toMatchObject({ attentionLayers: 0, kvBytesPerToken: 0, kvBytesPerSequence: 0 });
      const info = await coil.inspectGguf(GGUF, { backend });
      expect(info.summary.kv_cache).toEqual({
        attention_layers: 2,
        bytes_per_token: { f16: kvValuesPerToken * 2, f32: kvValuesPerToken * 4 },
        default_context_length: 4096,
        bytes_per_sequence: { f16: kvValuesPerToken * 2 * 4096, f32: kvValuesPerToken * 4 * 4096 },
      });
      expect(info.summary.recurrent_state_bytes_per_sequence).toBe(recurrent);
    }
    const r = cli(["inspect", GGUF, "--ctx-size", "1000", "--kv-type", "f32"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/recurrent state per sequence\s+11\.00 KiB/);
    expect(r.out).toMatch(/kv cache per token\s+256 B \(f32; 2 attention layers/);
    expect(r.out).toMatch(/kv cache per sequence\s+256\.00 KiB at 1000 tokens \(f32\)/);
    const j = JSON.parse(cli(["inspect", GGUF, "--json"]).out);
    expect(j.summary.kv_cache.bytes_per_token.f16).toBe(kvValuesPerToken * 2);
  });

  it("generates through the API and the CLI", async () => {
    const texts: string[] = [];
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(GGUF, { backend });
      await using ctx = model.createContext({ kvType: "f32", contextLength: 64 });
      const gen = ctx.sequence(0).generate("First Citizen:", { maxTokens: 12, temperature: 0, ignoreEos: true });
      let text = "";
      for await (const c of gen) text += c.text;
      const r = await gen.result;
      expect(r.generatedTokens).toBe(12);
      expect(r.stopReason).toBe("maxTokens");
      expect(r.text).toBe(text);
      texts.push(text);
      // Generation past the context length stops with CONTEXT_FULL, not silently.
      await using small = model.createContext({ contextLength: 10 });
      const g2 = small.sequence(0).generate("First Citizen:", { maxTokens: 50, ignoreEos: true });
      await expect(g2.complete()).rejects.toMatchObject({ code: "CONTEXT_FULL" });
    }
    expect(texts[0]).toBe(texts[1]);
    const r = cli(["generate", "-m", GGUF, "-p", "First Citizen:", "-n", "12", "--temp", "0", "--kv-type", "f32", "--ctx-size", "64", "--json"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.tokens.length).toBeGreaterThan(0);
    // eval uses an f32 KV cache unless told otherwise: transformers' logits to 1e-4.
    const p = ref.prompts[1]!;
    for (const backend of BACKENDS) {
      const e = cli(["eval", "-m", GGUF, "--tokens", p.tokens.join(","), "--json", "--backend", backend]);
      expect(e.code).toBe(0);
      const out = JSON.parse(e.out) as { n_vocab: number; logits: number[][] };
      expect(maxDiff(new Float32Array(out.logits.flat()), out.n_vocab, p.logits)).toBeLessThanOrEqual(1e-4);
      const e16 = cli(["eval", "-m", GGUF, "--tokens", p.tokens.join(","), "--json", "--kv-type", "f16", "--backend", backend]);
      const o16 = JSON.parse(e16.out) as { n_vocab: number; logits: number[][] };
      expect(maxDiff(new Float32Array(o16.logits.flat()), o16.n_vocab, p.logits)).toBeGreaterThan(1e-6);
    }
    const full = cli(["eval", "-m", GGUF, "--tokens", ref.prompts[2]!.tokens.join(","), "--ctx-size", "8"]);
    expect(full.code).toBe(1);
    expect(full.err).toContain("past the context length 8");
  });
});
