// The native engine: the napi-rs addon through its generated loader in bindings/.

import { wrapBindingContext, wrapBindingModel, type BindingContext, type BindingModel, type Engine, type EngineContext, type EngineModel, type RunItemResult } from "../core/engine.js";
import { fromEngineError } from "../core/errors.js";

interface NativeModel extends BindingModel<NativeContext> {
  dispose(): void;
}

interface NativeContext extends BindingContext {
  run(seqs: Uint32Array, kinds: Uint8Array, gens: Uint32Array, lens: Uint32Array, tokens: Uint32Array): Promise<{ logits: Float32Array; results: string }>;
  truncate(seq: number, n: number): Promise<void>;
  endGenerator(id: number): Promise<string>;
  dispose(): void;
}

function wrapContext(c: NativeContext): EngineContext {
  return wrapBindingContext(c, {
    run: async (s, k, g, l, t) => {
      const r = await c.run(s, k, g, l, t);
      return { logits: r.logits, results: JSON.parse(r.results) as RunItemResult[] };
    },
    truncate: (s, n) => c.truncate(s, n),
    endGenerator: (id) => c.endGenerator(id),
    release: () => c.dispose(),
  });
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
  threadCount(): number;
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
    threads: () => binding.threadCount(),
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
