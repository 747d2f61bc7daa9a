// The worker entry: runs coil's wasm engine inside a Web Worker and exposes the API over comlink.
// Load it with `new Worker(new URL("coil/worker", import.meta.url), { type: "module" })` and talk to it
// through `createWorkerClient(worker)`, which gives the same API as the main entry, async.

import * as Comlink from "comlink";
import { backendInfo, inspectGguf, loadModel } from "./index.js";
import { encodeError } from "./wire.js";
import type { CommonOptions, GgufSource, InspectOptions, LoadModelOptions, TokenizeOptions } from "../core/types.js";
import { CoilAbortError, CoilError } from "../core/errors.js";
import type { Model } from "../core/model.js";

// AbortSignals cannot cross postMessage; the client sends an abort id and calls abort(id).
const controllers = new Map<number, AbortController>();
// Models live here; the page holds handles.
const models = new Map<number, Model>();
let nextHandle = 1;

function withSignal<T>(id: number | undefined, run: (signal?: AbortSignal) => Promise<T>): Promise<T> {
  if (id === undefined) return run();
  const c = new AbortController();
  controllers.set(id, c);
  return run(c.signal).finally(() => controllers.delete(id));
}

async function wrap<T>(p: () => T | Promise<T>): Promise<T> {
  try {
    return await p();
  } catch (e) {
    throw encodeError(e);
  }
}

function model(handle: number): Model {
  const m = models.get(handle);
  if (!m) throw new CoilError("DISPOSED", "this model has been disposed");
  return m;
}

const workerApi = {
  inspectGguf(source: GgufSource, options: Omit<InspectOptions, "signal"> = {}, abortId?: number) {
    return wrap(() => withSignal(abortId, (signal) => inspectGguf(source, { ...options, signal })));
  },
  backendInfo(options: Omit<CommonOptions, "signal"> = {}) {
    return wrap(() => backendInfo(options));
  },
  loadModel(
    source: GgufSource,
    options: Omit<LoadModelOptions, "signal" | "onProgress"> = {},
    abortId?: number,
    onProgress?: LoadModelOptions["onProgress"],
  ) {
    return wrap(async () => {
      const m = await withSignal(abortId, (signal) => loadModel(source, { ...options, signal, onProgress }));
      const handle = nextHandle++;
      models.set(handle, m);
      return { handle, backend: m.backend };
    });
  },
  info: (h: number) => wrap(() => model(h).info),
  vocab: (h: number) => wrap(() => model(h).vocab),
  tokenize: (h: number, text: string, o?: TokenizeOptions) => wrap(() => model(h).tokenize(text, o)),
  detokenize: (h: number, ids: number[], o?: { special?: boolean }) => wrap(() => model(h).detokenize(ids, o)),
  tokenPieces: (h: number, ids: number[], o?: { special?: boolean }) => wrap(() => model(h).tokenPieces(ids, o)),
  tokenAttributes: (h: number, id: number) => wrap(() => model(h).tokenAttributes(id)),
  disposeModel(h: number) {
    models.get(h)?.dispose();
    models.delete(h);
  },
  abort(abortId: number, reason?: string) {
    controllers.get(abortId)?.abort(new CoilAbortError(reason || undefined));
  },
};

export type WorkerApi = typeof workerApi;
Comlink.expose(workerApi);
