// The built-in default model (models/shakespeare.gguf, trained by scripts/train/train_default.py and
// converted with coil): its perplexity against transformers on the held-out text, and the shape of
// its seeded output — speaker names followed by lines of verse, as in the corpus.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BACKENDS, DEFAULT_MODEL, coil, fixture } from "./helpers.js";

const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const REF = JSON.parse(readFileSync(fixture("default-model/reference.json"), "utf8")) as {
  perplexity: { ctx: number; windows: number; tokens: number; perplexity: number };
};
const HELDOUT = readFileSync(fixture("text/tinyshakespeare-heldout.txt"), "utf8");

function run(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", maxBuffer: 64 << 20 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const SPEAKER = /^[A-Z][A-Za-z']*(?: [A-Za-z']+){0,3}:$/;

/**
 * How much of `text` looks like the corpus: blocks separated by blank lines, each a speaker line
 * ("ROMEO:", "First Citizen:") followed by one or more lines of verse (not speaker lines, at most
 * 100 characters). The last block is left out: generation may stop in the middle of it.
 */
function speechShape(text: string): { blocks: number; speeches: number } {
  const blocks = text.split(/\n\s*\n/).slice(0, -1);
  let speeches = 0;
  for (const b of blocks) {
    const lines = b.split("\n").filter((l) => l.length > 0);
    const [head, ...verse] = lines;
    if (head && SPEAKER.test(head) && verse.length > 0 && verse.every((l) => !SPEAKER.test(l) && l.length <= 100 && /[a-z]/.test(l))) {
      speeches++;
    }
  }
  return { blocks: blocks.length, speeches };
}

describe("the built-in default model", () => {
  it("the shape check accepts the corpus and rejects a random-weight model's output", async () => {
    const corpus = speechShape(HELDOUT.slice(0, 4000));
    expect(corpus.blocks).toBeGreaterThan(10);
    expect(corpus.speeches).toBe(corpus.blocks);
    await using noise = await coil.loadModel(fixture("models/tiny-mamba.gguf"));
    const r = await noise.complete("ROMEO:", { maxTokens: 300, seed: 1 });
    const s = speechShape("ROMEO:" + r.text);
    expect(s.speeches).toBeLessThan(2);
  });

  const texts: Record<string, string> = {};
  for (const backend of BACKENDS) {
    it(`coil generate -p "ROMEO:" (no -m) writes speeches in the corpus's shape (${backend})`, () => {
      const r = run(["generate", "-p", "ROMEO:", "-n", "200", "--seed", "1", "--backend", backend, "--json"]);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      const j = JSON.parse(r.out) as { text: string; tokens: number[] };
      expect(j.tokens).toHaveLength(200);
      texts[backend] = j.text;
      const s = speechShape("ROMEO:" + j.text);
      expect(s.blocks).toBeGreaterThanOrEqual(4);
      expect(s.speeches / s.blocks).toBeGreaterThanOrEqual(0.75);
    });
  }

  it("native and wasm write the same seeded text", () => {
    expect(texts.native).toBeDefined();
    expect(texts.wasm).toBe(texts.native);
  });

  it("is the file the CLI uses without -m, an F16 Mamba-2 of a few MB", async () => {
    const info = await coil.inspectGguf(DEFAULT_MODEL);
    expect(info.summary.architecture).toBe("mamba2");
    expect(readFileSync(DEFAULT_MODEL).length).toBeLessThan(8 << 20);
    expect(info.tensors.find((t) => t.name === "token_embd.weight")?.type).toBe("F16");
  });

  it("coil convert reproduces transformers' held-out perplexity from the trained checkpoint (F16, both engines)", async () => {
    const out = join(mkdtempSync(join(tmpdir(), "coil-default-")), "f16.gguf");
    await coil.convert(fixture("default-model/hf"), out, { outtype: "f16" });
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(out, { backend });
      const r = await coil.perplexity(model, HELDOUT, { ctx: REF.perplexity.ctx });
      expect(r.windows).toBe(REF.perplexity.windows);
      expect(r.tokens).toBe(REF.perplexity.tokens);
      // Same f16 weights, f32 arithmetic on both sides: far tighter than the 0.5%.
      expect(Math.abs(r.perplexity / REF.perplexity.perplexity - 1)).toBeLessThan(1e-4);
    }
  });
});
