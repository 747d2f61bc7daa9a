// Tokenizer benchmark: 1 MB of text (tinyshakespeare) with the GPT-NeoX vocabulary, coil (native
// and wasm) against @huggingface/tokenizers and node-llama-cpp in the same run. Reports MB/s and
// ratios, and checks that everyone produced the same ids (a fast wrong tokenizer is no result).
//   node bench/tokenize.mjs [--runs 5] [--json]
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as coil from "../dist/node/index.js";
import { importPeer } from "./peers.mjs";

const { values } = parseArgs({ options: { runs: { type: "string", default: "5" }, json: { type: "boolean", default: false } } });
const RUNS = Number(values.runs);
const root = (p) => fileURLToPath(new URL(`../${p}`, import.meta.url));
const text = readFileSync(root("tests/fixtures/text/tinyshakespeare.txt"), "utf8");
const bytes = Buffer.byteLength(text);
const VOCAB = root("tests/fixtures/vocab/ggml-vocab-gpt-neox.gguf");
const TOKENIZER_JSON = root("tests/fixtures/tokenizer/gpt-neox-20b-tokenizer.json");

function time(fn) {
  fn(); // warm-up
  const ts = [];
  let out;
  for (let i = 0; i < RUNS; i++) {
    const t0 = process.hrtime.bigint();
    out = fn();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  ts.sort((a, b) => a - b);
  return { seconds: ts[Math.floor(ts.length / 2)], ids: Array.from(out) };
}

const results = [];
for (const backend of ["native", "wasm"]) {
  const m = await coil.loadModel(VOCAB, { backend });
  results.push({ name: `coil (${backend})`, ...time(() => m.tokenize(text, { addBos: false })) });
  m.dispose();
}
{
  const { Tokenizer } = await importPeer("@huggingface/tokenizers");
  const t = new Tokenizer(JSON.parse(readFileSync(TOKENIZER_JSON, "utf8")), {});
  results.push({ name: "@huggingface/tokenizers 0.2.0", ...time(() => t.encode(text, { add_special_tokens: false }).ids) });
}
{
  const { getLlama, LlamaLogLevel } = await importPeer("node-llama-cpp");
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: VOCAB, vocabOnly: true });
  results.push({ name: "node-llama-cpp 3.22.1", ...time(() => model.tokenize(text)) });
  await model.dispose();
}

const ref = results.find((r) => r.name === "node-llama-cpp 3.22.1").ids;
const out = results.map((r) => {
  let firstDiff = r.ids.findIndex((id, i) => id !== ref[i]);
  if (firstDiff < 0 && r.ids.length !== ref.length) firstDiff = Math.min(r.ids.length, ref.length);
  return {
    name: r.name,
    seconds: r.seconds,
    mb_per_s: bytes / 1e6 / r.seconds,
    tokens: r.ids.length,
    same_ids_as_llama_cpp: firstDiff < 0,
    ...(firstDiff >= 0 ? { first_difference_at: firstDiff } : {}),
  };
});
const native = out[0];
for (const o of out) o.coil_native_speedup = o.seconds / native.seconds;
if (values.json) console.log(JSON.stringify({ bytes, runs: RUNS, results: out }, null, 2));
else {
  console.log(`tokenizing ${bytes} bytes (median of ${RUNS} runs)`);
  for (const o of out) {
    console.log(
      `${o.name.padEnd(32)} ${o.mb_per_s.toFixed(2).padStart(7)} MB/s  ${String(o.tokens).padStart(7)} tokens  ` +
        `coil native is ${o.coil_native_speedup.toFixed(2)}× faster  ${o.same_ids_as_llama_cpp ? "ids = llama.cpp" : `ids differ at ${o.first_difference_at}`}`,
    );
  }
}
