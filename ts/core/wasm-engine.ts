// The wasm engine, the same module on every target: only how its bytes are obtained differs
// (a file read in Node, a fetch of the module's URL in browsers).

import { wrapBindingModel, type BindingModel, type Engine, type EngineContext, type EngineModel } from "./engine.js";

/** The functions wasm-bindgen generates for crates/coil-wasm. */
export interface WasmBinding {
  initSync(arg: { module: BufferSource | WebAssembly.Module }): unknown;
  default(arg?: { module_or_path: unknown }): Promise<unknown>;
  engineVersion(): string;
  cpuFeatures(): string[];
  kernelSelfcheck(): string;
  inspectBytes(prefix: Uint8Array, fileSize: number, arrayHead: number): string;
  loadModelBytes(prefix: Uint8Array, fileSize: number): WasmModel;
}

interface WasmModel extends BindingModel<WasmContext> {
  free(): void;
}

interface WasmGenerator {
  free(): void;
}

interface WasmContext {
  createGenerator(seq: number, params: string): WasmGenerator;
  generatorStep(g: WasmGenerator, feed: Uint32Array): string;
  generatorEnd(g: WasmGenerator): string;
  evaluate(tokens: Uint32Array, seqs: Uint32Array, logits: Uint8Array): Float32Array;
  position(seq: number): number;
  clear(seq: number): void;
  stateBytesPerSequence(): number;
  memory(): string;
  nVocab(): number;
  free(): void;
}

function wrapContext(c: WasmContext): EngineContext {
  return {
    // The wasm engine computes on the calling thread; the promise keeps one shape for both engines.
    evaluate: async (t, s, l) => c.evaluate(t, s, l),
    position: (s) => c.position(s),
    clear: (s) => c.clear(s),
    stateBytesPerSequence: () => c.stateBytesPerSequence(),
    memory: () => c.memory(),
    nVocab: () => c.nVocab(),
    createGenerator: (seq, params) => {
      const g = c.createGenerator(seq, params);
      let freed = false;
      return {
        step: async (f) => c.generatorStep(g, f),
        finish: async () => c.generatorEnd(g),
        release: () => {
          if (!freed) g.free();
          freed = true;
        },
      };
    },
    release: () => c.free(),
  };
}

function wrapModel(m: WasmModel): EngineModel {
  return wrapBindingModel(m, wrapContext, () => m.free());
}

export function wasmEngine(b: WasmBinding): Engine {
  return {
    name: "wasm",
    version: () => b.engineVersion(),
    cpuFeatures: () => b.cpuFeatures(),
    kernelSelfcheck: () => b.kernelSelfcheck(),
    inspectBytes: (prefix, fileSize, arrayHead) => b.inspectBytes(prefix, fileSize, arrayHead),
    loadModelBytes: (prefix, fileSize) => wrapModel(b.loadModelBytes(prefix, fileSize)),
  };
}
