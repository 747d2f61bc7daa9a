// The worker entry: runs coil's wasm engine inside a Web Worker and exposes the API over comlink.
// Load it with `new Worker(new URL("coil/worker", import.meta.url), { type: "module" })` and talk to it
// through `createWorkerClient(worker)`, which gives the same API as the main entry, async.

import * as Comlink from "comlink";
import { backendInfo, inspectGguf, loadModel } from "./index.js";
import { encodeError } from "./wire.js";
import type { CommonOptions, GgufSource, InspectOptions, LoadModelOptions, TokenizeOptions } from "../core/types.js";
import { CoilAbortError, CoilError } from "../core/errors.js";
import type { Model } from "../core/model.js";
import type { Context } from "../core/context.js";
import type { ContextOptions, EvaluateOptions, GenerateOptions, GenerationChunk, SaveStateOptions } from "../core/types.js";

// AbortSignals cannot cross postMessage; the client sends an abort id and calls abort(id).
const controllers = new Map<number, AbortController>();
// Models live here; the page holds handles.
const models = new Map<number, Model>();
const contexts = new Map<number, Context>();
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

function context(handle: number): Context {
  const c = contexts.get(handle);
  if (!c) throw new CoilError("DISPOSED", "this context has been disposed");
  return c;
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
  createContext: (h: number, o?: ContextOptions) =>
    wrap(() => {
      const c = model(h).createContext(o);
      const handle = nextHandle++;
      contexts.set(handle, c);
      return { handle, sequences: c.sequenceCount, nVocab: c.nVocab, memory: c.memory };
    }),
  disposeContext: (h: number) => wrap(async () => {
    await contexts.get(h)?.dispose();
    contexts.delete(h);
  }),
  position: (h: number, seq: number) => wrap(() => context(h).sequence(seq).position),
  clear: (h: number, seq: number) => wrap(() => context(h).sequence(seq).clear()),
  fork: (h: number, seq: number) => wrap(() => context(h).sequence(seq).fork().id),
  truncate: (h: number, seq: number, n: number) => wrap(() => context(h).sequence(seq).truncate(n)),
  checkpoint: (h: number, seq: number) => wrap(() => context(h).sequence(seq).checkpoint()),
  checkpoints: (h: number, seq: number) => wrap(() => context(h).sequence(seq).checkpoints),
  tokens: (h: number, seq: number) => wrap(() => Array.from(context(h).sequence(seq).tokens)),
  lastReusedTokens: (h: number, seq: number) => wrap(() => context(h).sequence(seq).lastReusedTokens),
  saveState: (h: number, seq: number, o?: SaveStateOptions) =>
    wrap(() => {
      const b = context(h).sequence(seq).saveState(o);
      return Comlink.transfer(b, [b.buffer]);
    }),
  loadState: (h: number, seq: number, bytes: Uint8Array) => wrap(() => context(h).sequence(seq).loadState(bytes)),
  disposeSequence: (h: number, seq: number) => wrap(() => context(h).sequence(seq).dispose()),
  saveContextState: (h: number, o?: SaveStateOptions) =>
    wrap(() => {
      const b = context(h).saveState(o);
      return Comlink.transfer(b, [b.buffer]);
    }),
  loadContextState: (h: number, bytes: Uint8Array) => wrap(() => context(h).loadState(bytes)),
  evaluate: (h: number, seq: number, tokens: number[], o: Omit<EvaluateOptions, "signal"> = {}, abortId?: number) =>
    wrap(() => withSignal(abortId, async (signal) => {
      const l = await context(h).sequence(seq).evaluate(tokens, { ...o, signal });
      return Comlink.transfer(l, [l.buffer]);
    })),
  /** Runs a whole generation; chunks go to `onChunk` as they come (comlink cannot pass iterators). */
  generate: (
    h: number,
    seq: number,
    prompt: string | number[],
    o: Omit<GenerateOptions, "signal" | "onToken"> = {},
    onChunk?: (c: GenerationChunk) => void,
    abortId?: number,
  ) =>
    wrap(() =>
      withSignal(abortId, async (signal) => {
        const gen = context(h).sequence(seq).generate(prompt, { ...o, signal });
        // Each chunk is delivered (awaited) before the next step, so the page sees them in order
        // and before the result.
        for await (const chunk of gen) await onChunk?.(chunk);
        return gen.result;
      }),
    ),
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
