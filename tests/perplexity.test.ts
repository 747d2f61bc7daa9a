// `perplexity()` and `coil perplexity`: llama.cpp's windowed method, checked three ways — the window
// arithmetic against a direct computation from full-window logits, the trained default model
// against the perplexity transformers computed for the same checkpoint and windows, and the CLI's
// output on both engines.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { BACKENDS, DEFAULT_MODEL, coil, fixture } from "./helpers.js";

const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const HELDOUT = fixture("text/tinyshakespeare-heldout.txt");
const REF = JSON.parse(readFileSync(fixture("default-model/reference.json"), "utf8")) as {
  perplexity: { ctx: number; windows: number; tokens: number; perplexity: number };
};

function run(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", maxBuffer: 64 << 20 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** NLL of `target` under `row`, in f64, computed independently of the library's code. */
function nll(row: Float32Array, target: number): number {
  const xs = Array.from(row);
  const m = Math.max(...xs);
  return Math.log(xs.reduce((a, x) => a + Math.exp(x - m), 0)) + m - row[target]!;
}

describe("perplexity", () => {
  for (const backend of BACKENDS) {
    it(`scores the second half of each fresh window (${backend})`, async () => {
      await using model = await coil.loadModel(fixture("models/tiny-mamba2.gguf"), { backend });
      const ids = model.tokenize("Some text that is long enough for a few windows of sixteen tokens each, and a tail.", { addBos: false });
      const ctx = 8;
      const windows = Math.floor(ids.length / ctx);
      expect(windows).toBeGreaterThanOrEqual(3);
      const progress: number[] = [];
      const r = await coil.perplexity(model, ids, { ctx, onProgress: (p) => progress.push(p.window) });
      expect(progress).toEqual(Array.from({ length: windows }, (_, i) => i + 1));

      // Direct: each window evaluated whole from a fresh state, logits at every position.
      const bos = model.vocab.add_bos ? model.vocab.bos : null;
      let total = 0;
      let n = 0;
      for (let w = 0; w < windows; w++) {
        const win = ids.slice(w * ctx, (w + 1) * ctx);
        if (bos !== null) win[0] = bos;
        await using c = model.createContext();
        const all = await c.sequence(0).evaluate(win, { logits: "all" });
        const V = c.nVocab;
        for (let j = ctx / 2; j < ctx - 1; j++) {
          total += nll(all.subarray(j * V, (j + 1) * V), win[j + 1]!);
          n++;
        }
      }
      expect(r.windows).toBe(windows);
      expect(r.tokens).toBe(n);
      expect(r.tokens).toBe(windows * (ctx / 2 - 1));
      expect(Math.abs(r.perplexity / Math.exp(total / n) - 1)).toBeLessThan(1e-6);
    });

    it(`refuses a text shorter than one window, and honours abort (${backend})`, async () => {
      await using model = await coil.loadModel(fixture("models/tiny-mamba2.gguf"), { backend });
      await expect(coil.perplexity(model, [1, 2, 3], { ctx: 8 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      await expect(coil.perplexity(model, [1, 2, 3, 4, 5, 6, 7, 8], { ctx: 3 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      const c = new AbortController();
      c.abort();
      await expect(coil.perplexity(model, Array.from({ length: 64 }, (_, i) => i % 50), { ctx: 8, signal: c.signal })).rejects.toMatchObject({
        name: "AbortError",
      });
    });

    it(`the default model's held-out perplexity equals transformers' within 0.5% (${backend}, CLI)`, () => {
      const r = run(["perplexity", "-f", HELDOUT, "--ctx", String(REF.perplexity.ctx), "--backend", backend, "--json"]);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      const j = JSON.parse(r.out);
      expect(Object.keys(j).sort()).toEqual(["model", "perplexity", "tokens", "windows"]);
      expect(j.model).toBe(DEFAULT_MODEL);
      expect(j.windows).toBe(REF.perplexity.windows);
      expect(j.tokens).toBe(REF.perplexity.tokens);
      expect(Math.abs(j.perplexity / REF.perplexity.perplexity - 1)).toBeLessThan(0.005);
    });
  }

  it("the CLI explains a missing text file and bad options", () => {
    expect(run(["perplexity"]).code).toBe(2);
    expect(run(["perplexity", "-f", HELDOUT, "--ctx", "2"]).code).toBe(2);
    const r = run(["perplexity", "-f", "/nonexistent/x.txt"]);
    expect(r.code).toBe(1);
    expect(r.err.trim().split("\n")).toHaveLength(1);
  });
});
