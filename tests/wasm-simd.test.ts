// The wasm module really contains SIMD: validate it, disassemble it and count v128 instructions,
// and check that an engine without SIMD support would reject it.
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import wabtInit from "wabt";

const WASM = new URL("../wasm-pkg/coil_wasm_bg.wasm", import.meta.url);

describe("wasm build", () => {
  it("uses v128 instructions", async () => {
    const bytes = new Uint8Array(readFileSync(WASM));
    expect(WebAssembly.validate(bytes)).toBe(true);
    const wabt = await wabtInit();
    const mod = wabt.readWasm(bytes, { readDebugNames: false, simd: true } as never);
    const wat = mod.toText({ foldExprs: false, inlineExport: false });
    mod.destroy();
    const simdOps = wat.match(/\b(v128\.\w+|f32x4\.\w+|i32x4\.\w+|i8x16\.\w+|i16x8\.\w+)/g) ?? [];
    expect(simdOps.length).toBeGreaterThan(10);
    expect(simdOps.some((op) => op.startsWith("f32x4."))).toBe(true);
    // Without the SIMD feature the same module does not even parse.
    const noSimd = await wabtInit();
    expect(() => noSimd.readWasm(bytes, { simd: false } as never)).toThrow();
  });
});
