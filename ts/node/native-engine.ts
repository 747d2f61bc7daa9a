// The native engine: the napi-rs addon through its generated loader in bindings/.

import { wrapBindingModel, type BindingModel, type Engine, type EngineContext, type EngineModel, type RunItemResult } from "../core/engine.js";
import { fromEngineError } from "../core/errors.js";

interface NativeModel extends BindingModel<NativeContext> {
  dispose(): void;
}

interface NativeContext {
  run(seqs: Uint32Array, kinds: Uint8Array, gens: Uint32Array, lens: Uint32Array, tokens: Uint32Array): Promise<{ logits: Float32Array; results: string }>;
  position(seq: number): number;
  clear(seq: number): void;
  fork(src: number, dst: number): void;
  rewind(seq: number, tokens: Uint32Array): number;
  checkpoint(seq: number): number;
  history(seq: number): Uint32Array;
  checkpoints(seq: number): Uint32Array;
  checkpointBytes(): number;
  setCheckpointPolicy(interval: number, atEnd: boolean, budgetBytes: number): void;
  truncate(seq: number, n: number): Promise<void>;
  saveState(seq: number, history: boolean, checkpoints: boolean): Uint8Array;
  loadState(seq: number, bytes: Uint8Array): void;
  saveContext(history: boolean, checkpoints: boolean): Uint8Array;
  loadContext(bytes: Uint8Array): void;
  stateBytesPerSequence(): number;
  memory(): string;
  nVocab(): number;
  createGenerator(seq: number, params: string): number;
  endGenerator(id: number): Promise<string>;
  releaseGenerator(id: number): void;
  dispose(): void;
}

function wrapContext(c: NativeContext): EngineContext {
  return {
    run: async (s, k, g, l, t) => {
      const r = await c.run(s, k, g, l, t);
      return { logits: r.logits, results: JSON.parse(r.results) as RunItemResult[] };
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
    truncate: (s, n) => c.truncate(s, n),
    saveState: (s, h, k) => c.saveState(s, h, k),
    loadState: (s, b) => c.loadState(s, b),
    saveContext: (h, k) => c.saveContext(h, k),
    loadContext: (b) => c.loadContext(b),
    stateBytesPerSequence: () => c.stateBytesPerSequence(),
    memory: () => c.memory(),
    nVocab: () => c.nVocab(),
    createGenerator: (seq, params) => c.createGenerator(seq, params),
    endGenerator: (id) => c.endGenerator(id),
    releaseGenerator: (id) => c.releaseGenerator(id),
    release: () => c.dispose(),
  };
}

function wrapModel(m: NativeModel): EngineModel {
  return wrapBindingModel(m, wrapContext, () => m.dispose());
}

interface NativeJobHandle {
  cancel(): void;
  progress(): string;
}

export interface NativeBinding {
  JobHandle: new () => NativeJobHandle;
  convertCheckpoint(dir: string, out: string, outtype: string, name: string | null, handle: NativeJobHandle): Promise<string>;
  quantizeFile(input: string, output: string, target: string, threads: number, handle: NativeJobHandle): Promise<string>;
  loadModelFile(path: string, vocabOnly: boolean, signal?: AbortSignal | null): Promise<NativeModel>;
  loadModelBytes(prefix: Uint8Array, fileSize: number): NativeModel;
  engineVersion(): string;
  cpuFeatures(): string[];
  kernelSelfcheck(): string;
  inspectFile(path: string, arrayHead?: number | null, signal?: AbortSignal | null): Promise<string>;
  inspectBytes(prefix: Uint8Array, fileSize: number, arrayHead?: number | null): string;
}

let bindingPromise: Promise<NativeBinding> | undefined;

/** The napi-rs addon through its generated loader (loaded once). */
export function loadNativeBinding(): Promise<NativeBinding> {
  return (bindingPromise ??= (async () => {
    const path = "../../bindings/index.js";
    const b = (await import(path)) as NativeBinding & { default?: NativeBinding };
    const binding: NativeBinding = typeof b.inspectFile === "function" ? b : (b.default as NativeBinding);
    if (!binding || typeof binding.inspectFile !== "function") {
      throw new Error("bindings/index.js does not export the coil native API (stale build?)");
    }
    return binding;
  })().catch((e) => {
    bindingPromise = undefined;
    throw e;
  }));
}

export async function loadNativeEngine(): Promise<Engine> {
  const binding = await loadNativeBinding();
  return {
    name: "native",
    version: () => binding.engineVersion(),
    cpuFeatures: () => binding.cpuFeatures(),
    kernelSelfcheck: () => binding.kernelSelfcheck(),
    inspectBytes: (prefix, fileSize, arrayHead) => binding.inspectBytes(prefix, fileSize, arrayHead),
    loadModelBytes: (prefix, fileSize) => wrapModel(binding.loadModelBytes(prefix, fileSize)),
    loadModelPath: async (p, vocabOnly, signal) => {
      try {
        return wrapModel(await binding.loadModelFile(p, vocabOnly, signal ?? null));
      } catch (e) {
        throw fromEngineError(e);
      }
    },
    inspectPath: async (p, arrayHead, signal) => {
      try {
        return await binding.inspectFile(p, arrayHead, signal ?? null);
      } catch (e) {
        throw fromEngineError(e);
      }
    },
  };
}
