// `coil bench`: prompt processing (one prompt of p tokens from a fresh state) and generation
// (n single-token steps), like llama-bench's pp/tg; optionally the same through node-llama-cpp in
// the same run, reported side by side with the ratio.

import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";
import { loadModel } from "../node/index.js";
import type { BackendChoice } from "../node/index.js";

export interface BenchOptions {
  model: string;
  pp: number;
  tg: number;
  threads?: number;
  backend?: BackendChoice;
  reps: number;
  /** KV cache of attention layers (coil; llama.cpp uses f16). Default f16. */
  kvType?: "f16" | "f32";
  contextLength?: number;
}

export interface BenchResult {
  runner: string;
  backend: string;
  threads: number;
  pp_tokens_per_s: number;
  tg_tokens_per_s: number;
}

/** Deterministic token ids in [0, n) (the same for every runner). */
export function benchTokens(count: number, nVocab: number, seed = 1234): number[] {
  let s = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(s % nVocab);
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const now = () => performance.now() / 1000;

export async function benchCoil(o: BenchOptions): Promise<BenchResult> {
  await using model = await loadModel(o.model, { backend: o.backend });
  await using ctx = model.createContext({
    threads: o.threads,
    kvType: o.kvType,
    contextLength: o.contextLength ?? Math.max(o.pp + 16, o.tg + 16, 64),
  });
  const prompt = benchTokens(o.pp, ctx.nVocab);
  const gen = benchTokens(o.tg, ctx.nVocab, 99);
  const seq = ctx.sequence(0);
  const pp: number[] = [];
  if (o.pp > 0) {
    await seq.evaluate(prompt.slice(0, Math.min(16, o.pp))); // warm-up
    for (let r = 0; r < o.reps; r++) {
      seq.clear();
      const t0 = now();
      await seq.evaluate(prompt);
      pp.push(o.pp / (now() - t0));
    }
  }
  const tg: number[] = [];
  if (o.tg > 0) {
    for (let r = 0; r < o.reps; r++) {
      seq.clear();
      await seq.evaluate([gen[0]!]); // warm-up step, not timed
      const t0 = now();
      for (let i = 0; i < o.tg; i++) await seq.evaluate([gen[i]!]);
      tg.push(o.tg / (now() - t0));
    }
  }
  return {
    runner: "coil",
    backend: model.backend,
    threads: o.threads ?? 0,
    pp_tokens_per_s: pp.length ? median(pp) : 0,
    tg_tokens_per_s: tg.length ? median(tg) : 0,
  };
}

/* eslint-disable @typescript-eslint/no-explicit-any -- node-llama-cpp is optional: no types at build time */
type Nlc = any;

/** node-llama-cpp, from the user's project or from coil's bench/.peers (npm run bench installs it there). */
async function importNodeLlamaCpp(): Promise<Nlc> {
  const tries = [process.cwd() + "/package.json", fileURLToPath(new URL("../../bench/.peers/package.json", import.meta.url))];
  for (const base of tries) {
    try {
      const req = createRequire(base);
      const entry = req.resolve("node-llama-cpp");
      return (await import(pathToFileURL(entry).href)) as Nlc;
    } catch {
      /* next */
    }
  }
  {
    throw new Error("node-llama-cpp is not installed: `npm i node-llama-cpp` (or run `node bench/peers.mjs`) to compare with it");
  }
}

export async function benchNodeLlamaCpp(o: BenchOptions, nVocab: number): Promise<BenchResult> {
  const nlc = await importNodeLlamaCpp();
  const llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: o.model, gpuLayers: 0 });
  const threads = o.threads ?? 0;
  const context = await model.createContext({
    contextSize: Math.max(o.pp + 16, o.tg + 16, 64),
    batchSize: Math.max(o.pp, 1),
    threads: threads || undefined,
    sequences: 1,
  });
  const seq = context.getSequence();
  const prompt = benchTokens(o.pp, nVocab);
  const gen = benchTokens(o.tg, nVocab, 99);
  const pp: number[] = [];
  const tg: number[] = [];
  try {
    if (o.pp > 0) {
      await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, Math.min(16, o.pp)));
      for (let r = 0; r < o.reps; r++) {
        await seq.clearHistory();
        const t0 = now();
        await seq.evaluateWithoutGeneratingNewTokens(prompt);
        pp.push(o.pp / (now() - t0));
      }
    }
    if (o.tg > 0) {
      for (let r = 0; r < o.reps; r++) {
        await seq.clearHistory();
        await seq.evaluateWithoutGeneratingNewTokens([gen[0]!]);
        const t0 = now();
        for (let i = 0; i < o.tg; i++) await seq.evaluateWithoutGeneratingNewTokens([gen[i]!]);
        tg.push(o.tg / (now() - t0));
      }
    }
  } finally {
    await context.dispose();
    await model.dispose();
  }
  return {
    runner: "node-llama-cpp",
    backend: "llama.cpp (CPU)",
    threads,
    pp_tokens_per_s: pp.length ? median(pp) : 0,
    tg_tokens_per_s: tg.length ? median(tg) : 0,
  };
}
