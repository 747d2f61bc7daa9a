// Tokenizers on both engines: llama.cpp's own test vectors, and ids from the Python reference
// tokenizers (HF `tokenizers` for GPT-NeoX, `sentencepiece` for Mistral v3) on hundreds of strings.
import { describe, expect, it, beforeAll, afterAll } from "vitest";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BACKENDS, coil, fixture } from "./helpers.js";
import type { Model } from "../dist/node/index.js";

function vectors(vocabFile: string, vectorsBase: string): { text: string; ids: number[] }[] {
  const inp = readFileSync(fixture(`vocab/${vectorsBase}.inp`), "utf8").split("\n__ggml_vocab_test__\n");
  const out = readFileSync(fixture(`vocab/${vectorsBase}.out`), "utf8").split("\n");
  inp.pop(); // after the last separator
  expect(out.length).toBeGreaterThanOrEqual(inp.length);
  return inp.map((text, i) => ({
    text,
    ids: out[i]!.trim() === "" ? [] : out[i]!.trim().split(/\s+/).map(Number),
  }));
}

const CASES = [
  { vocab: "ggml-vocab-gpt-neox.gguf", vectors: "ggml-vocab-mpt.gguf" },
  { vocab: "ggml-vocab-llama-spm.gguf", vectors: "ggml-vocab-llama-spm.gguf" },
  { vocab: "ggml-vocab-gpt-2.gguf", vectors: "ggml-vocab-gpt-2.gguf" },
];

for (const backend of BACKENDS) {
  describe(`tokenizer on ${backend}`, () => {
    const models = new Map<string, Model>();
    beforeAll(async () => {
      for (const c of CASES) models.set(c.vocab, await coil.loadModel(fixture(`vocab/${c.vocab}`), { backend }));
    });
    afterAll(() => models.forEach((m) => m.dispose()));

    for (const c of CASES) {
      it(`llama.cpp vectors: ${c.vectors}`, () => {
        const m = models.get(c.vocab)!;
        const vs = vectors(c.vocab, c.vectors);
        expect(vs.length).toBeGreaterThan(30);
        for (const v of vs) expect(m.tokenize(v.text, { addBos: false }), JSON.stringify(v.text)).toEqual(v.ids);
      });
    }

    it("special tokens only when asked; BOS per vocabulary", () => {
      const spm = models.get("ggml-vocab-llama-spm.gguf")!;
      expect(spm.vocab).toMatchObject({ model: "llama", bos: 1, eos: 2, add_bos: true });
      const withBos = spm.tokenize("Hello");
      expect(withBos[0]).toBe(1);
      expect(spm.tokenize("Hello", { addBos: false })).toEqual(withBos.slice(1));
      const literal = spm.tokenize("</s>", { addBos: false });
      expect(literal).not.toContain(2);
      expect(spm.tokenize("</s>", { addBos: false, special: true })).toEqual([2]);
      const neox = models.get("ggml-vocab-gpt-neox.gguf")!;
      expect(neox.tokenize("<|endoftext|>", { special: true })).toEqual([0]);
      expect(neox.tokenize("<|endoftext|>").length).toBeGreaterThan(1);
      expect(neox.tokenAttributes(0)).toMatchObject({ id: 0, piece: "<|endoftext|>", control: true, eog: true });
    });

    it("detokenize inverts tokenize; control tokens only with special", () => {
      const neox = models.get("ggml-vocab-gpt-neox.gguf")!;
      const text = "Hello  world!\n\tcode: x = [1, 2];  // ünïcödé 日本語 🦀👩‍👩‍👧";
      expect(neox.detokenize(neox.tokenize(text))).toBe(text);
      const spm = models.get("ggml-vocab-llama-spm.gguf")!;
      // llama.cpp's llama_detokenize: the space prefix is removed from the first piece...
      expect(spm.detokenize(spm.tokenize("Hello world", { addBos: false }))).toBe("Hello world");
      // ...but not after a BOS, which renders as "<s>" only when asked for.
      expect(spm.detokenize(spm.tokenize("Hello world"))).toBe(" Hello world");
      expect(spm.detokenize([1, ...spm.tokenize("Hi", { addBos: false })], { special: true })).toBe("<s> Hi");
    });

    it("out-of-range ids and bad arguments are typed errors", () => {
      const neox = models.get("ggml-vocab-gpt-neox.gguf")!;
      expect(() => neox.detokenize([1, 999_999])).toThrow(expect.objectContaining({ code: "TOKEN_OUT_OF_RANGE" }));
      expect(() => neox.detokenize([1.5])).toThrow(expect.objectContaining({ code: "TOKEN_OUT_OF_RANGE" }));
      expect(() => neox.tokenAttributes(-1)).toThrow(expect.objectContaining({ code: "TOKEN_OUT_OF_RANGE" }));
      expect(() => neox.tokenize(5 as never)).toThrow(coil.InvalidArgumentError);
    });
  });
}

describe("reference tokenizers (Python tokenizers / sentencepiece), both backends", () => {
  // HF tokenizers always matches added tokens in text, so that file compares with special: true.
  const refs = [
    { file: "tokenizer/gpt-neox-hf.json", vocab: "vocab/ggml-vocab-gpt-neox.gguf", special: true },
    // The Mistral v3 vocabulary as coil's converter writes it from Mamba-Codestral's tokenizer.model.v3.
    { file: "tokenizer/mistral-v3-spm.json", vocab: "mistral-v3 (converted)", special: false },
  ];
  let codestral = "";
  beforeAll(async () => {
    codestral = join(mkdtempSync(join(tmpdir(), "coil-tok-")), "codestral.gguf");
    await coil.convert(fixture("hf/mamba-codestral-layout"), codestral, { outtype: "f16" });
  }, 60_000);
  const vocabPath = (v: string) => (v.startsWith("mistral-v3") ? codestral : fixture(v));
  type Case = { text: string; ids: number[]; known_difference?: string; normalized_text?: string };
  for (const r of refs) {
    it(r.file, async () => {
      expect(existsSync(vocabPath(r.vocab)), `missing ${r.vocab}`).toBe(true);
      const ref = JSON.parse(readFileSync(fixture(r.file), "utf8")) as { compare_with: string; cases: Case[] };
      expect(ref.compare_with).toContain(`parse_special=${r.special}`);
      expect(ref.cases.length).toBeGreaterThan(400);
      for (const backend of BACKENDS) {
        await using m = await coil.loadModel(vocabPath(r.vocab), { backend, vocabOnly: true });
        let documented = 0;
        for (const c of ref.cases) {
          const opts = { addBos: false, special: r.special };
          if (!c.known_difference) {
            expect(m.tokenize(c.text, opts), JSON.stringify(c.text)).toEqual(c.ids);
          } else if (c.normalized_text !== undefined) {
            // The reference normalised (NFC) first; llama.cpp does not: the normalised text must match.
            expect(m.tokenize(c.normalized_text, opts), JSON.stringify(c.normalized_text)).toEqual(c.ids);
            documented++;
          } else {
            expect(m.tokenize(c.text, opts), `${JSON.stringify(c.text)} is a known difference but matches`).not.toEqual(c.ids);
            documented++;
          }
        }
        expect(documented).toBeLessThan(8);
      }
    });
  }
});

describe("models", () => {
  it("a disposed model says so", async () => {
    const m = await coil.loadModel(fixture("vocab/ggml-vocab-gpt-2.gguf"));
    m.dispose();
    m.dispose();
    expect(m.disposed).toBe(true);
    expect(() => m.tokenize("x")).toThrow(expect.objectContaining({ code: "DISPOSED" }));
  });
  it("a file without a vocabulary loads but cannot tokenize", async () => {
    // (a GGUF the builder makes with no tokenizer keys at all)
    const { GgufBuilder } = await import("./gguf-builder.js");
    const f = new GgufBuilder().kvString("general.architecture", "mamba").build();
    for (const backend of BACKENDS) {
      await using m = await coil.loadModel(f, { backend });
      expect(m.metadata["general.architecture"]).toBe("mamba");
      expect(() => m.tokenize("x")).toThrow(expect.objectContaining({ code: "TOKENIZER_INVALID" }));
    }
  });
  it("loadModel reports progress and honours abort", async () => {
    const seen: number[] = [];
    await using m = await coil.loadModel(new Blob([readFileSync(fixture("vocab/ggml-vocab-gpt-neox.gguf"))]), {
      backend: "wasm",
      onProgress: (p) => seen.push(p.loaded),
    });
    expect(seen.length).toBeGreaterThan(0);
    expect(m.vocab.n_vocab).toBe(50432);
    const c = new AbortController();
    c.abort();
    await expect(coil.loadModel(fixture("vocab/ggml-vocab-gpt-2.gguf"), { signal: c.signal })).rejects.toMatchObject({
      name: "AbortError",
    });
  });
});
