// The page side of the worker: wraps a Worker running `coil/worker` in the main entry's API, with
// every method async. AbortSignals are forwarded as abort calls; errors come back typed.

import * as Comlink from "comlink";
import type {
  BackendInfo,
  BackendName,
  CommonOptions,
  ContextMemory,
  ContextOptions,
  EvaluateOptions,
  GenerateOptions,
  GenerationChunk,
  GenerationResult,
  GgufInfo,
  GgufMetadataValue,
  GgufSource,
  InspectOptions,
  LoadModelOptions,
  SaveStateOptions,
  TokenAttributes,
  TokenizeOptions,
  VocabInfo,
} from "../core/types.js";
import { CoilError, fromEngineError, throwIfAborted } from "../core/errors.js";
import type { WorkerApi } from "./worker.js";

let nextAbortId = 1;

/** A sequence of a context in the worker. `generate` returns the same shape as `Sequence.generate`:
 *  an async iterator of chunks with a `.result` promise. */
export interface RemoteSequence {
  readonly id: number;
  position(): Promise<number>;
  clear(): Promise<void>;
  /** `Sequence.fork()`: a new sequence in a free slot, sharing this one's state copy-on-write. */
  fork(): Promise<RemoteSequence>;
  truncate(n: number): Promise<void>;
  checkpoint(): Promise<number>;
  checkpoints(): Promise<number[]>;
  /** The token history. */
  tokens(): Promise<number[]>;
  lastReusedTokens(): Promise<number>;
  saveState(options?: SaveStateOptions): Promise<Uint8Array>;
  loadState(bytes: Uint8Array): Promise<void>;
  dispose(): Promise<void>;
  evaluate(tokens: ArrayLike<number>, options?: EvaluateOptions): Promise<Float32Array>;
  generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): AsyncIterableIterator<GenerationChunk> & { result: Promise<GenerationResult> };
}

export interface RemoteContext {
  readonly sequenceCount: number;
  readonly nVocab: number;
  /** What the context's memory costs (as `Context.memory`). */
  readonly memory: ContextMemory;
  readonly contextLength: number;
  readonly kvType: ContextMemory["kvType"];
  sequence(i?: number): RemoteSequence;
  saveState(options?: SaveStateOptions): Promise<Uint8Array>;
  loadState(bytes: Uint8Array): Promise<void>;
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A model living in the worker: `Model`'s methods, each returning a promise. */
export interface RemoteModel {
  readonly backend: BackendName;
  info(): Promise<GgufInfo>;
  metadata(): Promise<Record<string, GgufMetadataValue>>;
  vocab(): Promise<VocabInfo>;
  tokenize(text: string, options?: TokenizeOptions): Promise<number[]>;
  detokenize(ids: ArrayLike<number>, options?: { special?: boolean }): Promise<string>;
  tokenPieces(ids: ArrayLike<number>, options?: { special?: boolean }): Promise<string[]>;
  tokenAttributes(id: number): Promise<TokenAttributes>;
  createContext(options?: ContextOptions): Promise<RemoteContext>;
  readonly disposed: boolean;
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface WorkerClient {
  inspectGguf(source: GgufSource, options?: InspectOptions): Promise<GgufInfo>;
  loadModel(source: GgufSource, options?: LoadModelOptions): Promise<RemoteModel>;
  backendInfo(options?: CommonOptions): Promise<BackendInfo>;
  /** Terminates the worker; models in it are gone, pending calls reject. */
  dispose(): void;
  [Symbol.dispose](): void;
}

/** Starts (or wraps) a worker running coil's wasm engine. */
export function createWorkerClient(worker?: Worker): WorkerClient {
  const w = worker ?? new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  const remote = Comlink.wrap<WorkerApi>(w);

  async function call<T>(signal: AbortSignal | undefined, run: (abortId?: number) => Promise<T>): Promise<T> {
    throwIfAborted(signal);
    const id = signal ? nextAbortId++ : undefined;
    const onAbort = () => void remote.abort(id!, signal?.reason instanceof Error ? signal.reason.message : "");
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await run(id);
    } catch (e) {
      throw fromEngineError(e);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  function remoteModel(handle: number, backend: BackendName): RemoteModel {
    let disposed = false;
    const use = <T>(f: () => Promise<T>): Promise<T> => {
      if (disposed) return Promise.reject(new CoilError("DISPOSED", "this model has been disposed"));
      return call(undefined, f);
    };
    const m: RemoteModel = {
      backend,
      info: () => use(() => remote.info(handle)),
      metadata: () => use(async () => (await remote.info(handle)).metadata),
      vocab: () => use(() => remote.vocab(handle)),
      tokenize: (text, o) => use(() => remote.tokenize(handle, text, o)),
      detokenize: (ids, o) => use(() => remote.detokenize(handle, Array.from(ids), o)),
      tokenPieces: (ids, o) => use(() => remote.tokenPieces(handle, Array.from(ids), o)),
      tokenAttributes: (id) => use(() => remote.tokenAttributes(handle, id)),
      createContext: (o) => use(async () => remoteContext(await remote.createContext(handle, o))),
      get disposed() {
        return disposed;
      },
      dispose: async () => {
        if (disposed) return;
        disposed = true;
        await remote.disposeModel(handle);
      },
      [Symbol.asyncDispose]: () => m.dispose(),
    };
    return m;
  }

  function remoteContext(c: { handle: number; sequences: number; nVocab: number; memory: ContextMemory }): RemoteContext {
    const seqs: RemoteSequence[] = [];
    for (let i = 0; i < c.sequences; i++) seqs.push(remoteSequence(c.handle, i, (j) => seqs[j]!));
    const dispose = () => call(undefined, () => remote.disposeContext(c.handle));
    return {
      sequenceCount: c.sequences,
      nVocab: c.nVocab,
      memory: c.memory,
      contextLength: c.memory.contextLength,
      kvType: c.memory.kvType,
      sequence: (i = 0) => {
        const s = seqs[i];
        if (!s) throw new CoilError("INVALID_ARGUMENT", `no sequence ${i}: this context has ${seqs.length}`);
        return s;
      },
      saveState: (o) => call(undefined, () => remote.saveContextState(c.handle, o)),
      loadState: (bytes) => call(undefined, () => remote.loadContextState(c.handle, bytes)),
      dispose,
      [Symbol.asyncDispose]: dispose,
    };
  }

  function remoteSequence(ctx: number, id: number, slot: (i: number) => RemoteSequence): RemoteSequence {
    return {
      id,
      position: () => call(undefined, () => remote.position(ctx, id)),
      clear: () => call(undefined, () => remote.clear(ctx, id)),
      fork: () => call(undefined, async () => slot(await remote.fork(ctx, id))),
      truncate: (n) => call(undefined, () => remote.truncate(ctx, id, n)),
      checkpoint: () => call(undefined, () => remote.checkpoint(ctx, id)),
      checkpoints: () => call(undefined, () => remote.checkpoints(ctx, id)),
      tokens: () => call(undefined, () => remote.tokens(ctx, id)),
      lastReusedTokens: () => call(undefined, () => remote.lastReusedTokens(ctx, id)),
      saveState: (o) => call(undefined, () => remote.saveState(ctx, id, o)),
      loadState: (bytes) => call(undefined, () => remote.loadState(ctx, id, bytes)),
      dispose: () => call(undefined, () => remote.disposeSequence(ctx, id)),
      evaluate: (tokens, o = {}) => {
        const { signal, ...rest } = o;
        return call(signal, (abortId) => remote.evaluate(ctx, id, Array.from(tokens), rest, abortId));
      },
      generate: (prompt, o = {}) => {
        const { signal, onToken, ...rest } = o;
        // Rebuild an async iterator from the worker's chunk callbacks.
        const queue: GenerationChunk[] = [];
        let wake: (() => void) | undefined;
        let finished = false;
        const onChunk = (chunk: GenerationChunk) => {
          onToken?.(chunk);
          queue.push(chunk);
          wake?.();
        };
        const result = call(signal, (abortId) =>
          remote.generate(ctx, id, typeof prompt === "string" ? prompt : Array.from(prompt), rest, Comlink.proxy(onChunk), abortId),
        ).finally(() => {
          finished = true;
          wake?.();
        });
        result.catch(() => {});
        const it = {
          result,
          [Symbol.asyncIterator]() {
            return it;
          },
          async next(): Promise<IteratorResult<GenerationChunk, GenerationResult>> {
            for (;;) {
              if (queue.length) return { done: false, value: queue.shift()! };
              if (finished) return { done: true, value: await result };
              await new Promise<void>((r) => (wake = r));
              wake = undefined;
            }
          },
        };
        return it as AsyncIterableIterator<GenerationChunk> & { result: Promise<GenerationResult> };
      },
    };
  }

  const dispose = () => {
    remote[Comlink.releaseProxy]();
    w.terminate();
  };
  return {
    inspectGguf: (source, options = {}) => {
      const { signal, ...rest } = options;
      return call(signal, (id) => remote.inspectGguf(source, rest, id));
    },
    loadModel: (source, options = {}) => {
      const { signal, onProgress, ...rest } = options;
      return call(signal, async (id) => {
        const { handle, backend } = await remote.loadModel(
          source,
          rest,
          id,
          onProgress ? Comlink.proxy(onProgress) : undefined,
        );
        return remoteModel(handle, backend);
      });
    },
    backendInfo: (options = {}) => {
      const { signal, ...rest } = options;
      return call(signal, () => remote.backendInfo(rest));
    },
    dispose,
    [Symbol.dispose]: dispose,
  };
}
