// `coil convert` / `coil quantize` and their API, as a user runs them.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync, truncateSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { coil, fixture } from "./helpers.js";

const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const run = (args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", maxBuffer: 64 << 20 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
const tmp = () => mkdtempSync(join(tmpdir(), "coil-convert-"));

describe("convert", () => {
  it("every fixture converts, with the expected layout", async () => {
    const expected: Record<string, [string, string[]]> = {
      mamba: ["mamba", ["ssm"]],
      "falcon-mamba": ["mamba", ["ssm"]],
      mamba2: ["mamba2", ["ssm"]],
      "mamba2-g2": ["mamba2", ["ssm"]],
      jamba: ["jamba", ["ssm", "attention"]],
      "mamba-codestral-layout": ["mamba2", ["ssm"]],
    };
    const d = tmp();
    for (const [name, [arch, kinds]] of Object.entries(expected)) {
      const out = join(d, `${name}.gguf`);
      const seen: number[] = [];
      const report = await coil.convert(fixture(`hf/${name}`), out, { outtype: "f16", onProgress: (p) => seen.push(p.bytesDone) });
      expect(report.architecture).toBe(arch);
      const info = await coil.inspectGguf(out);
      expect(info.summary.architecture).toBe(arch);
      expect([...new Set(info.summary.layers.map((l) => l.kind))].sort()).toEqual([...kinds].sort());
      expect(report.fileSize).toBe(statSync(out).size);
      if (name === "mamba2-g2") {
        expect(report.tokenizer).toBeNull();
        expect(report.warnings.join(" ")).toMatch(/tokenizer/i);
      } else expect(report.tokenizer).not.toBeNull();
    }
    const j = await coil.inspectGguf(join(d, "jamba.gguf"));
    expect(j.summary.layers.map((l) => `${l.kind}+${l.ffn}`)).toEqual([
      "ssm+dense", "attention+moe", "ssm+dense", "ssm+moe", "attention+dense", "ssm+moe",
    ]);
    expect(j.metadata["jamba.attention.head_count_kv"]).toEqual([0, 2, 0, 0, 2, 0]);
  });

  it("CLI: exit 0 and a summary; bad input: one line, exit 1, no file left", () => {
    const d = tmp();
    const ok = run(["convert", fixture("hf/mamba"), "-o", join(d, "m.gguf"), "--outtype", "q8_0"]);
    expect(ok.code).toBe(0);
    for (const line of ok.err.split("\n").filter(Boolean)) expect(line).toMatch(/^coil: warning: /);
    expect(ok.out).toContain("mamba");
    // A checkpoint with a shape that contradicts config.json, a missing tensor, a truncated shard,
    // an unknown architecture: each names the problem, and nothing is written.
    const broken = (mutate: (dir: string) => void) => {
      const dir = join(d, `broken-${Math.random().toString(36).slice(2)}`);
      cpSync(fixture("hf/mamba"), dir, { recursive: true });
      mutate(dir);
      return dir;
    };
    const cases: [string, (dir: string) => void, RegExp][] = [
      ["truncated shard", (x) => truncateSync(join(x, "model.safetensors"), statSync(join(x, "model.safetensors")).size - 100), /model\.safetensors/],
      ["bad header", (x) => writeFileSync(join(x, "model.safetensors"), Buffer.from([8, 0, 0, 0, 0, 0, 0, 0, 123, 34, 120, 34, 58, 49, 44, 125])), /model\.safetensors/],
      ["config contradicts", (x) => {
        const c = JSON.parse(readFileSync(join(x, "config.json"), "utf8"));
        c.hidden_size = 96;
        writeFileSync(join(x, "config.json"), JSON.stringify(c));
      }, /shape|96/i],
      ["unknown architecture", (x) => {
        const c = JSON.parse(readFileSync(join(x, "config.json"), "utf8"));
        c.architectures = ["LlamaForCausalLM"];
        writeFileSync(join(x, "config.json"), JSON.stringify(c));
      }, /LlamaForCausalLM/],
    ];
    for (const [what, mutate, pattern] of cases) {
      const dir = broken(mutate);
      const out = join(dir, "out.gguf");
      const r = run(["convert", dir, "-o", out]);
      expect(r.code, what).toBe(1);
      const lines = r.err.trim().split("\n");
      expect(lines, what).toHaveLength(1);
      expect(lines[0], what).toMatch(pattern);
      expect(existsSync(out), what).toBe(false);
      expect(readdirSync(dir).filter((f) => f.includes("tmp")), what).toEqual([]);
    }
  });

  it("abort leaves no output", async () => {
    const d = tmp();
    const out = join(d, "x.gguf");
    const c = new AbortController();
    const p = coil.convert(fixture("hf/jamba"), out, { signal: c.signal, onProgress: () => c.abort() });
    c.abort();
    await expect(p).rejects.toMatchObject({ name: "AbortError" });
    expect(readdirSync(d)).toEqual([]);
  });
});

describe("quantize", () => {
  it("CLI and API: types follow llama-quantize's rules; bad type is a usage error", async () => {
    const d = tmp();
    const src = join(d, "m.gguf");
    await coil.convert(fixture("hf/mamba2"), src, { outtype: "f32" });
    const r = run(["quantize", src, join(d, "q.gguf"), "q4_0", "--json"]);
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out);
    const byName = Object.fromEntries(rep.tensors.map((t: { name: string; to: string }) => [t.name, t.to]));
    expect(byName["blk.0.ssm_in.weight"]).toBe("Q4_0");
    expect(byName["blk.0.ssm_conv1d.weight"]).toBe("F32");
    expect(byName["blk.0.ssm_a"]).toBe("F32");
    const bad = run(["quantize", src, join(d, "z.gguf"), "q9_9"]);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain("q9_9");
    expect(existsSync(join(d, "z.gguf"))).toBe(false);
  });
});
