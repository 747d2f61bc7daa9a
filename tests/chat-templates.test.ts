// The hybrid families' chat templates (tests/fixtures/templates) through coil's chat on both
// engines: a vocabulary-only GGUF of each family carries the template and its special tokens;
// renderChat must give the family's exact conversation layout, and tokenizing it must turn every
// special marker into its single control token.
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { BACKENDS, coil, fixture } from "./helpers.js";
import { GgufBuilder } from "./gguf-builder.js";

/** GPT-2's byte-to-unicode table: the printable character spelling each byte. */
function byteChars(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : 256 + extra++));
}

function vocabGguf(arch: string, template: string, specials: string[], bos: string, eos: string): Uint8Array {
  const tokens = [...byteChars(), ...specials];
  return new GgufBuilder()
    .kvString("general.architecture", arch)
    .kvString("tokenizer.ggml.model", "gpt2")
    .kvString("tokenizer.ggml.pre", "default")
    .kvStrings("tokenizer.ggml.tokens", tokens)
    .kvI32s("tokenizer.ggml.token_type", tokens.map((_, i) => (i < 256 ? 1 : 3)))
    .kvStrings("tokenizer.ggml.merges", [])
    .kvU32("tokenizer.ggml.bos_token_id", tokens.indexOf(bos))
    .kvU32("tokenizer.ggml.eos_token_id", tokens.indexOf(eos))
    .kvString("tokenizer.chat_template", template)
    .build();
}

const messages: coil.ChatMessage[] = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi there" },
  { role: "assistant", content: "Hello!" },
  { role: "user", content: "Name a color." },
];

const CASES: Array<{ file: string; arch: string; specials: string[]; bos: string; eos: string; want: string }> = [
  {
    file: "ibm-granite-granite-4.0.jinja",
    arch: "granitehybrid",
    specials: ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>"],
    bos: "<|end_of_text|>",
    eos: "<|end_of_text|>",
    want:
      "<|start_of_role|>system<|end_of_role|>Be brief.<|end_of_text|>\n" +
      "<|start_of_role|>user<|end_of_role|>Hi there<|end_of_text|>\n" +
      "<|start_of_role|>assistant<|end_of_role|>Hello!<|end_of_text|>\n" +
      "<|start_of_role|>user<|end_of_role|>Name a color.<|end_of_text|>\n" +
      "<|start_of_role|>assistant<|end_of_role|>",
  },
  {
    file: "LFM2.5-Instruct.jinja",
    arch: "lfm2",
    specials: ["<|startoftext|>", "<|im_start|>", "<|im_end|>"],
    bos: "<|startoftext|>",
    eos: "<|im_end|>",
    want:
      "<|startoftext|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n" +
      "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n",
  },
  {
    file: "LFM2-8B-A1B.jinja",
    arch: "lfm2moe",
    specials: ["<|startoftext|>", "<|im_start|>", "<|im_end|>"],
    bos: "<|startoftext|>",
    eos: "<|im_end|>",
    want:
      "<|startoftext|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n" +
      "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n",
  },
  {
    file: "NVIDIA-Nemotron-Nano-v2.jinja",
    arch: "nemotron_h",
    specials: ["<s>", "</s>", "<SPECIAL_10>", "<SPECIAL_11>", "<SPECIAL_12>", "<think>"],
    bos: "<s>",
    eos: "<SPECIAL_12>",
    want:
      "<SPECIAL_10>System\nBe brief.\n\n<SPECIAL_11>User\nHi there\n<SPECIAL_11>Assistant\nHello!\n<SPECIAL_12>\n" +
      "<SPECIAL_11>User\nName a color.\n<SPECIAL_11>Assistant\n<think>\n",
  },
  {
    file: "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja",
    arch: "nemotron_h_moe",
    specials: ["<s>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
    bos: "<s>",
    eos: "<|im_end|>",
    want:
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n" +
      "<|im_start|>assistant\n<think></think>Hello!<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n<think>\n",
  },
];

describe("the hybrid families' chat templates", () => {
  for (const c of CASES) {
    for (const backend of BACKENDS) {
      it(`${c.file} on ${backend}`, async () => {
        const tpl = readFileSync(fixture(`templates/${c.file}`), "utf8");
        await using model = await coil.loadModel(vocabGguf(c.arch, tpl, c.specials, c.bos, c.eos), { backend });
        const text = coil.renderChat(model, messages);
        expect(text).toBe(c.want);
        const ids = model.tokenize(text, { special: true, addBos: false });
        for (const s of c.specials.filter((s) => text.includes(s))) {
          const id = 256 + c.specials.indexOf(s);
          const count = text.split(s).length - 1;
          expect(ids.filter((t) => t === id).length, s).toBe(count);
        }
        expect(model.detokenize(ids, { special: true })).toBe(text);
      });
    }
  }
});
