// One interface in front of the two engines. Everything per-target (how a binding is loaded, how
// bytes reach it) lives behind `Engine`; the facade's logic is written once against it.

import type { BackendName } from "./types.js";
import type { ByteSource } from "./source.js";
import { fromEngineError, throwIfAborted } from "./errors.js";

export interface Engine {
  readonly name: BackendName;
  version(): string;
  cpuFeatures(): string[];
  /** Threads a context uses by default (native: the physical cores; wasm: its worker pool + 1). */
  threads(): number;
  /** wasm: why the engine runs on one thread, when it does. */
  readonly singleThreadedReason?: string;
  /** wasm: tasks its worker threads have run so far. */
  workerTasks?(): number;
  /** JSON from the core: every kernel path run against its scalar reference. */
  kernelSelfcheck(): string;
  /** Parse a header prefix of a file of `fileSize` bytes; throws GGUF_NEED_MORE when the prefix is short. */
  inspectBytes(prefix: Uint8Array, fileSize: number, arrayHead: number): string;
  /** Native only: inspect a file by path through a memory map, off the JS thread. */
  inspectPath?(path: string, arrayHead: number, signal?: AbortSignal): Promise<string>;
  /** Load a model's header from a prefix; throws GGUF_NEED_MORE when the prefix is short. Weights
   *  follow through `weightsPlan` / `pushTensorBytes` / `finishWeights`. */
  loadModelBytes(prefix: Uint8Array, fileSize: number): EngineModel;
  /** Native only: load a model by path through a memory map (weights too unless `vocabOnly`), off
   *  the JS thread. */
  loadModelPath?(path: string, vocabOnly: boolean, signal?: AbortSignal): Promise<EngineModel>;
}

/** A model inside an engine. Methods throw engine errors (decode with fromEngineError). */
export interface EngineModel {
  info(arrayHead: number): string;
  tokenize(text: string, addSpecial: boolean | undefined, parseSpecial: boolean): Uint32Array;
  detokenize(ids: Uint32Array, special: boolean): string;
  pieces(ids: Uint32Array, special: boolean): string[];
  vocab(): string;
  token(id: number): string;
  /** Whether the weights are loaded. */
  hasWeights(): boolean;
  /** Whether a chunked load goes on to weights (the file has tensors, and not vocab-only). */
  wantsWeights(vocabOnly: boolean): boolean;
  /** The tensors to fetch for chunked weight loading: flat [tensorIndex, fileOffset, length, ...]. */
  weightsPlan(): Float64Array;
  pushTensorBytes(tensorIndex: number, offset: number, bytes: Uint8Array): void;
  finishWeights(): void;
  createContext(nSeqMax: number, nThreads: number, nCtx: number, kvType: string): EngineContext;
  /** Frees the engine's memory for this model. */
  release(): void;
}

/** One item's outcome in `EngineContext.run` (the core's `RunOutput::results_json`). */
export interface RunItemResult {
  /** Prompt tokens not evaluated again (items with prompt reuse). */
  reused: number;
  /** A generation step's result. */
  step: { token: number; text: string; stop: "eos" | "maxTokens" | "stop" | null } | null;
  /** A generation step that failed (engine wire form), the other items unaffected. */
  error: string | null;
}

/** Item kinds of `EngineContext.run`: evaluate with no/last/all logits, or a generation step;
 *  `KIND_REUSE` added: the tokens are the whole sequence from position 0 (prompt reuse). */
export const KIND_EVAL_NONE = 0;
export const KIND_EVAL_LAST = 1;
export const KIND_EVAL_ALL = 2;
export const KIND_STEP = 3;
export const KIND_REUSE = 4;

/** A context inside an engine: recurrent-state slots for its sequences, their token histories
 *  and checkpoints, and the generations running on them. Methods throw engine errors. */
export interface EngineContext {
  /** Runs evaluations and generation steps of several sequences (one item each) as one batch:
   *  per item its sequence, kind, generator id, token count; the tokens concatenated. */
  run(seqs: Uint32Array, kinds: Uint8Array, gens: Uint32Array, lens: Uint32Array, tokens: Uint32Array): Promise<{ logits: Float32Array; results: RunItemResult[] }>;
  position(seq: number): number;
  clear(seq: number): void;
  fork(src: number, dst: number): void;
  /** Prompt reuse: rolls `seq` back to the longest prefix of `tokens` (the whole sequence from
   *  position 0) it holds or can restore without evaluating; returns that length. */
  rewind(seq: number, tokens: Uint32Array): number;
  checkpoint(seq: number): number;
  history(seq: number): Uint32Array;
  checkpoints(seq: number): Uint32Array;
  checkpointBytes(): number;
  setCheckpointPolicy(interval: number, atEnd: boolean, budgetBytes: number): void;
  truncate(seq: number, n: number): Promise<void>;
  saveState(seq: number, history: boolean, checkpoints: boolean): Uint8Array;
  loadState(seq: number, bytes: Uint8Array): void;
  saveContext(history: boolean, checkpoints: boolean): Uint8Array;
  loadContext(bytes: Uint8Array): void;
  stateBytesPerSequence(): number;
  /** Memory accounting JSON from the core. */
  memory(): string;
  nVocab(): number;
  /** A generation on `seq` (params JSON: sampler, max_tokens, stop, ignore_eos); its id. */
  createGenerator(seq: number, params: string): number;
  /** Ends a generation: feeds the last sampled token, returns the text still held back. */
  endGenerator(id: number): Promise<string>;
  releaseGenerator(id: number): void;
  release(): void;
}

/** The context methods both bindings expose with exactly the engine's signature. */
type SharedContextMethod = Exclude<keyof EngineContext, "run" | "truncate" | "endGenerator" | "release">;
/** A binding's context object: the shared methods as they are (the rest differs per target). */
export type BindingContext = Pick<EngineContext, SharedContextMethod>;
// A record, not an array, so the compiler checks the list is complete.
const SHARED_CONTEXT_METHODS: Record<SharedContextMethod, true> = {
  position: true,
  clear: true,
  fork: true,
  rewind: true,
  checkpoint: true,
  history: true,
  checkpoints: true,
  checkpointBytes: true,
  setCheckpointPolicy: true,
  saveState: true,
  loadState: true,
  saveContext: true,
  loadContext: true,
  stateBytesPerSequence: true,
  memory: true,
  nVocab: true,
  createGenerator: true,
  releaseGenerator: true,
};

/** An `EngineContext` over a binding's context: the shared methods forwarded, the per-target
 *  ones (`run`, `truncate`, `endGenerator`, `release`) given by the caller. */
export function wrapBindingContext(c: BindingContext, own: Pick<EngineContext, "run" | "truncate" | "endGenerator" | "release">): EngineContext {
  const out: Record<string, unknown> = { ...own };
  for (const k of Object.keys(SHARED_CONTEXT_METHODS) as SharedContextMethod[]) {
    out[k] = (...args: unknown[]) => (c[k] as (...a: unknown[]) => unknown).apply(c, args);
  }
  return out as unknown as EngineContext;
}

/** Runs `parse` on the GGUF header, read through ever larger prefixes until the engine has enough. The prefix
 *  starts at 1 MiB (enough for most headers) and grows as the engine asks, so no read ever needs
 *  more than the header itself. */
export async function withHeader<T>(
  src: ByteSource,
  signal: AbortSignal | undefined,
  parse: (prefix: Uint8Array, fileSize: number) => T,
  onRead?: (bytes: number) => void,
): Promise<T> {
  let want = Math.min(src.size, 1 << 20);
  for (;;) {
    throwIfAborted(signal);
    const prefix = await src.read(0, want, signal);
    onRead?.(prefix.byteLength);
    try {
      return parse(prefix, src.size);
    } catch (e) {
      const err = fromEngineError(e);
      if (err.code !== "GGUF_NEED_MORE") throw err;
      const next = Math.min(src.size, Math.max(err.offset ?? 0, want * 2));
      if (next <= want) throw err; // cannot happen with a correct engine; never loop forever
      want = next;
    }
  }
}

/** The model methods both bindings export under the same names (napi-rs's `NativeModel` and
 *  wasm-bindgen's `WasmModel`); only how the model is freed and how its contexts are wrapped
 *  differ per engine. */
export interface BindingModel<C> {
  info(arrayHead: number): string;
  tokenize(text: string, addSpecial: boolean | undefined, parseSpecial: boolean): Uint32Array;
  detokenize(ids: Uint32Array, special: boolean): string;
  pieces(ids: Uint32Array, special: boolean): string[];
  vocab(): string;
  token(id: number): string;
  hasWeights(): boolean;
  wantsWeights(vocabOnly: boolean): boolean;
  weightsPlan(): Float64Array;
  pushTensorBytes(tensorIndex: number, offset: number, bytes: Uint8Array): void;
  finishWeights(): void;
  createContext(nSeqMax: number, nThreads: number, nCtx: number, kvType: string): C;
}

export function wrapBindingModel<C>(m: BindingModel<C>, wrapContext: (c: C) => EngineContext, release: () => void): EngineModel {
  return {
    info: (h) => m.info(h),
    tokenize: (t, a, p) => m.tokenize(t, a, p),
    detokenize: (ids, s) => m.detokenize(ids, s),
    pieces: (ids, s) => m.pieces(ids, s),
    vocab: () => m.vocab(),
    token: (id) => m.token(id),
    hasWeights: () => m.hasWeights(),
    wantsWeights: (v) => m.wantsWeights(v),
    weightsPlan: () => m.weightsPlan(),
    pushTensorBytes: (i, o, b) => m.pushTensorBytes(i, o, b),
    finishWeights: () => m.finishWeights(),
    createContext: (n, t, c, k) => wrapContext(m.createContext(n, t, c, k)),
    release,
  };
}
