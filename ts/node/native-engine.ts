// The native engine: the napi-rs addon through its generated loader in bindings/.

import type { Engine, EngineModel } from "../core/engine.js";
import { fromEngineError } from "../core/errors.js";

interface NativeModel {
  info(arrayHead?: number | null): string;
  tokenize(text: string, addSpecial: boolean | undefined | null, parseSpecial: boolean): Uint32Array;
  detokenize(ids: Uint32Array, special: boolean): string;
  pieces(ids: Uint32Array, special: boolean): string[];
  vocab(): string;
  token(id: number): string;
  dispose(): void;
}

function wrapModel(m: NativeModel): EngineModel {
  return {
    info: (h) => m.info(h),
    tokenize: (t, a, p) => m.tokenize(t, a, p),
    detokenize: (ids, s) => m.detokenize(ids, s),
    pieces: (ids, s) => m.pieces(ids, s),
    vocab: () => m.vocab(),
    token: (id) => m.token(id),
    release: () => m.dispose(),
  };
}

interface NativeBinding {
  loadModelFile(path: string, signal?: AbortSignal | null): Promise<NativeModel>;
  loadModelBytes(prefix: Uint8Array, fileSize: number): NativeModel;
  engineVersion(): string;
  cpuFeatures(): string[];
  kernelSelfcheck(): string;
  inspectFile(path: string, arrayHead?: number | null, signal?: AbortSignal | null): Promise<string>;
  inspectBytes(prefix: Uint8Array, fileSize: number, arrayHead?: number | null): string;
}

export async function loadNativeEngine(): Promise<Engine> {
  const path = "../../bindings/index.js";
  const b = (await import(path)) as NativeBinding & { default?: NativeBinding };
  const binding: NativeBinding = typeof b.inspectFile === "function" ? b : (b.default as NativeBinding);
  if (!binding || typeof binding.inspectFile !== "function") {
    throw new Error("bindings/index.js does not export the coil native API (stale build?)");
  }
  return {
    name: "native",
    version: () => binding.engineVersion(),
    cpuFeatures: () => binding.cpuFeatures(),
    kernelSelfcheck: () => binding.kernelSelfcheck(),
    inspectBytes: (prefix, fileSize, arrayHead) => binding.inspectBytes(prefix, fileSize, arrayHead),
    loadModelBytes: (prefix, fileSize) => wrapModel(binding.loadModelBytes(prefix, fileSize)),
    loadModelPath: async (p, signal) => {
      try {
        return wrapModel(await binding.loadModelFile(p, signal ?? null));
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
