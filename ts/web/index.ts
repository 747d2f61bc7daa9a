// Entry for browsers and web workers: the wasm engine, run in the current thread. Pages that want
// the work off their main thread use `createWorkerClient()` (same API, over comlink) instead. Inside
// a Worker of a cross-origin isolated page the engine runs its kernels on a pool of threads (the
// threaded module, wasm-pkg/mt, with one nested Worker per extra thread); elsewhere on one.

import { createApi, type CoilFacade } from "../core/facade.js";
import { BackendUnavailableError } from "../core/errors.js";
import type { Engine } from "../core/engine.js";
import { wasmEngine, type WasmBinding } from "../core/wasm-engine.js";
import { sharedMemoryUsable, startWasmThreads, type SpawnThread, type ThreadedWasmBinding } from "../core/wasm-threads.js";

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
let wasmMtUrlOverride: string | URL | undefined;

/**
 * Where to fetch the wasm modules from, for bundlers or CDNs that move them. Call before first use.
 * `url` is coil_wasm_bg.wasm (single-threaded); `threadedUrl` is mt/coil_wasm_mt_bg.wasm, the
 * threaded module: without it, a moved engine runs on one thread.
 */
export function setWasmUrl(url: string | URL, threadedUrl?: string | URL): void {
  wasmUrlOverride = url;
  wasmMtUrlOverride = threadedUrl;
}

const MAX_THREADS = 64;

function inWorker(): boolean {
  return typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined";
}

const spawnWebThread: SpawnThread = (start) =>
  new Promise<void>((resolve, reject) => {
    const w = new Worker(new URL("./wasm-thread.js", import.meta.url), { type: "module" });
    let settled = false;
    w.onmessage = (e: MessageEvent) => {
      if (e.data === "ready" && !settled) {
        settled = true;
        resolve();
      }
    };
    w.onerror = (e: ErrorEvent) => {
      // After it started, a failing thread has already flagged the pool (runWasmThread).
      e.preventDefault();
      if (!settled) {
        settled = true;
        reject(new Error(e.message || "the wasm thread failed to start"));
      }
    };
    w.postMessage(start);
  });

async function loadThreaded(nThreads: number): Promise<Engine> {
  const b = (await import("../../wasm-pkg/mt/coil_wasm_mt.js")) as unknown as ThreadedWasmBinding;
  const url = wasmMtUrlOverride ?? new URL("../../wasm-pkg/mt/coil_wasm_mt_bg.wasm", import.meta.url);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`fetching ${String(url)}: HTTP ${res.status}`);
  const module = await WebAssembly.compile(await res.arrayBuffer());
  const { memory } = await b.default({ module_or_path: module });
  const started = await startWasmThreads(b, module, memory, nThreads - 1, spawnWebThread);
  // None started (e.g. no nested Workers here): say so and use the plain module.
  if (started === 0) throw new Error("no worker thread started");
  return wasmEngine(b);
}

async function loadWasmEngineWeb(): Promise<Engine> {
  const cpus = Math.min((globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 1, MAX_THREADS);
  let reason: string;
  if (cpus <= 1) {
    reason = "this machine offers one CPU";
  } else if (wasmUrlOverride !== undefined && wasmMtUrlOverride === undefined) {
    reason = "setWasmUrl() was given no URL for the threaded module";
  } else if (!inWorker()) {
    reason = "a page's main thread may not wait for other threads: run coil in a Worker (createWorkerClient) to use them";
  } else {
    const usable = sharedMemoryUsable();
    if (usable.ok) {
      try {
        return await loadThreaded(cpus);
      } catch (e) {
        reason = `the threaded wasm module could not be started: ${(e as Error).message}`;
      }
    } else {
      reason = usable.why;
    }
  }
  const b = (await import("../../wasm-pkg/coil_wasm.js")) as unknown as WasmBinding;
  const url = wasmUrlOverride ?? new URL("../../wasm-pkg/coil_wasm_bg.wasm", import.meta.url);
  await b.default({ module_or_path: url });
  return wasmEngine(b, { singleThreadedReason: reason });
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
