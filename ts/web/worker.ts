// The worker entry: runs coil's wasm engine inside a Web Worker and exposes the API over comlink.
// Load it with `new Worker(new URL("coil/worker", import.meta.url), { type: "module" })` and talk to it
// through `createWorkerClient(worker)`, which gives the same API as the main entry.

import * as Comlink from "comlink";
import { backendInfo, inspectGguf } from "./index.js";
import { encodeError } from "./wire.js";
import type { CommonOptions, GgufSource, InspectOptions } from "../core/types.js";
import { CoilAbortError } from "../core/errors.js";

// AbortSignals cannot cross postMessage; the client sends an abort id and calls abort(id).
const controllers = new Map<number, AbortController>();

function withSignal<T>(id: number | undefined, run: (signal?: AbortSignal) => Promise<T>): Promise<T> {
  if (id === undefined) return run();
  const c = new AbortController();
  controllers.set(id, c);
  return run(c.signal).finally(() => controllers.delete(id));
}

async function wrap<T>(p: () => Promise<T>): Promise<T> {
  try {
    return await p();
  } catch (e) {
    throw encodeError(e);
  }
}

const workerApi = {
  inspectGguf(source: GgufSource, options: Omit<InspectOptions, "signal"> = {}, abortId?: number) {
    return wrap(() => withSignal(abortId, (signal) => inspectGguf(source, { ...options, signal })));
  },
  backendInfo(options: Omit<CommonOptions, "signal"> = {}) {
    return wrap(() => backendInfo(options));
  },
  abort(abortId: number, reason?: string) {
    controllers.get(abortId)?.abort(new CoilAbortError(reason));
  },
};

export type WorkerApi = typeof workerApi;
Comlink.expose(workerApi);
