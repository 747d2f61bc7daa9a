// The native engine: the napi-rs addon through its generated loader in bindings/.

import type { Engine } from "../core/engine.js";
import { fromEngineError } from "../core/errors.js";

interface NativeBinding {
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
    inspectPath: async (p, arrayHead, signal) => {
      try {
        return await binding.inspectFile(p, arrayHead, signal ?? null);
      } catch (e) {
        throw fromEngineError(e);
      }
    },
  };
}
