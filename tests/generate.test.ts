// Generation on both engines: greedy and seeded sampling identical across targets, stop strings,
// abort, position bookkeeping, chat state reuse, and the CLI.
import { beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BACKENDS, coil, fixture, unknownArchGguf } from "./helpers.js";

const TINY = fixture("models/tiny-mamba.gguf");
const dir = mkdtempSync(join(tmpdir(), "coil-generate-"));
const MAMBA = join(dir, "mamba.gguf"); // converted HF fixture with a real BPE vocabulary
const UNKNOWN_ARCH = join(dir, "llama.gguf");
beforeAll(async () => {
  writeFileSync(UNKNOWN_ARCH, await unknownArchGguf());
  await coil.convert(fixture("hf/mamba"), MAMBA, { outtype: "f32" });
}, 60_000);

async function generate(file: string, backend: "native" | "wasm", prompt: string | number[], opts: coil.GenerateOptions) {
  await using model = await coil.loadModel(file, { backend });
  await using ctx = model.createContext();
  const seq = ctx.sequence(0);
  const chunks: string[] = [];
  const gen = seq.generate(prompt, opts);
  for await (const c of gen) chunks.push(c.text);
  const r = await gen.result;
  return { ...r, chunks, position: seq.position };
}

// The golden run of crates/coil-core/tests/generate_tiny.rs, through the JS API.
const GOLDEN_OPTS: coil.GenerateOptions = {
  samplers: ["logit_bias", "penalties", "temperature", "top_k", "typical_p", "top_p", "min_p"],
  logitBias: { 0: -Infinity },
  penalties: { lastN: 16, repeat: 1.3, frequency: 0.1, presence: 0.2 },
  temperature: 4,
  topK: 40,
  typicalP: 0.98,
  topP: 0.95,
  minP: 0.02,
  seed: 42,
  maxTokens: 32,
};
const GOLDEN = [113, 113, 147, 35, 35, 51, 51, 83, 148, 103, 103, 32, 197, 160, 63, 63, 63, 254, 254, 106, 172, 172, 55, 55, 55, 55, 227, 5, 232, 192, 190, 125];

describe("determinism across targets", () => {
  it("greedy: identical tokens on native and wasm", async () => {
    for (const [file, prompt] of [[TINY, "Hello"], [MAMBA, "ROMEO:"]] as const) {
      const [n, w] = await Promise.all(BACKENDS.map((b) => generate(file, b, prompt, { temperature: 0, maxTokens: 24 })));
      expect(n.tokens.length).toBeGreaterThan(0);
      expect(w.tokens).toEqual(n.tokens);
      expect(w.text).toEqual(n.text);
    }
  });
  it("seeded sampling: the core's golden ids on both targets; same seed same tokens, other seed other tokens", async () => {
    for (const backend of BACKENDS) {
      const r = await generate(TINY, backend, [72, 101, 108, 108, 111], GOLDEN_OPTS);
      expect(r.tokens).toEqual(GOLDEN);
      expect(r.stopReason).toBe("maxTokens");
    }
    const opts = { temperature: 1.2, topK: 0, topP: 1, minP: 0, seed: 7, maxTokens: 40 };
    const [a, b] = await Promise.all(BACKENDS.map((bk) => generate(MAMBA, bk, "ROMEO:", opts)));
    expect(b.tokens).toEqual(a.tokens);
    const again = await generate(MAMBA, "native", "ROMEO:", opts);
    expect(again.tokens).toEqual(a.tokens);
    const other = await generate(MAMBA, "native", "ROMEO:", { ...opts, seed: 8 });
    expect(other.tokens).not.toEqual(a.tokens);
  });
  it("penalties with an empty window change nothing", async () => {
    const base = { temperature: 1, seed: 3, maxTokens: 20 };
    const a = await generate(MAMBA, "native", "ROMEO:", base);
    const b = await generate(MAMBA, "native", "ROMEO:", { ...base, penalties: { lastN: 0, repeat: 1.5, presence: 1 } });
    expect(b.tokens).toEqual(a.tokens);
  });
});

describe("stop strings, EOS, maxTokens, positions", () => {
  it("a stop string spanning tokens ends generation and is never emitted", async () => {
    for (const backend of BACKENDS) {
      const free = await generate(MAMBA, backend, "ROMEO:", { temperature: 1, seed: 11, maxTokens: 60 });
      // A stop string that starts in one token and ends in a later one.
      const text = free.text;
      expect(text.length).toBeGreaterThan(12);
      const start = Math.floor(text.length / 2);
      const stop = text.slice(start, start + 5);
      const r = await generate(MAMBA, backend, "ROMEO:", { temperature: 1, seed: 11, maxTokens: 60, stop: [stop] });
      expect(r.stopReason).toBe("stop");
      expect(r.text).toBe(text.slice(0, text.indexOf(stop)));
      expect(r.chunks.join("")).toBe(r.text);
      expect(r.text.includes(stop)).toBe(false);
      // ...and at the very start.
      const first = await generate(MAMBA, backend, "ROMEO:", { temperature: 1, seed: 11, maxTokens: 60, stop: [text.slice(0, 3)] });
      expect(first.stopReason).toBe("stop");
      expect(first.text).toBe("");
    }
  });
  it("EOS ends generation without text; position counts the prompt and every generated token", async () => {
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(MAMBA, { backend });
      const eos = model.vocab.eos ?? 0;
      const r = await generate(MAMBA, backend, "ROMEO:", { temperature: 0, logitBias: { [eos]: 100 }, maxTokens: 5 });
      expect(r.stopReason).toBe("eos");
      expect(r.tokens).toEqual([eos]);
      expect(r.text).toBe("");
      expect(r.position).toBe(r.promptTokens + 1);
      const m = await generate(MAMBA, backend, "ROMEO:", { temperature: 0, maxTokens: 7, ignoreEos: true });
      expect(m.stopReason).toBe("maxTokens");
      expect(m.generatedTokens).toBe(7);
      expect(m.position).toBe(m.promptTokens + 7);
    }
  });
});

describe("abort", () => {
  it("returns what was generated so far and leaves the sequence usable at the right position", async () => {
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(MAMBA, { backend });
      await using ctx = model.createContext();
      const seq = ctx.sequence(0);
      const c = new AbortController();
      let n = 0;
      const gen = seq.generate("ROMEO:", { temperature: 0, maxTokens: 100, signal: c.signal, onToken: () => ++n === 5 && c.abort() });
      const r = await gen.complete();
      expect(r.stopReason).toBe("abort");
      expect(r.generatedTokens).toBe(5);
      expect(seq.position).toBe(r.promptTokens + 5);
      // Continuing equals generating the same total in one go.
      const more = await seq.generate(model.tokenize(" and", { addBos: false }), { temperature: 0, maxTokens: 3 }).complete();
      expect(more.generatedTokens).toBe(3);
      expect(seq.position).toBe(r.promptTokens + 5 + more.promptTokens + 3);
    }
  });
  it("aborted in the middle of a character's UTF-8 bytes: no broken text is streamed", async () => {
    for (const backend of BACKENDS) {
      await using model = await coil.loadModel(TINY, { backend });
      await using ctx = model.createContext();
      const seq = ctx.sequence(0);
      const c = new AbortController();
      const chunks: string[] = [];
      // tiny-mamba's vocabulary is one token per byte: force 0xC3, the first byte of "é".
      const gen = seq.generate([72, 105], { temperature: 0, logitBias: { 0xc3: 1000 }, maxTokens: 10, signal: c.signal, onToken: (ch) => (chunks.push(ch.text), c.abort()) });
      const r = await gen.complete();
      expect(r.stopReason).toBe("abort");
      expect(chunks[0]).toBe(""); // the lone lead byte was held back, not emitted broken
      expect(seq.position).toBe(2 + 1);
    }
  });
});

describe("chat", () => {
  it("reuses the sequence's state between turns", async () => {
    await using model = await coil.loadModel(MAMBA);
    await using ctx = model.createContext();
    const chat = new coil.ChatSession(ctx.sequence(0), { system: "Speak in verse." });
    const r1 = await chat.send("Who art thou?", { temperature: 0, maxTokens: 8 }).complete();
    expect(chat.lastReusedTokens).toBe(0);
    const r2 = await chat.send("And whence?", { temperature: 0, maxTokens: 8 }).complete();
    expect(r1.generatedTokens + r2.generatedTokens).toBeGreaterThan(0);
    // The second turn re-processed nothing it had seen.
    expect(chat.lastReusedTokens).toBeGreaterThan(0);
    expect(chat.messages.map((m) => m.role)).toEqual(["system", "user", "assistant", "user", "assistant"]);
  });
});

describe("coil generate", () => {
  const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  it("streams, --json, and identical tokens on both backends", () => {
    const a = run(["generate", "-m", MAMBA, "-p", "ROMEO:", "-n", "12", "--temp", "0", "--json"]);
    expect(a.code).toBe(0);
    const j = JSON.parse(a.out);
    expect(Object.keys(j).sort()).toEqual(["prompt_tokens", "stop_reason", "text", "tokens"]);
    const b = JSON.parse(run(["generate", "-m", MAMBA, "-p", "ROMEO:", "-n", "12", "--temp", "0", "--json", "--backend", "wasm"]).out);
    expect(b.tokens).toEqual(j.tokens);
    const s = run(["generate", "-m", MAMBA, "-p", "ROMEO:", "-n", "12", "--temp", "0"]);
    expect(s.code).toBe(0);
    expect(s.out).toBe(`ROMEO:${j.text}\n`);
  });
  it("Ctrl-C stops cleanly and prints what was generated", async () => {
    const { spawn } = await import("node:child_process");
    const child = spawn(process.execPath, [CLI, "generate", "-m", MAMBA, "-p", "ROMEO:", "-n", "100000000", "--temp", "1", "--seed", "5"]);
    let out = "";
    let sent = false;
    child.stdout.on("data", (d) => {
      out += d;
      if (out.length > 40 && !sent) {
        sent = true; // once: a second Ctrl-C force-quits, as usual
        child.kill("SIGINT");
      }
    });
    const code = await new Promise((r) => child.on("close", r));
    expect(code).toBe(0);
    expect(out.startsWith("ROMEO:")).toBe(true);
    expect(out.length).toBeGreaterThan(40);
  });
  it("coil chat: turns from stdin, reusing state", () => {
    const r = spawnSync(process.execPath, [CLI, "chat", "-m", MAMBA, "-n", "5", "--temp", "0"], {
      input: "Hello there\nAnd again\n",
      encoding: "utf8",
    });
    expect(r.status).toBe(0);
    const stats = [...r.stdout.matchAll(/\[(\d+) tokens, (\w+); reused (\d+) of (\d+) prompt tokens\]/g)];
    expect(stats).toHaveLength(2);
    expect(Number(stats[0]![3])).toBe(0);
    expect(Number(stats[1]![3])).toBeGreaterThan(0);
  });
  it("missing file, unsupported architecture, bad option: one clear line, non-zero", () => {
    for (const [args, code] of [
      [["generate", "-m", "/no/such.gguf", "-p", "x"], 1],
      [["generate", "-m", UNKNOWN_ARCH, "-p", "x"], 1],
      [["generate", "-m", MAMBA, "-p", "x", "--temp", "hot"], 2],
      [["generate", "-m", MAMBA], 2],
    ] as const) {
      const r = run([...args]);
      expect(r.code, args.join(" ")).toBe(code);
      expect(r.err.trim().split("\n"), args.join(" ")).toHaveLength(1);
    }
  });
});
