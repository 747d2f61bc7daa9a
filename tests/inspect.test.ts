// The same GGUF cases on the native and the wasm engine: results must be identical, and right.
import { describe, expect, it } from "vitest";
import { pathToFileURL } from "node:url";
import { readFileSync, statSync } from "node:fs";
import { BACKENDS, coil, DEFAULT_MODEL, fixture, MODELS, VOCABS } from "./helpers.js";

const ALL = [...VOCABS, ...MODELS];

describe("inspectGguf: native and wasm agree", () => {
  for (const rel of ALL) {
    it(rel, async () => {
      const [n, w] = await Promise.all(BACKENDS.map((backend) => coil.inspectGguf(fixture(rel), { backend })));
      expect(w).toEqual(n);
      expect(n.file_size).toBe(statSync(fixture(rel)).size);
      expect([2, 3]).toContain(n.version);
    });
  }
});

describe("inspectGguf: every source kind gives the same result", () => {
  const rel = "vocab/ggml-vocab-gpt-neox.gguf"; // > 1 MiB of header: exercises the growing-prefix reads
  for (const backend of BACKENDS) {
    it(`${backend}: path, file URL, Buffer, ArrayBuffer, offset view, Blob`, async () => {
      const p = fixture(rel);
      const ref = await coil.inspectGguf(p, { backend });
      const buf = readFileSync(p);
      const padded = new Uint8Array(buf.length + 24);
      padded.set(buf, 13);
      const sources = [
        pathToFileURL(p),
        buf,
        buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength),
        padded.subarray(13, 13 + buf.length),
        new Blob([buf]),
      ];
      for (const s of sources) expect(await coil.inspectGguf(s, { backend })).toEqual(ref);
    });
  }
});

describe("inspectGguf: facts", () => {
  it("vocab files", async () => {
    const neox = await coil.inspectGguf(fixture("vocab/ggml-vocab-gpt-neox.gguf"));
    expect(neox.metadata["tokenizer.ggml.model"]).toBe("gpt2");
    expect(neox.metadata["tokenizer.ggml.pre"]).toBe("mpt");
    expect(neox.summary.tokenizer).toEqual({ model: "gpt2", vocab_size: 50432, pre: "mpt" });
    expect(neox.metadata_types["tokenizer.ggml.tokens"]).toBe("array<string>");
    expect((neox.metadata["tokenizer.ggml.tokens"] as string[]).length).toBe(50432); // 50277 padded
    expect(neox.tensors).toEqual([]);
    const spm = await coil.inspectGguf(fixture("vocab/ggml-vocab-llama-spm.gguf"));
    expect(spm.summary.tokenizer?.model).toBe("llama");
    expect(spm.summary.tokenizer?.vocab_size).toBe(32000);
  });

  it("arrays are summarised on request", async () => {
    const s = await coil.inspectGguf(fixture("vocab/ggml-vocab-gpt-neox.gguf"), { arrayHead: 16 });
    const t = s.metadata["tokenizer.ggml.tokens"] as { type: string; length: number; head: string[] };
    expect(t.type).toBe("array<string>");
    expect(t.length).toBe(50432);
    expect(t.head).toHaveLength(16);
    expect(t.head[0]).toBe("<|endoftext|>");
  });

  it("model layouts: mamba, mamba2, jamba", async () => {
    const m1 = await coil.inspectGguf(fixture("models/tiny-mamba.gguf"));
    expect(m1.summary.architecture).toBe("mamba");
    expect(m1.summary.layers.map((l) => l.kind)).toEqual(["ssm", "ssm"]);
    expect(m1.summary.ssm).toMatchObject({ d_inner: 128, d_state: 16, d_conv: 4, dt_rank: 4 });
    // (d_conv-1)*d_inner + d_state*d_inner floats per layer, f32, 2 layers
    expect(m1.summary.recurrent_state_bytes_per_sequence).toBe(2 * 4 * (3 * 128 + 16 * 128));
    const blk0 = m1.tensors.find((t) => t.name === "blk.0.ssm_in.weight")!;
    expect(blk0.shape).toEqual([64, 256]);
    expect(m1.tensors.find((t) => t.name === "blk.0.ssm_a")!.shape).toEqual([16, 128]);

    const m2 = await coil.inspectGguf(fixture("models/tiny-mamba2.gguf"));
    expect(m2.summary.architecture).toBe("mamba2");
    expect(m2.tensors.find((t) => t.name === "blk.0.ssm_a")!.shape).toEqual([1, 8]);
    expect(m2.tensors.find((t) => t.name === "blk.0.ssm_norm.weight")!.shape).toEqual([64, 2]);

    const j = await coil.inspectGguf(fixture("models/tiny-jamba.gguf"));
    expect(j.summary.layers).toEqual([
      { index: 0, kind: "ssm", ffn: "dense" },
      { index: 1, kind: "attention", ffn: "moe" },
      { index: 2, kind: "ssm", ffn: "dense" },
      { index: 3, kind: "ssm", ffn: "moe" },
    ]);
  });

  it("the built-in default model is the trained Mamba-2 with its own vocabulary", async () => {
    const d = await coil.inspectGguf(DEFAULT_MODEL);
    expect(d.summary.architecture).toBe("mamba2");
    expect(d.metadata["general.name"]).toBe("coil Shakespeare Mamba-2 2.9M");
    expect(d.metadata["tokenizer.ggml.pre"]).toBe("gpt-2");
    expect(readFileSync(DEFAULT_MODEL).length).toBeGreaterThan(1 << 20);
  });
});

describe("backends", () => {
  it("both report themselves and their kernels match the scalar reference", async () => {
    const n = await coil.backendInfo({ backend: "native" });
    const w = await coil.backendInfo({ backend: "wasm" });
    expect(n.backend).toBe("native");
    expect(w.backend).toBe("wasm");
    expect(w.cpuFeatures).toContain("simd128");
    // Every kernel family has its simd128 path in the wasm build, checked against its reference.
    const wasmPaths = w.kernels.map((k) => k.path);
    for (const family of ["dot", "exp", "silu", "rms_norm", "group_rms_norm_gated", "ssm_conv", "ssm_scan_mamba1", "ssm_scan_mamba2"]) {
      expect(wasmPaths).toContain(`${family}/simd128`);
    }
    for (const t of ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]) {
      expect(wasmPaths).toContain(`matmul/simd128/${t}`);
    }
    // Exact checks (0 = pass): each token of a batch (pre-decoded panels, several token tiles)
    // equals the same token alone (a single token takes the generation tiles); the SIMD f16 conversions equal the scalar one on all 65536
    // halves, and the fast one's infinity/NaN detection triggers exactly when it must.
    const exact = Object.fromEntries(w.kernels.map((k) => [k.path, k.max_rel_diff]));
    expect(exact["matmul/simd128/batch=alone"]).toBe(0);
    // ...and every matrix product gives the bits of the scalar canonical order (docs/numerics.md),
    // on wasm and on each native path.
    expect(exact["matmul/simd128/canon"]).toBe(0);
    const nativeCanon = n.kernels.filter((k) => k.path.endsWith("/canon"));
    expect(nativeCanon.map((k) => k.path)).toContain("matmul/scalar/canon");
    for (const k of nativeCanon) expect(k.max_rel_diff, k.path).toBe(0);
    expect(exact["f16conv/simd128"]).toBe(0);
    expect(n.kernels.find((k) => k.path === "matmul/scalar/batch=alone")?.max_rel_diff).toBe(0);
    // Native: the x86 paths this CPU runs (AVX2 at least on any x86-64 this project targets).
    const nativePaths = n.kernels.map((k) => k.path);
    expect(nativePaths).toContain("dot/scalar");
    if (n.cpuFeatures.includes("avx2")) expect(nativePaths.some((p) => p.includes("avx2"))).toBe(true);
    if (n.cpuFeatures.includes("avx512f")) expect(nativePaths.some((p) => p.includes("avx512"))).toBe(true);
    for (const k of [...n.kernels, ...w.kernels]) expect(k.max_rel_diff).toBeLessThan(1e-5);
    expect(n.version).toBe(w.version);
  });
});
