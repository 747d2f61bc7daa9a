// `coil inspect` as a user runs it: exit codes, one clear line on errors, JSON shape, both backends.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fixture } from "./helpers.js";

const CLI = fileURLToPath(new URL("../dist/cli.js", import.meta.url));

function coil(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", maxBuffer: 256 << 20, env: { ...process.env, ...env } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe("coil inspect", () => {
  for (const backend of ["native", "wasm"]) {
    it(`--json on ${backend}`, () => {
      const r = coil(["inspect", fixture("models/tiny-jamba.gguf"), "--json", "--backend", backend]);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      const j = JSON.parse(r.out);
      expect(j.summary.architecture).toBe("jamba");
      expect(j.tensors[0]).toEqual(
        expect.objectContaining({ name: expect.any(String), type: expect.any(String), shape: expect.any(Array) }),
      );
      expect(Object.keys(j.tensors[0]).sort()).toEqual(["bytes", "name", "offset", "shape", "type", "type_id"]);
    });
  }

  it("--json summarises long arrays unless --full", () => {
    const s = JSON.parse(coil(["inspect", fixture("vocab/ggml-vocab-gpt-2.gguf"), "--json"]).out);
    expect(s.metadata["tokenizer.ggml.tokens"]).toEqual(
      expect.objectContaining({ type: "array<string>", length: 50257 }),
    );
    expect(s.metadata["tokenizer.ggml.tokens"].head).toHaveLength(16);
    const f = JSON.parse(coil(["inspect", fixture("vocab/ggml-vocab-gpt-2.gguf"), "--json", "--full"]).out);
    expect(f.metadata["tokenizer.ggml.tokens"]).toHaveLength(50257);
  });

  it("the readable summary names the architecture, size, types, tokenizer and layer layout", () => {
    const r = coil(["inspect", fixture("models/tiny-jamba.gguf")]);
    expect(r.code).toBe(0);
    for (const s of ["architecture", "jamba", "parameters", "file size", "bits per weight", "tensor types", "tokenizer", "layout:", "attention+moe", "ssm+dense", "state per sequence"]) {
      expect(r.out).toContain(s);
    }
  });

  it("no file: the built-in default model", () => {
    const r = coil(["inspect"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/architecture\s+mamba/);
  });

  it("COIL_BACKEND=wasm picks the wasm engine", () => {
    const r = coil(["backend", "--json"], { COIL_BACKEND: "wasm" });
    expect(JSON.parse(r.out).backend).toBe("wasm");
    expect(JSON.parse(coil(["backend", "--json"]).out).backend).toBe("native");
  });

  it("when the native addon cannot load, auto falls back to wasm and says why once", () => {
    const env = { NAPI_RS_NATIVE_LIBRARY_PATH: "/no/such/coil.node" };
    const r = coil(["inspect", fixture("models/tiny-mamba2.gguf"), "--json"], env);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).summary.architecture).toBe("mamba2");
    expect(r.err.match(/COIL_NATIVE_UNAVAILABLE/g)).toHaveLength(1);
    expect(r.err).toContain("/no/such/coil.node");
    const b = coil(["backend", "--json"], env);
    expect(JSON.parse(b.out)).toMatchObject({ backend: "wasm", fallbackReason: expect.stringContaining("coil.node") });
    // Asking for native explicitly fails instead of falling back.
    const n = coil(["inspect", fixture("models/tiny-mamba2.gguf"), "--backend", "native"], env);
    expect(n.code).toBe(1);
    expect(n.err).toContain("BACKEND_UNAVAILABLE");
  });

  it("a bad file: exit 1 and one clear line on stderr", () => {
    const dir = mkdtempSync(join(tmpdir(), "coil-cli-"));
    writeFileSync(join(dir, "bad.gguf"), "GGUF\x03\x00\x00\x00garbage");
    for (const backend of ["native", "wasm"]) {
      const r = coil(["inspect", join(dir, "bad.gguf"), "--backend", backend]);
      expect(r.code).toBe(1);
      expect(r.out).toBe("");
      const lines = r.err.trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^coil: .*GGUF_TRUNCATED/);
    }
    const m = coil(["inspect", join(dir, "missing.gguf")]);
    expect(m.code).toBe(1);
    expect(m.err.trim().split("\n")).toHaveLength(1);
    expect(m.err).toContain("missing.gguf");
  });

  it("bad usage: exit 2 with one line", () => {
    for (const args of [["inspect", "--backend", "gpu"], ["frobnicate"], ["inspect", "--nope"]]) {
      const r = coil(args);
      expect(r.code).toBe(2);
      expect(r.err.trim().split("\n")).toHaveLength(1);
    }
  });
});
