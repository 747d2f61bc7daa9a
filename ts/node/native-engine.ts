// The native engine: the napi-rs addon through its generated loader in bindings/.

import { wrapBindingModel, type BindingModel, type Engine, type EngineContext, type EngineModel } from "../core/engine.js";
import { fromEngineError } from "../core/errors.js";

interface NativeModel extends BindingModel<NativeContext> {
  dispose(): void;
}

interface NativeGenerator {
  step(feed: Uint32Array): Promise<string>;
  end(): Promise<string>;
}

interface NativeContext {
  createGenerator(seq: number, params: string): NativeGenerator;
  evaluate(tokens: Uint32Array, seqs: Uint32Array, logits: Uint8Array): Promise<Float32Array>;
  position(seq: number): number;
  clear(seq: number): void;
  stateBytesPerSequence(): number;
  memory(): string;
  nVocab(): number;
  dispose(): void;
}

function wrapContext(c: NativeContext): EngineContext {
  return {
    evaluate: (t, s, l) => c.evaluate(t, s, l),
    position: (s) => c.position(s),
    clear: (s) => c.clear(s),
    stateBytesPerSequence: () => c.stateBytesPerSequence(),
    memory: () => c.memory(),
    nVocab: () => c.nVocab(),
    createGenerator: (seq, params) => {
      const g = c.createGenerator(seq, params);
      return { step: (f) => g.step(f), finish: () => g.end(), release: () => {} };
    },
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
