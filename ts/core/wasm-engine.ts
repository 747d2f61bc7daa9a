// The wasm engine, the same module on every target: only how its bytes are obtained differs
// (a file read in Node, a fetch of the module's URL in browsers).

import type { Engine } from "./engine.js";

/** The functions wasm-bindgen generates for crates/coil-wasm. */
export interface WasmBinding {
  initSync(arg: { module: BufferSource | WebAssembly.Module }): unknown;
  default(arg?: { module_or_path: unknown }): Promise<unknown>;
  engineVersion(): string;
  cpuFeatures(): string[];
  kernelSelfcheck(): string;
  inspectBytes(prefix: Uint8Array, fileSize: number, arrayHead: number): string;
}

export function wasmEngine(b: WasmBinding): Engine {
  return {
    name: "wasm",
    version: () => b.engineVersion(),
    cpuFeatures: () => b.cpuFeatures(),
    kernelSelfcheck: () => b.kernelSelfcheck(),
    inspectBytes: (prefix, fileSize, arrayHead) => b.inspectBytes(prefix, fileSize, arrayHead),
  };
}
