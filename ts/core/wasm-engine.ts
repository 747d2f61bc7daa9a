// The wasm engine, the same module on every target: only how its bytes are obtained differs
// (a file read in Node, a fetch of the module's URL in browsers).

import { wrapBindingContext, wrapBindingModel, type BindingContext, type BindingModel, type Engine, type EngineContext, type EngineModel, type RunItemResult } from "./engine.js";

/** The functions wasm-bindgen generates for crates/coil-wasm. */
export interface WasmBinding {
  initSync(arg: { module: BufferSource | WebAssembly.Module; memory?: WebAssembly.Memory; thread_stack_size?: number }): { memory: WebAssembly.Memory };
  default(arg?: { module_or_path: unknown; memory?: WebAssembly.Memory }): Promise<{ memory: WebAssembly.Memory }>;
  engineVersion(): string;
  cpuFeatures(): string[];
  kernelSelfcheck(): string;
  threadCount(): number;
  threadPoolWorkerTasks(): number;
  inspectBytes(prefix: Uint8Array, fileSize: number, arrayHead: number): string;
  loadModelBytes(prefix: Uint8Array, fileSize: number): WasmModel;
}

interface WasmModel extends BindingModel<WasmContext> {
  free(): void;
}

interface WasmContext extends BindingContext {
  run(seqs: Uint32Array, kinds: Uint8Array, gens: Uint32Array, lens: Uint32Array, tokens: Uint32Array): string;
  takeLogits(): Float32Array;
  truncate(seq: number, n: number): void;
  endGenerator(id: number): string;
  free(): void;
}

function wrapContext(c: WasmContext): EngineContext {
  return wrapBindingContext(c, {
    // The wasm engine computes on the calling thread; the promises keep one shape for both engines.
    run: async (s, k, g, l, t) => {
      const results = JSON.parse(c.run(s, k, g, l, t)) as RunItemResult[];
      return { logits: c.takeLogits(), results };
    },
    truncate: async (s, n) => c.truncate(s, n),
    endGenerator: async (id) => c.endGenerator(id),
    release: () => c.free(),
  });
}

function wrapModel(m: WasmModel): EngineModel {
  return wrapBindingModel(m, wrapContext, () => m.free());
}

/** How the wasm engine was started: `singleThreadedReason` says why it runs on one thread, when it
 *  does although more were wanted. */
export interface WasmThreading {
  singleThreadedReason?: string;
}

export function wasmEngine(b: WasmBinding, threading: WasmThreading = {}): Engine {
  return {
    name: "wasm",
    version: () => b.engineVersion(),
    cpuFeatures: () => b.cpuFeatures(),
    threads: () => b.threadCount(),
    singleThreadedReason: threading.singleThreadedReason,
    workerTasks: () => b.threadPoolWorkerTasks(),
    kernelSelfcheck: () => b.kernelSelfcheck(),
    inspectBytes: (prefix, fileSize, arrayHead) => b.inspectBytes(prefix, fileSize, arrayHead),
    loadModelBytes: (prefix, fileSize) => wrapModel(b.loadModelBytes(prefix, fileSize)),
  };
}
