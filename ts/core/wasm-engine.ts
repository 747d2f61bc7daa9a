// The wasm engine, the same module on every target: only how its bytes are obtained differs
// (a file read in Node, a fetch of the module's URL in browsers).

import { wrapBindingModel, type BindingModel, type Engine, type EngineContext, type EngineModel, type RunItemResult } from "./engine.js";

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

interface WasmContext {
  run(seqs: Uint32Array, kinds: Uint8Array, gens: Uint32Array, lens: Uint32Array, tokens: Uint32Array): string;
  takeLogits(): Float32Array;
  position(seq: number): number;
  clear(seq: number): void;
  fork(src: number, dst: number): void;
  rewind(seq: number, tokens: Uint32Array): number;
  checkpoint(seq: number): number;
  history(seq: number): Uint32Array;
  checkpoints(seq: number): Uint32Array;
  checkpointBytes(): number;
  setCheckpointPolicy(interval: number, atEnd: boolean, budgetBytes: number): void;
  truncate(seq: number, n: number): void;
  saveState(seq: number, history: boolean, checkpoints: boolean): Uint8Array;
  loadState(seq: number, bytes: Uint8Array): void;
  saveContext(history: boolean, checkpoints: boolean): Uint8Array;
  loadContext(bytes: Uint8Array): void;
  stateBytesPerSequence(): number;
  memory(): string;
  nVocab(): number;
  createGenerator(seq: number, params: string): number;
  endGenerator(id: number): string;
  releaseGenerator(id: number): void;
  free(): void;
}

function wrapContext(c: WasmContext): EngineContext {
  return {
    // The wasm engine computes on the calling thread; the promises keep one shape for both engines.
    run: async (s, k, g, l, t) => {
      const results = JSON.parse(c.run(s, k, g, l, t)) as RunItemResult[];
      return { logits: c.takeLogits(), results };
    },
    position: (s) => c.position(s),
    clear: (s) => c.clear(s),
    fork: (a, b) => c.fork(a, b),
    rewind: (s, t) => c.rewind(s, t),
    checkpoint: (s) => c.checkpoint(s),
    history: (s) => c.history(s),
    checkpoints: (s) => c.checkpoints(s),
    checkpointBytes: () => c.checkpointBytes(),
    setCheckpointPolicy: (i, e, b) => c.setCheckpointPolicy(i, e, b),
    truncate: async (s, n) => c.truncate(s, n),
    saveState: (s, h, k) => c.saveState(s, h, k),
    loadState: (s, b) => c.loadState(s, b),
    saveContext: (h, k) => c.saveContext(h, k),
    loadContext: (b) => c.loadContext(b),
    stateBytesPerSequence: () => c.stateBytesPerSequence(),
    memory: () => c.memory(),
    nVocab: () => c.nVocab(),
    createGenerator: (seq, params) => c.createGenerator(seq, params),
    endGenerator: async (id) => c.endGenerator(id),
    releaseGenerator: (id) => c.releaseGenerator(id),
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
