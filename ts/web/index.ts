// Entry for browsers and web workers: the wasm engine, run in the current thread. Pages that want
// the work off their main thread use `createWorkerClient()` (same API, over comlink) instead.

import { createApi, type CoilFacade } from "../core/facade.js";
import { BackendUnavailableError } from "../core/errors.js";
import type { Engine } from "../core/engine.js";
import { wasmEngine, type WasmBinding } from "../core/wasm-engine.js";

export * from "../core/types.js";
export * from "../core/errors.js";
export { Model } from "../core/model.js";
export { Context, Sequence, type BatchItem } from "../core/context.js";
export { Generation } from "../core/generate.js";
export { perplexity, type PerplexityOptions, type PerplexityResult } from "../core/perplexity.js";
export { ChatSession, renderChat, type ChatMessage, type ChatOptions } from "../core/chat.js";
export { createWorkerClient, type WorkerClient, type RemoteModel } from "./client.js";

let wasm: Promise<Engine> | undefined;
let wasmUrlOverride: string | URL | undefined;

/** Where to fetch coil_wasm_bg.wasm from, for bundlers or CDNs that move it. Call before first use. */
export function setWasmUrl(url: string | URL): void {
  wasmUrlOverride = url;
}

async function loadWasmEngineWeb(): Promise<Engine> {
  const b = (await import("../../wasm-pkg/coil_wasm.js")) as unknown as WasmBinding;
  const url = wasmUrlOverride ?? new URL("../../wasm-pkg/coil_wasm_bg.wasm", import.meta.url);
  await b.default({ module_or_path: url });
  return wasmEngine(b);
}

const api: CoilFacade = createApi({
  defaultBackend: () => "wasm",
  async engine(choice) {
    if (choice === "native") {
      throw new BackendUnavailableError("the native backend is not available in a browser: use \"wasm\"");
    }
    try {
      return { engine: await (wasm ??= loadWasmEngineWeb()) };
    } catch (e) {
      wasm = undefined;
      throw new BackendUnavailableError(`the wasm engine could not be loaded: ${(e as Error).message}`, { cause: e });
    }
  },
});

export const inspectGguf = api.inspectGguf;
export const backendInfo = api.backendInfo;
export const loadModel = api.loadModel;
