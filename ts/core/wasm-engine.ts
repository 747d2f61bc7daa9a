// The wasm engine, the same module on every target: only how its bytes are obtained differs
// (a file read in Node, a fetch of the module's URL in browsers).

import type { Engine, EngineContext, EngineModel } from "./engine.js";

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

interface WasmModel {
  info(arrayHead: number): string;
  tokenize(text: string, addSpecial: boolean | undefined, parseSpecial: boolean): Uint32Array;
  detokenize(ids: Uint32Array, special: boolean): string;
  pieces(ids: Uint32Array, special: boolean): string[];
  vocab(): string;
  token(id: number): string;
  hasWeights(): boolean;
  wantsWeights(vocabOnly: boolean): boolean;
  weightsPlan(): Float64Array;
  pushTensorBytes(tensorIndex: number, offset: number, bytes: Uint8Array): void;
  finishWeights(): void;
  createContext(nSeqMax: number, nThreads: number): WasmContext;
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
  return {
    hasWeights: () => m.hasWeights(),
    wantsWeights: (v) => m.wantsWeights(v),
    weightsPlan: () => m.weightsPlan(),
    pushTensorBytes: (i, o, b) => m.pushTensorBytes(i, o, b),
    finishWeights: () => m.finishWeights(),
    createContext: (n, t) => wrapContext(m.createContext(n, t)),
    info: (h) => m.info(h),
    tokenize: (t, a, p) => m.tokenize(t, a, p),
    detokenize: (ids, s) => m.detokenize(ids, s),
    pieces: (ids, s) => m.pieces(ids, s),
    vocab: () => m.vocab(),
    token: (id) => m.token(id),
    release: () => m.free(),
  };
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
