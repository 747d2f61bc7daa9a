// Sequence benchmarks (issue 9), on random-weight models of the mamba/mamba2-130m shapes (written
// by bench/models.mjs into bench/.models):
//  1. Aggregate generation throughput with 8 sequences generating concurrently (batched into one
//     engine call per step) against 1 sequence.
//  2. A 10-turn chat (each turn ~200 tokens of user text, 50 generated): time to first token per
//     turn, coil's ChatSession against node-llama-cpp's LlamaChatSession in the same run.
//   npm run build && node bench/sequences.mjs [--threads 2] [--model bench/.models/mamba2-130m-q8_0.gguf] [--json]
//     [--skip-throughput] [--skip-chat] [--skip-peer] [--turns 10] [--tokens 64]
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as coil from "../dist/node/index.js";
import { importPeer } from "./peers.mjs";

const { values } = parseArgs({
  options: {
    threads: { type: "string", default: "2" },
    model: { type: "string", default: "" },
    tokens: { type: "string", default: "64" },
    turns: { type: "string", default: "10" },
    "skip-throughput": { type: "boolean", default: false },
    "skip-chat": { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    "skip-peer": { type: "boolean", default: false },
  },
});
const root = fileURLToPath(new URL("..", import.meta.url));
const models = values.model ? [values.model] : [`${root}bench/.models/mamba-130m-q8_0.gguf`, `${root}bench/.models/mamba2-130m-q8_0.gguf`];
for (const m of models) if (!existsSync(m)) throw new Error(`${m} is missing: run node bench/models.mjs first (it writes the benchmark models)`);
const threads = Number(values.threads);
const now = () => performance.now() / 1000;
const log = (s) => process.stderr.write(`[bench] ${s}\n`);

// ---- 1. Parallel generation throughput ----
async function throughput(file, nSeq, nTok) {
  const model = await coil.loadModel(file, { backend: "native" });
  const ctx = model.createContext({ sequences: nSeq, threads });
  const opts = { temperature: 0, maxTokens: nTok, ignoreEos: true };
  // Warm-up (page in the weights, size the buffers).
  await Promise.all(Array.from({ length: nSeq }, (_, i) => ctx.sequence(i).generate([10 + i], { ...opts, maxTokens: 4 }).complete()));
  for (let i = 0; i < nSeq; i++) ctx.sequence(i).clear();
  const t0 = now();
  const rs = await Promise.all(Array.from({ length: nSeq }, (_, i) => ctx.sequence(i).generate([20 + i], opts).complete()));
  const dt = now() - t0;
  const total = rs.reduce((a, r) => a + r.generatedTokens, 0);
  const stats = { ...ctx.batchStats };
  await ctx.dispose();
  model.dispose();
  return { sequences: nSeq, tokens: total, seconds: dt, tokens_per_s: total / dt, max_batch: stats.maxSequences };
}

// ---- 2. Multi-turn chat, time to first token per turn ----
const WORDS = "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so no more out up said what its about than into them can only other time new some could these two may first then do any like my now over such our man me even most made after also did many before must through back years where much your way down should because each just those people how too little state good very make world still own see men work long here get both between life being under never day same another know while last might us great old year off come since against go came right used take three".split(" ");
function userText(turn, nWords = 160) {
  let s = "";
  let x = 12345 + turn * 7919;
  for (let i = 0; i < nWords; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    s += (i ? " " : "") + WORDS[x % WORDS.length];
  }
  return s;
}

async function chatCoil(file, turns) {
  const model = await coil.loadModel(file, { backend: "native" });
  const ctx = model.createContext({ threads });
  const chat = new coil.ChatSession(ctx.sequence(0));
  const out = [];
  for (let t = 0; t < turns; t++) {
    const t0 = now();
    let ttft = 0;
    const gen = chat.send(userText(t), { temperature: 0, maxTokens: 50 });
    for await (const _ of gen) if (!ttft) ttft = now() - t0;
    const r = await gen.result;
    out.push({ turn: t + 1, ttft_ms: ttft * 1000, total_ms: (now() - t0) * 1000, prompt_tokens: chat.lastPromptTokens, reused: chat.lastReusedTokens, generated: r.generatedTokens });
    log(`coil turn ${t + 1}: TTFT ${(ttft * 1000).toFixed(0)} ms, prompt ${chat.lastPromptTokens} (reused ${chat.lastReusedTokens}), ${r.generatedTokens} tokens`);
  }
  await ctx.dispose();
  model.dispose();
  return out;
}

/** coil's fallback chat layout (renderChat without a template), for the peer. */
function render(messages) {
  let out = "";
  for (const m of messages) out += `${m.role === "user" ? "User" : "Assistant"}: ${m.content.replace(/^ /, "")}\n`;
  return `${out}Assistant:`;
}

// node-llama-cpp driven the way a chat server drives llama.cpp: each turn the conversation is
// rendered, turned into tokens (the tokens the sequence holds as far as their text agrees, then
// the rest tokenized — the same prompt construction as coil's ChatSession), the sequence is
// aligned to them with node-llama-cpp's own adaptStateToTokens (it keeps the common prefix where
// it can), and only what follows is evaluated. (LlamaChatSession itself took over a second per
// generated token on these recurrent models, so it is not the baseline.)
async function chatNlc(file, turns) {
  const nlc = await importPeer("node-llama-cpp");
  const llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: 8192, threads, sequences: 1 });
  const seq = context.getSequence();
  const messages = [];
  const out = [];
  for (let t = 0; t < turns; t++) {
    messages.push({ role: "user", content: userText(t) });
    const rendered = render(messages);
    const t0 = now();
    const held = seq.contextTokens;
    let k = 0;
    let at = 0;
    for (; k < held.length; k++) {
      const p = model.detokenize([held[k]], true);
      if (!rendered.startsWith(p, at)) break;
      at += p.length;
    }
    const tokens = [...held.slice(0, k), ...model.tokenize(rendered.slice(at), true)];
    await seq.adaptStateToTokens(tokens, false);
    const kept = seq.nextTokenIndex;
    let ttft = 0;
    const gen = [];
    for await (const tok of seq.evaluate(tokens.slice(kept), { temperature: 0 })) {
      if (!ttft) ttft = now() - t0;
      gen.push(tok);
      if (gen.length >= 50) break;
    }
    messages.push({ role: "assistant", content: model.detokenize(gen) });
    out.push({ turn: t + 1, ttft_ms: ttft * 1000, total_ms: (now() - t0) * 1000, prompt_tokens: tokens.length, reused: kept, generated: gen.length });
    log(`node-llama-cpp turn ${t + 1}: TTFT ${(ttft * 1000).toFixed(0)} ms, prompt ${tokens.length} (kept ${kept}), ${gen.length} tokens`);
  }
  await context.dispose();
  await model.dispose();
  return out;
}

const report = { threads, throughput: [], chat: [] };
for (const file of models) {
  const name = file.split("/").at(-1).replace(".gguf", "");
  if (!values["skip-throughput"]) {
    const one = await throughput(file, 1, Number(values.tokens));
    const eight = await throughput(file, 8, Number(values.tokens));
    report.throughput.push({ model: name, one, eight, speedup: eight.tokens_per_s / one.tokens_per_s });
    log(`${name}: 1 seq ${one.tokens_per_s.toFixed(1)} t/s, 8 seq ${eight.tokens_per_s.toFixed(1)} t/s aggregate (${(eight.tokens_per_s / one.tokens_per_s).toFixed(2)}x, batches of up to ${eight.max_batch})`);
  }
  if (values["skip-chat"]) continue;
  const c = await chatCoil(file, Number(values.turns));
  log(`${name} chat coil TTFT ms: ${c.map((r) => r.ttft_ms.toFixed(0)).join(" ")}`);
  let n = null;
  if (!values["skip-peer"]) {
    n = await chatNlc(file, Number(values.turns));
    log(`${name} chat node-llama-cpp TTFT ms: ${n.map((r) => r.ttft_ms.toFixed(0)).join(" ")}`);
  }
  report.chat.push({ model: name, coil: c, nlc: n });
}

if (values.json) console.log(JSON.stringify(report, null, 2));
else {
  console.log(`Throughput, ${threads} threads, ${values.tokens} tokens per sequence (greedy), native:\n`);
  console.log("| model | 1 sequence t/s | 8 sequences t/s (aggregate) | speed-up |");
  console.log("|---|---:|---:|---:|");
  for (const r of report.throughput) console.log(`| ${r.model} | ${r.one.tokens_per_s.toFixed(1)} | ${r.eight.tokens_per_s.toFixed(1)} | ${r.speedup.toFixed(2)}× |`);
  for (const c of report.chat) {
    console.log(`\n10-turn chat on ${c.model}: time to first token (ms) per turn\n`);
    console.log("| turn | coil prompt tokens (reused) | coil TTFT | node-llama-cpp prompt tokens (kept) | node-llama-cpp TTFT |");
    console.log("|---:|---:|---:|---:|---:|");
    c.coil.forEach((r, i) => {
      const n = c.nlc?.[i];
      console.log(`| ${r.turn} | ${r.prompt_tokens} (${r.reused}) | ${r.ttft_ms.toFixed(1)} | ${n ? `${n.prompt_tokens} (${n.reused})` : "—"} | ${n ? n.ttft_ms.toFixed(1) : "—"} |`);
    });
    if (c.nlc) console.log(`\nratio at turn ${c.coil.length} (node-llama-cpp / coil): ${(c.nlc.at(-1).ttft_ms / c.coil.at(-1).ttft_ms).toFixed(2)}×`);
  }
}
