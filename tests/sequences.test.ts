// Sequence operations (issue 9) on both engines: random sequences of evaluate, fork, checkpoint,
// truncate, save/restore, clear, prompt reuse and concurrent evaluation always give the logits of
// a fresh sequence fed the same history; batched decoding equals decoding alone; saved state is
// checked, portable across targets and processes, and constant in size without history.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BACKENDS, coil, fixture, HYBRID_MODELS, rng } from "./helpers.js";

const MAMBA2 = fixture("models/tiny-mamba2.gguf");
const MAMBA1 = fixture("models/tiny-mamba.gguf");
/** The models the property test runs on: Mamba-2, the hybrid Jamba (KV cache + recurrent state),
 * and the 2025–26 hybrids: Granite-4.0-H, Nemotron-H MoE, Falcon-H1 (KV and recurrent state on
 * every layer) and LFM2-MoE (conv-only recurrent state). */
const PROPERTY_MODELS = [MAMBA2, fixture("models/tiny-jamba.gguf"), ...HYBRID_MODELS.map(fixture)];

/** Logits a fresh sequence gives for `add` after `history` (all rows). */
async function fresh(model: coil.Model, history: number[], add: number[]): Promise<Float32Array> {
  await using ctx = model.createContext();
  const all = await ctx.sequence(0).evaluate([...history, ...add], { logits: "all" });
  return all.subarray(history.length * ctx.nVocab);
}

describe("random sequence operations equal a fresh sequence with the same history", () => {
  for (const file of PROPERTY_MODELS) {
    for (const backend of BACKENDS) {
      it(`${file.split("/").at(-1)} on ${backend}`, async () => {
        await using model = await coil.loadModel(file, { backend });
        const V = await (async () => {
          await using c = model.createContext();
          return c.nVocab;
        })();
        for (const seed of [1, 2, 3]) {
          const r = rng(seed);
          const pick = (n: number) => Math.floor(r() * n);
          const toks = (n: number) => Array.from({ length: n }, () => pick(V));
          await using ctx = model.createContext({ sequences: 4, checkpoints: { interval: 8, budgetBytes: seed === 2 ? 3 * 1024 * 1024 : undefined } });
          const seqs: (coil.Sequence | undefined)[] = [ctx.sequence(0)];
          const shadow = new Map<coil.Sequence, number[]>([[seqs[0]!, []]]);
          let saved: { bytes: Uint8Array; hist: number[] } | undefined;
          const live = () => [...shadow.keys()];
          for (let step = 0; step < 40; step++) {
            const s = live()[pick(live().length)]!;
            const op = pick(9);
            const where = `seed ${seed} step ${step} op ${op}`;
            switch (op) {
              case 0: {
                const add = toks(1 + pick(20));
                const got = await s.evaluate(add, { logits: "all" });
                expect(got, where).toEqual(await fresh(model, shadow.get(s)!, add));
                shadow.get(s)!.push(...add);
                break;
              }
              case 1: {
                if (live().length < 4) {
                  const f = s.fork();
                  shadow.set(f, [...shadow.get(s)!]);
                } else {
                  const victim = live()[pick(live().length)]!;
                  if (victim.id !== 0) {
                    victim.dispose();
                    shadow.delete(victim);
                  }
                }
                break;
              }
              case 2:
                s.checkpoint();
                break;
              case 3: {
                const h = shadow.get(s)!;
                const n = pick(h.length + 1);
                await s.truncate(n);
                h.length = n;
                break;
              }
              case 4: {
                if (!saved || pick(2) === 0) saved = { bytes: s.saveState({ checkpoints: pick(2) === 0 }), hist: [...shadow.get(s)!] };
                else {
                  const bad = saved.bytes.slice();
                  bad[pick(bad.length)] ^= 1;
                  const before = s.position;
                  expect(() => s.loadState(bad), where).toThrow(expect.objectContaining({ code: "STATE_INVALID" }));
                  expect(s.position).toBe(before);
                  s.loadState(saved.bytes);
                  shadow.set(s, [...saved.hist]);
                }
                break;
              }
              case 5:
                s.clear();
                shadow.set(s, []);
                break;
              case 6: {
                // Prompt reuse: a prompt sharing a random prefix of the history.
                const h = shadow.get(s)!;
                const prompt = [...h.slice(0, pick(h.length + 1)), ...toks(1 + pick(10))];
                const got = await s.evaluate(prompt, { reuse: true, logits: "all" });
                const reused = s.lastReusedTokens;
                expect(reused).toBeLessThan(prompt.length);
                expect(got, where).toEqual(await fresh(model, prompt.slice(0, reused), prompt.slice(reused)));
                shadow.set(s, prompt);
                break;
              }
              default: {
                // Concurrent evaluate calls on every live sequence: batched into one engine call.
                const adds = live().map(() => toks(1 + pick(6)));
                const before = ctx.batchStats.batched;
                const gots = await Promise.all(live().map((q, i) => q.evaluate(adds[i]!, { logits: "all" })));
                if (live().length > 1) expect(ctx.batchStats.batched).toBeGreaterThan(before);
                for (const [i, q] of live().entries()) {
                  expect(gots[i], `${where} seq ${q.id}`).toEqual(await fresh(model, shadow.get(q)!, adds[i]!));
                  shadow.get(q)!.push(...adds[i]!);
                }
              }
            }
            for (const q of live()) {
              const h = shadow.get(q)!;
              expect(q.position, where).toBe(h.length);
              if (h.length && live().length < 4) {
                // Probe through a fork, so the sequence itself does not advance.
                const probe = toks(1);
                const f = q.fork();
                expect(await f.evaluate(probe), `${where}: probe of ${q.id}`).toEqual(await fresh(model, h, probe));
                f.dispose();
              }
            }
          }
        }
      }, 120_000);
    }
  }
});

describe("batched decoding", () => {
  it("8 sequences of different lengths generated concurrently equal each generated alone", async () => {
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(MAMBA2, { backend });
      const prompts = Array.from({ length: 8 }, (_, i) => Array.from({ length: 2 + 7 * i }, (_, j) => (i * 31 + j * 7) % 200));
      const opts = { temperature: 0.8, seed: 5, maxTokens: 16, ignoreEos: true };
      const alone = [];
      for (const p of prompts) alone.push((await model.complete(p, opts)).tokens);
      await using ctx = model.createContext({ sequences: 8 });
      const results = await Promise.all(prompts.map((p, i) => ctx.sequence(i).generate(p, opts).complete()));
      expect(results.map((r) => r.tokens)).toEqual(alone);
      expect(ctx.batchStats.maxSequences).toBe(8);
      for (let i = 0; i < 8; i++) expect(ctx.sequence(i).position).toBe(prompts[i]!.length + 16);
    }
  });
});

describe("logits belong to their caller", () => {
  // One-token evaluations hand over the engine's array without copying it (the per-token path);
  // batched ones copy each caller's rows. Either way no later call, and no other caller, may see
  // or change them.
  it("later evaluations, concurrent callers and writes into a result leave other results alone", async () => {
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(MAMBA2, { backend });
      await using ctx = model.createContext({ sequences: 2 });
      const [a, b] = [ctx.sequence(0), ctx.sequence(1)];
      const first = await a.evaluate([5]);
      const kept = first.slice();
      const second = await a.evaluate([6]);
      expect(second.buffer).not.toBe(first.buffer);
      second.fill(1e9);
      expect(first).toEqual(kept);
      // Two sequences in one engine call: each gets a whole array of its own.
      const [x, y] = await Promise.all([a.evaluate([7]), b.evaluate([7])]);
      expect(ctx.batchStats.batched).toBeGreaterThan(0);
      expect(x.length).toBe(ctx.nVocab);
      expect(x.buffer).not.toBe(y.buffer);
      expect(x.buffer.byteLength).toBe(x.byteLength);
      const yKept = y.slice();
      x.fill(-1);
      expect(y).toEqual(yKept);
      expect(first).toEqual(kept);
    }
  });
});

describe("fork, truncate, slots", () => {
  it("fork shares until written; CONTEXT_FULL when no slot is free; dispose frees it", async () => {
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(MAMBA2, { backend });
      await using ctx = model.createContext({ sequences: 2 });
      const a = ctx.sequence(0);
      await a.evaluate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      const bytes = ctx.checkpointBytes;
      const b = a.fork();
      expect(b.id).toBe(1);
      expect(ctx.checkpointBytes).toBe(bytes); // the checkpoint is shared, not copied
      expect(Array.from(b.tokens)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(() => a.fork()).toThrow(expect.objectContaining({ code: "CONTEXT_FULL" }));
      const la = await a.evaluate([11]);
      const lb = await b.evaluate([12]);
      expect(la).toEqual(await fresh(model, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [11]));
      expect(lb).toEqual(await fresh(model, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [12]));
      b.dispose();
      expect(() => b.position).toThrow(expect.objectContaining({ code: "DISPOSED" }));
      const c = a.fork();
      expect(c.id).toBe(1);
      await c.truncate(4);
      expect(c.position).toBe(4);
      expect(await c.evaluate([9])).toEqual(await fresh(model, [1, 2, 3, 4], [9]));
      await expect(c.truncate(99)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    }
  });
});

describe("saved state", () => {
  it("model mismatch and corrupt buffers are clear errors that change nothing; size is constant without history", async () => {
    for (const backend of BACKENDS) {
      await using m2 = await coil.loadModel(MAMBA2, { backend });
      await using m1 = await coil.loadModel(MAMBA1, { backend });
      await using c2 = m2.createContext();
      await using c1 = m1.createContext();
      const s = c2.sequence(0);
      const small = s.saveState({ history: false });
      await s.evaluate(Array.from({ length: 300 }, (_, i) => i % 200));
      const big = s.saveState({ history: false });
      expect(big.length).toBe(small.length);
      expect(s.saveState().length).toBe(big.length + 300 * 4 + 12);
      await c1.sequence(0).evaluate([1, 2, 3]);
      const before = c1.sequence(0).saveState();
      expect(() => c1.sequence(0).loadState(big)).toThrow(expect.objectContaining({ code: "STATE_MODEL_MISMATCH" }));
      expect(() => s.loadState(big.subarray(0, big.length - 3))).toThrow(expect.objectContaining({ code: "STATE_INVALID" }));
      expect(() => s.loadState(new Uint8Array([1, 2, 3]))).toThrow(expect.objectContaining({ code: "STATE_INVALID" }));
      expect(c1.sequence(0).saveState()).toEqual(before);
      expect(s.position).toBe(300);
    }
  });

  for (const file of [MAMBA2, ...HYBRID_MODELS.map(fixture)]) it(`a state saved on one target continues identically on the other (and in another process): ${file.split("/").at(-1)}`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "coil-state-"));
    const out = join(dir, "seq.state");
    // Another process saves on native...
    const script = `
      import * as coil from ${JSON.stringify(new URL("../dist/node/index.js", import.meta.url).href)};
      import { writeFileSync } from "node:fs";
      const m = await coil.loadModel(${JSON.stringify(file)}, { backend: "native" });
      const ctx = m.createContext();
      await ctx.sequence(0).evaluate([5, 6, 7, 8, 9, 10, 11, 12]);
      writeFileSync(${JSON.stringify(out)}, ctx.sequence(0).saveState({ checkpoints: true }));
      await ctx.dispose(); m.dispose();`;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    const bytes = new Uint8Array(readFileSync(out));
    // ...this one restores it on wasm and on native, and both continue like a fresh sequence.
    const opts = { temperature: 0.7, seed: 9, maxTokens: 12 };
    const gens = [];
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(file, { backend });
      await using ctx = model.createContext();
      const s = ctx.sequence(0);
      s.loadState(bytes);
      expect(s.position).toBe(8);
      const got = await s.evaluate([13]);
      const want = await fresh(model, [5, 6, 7, 8, 9, 10, 11, 12], [13]);
      // Bit-exact on the engine that saved it; within float rounding of the other engine's kernels.
      if (backend === "native") expect(got).toEqual(want);
      else expect(Math.max(...got.map((v, i) => Math.abs(v - want[i]!)))).toBeLessThan(1e-4);
      await s.truncate(8);
      gens.push((await s.generate([13], opts).complete()).tokens);
      // A whole-context save round-trips too.
      const all = ctx.saveState({ checkpoints: true });
      await using ctx2 = model.createContext();
      ctx2.loadState(all);
      expect(Array.from(ctx2.sequence(0).tokens)).toEqual(Array.from(s.tokens));
    }
    expect(gens[1]).toEqual(gens[0]);
    await using model = await coil.loadModel(file, { backend: "native" });
    expect(gens[0]).toEqual((await model.complete([5, 6, 7, 8, 9, 10, 11, 12, 13], opts)).tokens);
  });
});

describe("prompt reuse", () => {
  it("generate with reuse reports reused tokens and equals a fresh generation", async () => {
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(MAMBA2, { backend });
      await using ctx = model.createContext();
      const s = ctx.sequence(0);
      const opts = { temperature: 0.9, seed: 4, maxTokens: 6, reuse: true };
      const p1 = Array.from({ length: 40 }, (_, i) => (i * 13) % 200);
      const r1 = await s.generate(p1, opts).complete();
      expect(r1.reusedTokens).toBe(0);
      const p2 = [...p1, ...r1.tokens, 3, 4, 5];
      const r2 = await s.generate(p2, opts).complete();
      expect(r2.reusedTokens).toBe(p1.length + r1.tokens.length);
      expect(r2.tokens).toEqual((await model.complete(p2, { ...opts, reuse: false })).tokens);
      // An edit in the middle: rolls back to the checkpoint at the end of the first prompt.
      const p3 = [...p1, 7, 7, 7];
      const r3 = await s.generate(p3, opts).complete();
      expect(r3.reusedTokens).toBe(p1.length);
      expect(r3.tokens).toEqual((await model.complete(p3, { ...opts, reuse: false })).tokens);
    }
  });
  it("ChatSession never re-processes its history, and rolls back when the conversation is edited", async () => {
    const dir = mkdtempSync(join(tmpdir(), "coil-chat-"));
    const gguf = join(dir, "mamba.gguf");
    await coil.convert(fixture("hf/mamba"), gguf, { outtype: "f32" });
    await using model = await coil.loadModel(gguf);
    await using ctx = model.createContext();
    const chat = new coil.ChatSession(ctx.sequence(0));
    await chat.send("Hello", { temperature: 0, maxTokens: 5 }).complete();
    let seen = ctx.sequence(0).position;
    for (const turn of ["How are you?", "And then?"]) {
      await chat.send(turn, { temperature: 0, maxTokens: 5 }).complete();
      expect(chat.lastReusedTokens).toBe(seen);
      seen = ctx.sequence(0).position;
    }
    // Drop the last exchange and ask something else: the shared prefix is restored, not re-evaluated.
    chat.messages.splice(-2, 2);
    await chat.send("Something else", { temperature: 0, maxTokens: 5 }).complete();
    expect(chat.lastReusedTokens).toBeGreaterThan(0);
    expect(chat.lastReusedTokens).toBeLessThan(seen);
  });
});

describe("synchronous operations during an evaluation", () => {
  for (const backend of BACKENDS) {
    it(`refuse with SEQUENCE_BUSY while the sequence has work in flight, and change nothing (${backend})`, async () => {
      await using model = await coil.loadModel(MAMBA2, { backend });
      await using ctx = model.createContext({ sequences: 2 });
      const s = ctx.sequence(0);
      const prompt = Array.from({ length: 40 }, (_, i) => (i * 7) % 50);
      const pending = s.evaluate(prompt);
      for (const op of [() => s.clear(), () => s.fork(), () => s.checkpoint(), () => s.saveState(), () => s.loadState(new Uint8Array(8))]) {
        expect(op).toThrowError(expect.objectContaining({ code: "SEQUENCE_BUSY" }));
      }
      // Another sequence is not affected.
      expect(() => ctx.sequence(1).saveState()).not.toThrow();
      const got = await pending;
      expect(s.position).toBe(prompt.length);
      expect(Array.from(got)).toEqual(Array.from((await fresh(model, [], prompt)).subarray((prompt.length - 1) * ctx.nVocab)));
      // Once settled, they work.
      expect(s.saveState().length).toBeGreaterThan(0);
      s.clear();
      expect(s.position).toBe(0);
    });
  }
});
